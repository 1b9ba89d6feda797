"""Measure an exported artifact with onnxruntime, through the service's own preprocessing.

    python -m export.evaluate artifacts/mnist-cnn --data ../shared/data/mnist             # validation split
    python -m export.evaluate artifacts/mnist-cnn --images t10k-images-idx3-ubyte.gz \\
        --labels t10k-labels-idx1-ubyte.gz                                                  # any IDX pair
    python -m export.evaluate artifacts/sst2-lstm --data ../shared/data/sentiment/sst2/train.tsv
    python -m export.evaluate artifacts/sst2-lstm --texts dev.tsv [--text-column sentence --label-column label]
    python -m export.evaluate artifacts/sst2-gru --data ../shared/data/sentiment/sst2/train.tsv \\
        --ensemble-with artifacts/sst2-lstm --ensemble-with artifacts/sst2-lstm-max             # averaged answers
    python -m export.evaluate artifacts/mnist-gan --data ../shared/data/mnist --classifier artifacts/mnist-cnn
    python -m export.evaluate artifacts/mnist-ae --data ../shared/data/mnist --anomalies ../shared/data/fashion-mnist \
        --sizes 56,112,280                            # also flagged as served with the images enlarged
    python -m export.evaluate artifacts/mnist-gan --data ... --classifier ... --record  # the figures into model.json

With ``--data``, the validation split is rebuilt from the seed, fraction and kind recorded in model.json and
the data file must hash to the sha256 recorded there, so the figure is the one training reported,
re-measured on the exported graph. ``--texts`` takes any CSV/TSV with a header; labels may be indices
(0, 1) or label names (negative, positive).

Generators are measured against the validation split with a shipped classifier of the same dataset:
Fréchet distance on its penultimate features (export/frechet.py) with the real-vs-real floor, the fraction
of conditional samples it classifies as the requested class, and for VAEs the validation ELBO and
reconstruction error through the exported encoder and decoder.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from contract import gibbs
from contract.cli import load_intact, run
from contract.data import DataError, check_recorded, read_idx, recorded_split
from contract.images import normalize, prepare_image, read, to_uint8
from contract.latents import cycled_labels, latents
from contract.metadata import ONNX_FILE, ModelMetadata, load_metadata
from contract.text import DEFAULT_WINDOWS, Vocab, text_logits
from export.evaluate_cli import parser, refuse_unread
from export.record import record


def _session(model_dir: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(model_dir / ONNX_FILE), providers=["CPUExecutionProvider"])


def predict_images(model_dir: Path, images: np.ndarray, meta: ModelMetadata, batch: int = 500) -> np.ndarray:
    """uint8 images (N, H, W) or (N, C, H, W) -> predicted label indices, preprocessed as the service does."""
    sess = _session(model_dir)
    pre = meta.image_preprocessing()
    preds = []
    for i in range(0, len(images), batch):
        chunk = images[i : i + batch]
        if chunk.ndim == 3:
            chunk = chunk[:, None]
        pixels = np.stack(
            [prepare_image(Image.fromarray(a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)), pre) for a in chunk]
        )
        (logits,) = sess.run([meta.outputs[0].name], {meta.inputs[0].name: normalize(pixels, pre)})
        preds.append(logits.argmax(1))
    return np.concatenate(preds)


def predict_texts(
    model_dir: Path,
    texts: list[str],
    meta: ModelMetadata,
    windows: int = DEFAULT_WINDOWS,
    ensemble: tuple[Path, ...] = (),
) -> np.ndarray:
    """Raw texts -> predicted label indices, as the service answers; with ``ensemble`` (more text classifiers'
    folders, same labels), the argmax of all their calibrated probabilities averaged."""
    probs = []
    for folder in (model_dir, *ensemble):
        m = meta if folder == model_dir else load_metadata(folder)
        if m.labels != meta.labels:
            raise ValueError(f"{folder} answers {m.labels}, {model_dir} {meta.labels}: no ensemble")
        pre = m.text_preprocessing()
        z = text_logits(_session(folder), texts, pre.tokenizer, Vocab.load(folder / pre.vocab_file), windows=windows)
        probs.append(m.probabilities(z))
    return np.mean(probs, axis=0).argmax(1)


def reconstruction_errors(
    model_dir: Path, images: np.ndarray, meta: ModelMetadata, batch: int = 500, corrupt: bool = False
) -> np.ndarray:
    """uint8 images (N, H, W) -> per-image squared error summed over pixels in [0, 1], as the service computes.

    With ``corrupt``, inputs get the model's own training corruption (its recorded noise kind and level,
    seeded) and are scored against the clean images: the denoising error.
    """
    sess = _session(model_dir)
    pre = meta.image_preprocessing()
    cfg = meta.architecture_config
    level = cfg.get("noise_level", 0.0)
    assert isinstance(level, float | int)
    rng = np.random.default_rng(0)
    errors = []
    for i in range(0, len(images), batch):
        pixels = np.stack([prepare_image(Image.fromarray(a), pre) for a in images[i : i + batch]])
        x = normalize(pixels, pre)
        noisy = x
        if corrupt and cfg.get("noise") == "masking":
            noisy = (x * (rng.random(x.shape) >= level)).astype(np.float32)
        elif corrupt and cfg.get("noise") == "gaussian":
            noisy = np.clip(x + rng.normal(0, level, x.shape), 0, 1).astype(np.float32)
        (recon,) = sess.run(["reconstruction"], {meta.inputs[0].name: noisy})
        errors.append(((recon - x) ** 2).reshape(len(x), -1).sum(1))
    return np.concatenate(errors)


def served_anomalies(
    model_dir: Path, images: np.ndarray, meta: ModelMetadata, size: int, batch: int = 250
) -> np.ndarray:
    """uint8 images (N, H, W) enlarged to ``size`` x ``size`` (bicubic: a larger scan of the same picture) -> the
    ``anomaly`` /v1/reconstruct answers for each: at any size but the model's own, the image goes through the front
    door (contract.images.read), which fits the ink it finds into a digit's box, and its verdict counts too
    (``ModelMetadata.anomaly_answer``)."""
    sess = _session(model_dir)
    pre = meta.image_preprocessing()
    flags: list[bool] = []
    for i in range(0, len(images), batch):
        readings = [
            read(Image.fromarray(a).resize((size, size), Image.Resampling.BICUBIC), pre) for a in images[i : i + batch]
        ]
        x = normalize(np.stack([r.pixels for r in readings]), pre)
        (recon,) = sess.run(["reconstruction"], {meta.inputs[0].name: x})
        errors = ((recon - x) ** 2).reshape(len(x), -1).sum(1)
        flags += [meta.anomaly_answer(float(e), r.oddness, f) for e, r, f in zip(errors, readings, x, strict=True)]
    return np.asarray(flags)


def auroc(negatives: np.ndarray, positives: np.ndarray) -> float:
    """Area under the ROC curve of a score that should be higher for positives (Mann-Whitney U / n1 n0)."""
    from scipy.stats import rankdata  # ties share their mean rank

    ranks = rankdata(np.concatenate([negatives, positives]))
    n0, n1 = len(negatives), len(positives)
    return float((ranks[n0:].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _recorded_split(p: argparse.ArgumentParser, meta: ModelMetadata, root: Path, check: bool = True):
    """``contract.data.recorded_split``, its refusal as the command's error."""
    try:
        return recorded_split(meta, root, check)
    except ValueError as e:
        p.error(str(e))


