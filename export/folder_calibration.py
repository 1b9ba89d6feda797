"""Calibration of an image classifier trained on a user's own image folder (``python -m training ... --data
FOLDER``), for which there is no photo renderer and no other dataset to measure against:

- the temperature (Guo et al. 2017) fitted on half A of the validation split the model recorded (the folder read
  again through the model's own preprocessing, split as training split it), ECE and accuracy on half B;
- the out-of-distribution score: the Mahalanobis distance of the penultimate features to the nearest class mean
  (Lee et al. 2018; means and shared covariance from the training split), or the logits' energy (Liu et al.
  2020) for a graph without such features, folded into the graph as ``ood_score``, scaled so that 1 is the
  threshold: the 95th percentile of the validation split (both halves: a folder's split is small, and the
  quantile of one half of it moved from 5 to 29 % flagged on the other half for 250 shapes a class), so about
  5 % of the validation images are flagged, measured where fitted;
- its figures on half B and on the odd inputs (export/odd_images.py: blank pages, noise, printed text, natural
  photographs), as the service answers them (the front door's verdict included).

Nothing here knows what the images are, so nothing says how far the score separates them from what users will
send instead; the odd inputs' figures are the only evidence, and the README says so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from contract.data import DataError, Dataset, load_image_folder, stratified_split
from contract.images import normalize
from contract.metadata import (
    Calibration,
    ModelMetadata,
    OutOfDistribution,
    softmax,
)
from export.flagged import fit_temperature, fitted_on
from export.odd_images import odd_inputs
from export.ood import (
    OOD_OUTPUT,
    add_ood_output,
    energy_score,
    fit_mahalanobis,
    logits_and_features,
    mahalanobis,
    scoring_session,
    took_ood_output,
)
from export.reliability import ece, ece_floor, halves

FLAG_QUANTILE = 0.95  # of the validation scores: the threshold, about 5 % of in-distribution images flagged


def folder_split(folder: Path, meta: ModelMetadata) -> tuple[Dataset, np.ndarray, np.ndarray]:
    """The image folder an image-folder classifier was trained on, read through its preprocessing, and the
    training and validation rows training split it into; DataError for another folder."""
    ds = load_image_folder(folder, meta.image_preprocessing())
    if ds.label_names != meta.labels or len(ds.labels) != meta.dataset.n_train + meta.dataset.n_val:
        raise DataError(
            f"{folder}: {len(ds.labels)} images of {ds.label_names}; {meta.name} was trained on "
            f"{meta.dataset.n_train + meta.dataset.n_val} of {meta.labels}"
        )
    train, val = stratified_split(ds.labels, meta.dataset.val_fraction, meta.dataset.split_seed)
    return ds, train, val


def calibrate_folder(model_dir: Path, meta: ModelMetadata, folder: Path) -> ModelMetadata:
    """Temperature and out-of-distribution score of an image-folder classifier, written into ``model_dir``'s
    graph (an earlier calibration's score replaced); returns the metadata to save."""
    ds, train, val = folder_split(folder, meta)
    a, b = halves(len(val))
    sets = {"train": ds.images[train], "A": ds.images[val[a]], "B": ds.images[val[b]]}
    truth = {"train": ds.labels[train], "A": ds.labels[val[a]], "B": ds.labels[val[b]]}
    odd = odd_inputs(meta)
    sets |= {f"odd: {k}": pixels for k, (pixels, _) in odd.items()}
    sess, feat = scoring_session(model_dir)
    out = {k: logits_and_features(sess, feat, meta, v) for k, v in sets.items()}
    t = fit_temperature(out["A"][0], truth["A"])
    means = chol = None
    if feat is not None:
        train_feats = out["train"][1]
        assert train_feats is not None
        means, chol = fit_mahalanobis(train_feats, truth["train"], len(meta.labels))
        scores = {k: mahalanobis(f, means, chol) for k, (_, f) in out.items() if f is not None}
        component = "mahalanobis"
    else:
        scores = {k: energy_score(lg, 1.0) for k, (lg, _) in out.items()}
        component = "energy"
    held_out = np.concatenate([scores["A"], scores["B"]])  # a folder's validation split is small: all of it
    centre = float(np.median(held_out))
    unit = max(float(np.quantile(held_out, FLAG_QUANTILE)) - centre, 1e-12)
    add_ood_output(model_dir, feat if component == "mahalanobis" else None, means, chol, {component: (centre, unit)})
    folded = took_ood_output(model_dir, meta, sets["B"], out["B"][0])  # logits: export's parity still holds
    (served,) = folded.run([OOD_OUTPUT], {meta.inputs[0].name: normalize(sets["B"], meta.image_preprocessing())})
    np.testing.assert_allclose(served, (scores["B"] - centre) / unit, rtol=1e-3, atol=1e-3)  # the folded score
    meta.calibration = Calibration(
        temperature=t,
        fitted_on=fitted_on("validation half A of the image folder", out["A"][0], truth["A"], len(truth["B"])),
        ece_before={"B": ece(softmax(out["B"][0]), truth["B"])},
        ece_after={"B": ece(softmax(out["B"][0], t), truth["B"])},
        ece_floor={"B": ece_floor(softmax(out["B"][0], t))},
        accuracy={"B": float((out["B"][0].argmax(1) == truth["B"]).mean())},
    )
    meta.ood = OutOfDistribution(
        method=component,
        output=OOD_OUTPUT,
        scaling={component: (centre, unit)},
        threshold=1.0,
        fitted_on=f"{component}: scaled to 0 at the validation split's median and 1 at its {FLAG_QUANTILE:.0%} "
        f"quantile (the threshold; {len(held_out)} images, so flagged_clean is measured where it was fitted, and "
        "its quantile is only as good as that many images make it); no other dataset was given, so nothing chose "
        "the component but the graph's shape",
    )
    meta.ood.figures = {
        "flagged_clean": _flagged(meta, (held_out - centre) / unit, np.concatenate([sets["A"], sets["B"]]), None)
    }
    for kind, (pixels, door) in odd.items():
        meta.ood.figures[f"flagged {kind}"] = _flagged(
            meta, (scores[f"odd: {kind}"] - centre) / unit, pixels, door.oddness
        )
    return meta


def _flagged(meta: ModelMetadata, scores: np.ndarray, pixels: np.ndarray, oddness: np.ndarray | None) -> float:
    """The share of images the service flags (``ModelMetadata.ood_answer``: the score, and the front door's
    verdict where it read the image as a photo)."""
    odd = [None] * len(scores) if oddness is None else [None if np.isnan(o) else float(o) for o in oddness]
    return float(np.mean([meta.ood_answer(float(s), o, p)[1] for s, o, p in zip(scores, odd, pixels, strict=True)]))
