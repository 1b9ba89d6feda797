"""The confidence of an answer flagged out of distribution (``Calibration.flagged_power``).

Temperature scaling is fitted on half A's clean digits and photos, nearly all of which the model finds typical.
The answers it flags are another population: on photos of a sheet lying on a table, `mnist-cnn` was right on
about 3 in 10 of those it flagged while stating about 80 % (in process, 2026-12-04), where its unflagged
answers stayed calibrated (ECE under 1.5 %). So a flagged answer is read at a temperature that grows with how
far its score lies beyond the threshold, T * (score / threshold) ** p, one power p per model, fitted here by
the likelihood of half A's flagged answers: of its clean images, of its photos of a page (``TRAIN_STYLE``) and,
for a digit model, of the same kind of photos laid on a dark table (``TABLE_STYLE``) and on a white desk
(``LIGHT_TABLE_STYLE``). The flagged clean images, mostly read right, pull the power down (mnist-cnn: 2.55 fitted
on photos alone, 2.15 with them), but the pool is mostly photos on a table, so flagged clean digits come out
under-confident (clean ECE 0.26 -> 0.56 % over HTTP): one power for every population is a compromise. Until
2026-12-05 the desk was left out of the fit, as a style it never saw; half B's desk photos then read ECE 5.1-6.5 %
for the four digit models, and with them in the pool 3.4-5.6 % (docs/REAL-INPUTS.md). The fit and the measurements
read each image once, as the service's first reading (a flagged digit photo the service reads a second time is
measured over HTTP, ``make photos``). The measured sets are half B's: clean, photos in ``EVAL_STYLE``, on a table
and on a white desk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from contract.images import normalize
from contract.metadata import FLAGGED_POWER_MAX, ONNX_FILE, ModelMetadata, flagged_ratio, nothing_written
from contract.photos import EVAL_STYLE, LIGHT_TABLE_STYLE, TABLE_STYLE, TRAIN_STYLE, read_photographs

POWERS = np.linspace(0.0, FLAGGED_POWER_MAX, 321)  # the grid the power is chosen on (steps of 0.05)
MIN_FLAGGED = 20  # fewer flagged half-A answers than this: no power is fitted (0, flagged answers read at T)
Answers = list[tuple[float | None, bool]]


def table_photos(
    meta: ModelMetadata, images: np.ndarray, half_a: np.ndarray | None, half_b: np.ndarray, n: int
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """A digit model's photos of a sheet on a table, read by the front door: name -> (image indices, prepared
    pixels, oddness): ``n`` of half B on a table and on a white desk, and with ``half_a`` the same of half A (the
    fitting sets). Other models: none (their photos are of an object, not of a sheet)."""
    pre = meta.image_preprocessing()
    if pre.fit != "digit":
        return {}
    kinds = [("B table", half_b, EVAL_STYLE, TABLE_STYLE, 7), ("B desk", half_b, EVAL_STYLE, LIGHT_TABLE_STYLE, 8)]
    if half_a is not None:
        kinds += [
            ("A table", half_a, TRAIN_STYLE, TABLE_STYLE, 9),
            ("A desk", half_a, TRAIN_STYLE, LIGHT_TABLE_STYLE, 10),
        ]
    out = {}
    for name, half, style, table, seed in kinds:
        idx = half[:n]
        out[name] = (idx, *read_photographs(images[idx], pre, style, np.random.default_rng(seed), table))
    return out


def ood_answers(meta: ModelMetadata, scores: np.ndarray, pixels: np.ndarray, oddness: np.ndarray | None) -> Answers:
    """Each row's out-of-distribution answer as the service gives it (``ModelMetadata.ood_answer``; ``oddness``:
    the front door's, for photos it read, NaN where it took the image as it is)."""
    odd = [None] * len(scores) if oddness is None else [None if np.isnan(o) else float(o) for o in oddness]
    return [meta.ood_answer(float(s), o, px) for s, o, px in zip(scores, odd, pixels, strict=True)]


def served_session(model_dir: Path) -> ort.InferenceSession:
    """A session of a calibrated artifact's graph, for ``served_run`` (open once per artifact, run per set)."""
    return ort.InferenceSession(str(model_dir / ONNX_FILE), providers=["CPUExecutionProvider"])


def served_run(
    sess: ort.InferenceSession, meta: ModelMetadata, pixels: np.ndarray, batch: int = 500
) -> tuple[np.ndarray, ...]:
    """A calibrated artifact's logits and out-of-distribution scores for uint8 images, as the service runs it."""
    assert meta.ood is not None and meta.ood.output is not None
    pre = meta.image_preprocessing()
    parts = [
        sess.run(["logits", meta.ood.output], {meta.inputs[0].name: normalize(pixels[i : i + batch], pre)})
        for i in range(0, len(pixels), batch)
    ]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]).astype(np.float64)


def fit_power(meta: ModelMetadata, logits: np.ndarray, answers: Answers, labels: np.ndarray) -> float:
    """The power (on ``POWERS``) whose temperatures give the flagged rows' labels the highest likelihood; 0 with
    fewer than MIN_FLAGGED flagged rows."""
    assert meta.calibration is not None and meta.ood is not None
    flagged = np.array([f for _, f in answers], dtype=bool)
    if flagged.sum() < MIN_FLAGGED:
        return 0.0
    z, y = logits[flagged].astype(np.float64), labels[flagged]
    ratios = np.array([flagged_ratio(s, meta.ood.threshold) for (s, f) in answers if f])  # as served
    t = meta.calibration.temperature * ratios[None, :] ** POWERS[:, None]  # (powers, rows)
    scaled = z[None] / t[..., None]
    top = scaled.max(-1, keepdims=True)
    log_p = scaled - top - np.log(np.exp(scaled - top).sum(-1, keepdims=True))
    nll = -log_p[:, np.arange(len(y)), y].mean(1)
    return float(POWERS[int(np.argmin(nll))])


def calibrate_flagged(
    model_dir: Path,
    meta: ModelMetadata,
    sets: dict[str, np.ndarray],
    truth: dict[str, np.ndarray],
    door: dict[str, np.ndarray],
) -> float:
    """``fit_power`` on the flagged rows of half A: its clean images, its photos and (a digit model's) its photos on
    a table and on a white desk, read through ``model_dir``'s served graph, leaving out fields with nothing written
    (served at 1/K); the power to store in ``meta.calibration``."""
    sess, logits, answers, labels = served_session(model_dir), [], [], []
    for name in ("A clean", "A photos", "A table", "A desk"):
        if name in sets:
            px = sets[name]
            keep = np.array([not nothing_written(p) for p in px], dtype=bool)  # the rest is 1/K whatever p is
            lg, scores = served_run(sess, meta, px[keep])
            logits.append(lg)
            answers += ood_answers(meta, scores, px[keep], None if name not in door else door[name][keep])
            labels.append(truth[name][keep])
    return fit_power(meta, np.concatenate(logits), answers, np.concatenate(labels))