def _validation_images(p: argparse.ArgumentParser, meta: ModelMetadata, root: Path, check: bool = True):
    if meta.dataset.name == "image-folder":  # a user's folder of class sub-folders, read as training read it
        from export.folder_calibration import folder_split

        try:
            ds, _, val = folder_split(root, meta)
        except DataError as e:
            p.error(str(e))
        return ds.images[val], ds.labels[val]
    images, labels, _, val = _recorded_split(p, meta, root, check)
    return images[val], labels[val]


def _autoencoder_report(p: argparse.ArgumentParser, args: argparse.Namespace, meta: ModelMetadata) -> dict:
    if args.data is None:
        p.error("give --data (the training folder), optionally --anomalies (another IDX folder)")
    images, _ = _validation_images(p, meta, args.data)
    errors = reconstruction_errors(args.model_dir, images, meta)
    assert meta.anomaly is not None
    result: dict = {
        "model": meta.name,
        "split": "validation",
        "n": len(errors),
        "mean_sse": float(errors.mean()),
        "flagged": float((errors > meta.anomaly.threshold).mean()),
    }
    if meta.architecture_config.get("noise", "none") != "none":
        result["denoising_mean_sse"] = float(reconstruction_errors(args.model_dir, images, meta, corrupt=True).mean())
    if args.anomalies is not None:
        # the other dataset's validation images (same seed and fraction), as the out-of-distribution class
        others, _ = _validation_images(p, meta, args.anomalies, check=False)
        other_errors = reconstruction_errors(args.model_dir, others, meta)
        result.update(
            anomalies=str(args.anomalies),
            anomalies_n=len(other_errors),
            anomalies_mean_sse=float(other_errors.mean()),
            anomalies_flagged=float((other_errors > meta.anomaly.threshold).mean()),
            auroc=auroc(errors, other_errors),
        )
    for size in args.sizes:  # the first --sizes-n images of each set, enlarged, as /v1/reconstruct answers them
        n = args.sizes_n
        own = served_anomalies(args.model_dir, images[:n], meta, size)
        entry = {"n": len(own), "flagged": float(own.mean())}
        if args.anomalies is not None:
            entry["anomalies_flagged"] = float(served_anomalies(args.model_dir, others[:n], meta, size).mean())
        result.setdefault("served_at_size", {})[str(size)] = entry
    return result


