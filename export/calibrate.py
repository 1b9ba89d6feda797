"""Honest answers for an exported classifier: temperature scaling and an out-of-distribution score, fitted on
one half of its validation split, measured on the other half, and written into the artifact.

    python -m export.calibrate artifacts/mnist-cnn --data ../shared/data/mnist --ood-data ../shared/data/fashion-mnist
    python -m export.calibrate artifacts/sst2-lstm --data ../shared/data/sentiment/sst2/train.tsv

Calibration (Guo et al. 2017, "On Calibration of Modern Neural Networks"): served probabilities are
softmax(logits / T); T minimises the negative log-likelihood on half A of the validation split (for image
models: its clean images and the same images rendered as phone photos, read through the service's front
door). A digit model's photo of a sheet the front door cut out of a table is read at a temperature of its own,
fitted on half A's such photos, and an answer flagged out of distribution at a higher one (export/flagged.py).
The expected calibration error (15 equal-width confidence bins) is reported before and after on half
B, clean and photographed (contract/photos.py's EVAL_STYLE, a generator wider than training's).

Out of distribution:

- image classifiers: the largest of two to four scores, each first scaled so that 0 is its median on clean half-A
  images and 1 its own threshold (at most 5 % of clean and 10 % of photographed half-A images above it):
  the Mahalanobis distance of the penultimate features to the nearest class mean under a shared covariance
  (Lee et al. 2018), both fitted on training images (clean and photographed), and the energy score, minus the
  log-sum-exp of the logits (Liu et al. 2020). Neither alone serves every model: Mahalanobis separates the
  other dataset best for mnist-cnn but lets natural photographs through LeNet-5 and the MLP, whose logits'
  energy flags them (docs/REAL-INPUTS.md). An RBF network has a third: the squared distance of the
  input to its nearest centre (its own novelty measure, Bishop 1994). With ``--autoencoder``, another: the
  squared error with which that autoencoder reconstructs the input (Japkowicz et al. 1995), its graph folded in;
  with ``--sibling``, a calibrated classifier of the same images, its own score (its graph folded in: a weak
  detector borrows a strong one's judgement of the input). Every non-empty set of the components is tried, and
  the one that flags the most of the other dataset's half A at the threshold below is served, one with either
  folded graph only where it flags half a point more than the best without (it costs more than the classifier);
  a model whose logits do not come from a linear layer has no Mahalanobis.
  The score is folded into model.onnx as the extra output ``ood_score`` (the graph is rewritten, its sha256
  recorded), so /v1 and /v2 get it from the same run as the logits; calibrating again replaces it.
- text classifiers: the share of the text's tokens outside the model's vocabulary (computed by the service).

The threshold of the combined image score flags at most 3 % of clean half-A inputs and at most 6 % of
photographed ones (the goals allow 5 % and 10 %: half A's photos are rendered like training's, and real ones
are harder); the figures (AUROC against the other dataset, flag rates) are measured on half B and stored in
model.json beside it.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

from contract.cli import at_least, load_intact, run
from contract.data import DataError, check_recorded, recorded_split
from contract.images import normalize
from contract.metadata import (
    METADATA_FILE,
    ONNX_FILE,
    Calibration,
    ModelMetadata,
    OutOfDistribution,
    load_metadata,
    softmax,
)
from contract.photos import EVAL_STYLE, TRAIN_STYLE, Door, photographs, read_photographs
from contract.text import Vocab, encode_windows, text_logits
from contract.text_data import text_validation
from contract.text_ood import RARITY, UNKNOWN, rarities, text_ood_score, unknown_share, word_rarity
from export import second_reading
from export.calibrate_cli import (
    check_companions,
    of_image_folder,
    removed,
    stop,
    uninterrupted,
    unused,
    working_copy,
    writable,
)
from export.evaluate import auroc
from export.flagged import (
    calibrate_flagged,
    fit_temperature,
    fitted_on,
    ood_answers,
    served_run,
    served_session,
    table_photos,
    unfitted,
)
from export.folder_calibration import calibrate_folder
from export.odd_images import OTHER_LANGUAGES, odd_inputs
from export.ood import (
    OOD_OUTPUT,
    account,
    add_ood_output,
    choose_components,
    combined_score,
    distance_tensor,
    energy_score,
    fit_mahalanobis,
    graph_centres,
    input_feed,
    logits_and_features,
    mahalanobis,
    nearest_centre,
    reconstruction_error,
    scoring_session,
    sibling_score,
    took_ood_output,
)
from export.record import write_metadata
from export.reliability import ece, ece_floor, halves

# ---- image classifiers ---------------------------------------------------------------------------------

PHOTOS = 2000  # photographed images per set, by default (--photos)


def idx_split(
    meta: ModelMetadata, root: Path, check: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """An IDX training folder -> (images (N, 1, H, W), labels, train indices, validation indices) as recorded;
    ``check``: the files must be the ones it was trained on (``contract.data.recorded_split``; ValueError)."""
    images, labels, train, val = recorded_split(meta, root, check)
    return images[:, None], labels, train, val


def image_sets(
    meta: ModelMetadata,
    images_all: np.ndarray,
    labels_all: np.ndarray,
    train: np.ndarray,
    val: np.ndarray,
    ood_images: np.ndarray,
    n_photos: int,
    fitting: bool,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, Door]]:
    """The prepared image sets (name -> (N, 1, H, W) uint8), the labels of those that have them, and what the
    front door found of those measured as the service reads them (``Door``): half B of the validation split clean and
    photographed (EVAL_STYLE; a digit model's also on a table, export/flagged.py), the other dataset's half B and
    odd inputs; with ``fitting`` also half A (clean, photographed in TRAIN_STYLE, a digit model's also on a table
    and a desk, the other dataset's) and 20,000 training images (some as photos)."""
    pre = meta.image_preprocessing()
    a, b = halves(len(val))
    va, vb = val[a], val[b]
    pb = vb[: n_photos // 2]
    oa, ob = halves(len(ood_images), seed=1, what="the other dataset's validation split")
    read = {"B photos": read_photographs(images_all[pb], pre, EVAL_STYLE, np.random.default_rng(5))}
    read |= {f"odd: {k}": v for k, v in odd_inputs(meta).items()}
    sets = {"B clean": images_all[vb], "B other dataset": ood_images[ob], **{k: px for k, (px, _) in read.items()}}
    door = {k: seen for k, (_, seen) in read.items()}
    truth = {"B clean": labels_all[vb], "B photos": labels_all[pb]}
    for k, (idx, px, seen) in table_photos(meta, images_all, va if fitting else None, vb, n_photos // 2).items():
        sets[k], door[k], truth[k] = px, seen, labels_all[idx]
    if fitting:
        pa = va[: n_photos // 2]
        fit = np.random.default_rng(1).choice(train, min(len(train), 20_000), replace=False)
        fit_ph = fit[: n_photos // 2]
        sets |= {
            "fit": images_all[fit],
            "fit photos": photographs(images_all[fit_ph], pre, TRAIN_STYLE, np.random.default_rng(3)),
            "A clean": images_all[va],
            "A photos": photographs(images_all[pa], pre, TRAIN_STYLE, np.random.default_rng(4)),
            "A other dataset": ood_images[oa],
        }
        truth |= {"fit": labels_all[fit], "fit photos": labels_all[fit_ph]}
        truth |= {"A clean": labels_all[va], "A photos": labels_all[pa]}
    return sets, truth, door


def calibrate_images(
    model_dir: Path,
    meta: ModelMetadata,
    sets: dict[str, np.ndarray],
    truth: dict[str, np.ndarray],
    door: dict[str, Door],
    autoencoder: Path | None = None,
    sibling: Path | None = None,
) -> ModelMetadata:
    """Temperature and the out-of-distribution score for an image classifier (the module docstring), fitted on
    the sets ``image_sets(..., fitting=True)`` made, written into ``model_dir``'s graph (an earlier calibration's
    score is replaced); with ``autoencoder`` (a served autoencoder's folder) its reconstruction error, and with
    ``sibling`` (a calibrated classifier's) its score, are candidate components. Returns the metadata to save."""
    sess, feat = scoring_session(model_dir)
    names = ("fit", "fit photos", "A clean", "A photos", "A other dataset", "B clean", "B other dataset")
    out = {name: logits_and_features(sess, feat, meta, sets[name]) for name in names}

    fit_logits = np.concatenate([out["A clean"][0], out["A photos"][0]])
    fit_labels = np.concatenate([truth["A clean"], truth["A photos"]])
    t = fit_temperature(fit_logits, fit_labels)
    scored = ("A clean", "A photos", "A other dataset", "B clean", "B other dataset")  # not the fitting sets
    comps = {k: {"energy": energy_score(out[k][0], 1.0)} for k in scored}
    centres, distances = graph_centres(model_dir), None
    if centres is not None:  # an RBF network: how far the input is from its nearest centre
        pre = meta.image_preprocessing()
        distances = distance_tensor(model_dir, centres, normalize(sets["A clean"][:16], pre))
        for k in scored:
            comps[k]["nearest_centre"] = nearest_centre(normalize(sets[k], pre), centres)
    for other, name, score in (
        (autoencoder, "reconstruction", reconstruction_error),
        (sibling, "sibling", sibling_score),
    ):
        if other is not None:  # how badly an autoencoder reconstructs the input; how odd a sibling finds it
            input_feed(model_dir, other)  # reads the same pixels, or ValueError
            for k in scored:
                comps[k][name] = score(other, sets[k])
    means = chol = None
    if feat is not None:
        feats = np.concatenate([out["fit"][1], out["fit photos"][1]])
        means, chol = fit_mahalanobis(feats, np.concatenate([truth["fit"], truth["fit photos"]]), len(meta.labels))
        for k in scored:
            comps[k] = {"mahalanobis": mahalanobis(out[k][1], means, chol), **comps[k]}  # type: ignore[arg-type]
    scaling, threshold, detected = choose_components(comps)

    recon = autoencoder if "reconstruction" in scaling else None
    sib = sibling if "sibling" in scaling else None
    add_ood_output(model_dir, feat if "mahalanobis" in scaling else None, means, chol, scaling, distances, recon, sib)
    took_ood_output(model_dir, meta, sets["B clean"][:512], out["B clean"][0][:512])
    meta.calibration = Calibration(
        temperature=t,
        fitted_on=(f"temperature {why}; " if (why := unfitted("validation half A", fit_logits, fit_labels)) else "")
        + "validation half A: clean images and the same rendered as photos (TRAIN_STYLE); "
        "table_temperature (digits): half A's unflagged photos of a sheet cut out of a dark table or a white desk; "
        "flagged_power: half A's flagged answers, clean, photos of a page and (digits) on a table and a white desk "
        "(export/flagged.py)",
        ece_before={},
        ece_after={},
    )
    meta.ood = OutOfDistribution(
        method="+".join(scaling),
        output=OOD_OUTPUT,
        threshold=threshold,
        scaling=scaling,
        fitted_on=account(scaling, detected, len(truth["fit"]), len(truth["fit photos"]), recon, sib),
    )
    calibrate_flagged(model_dir, meta, sets, truth, door)
    measured = {k: v for k, v in sets.items() if not k.startswith(("A", "fit"))}
    served_b = measure_images(model_dir, meta, measured, truth, door)
    np.testing.assert_allclose(served_b, combined_score(comps["B clean"], scaling), rtol=1e-3, atol=1e-3)
    meta.ood.figures |= {
        f"auroc_other_dataset_{c}": auroc(comps["B clean"][c], comps["B other dataset"][c]) for c in comps["B clean"]
    }
    return meta


def measure_images(
    model_dir: Path,
    meta: ModelMetadata,
    sets: dict[str, np.ndarray],
    truth: dict[str, np.ndarray],
    door: dict[str, Door],
) -> np.ndarray:
    """Run a calibrated artifact's graph (logits and ood_score, as the service does) on image sets and write
    the figures into ``meta``: accuracy and ECE before/after on the labelled sets, AUROC against the other
    dataset, and the share of each set flagged as the service flags it (``door``: what the front door found of
    the sets it read as photos; a field with nothing written is flagged too). Returns the clean half-B scores
    (for the caller's checks)."""
    assert meta.calibration is not None and meta.ood is not None
    sess, logits, scores = served_session(model_dir), {}, {}
    for name, px in sets.items():
        logits[name], scores[name] = served_run(sess, meta, px)
    answers = {k: ood_answers(meta, scores[k], px, door.get(k)) for k, px in sets.items()}
    labelled = [k for k in sets if k in truth]
    tables = {k: None if k not in door else door[k].on_table for k in labelled}
    served = {k: meta.probabilities(logits[k], answers[k], sets[k], tables[k]) for k in labelled}  # as served
    meta.calibration.accuracy = {k: float((logits[k].argmax(1) == truth[k]).mean()) for k in labelled}
    meta.calibration.ece_before = {k: ece(softmax(logits[k]), truth[k]) for k in labelled}
    meta.calibration.ece_after = {k: ece(served[k], truth[k], answered=logits[k].argmax(1)) for k in labelled}
    meta.calibration.ece_floor = {k: ece_floor(served[k]) for k in labelled}
    flagged = {k: np.array([f for _, f in v], dtype=bool) for k, v in answers.items()}
    meta.ood.figures = {
        "auroc_other_dataset": auroc(scores["B clean"], scores["B other dataset"]),
        "flagged_clean": float(flagged["B clean"].mean()),
        "flagged_photos": float(flagged["B photos"].mean()),
        **{f"flagged_{k[2:]}": float(flagged[k].mean()) for k in ("B table", "B desk") if k in flagged},
        "flagged_other_dataset": float(flagged["B other dataset"].mean()),
        **{f"flagged {k[5:]}": float(v.mean()) for k, v in flagged.items() if k.startswith("odd: ")},
    }
    return scores["B clean"]


# ---- text classifiers ----------------------------------------------------------------------------------


RARITY_MARGIN = 0.05  # word rarity: flag this far beyond the clean half-A texts' extreme (rarity is in (0, 1])


def calibrate_texts(model_dir: Path, val_texts: list[str], val_labels: np.ndarray) -> ModelMetadata:
    """Temperature and the out-of-distribution score's scaling for a text classifier; returns the metadata."""
    meta = load_metadata(model_dir)
    pre = meta.text_preprocessing()
    vocab = Vocab.load(model_dir / pre.vocab_file)
    a, b = halves(len(val_texts))
    sess = ort.InferenceSession(str(model_dir / ONNX_FILE), providers=["CPUExecutionProvider"])

    def logits_of(texts: list[str]) -> np.ndarray:
        return text_logits(sess, texts, pre.tokenizer, vocab, 128)

    texts = {"A": [val_texts[i] for i in a], "B": [val_texts[i] for i in b]}
    labels = {"A": val_labels[a], "B": val_labels[b]}
    logits = {k: logits_of(v) for k, v in texts.items()}
    t = fit_temperature(logits["A"], labels["A"])
    rng = np.random.default_rng(3)
    alphabet = list("abcdefghijklmnopqrstuvwxyz0123456789 ")
    odd = {
        "random characters": ["".join(rng.choice(alphabet, 60)) for _ in range(50)],
        "other languages": OTHER_LANGUAGES,
        "made-up words": [" ".join("".join(rng.choice(alphabet[:26], 7)) for _ in range(10)) for _ in range(50)],
    }
    ids = {k: [encode_windows(x, pre.tokenizer, vocab).evidence for x in v] for k, v in {**texts, **odd}.items()}
    n = len(vocab)
    # reviews hold rare words and names: flag only well beyond the clean texts' extreme (their 99.9th
    # percentile plus a margin), and never below a quarter of the text unknown
    share = {k: np.array([unknown_share(x, n) for x in v]) for k, v in ids.items()}
    centre = float(np.mean(np.concatenate([rarities(x, n) for x in ids["A"]])))
    rarity = np.array([word_rarity(x, n, centre) for x in ids["A"]])
    scaling = {
        UNKNOWN: (0.0, float(max(np.quantile(share["A"], 0.999) + 0.1, 0.25))),
        RARITY: (centre, float(np.quantile(rarity - centre, 0.999) + RARITY_MARGIN)),
    }
    meta.calibration = Calibration(
        temperature=t,
        fitted_on=fitted_on("validation half A", logits["A"], labels["A"], len(labels["B"])),
        ece_before={"B": ece(softmax(logits["B"]), labels["B"])},
        ece_after={"B": ece(softmax(logits["B"], t), labels["B"])},
        ece_floor={"B": ece_floor(softmax(logits["B"], t))},
        accuracy={"B": float((logits["B"].argmax(1) == labels["B"]).mean())},
    )
    meta.ood = ood = OutOfDistribution(
        method=f"{UNKNOWN}+{RARITY}",
        output=None,
        scaling=scaling,
        threshold=1.0,
        fitted_on="validation half A: the unknown share's 99.9th percentile plus 0.1, at least 0.25; the word "
        f"rarity's 99.9th percentile plus {RARITY_MARGIN} (its centre: the mean token's rarity)",
    )
    flagged = {k: np.array([text_ood_score(x, n, ood) for x in v]) > ood.threshold for k, v in ids.items()}
    ood.figures = (
        {"flagged_clean": float(flagged["B"].mean())}
        | {f"flagged {k}": float(flagged[k].mean()) for k in odd}
        | {f"flagged {k} by the unknown share alone": float((share[k] > scaling[UNKNOWN][1]).mean()) for k in odd}
    )
    return meta


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.calibrate", description=__doc__.split("\n\n")[0])
    p.add_argument("artifact", type=Path)
    p.add_argument("--data", type=Path, required=True, help="the training folder or file the model was trained on")
    p.add_argument("--ood-data", type=Path, help="image models: another dataset (IDX folder), out of distribution")
    p.add_argument(
        "--autoencoder", type=Path, help="image models: an autoencoder of the same images (a candidate OOD component)"
    )
    p.add_argument("--sibling", type=Path, help="image models: a calibrated classifier of these images (its score too)")
    p.add_argument("--photos", type=at_least(1), help=f"image models: photographed images per set (default {PHOTOS})")
    p.add_argument(
        "--measure",
        action="store_true",
        help="re-measure a calibrated artifact on validation half B and print the figures; change nothing",
    )
    p.add_argument(
        "--second-reading",
        action="store_true",
        help="digit classifiers: only decide whether flagged photos are read twice (export/second_reading.py)",
    )
    args = p.parse_args(argv)
    if not (args.artifact / METADATA_FILE).is_file():
        p.error(f"{args.artifact}: no {METADATA_FILE} (python -m export writes the artifact's folder, its --out)")
    for given in (args.data, args.ood_data, args.autoencoder, args.sibling):
        if given is not None and not given.exists():
            p.error(f"{given}: no such file or folder")
    try:  # an artifact's files as the server reads them, before minutes of work (a CLI audit's: tracebacks)
        meta = load_intact(args.artifact)
    except ValueError as e:
        p.error(str(e))
    folder = of_image_folder(meta)
    if meta.task == "image-classification" and not folder and not any(args.data.glob("train-images-idx3-ubyte*")):
        p.error(f"{args.data} is not an IDX folder, and {meta.name} was trained on {meta.dataset.name}")
    if folder and (args.measure or args.second_reading):
        p.error("a model of an image folder is calibrated (export/folder_calibration.py), not measured apart")
    try:  # the data must be the files it was trained on, or "validation" would be other rows
        check_recorded(args.data, meta)
    except ValueError as e:
        p.error(str(e))
    if meta.task in ("image-classification", "text-classification"):
        idle, kind = unused(args, meta, folder)
        if idle:
            p.error(f"{', '.join(idle)} would not be used: {meta.name} is {kind}")
    check_companions(p, args, meta)
    if not args.measure and (why := writable(args.artifact)):
        p.error(f"{args.artifact}: cannot write into it ({why}); --measure writes nothing")
    stopped = signal.signal(signal.SIGTERM, stop)  # a SIGTERM (timeout, kill) ends as Ctrl-C does, the copy removed
    work = None
    try:
        work = working_copy(args.artifact)  # calibration rewrites the graph: in a copy of the folder
        try:
            meta = _calibrate(p, args, meta, work)
        except DataError as e:  # the data cannot be calibrated on (a validation split of one row)
            p.error(str(e))
        if not args.measure:
            with uninterrupted() as came:  # from the first rename on, the calibration stands
                write_metadata(args.artifact, meta.model_dump_json(indent=2) + "\n", graph=work / ONNX_FILE)
            if came:
                print("stopped as the calibration was written: it stands", file=sys.stderr)
    finally:
        signal.signal(signal.SIGTERM, stopped)
        if work is not None:
            removed(work)
    summary = {"model": meta.name, "calibration": meta.calibration, "ood": meta.ood}
    print(json.dumps(json.loads(json.dumps(summary, default=lambda m: m.model_dump())), indent=2))
    return 0


def _calibrate(p: argparse.ArgumentParser, args: argparse.Namespace, meta: ModelMetadata, work: Path) -> ModelMetadata:
    """The command's work for one artifact, in ``work``, a copy of its folder -> its metadata as calibrated (as it
    was, with --measure)."""
    if of_image_folder(meta):
        try:
            return calibrate_folder(work, meta, args.data)
        except DataError as e:  # another folder than the one it was trained on, a validation split of one image
            p.error(str(e))
    if args.second_reading:
        images, labels, _, val = idx_split(meta, args.data, check=False)  # checked by main
        second_reading.decide(work, meta, images, labels, val[halves(len(val))[0]])
    elif meta.task == "image-classification":
        if args.ood_data is None:
            p.error("image classifiers need --ood-data")
        images, labels, train, val = idx_split(meta, args.data, check=False)  # checked by main
        ood_images, _, _, ood_val = idx_split(meta, args.ood_data, check=False)
        sets, truth, door = image_sets(
            meta, images, labels, train, val, ood_images[ood_val], args.photos or PHOTOS, fitting=not args.measure
        )
        if args.measure:
            measure_images(work, meta, sets, truth, door)
        else:
            meta = calibrate_images(work, meta, sets, truth, door, args.autoencoder, args.sibling)
            second_reading.decide(work, meta, images, labels, val[halves(len(val))[0]])
    elif meta.task == "text-classification":
        # deterministic: with --measure it refits the same temperature and threshold, and nothing is written
        meta = calibrate_texts(work, *text_validation(meta, args.data))
    else:
        p.error(f"{meta.name} is a {meta.task} model: only classifiers are calibrated")
    return meta


if __name__ == "__main__":
    run(main)