def generate_images(
    model_dir: Path, meta: ModelMetadata, n: int, seed: int = 0, batch: int = 500, steps: int = 1000
) -> tuple[np.ndarray, np.ndarray | None]:
    """n samples as the service draws them (numpy default_rng(seed) normal z; conditional labels cycling
    through the classes; a Gibbs sampler's chains of ``steps`` steps), quantised to uint8 as in the served PNGs ->
    (pixels (N, C, H, W), labels)."""
    assert meta.generator is not None
    sess = _session(model_dir)
    if (g := meta.generator.gibbs) is not None:

        def run(v: np.ndarray, u_h: np.ndarray, u_v: np.ndarray, todo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            out = sess.run(["v_next", "image"], {"v": v, "u_h": u_h, "u_v": u_v, "steps": todo})
            return out[0], out[1]

        chunks = [
            gibbs.sample(run, min(batch, n - i), seed, steps, g.steps_per_run, g.hidden, g.visible, first=i)
            for i in range(0, n, batch)
        ]
        return to_uint8(np.concatenate(chunks)), None
    z = latents(seed, n, meta.generator.latent_dim)
    labels = cycled_labels(n, len(meta.labels)) if meta.generator.conditional else None
    out = []
    for i in range(0, n, batch):
        feed = {"z": z[i : i + batch], **({"labels": labels[i : i + batch]} if labels is not None else {})}
        out.append(to_uint8(sess.run(["image"], feed)[0]))
    return np.concatenate(out), labels


def vae_metrics(model_dir: Path, meta: ModelMetadata, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Validation -ELBO (nats per image, one seeded sample each) and squared error of the posterior-mean
    reconstruction, through the exported encoder and decoder."""
    assert meta.generator is not None and meta.generator.encoder is not None
    enc = ort.InferenceSession(str(model_dir / meta.generator.encoder.file), providers=["CPUExecutionProvider"])
    dec = _session(model_dir)
    rng = np.random.default_rng(0)
    cond = meta.generator.conditional
    rec = kl = sse = 0.0
    for i in range(0, len(images), 500):
        x = images[i : i + 500].reshape(-1, 1, *images.shape[-2:]).astype(np.float32) / 255.0
        y = {"labels": labels[i : i + 500]} if cond else {}
        mu, logvar = enc.run(["mu", "logvar"], {"image": x, **y})
        z = (mu + rng.standard_normal(mu.shape) * np.exp(0.5 * logvar)).astype(np.float32)
        p = np.clip(dec.run(["image"], {"z": z, **y})[0].astype(np.float64), 1e-7, 1 - 1e-7)
        rec += float(-(x * np.log(p) + (1 - x) * np.log1p(-p)).sum())
        kl += float(0.5 * (mu.astype(np.float64) ** 2 + np.exp(logvar) - 1 - logvar).sum())
        sse += float(((dec.run(["image"], {"z": mu, **y})[0] - x) ** 2).sum())
    n = len(images)
    return {"val_neg_elbo": (rec + kl) / n, "val_rec_nats": rec / n, "val_kl_nats": kl / n, "val_sse": sse / n}


def gibbs_metrics(model_dir: Path, meta: ModelMetadata, images: np.ndarray, seed: int = 0) -> dict[str, float]:
    """A Gibbs sampler's reconstruction error as Hinton's rbm.m measures it: one Gibbs step from each image (hidden
    states sampled, seeded), squared error of p(v | h) summed over pixels, averaged over images."""
    assert meta.generator is not None and meta.generator.gibbs is not None
    g, sess, sse = meta.generator.gibbs, _session(model_dir), 0.0
    for i in range(0, len(images), 500):
        x = images[i : i + 500].reshape(-1, g.visible).astype(np.float32) / 255.0
        rngs = gibbs.chain_rngs(seed, len(x), first=i)
        u_h, u_v = gibbs.run_noise(rngs, g.steps_per_run, g.hidden, g.visible)
        (recon,) = sess.run(["image"], {"v": x, "u_h": u_h, "u_v": u_v, "steps": np.ones(len(x), dtype=np.int64)})
        sse += float(((recon.reshape(len(x), -1) - x) ** 2).sum())
    return {"val_sse_one_gibbs_step": sse / len(images)}


def _generator_report(p: argparse.ArgumentParser, args: argparse.Namespace, meta: ModelMetadata) -> dict:
    from export.frechet import classifier_outputs, frechet_distance

    if args.data is None or args.classifier is None:
        p.error("give --data (the training folder) and --classifier (a classifier artifact of the same data)")
    assert meta.generator is not None
    all_images, all_labels, train_idx, val_idx = _recorded_split(p, meta, args.data)
    images, labels = all_images[val_idx], all_labels[val_idx]
    n = min(args.samples or len(images), len(images))
    cls_meta = load_metadata(args.classifier)
    pre = cls_meta.image_preprocessing()
    if list(pre.input_size) != list(images.shape[-2:]):
        p.error(f"{cls_meta.name} takes {pre.input_size} images; the generator makes {images.shape[-2:]}")
    # the floor: a disjoint real set of the same size, drawn from the training split
    other = all_images[np.random.default_rng(1).choice(train_idx, size=n, replace=False)]
    gen, gen_labels = generate_images(args.model_dir, meta, n, steps=args.gibbs_steps)
    (f_val, pred_val), (f_other, _), (f_gen, pred_gen) = classifier_outputs(
        args.classifier, cls_meta, images[:n, None], other[:, None], gen
    )
    result: dict = {
        "model": meta.name,
        "split": "validation",
        "n": n,
        "classifier": cls_meta.name,
        "classifier_accuracy_real": float((pred_val == labels[:n]).mean()),
        "frechet_distance": frechet_distance(f_gen, f_val),
        "frechet_floor_real_vs_real": frechet_distance(f_other, f_val),
    }
    if gen_labels is not None:
        result["class_fidelity"] = float((pred_gen == gen_labels).mean())
        result["class_fidelity_per_class"] = {
            meta.labels[c]: float((pred_gen[gen_labels == c] == c).mean()) for c in range(len(meta.labels))
        }
    if meta.generator.encoder is not None:
        result.update(vae_metrics(args.model_dir, meta, images, labels))
    if meta.generator.gibbs is not None:
        result.update(gibbs_steps=args.gibbs_steps, **gibbs_metrics(args.model_dir, meta, images))
    return result


def report(pred: np.ndarray, labels: np.ndarray, names: list[str]) -> dict[str, float | int | dict[str, float]]:
    per_class = {names[c]: float((pred[labels == c] == c).mean()) for c in range(len(names)) if (labels == c).any()}
    return {
        "n": len(labels),
        "accuracy": float((pred == labels).mean()),
        "error_rate": float((pred != labels).mean()),
        "per_class_accuracy": per_class,
    }


def _check_hash(p: argparse.ArgumentParser, meta: ModelMetadata, path: Path) -> None:
    try:
        check_recorded(path, meta)
    except (ValueError, OSError) as e:  # not the recorded file, or none there
        p.error(str(e))


def _image_data(p: argparse.ArgumentParser, args: argparse.Namespace, meta: ModelMetadata):
    if args.data is not None:
        images, labels = _validation_images(p, meta, args.data)
        return predict_images(args.model_dir, images, meta), labels, "validation"
    if args.images is not None and args.labels is not None:
        try:
            images, labels = read_idx(args.images), read_idx(args.labels).astype(np.int64)
        except (OSError, ValueError) as e:
            p.error(f"--images/--labels: {e}")
        if images.ndim not in (3, 4) or labels.ndim != 1 or len(images) != len(labels) or not len(labels):
            p.error(f"--images holds {images.shape}, --labels {labels.shape}: one label for each image expected")
        if labels.max() >= len(meta.labels):  # uint8: never below 0; a class it has not, its rows left unscored
            p.error(
                f"--labels holds class {labels.max()}: {meta.name} has {len(meta.labels)} (0 to {len(meta.labels) - 1})"
            )
        return predict_images(args.model_dir, images, meta), labels, str(args.images)
    p.error("give --data, or --images and --labels")


def _text_data(p: argparse.ArgumentParser, args: argparse.Namespace, meta: ModelMetadata):
    from contract.text_data import labelled_texts, text_validation

    if args.data is not None:
        _check_hash(p, meta, args.data)
        try:
            texts, labels = text_validation(meta, args.data)
        except OSError as e:  # no file there (a model of no recorded file: nothing to check it by)
            p.error(f"--data {args.data}: {e.strerror or e}")
        name = f"validation ({meta.dataset.split})"
    elif args.texts is not None:
        cols = meta.dataset.columns  # those given, else those trained on (where the file has them), else SST-2's
        given = (args.text_column or cols.get("text", "sentence"), args.label_column or cols.get("label", "label"))
        columns = [given] if args.text_column or args.label_column else [given, ("sentence", "label")]
        try:
            texts, labels = labelled_texts(args.texts, meta.labels, columns)
        except DataError as e:
            p.error(str(e))
        name = str(args.texts)
    else:
        p.error("give --data (the training file) or --texts")
    if not texts:
        p.error(f"{name}: no text to measure")
    if args.ensemble_with:
        name += f", ensemble of {', '.join(str(m) for m in (args.model_dir, *args.ensemble_with))}"
    return predict_texts(args.model_dir, texts, meta, args.windows, tuple(args.ensemble_with)), labels, name


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    argv = sys.argv[1:] if argv is None else argv
    args = p.parse_args(argv)
    if args.record and args.data is None:
        p.error("--record keeps figures of the recorded validation split: give --data")
    try:
        meta = load_metadata(args.model_dir)
    except (OSError, ValueError) as e:
        p.error(f"{args.model_dir}: not a model folder ({str(e).splitlines()[0]})")
    if args.json is not None and (args.json.is_dir() or not args.json.parent.is_dir()):
        p.error(f"--json {args.json}: a folder, or in no folder; name a file to write in one that exists")
    refuse_unread(p, argv, args, meta)
    for folder in (args.model_dir, *args.ensemble_with):  # measure the graph model.json describes, as served
        try:
            member = load_intact(folder)
        except ValueError as e:
            p.error(str(e))
        if member.task != meta.task:
            p.error(f"--ensemble-with {folder}: its task is {member.task}, not {meta.task}")
        if args.data is not None and not member.dataset.same_split(meta.dataset):  # every member held them out
            p.error(f"{folder} was trained on another split than {args.model_dir}: its validation rows differ")
    if meta.task == "autoencoder":
        result = _autoencoder_report(p, args, meta)
    elif meta.task == "generator":
        result = _generator_report(p, args, meta)
    elif meta.task in ("image-classification", "text-classification"):
        pred, labels, split_name = (_text_data if meta.task == "text-classification" else _image_data)(p, args, meta)
        result = {"model": meta.name, "split": split_name, **report(pred, labels, meta.labels)}
    else:  # e.g. recall: the recipe measures what the service runs (contract/hopfield.py), in the card's metrics
        p.error(f"{meta.name} is a {meta.task} model: this measures classifiers, autoencoders and generators")
    if args.record:
        record(args.model_dir, meta, result, args)
    out = json.dumps(result, indent=2, ensure_ascii=False)
    if args.json:
        args.json.write_text(out + "\n")
    sys.stdout.write(out + "\n")
    return 0


if __name__ == "__main__":
    run(main)
