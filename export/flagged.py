"""The temperatures one T does not fit: a sheet cut out of a table (``Calibration.table_temperature``) and an answer
flagged out of distribution (``Calibration.flagged_power``).

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
for the four digit models, and with them in the pool 3.4-5.6 % (docs/REAL-INPUTS.md).

Unflagged answers on a table are over-confident at T too (mnist-rbf: right 93.0 % of the time at a stated 95.3 %
on half B's table photos), and a power on flagged answers cannot mend them. The front door knows when it cut a
sheet out of a table (``Reading.on_table``), so a digit model reads those photos at a temperature of its own,
fitted by likelihood on half A's unflagged such photos (on a dark table and on a white desk), and the power is
then fitted on top of each flagged row's own base temperature. One temperature for every photo was tried first and
not kept: pulled by the tables, it made photos of a page less well calibrated (docs/REAL-INPUTS.md).

The fit and the measurements read each image once, as the service's first reading (a flagged digit photo the
service reads a second time is measured over HTTP, ``make photos``). The measured sets are half B's: clean,
photos in ``EVAL_STYLE``, on a table and on a white desk."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from contract.images import normalize
from contract.metadata import FLAGGED_POWER_MAX, ONNX_FILE, ModelMetadata, flagged_ratio, nothing_written, softmax
from contract.photos import EVAL_STYLE, LIGHT_TABLE_STYLE, TABLE_STYLE, TRAIN_STYLE, Door, read_photographs

log = logging.getLogger(__name__)
POWERS = np.linspace(0.0, FLAGGED_POWER_MAX, 321)  # the grid the power is chosen on (steps of 0.05)
MIN_WRONG = 5  # rows answered wrong that a temperature is fitted on at least
MIN_FLAGGED = 20  # fewer flagged half-A answers than this: no power is fitted (0, flagged answers read at T)
MIN_TABLE = 100  # fewer unflagged half-A photos cut out of a table than this: no table temperature (read at T)
Answers = list[tuple[float | None, bool]]


def table_photos(
    meta: ModelMetadata, images: np.ndarray, half_a: np.ndarray | None, half_b: np.ndarray, n: int
) -> dict[str, tuple[np.ndarray, np.ndarray, Door]]:
    """A digit model's photos of a sheet on a table, read by the front door: name -> (image indices, prepared
    pixels, what the front door found): ``n`` of half B on a table and on a white desk, and with ``half_a`` the
    same of half A (the fitting sets). Other models: none (their photos are of an object, not of a sheet)."""
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


def ood_answers(meta: ModelMetadata, scores: np.ndarray, pixels: np.ndarray, door: Door | None) -> Answers:
    """Each row's out-of-distribution answer as the service gives it (``ModelMetadata.ood_answer``; ``door``:
    what the front door found of photos it read; None: images it took as they are)."""
    odd = [None] * len(scores) if door is None else [None if np.isnan(o) else float(o) for o in door.oddness]
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


def nll(logits: np.ndarray, labels: np.ndarray, t: float) -> float:
    return float(-np.log(softmax(logits, t)[np.arange(len(labels)), labels] + 1e-12).mean())


def unfitted(where: str, logits: np.ndarray, labels: np.ndarray) -> str | None:
    """Why ``fit_temperature`` kept T = 1 on ``where``'s logits and labels, for the card; None if it fitted one."""
    wrong = int((logits.argmax(1) != labels).sum())
    if wrong >= MIN_WRONG:
        return None
    return f"not fitted ({where}: {len(labels)} inputs, {wrong} answered wrong; {MIN_WRONG} needed), T = 1"


def fitted_on(where: str, logits: np.ndarray, labels: np.ndarray, measured: int) -> str:
    """The card's ``fitted_on`` for a temperature fitted by ``fit_temperature`` on ``where``'s logits and labels:
    on how many inputs, or that it was not fitted and why, and how many inputs the ECE was measured on."""
    fit = unfitted(where, logits, labels) or f"{where} ({len(labels)} inputs)"
    return f"{fit}; ECE measured on half B's {measured}"


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """argmin_T NLL(softmax(logits / T)) by golden-section search on log T in [1/20, 20] (NLL is unimodal in T);
    1 (logged) where fewer than MIN_WRONG rows are answered wrong: with none, the likelihood only grows as T
    falls, and a new user's 21 rows, all right, had set T = 0.13 and served probabilities of 1.0."""
    why = unfitted("validation", logits, labels)
    if why is not None:
        log.warning("temperature %s", why)
        return 1.0
    lo, hi = np.log(0.05), np.log(20.0)
    g = (np.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = nll(logits, labels, np.exp(a)), nll(logits, labels, np.exp(b))
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = nll(logits, labels, np.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = nll(logits, labels, np.exp(b))
    return float(np.exp((lo + hi) / 2))


def fit_power(
    meta: ModelMetadata, logits: np.ndarray, answers: Answers, labels: np.ndarray, on_table: np.ndarray | None = None
) -> float:
    """The power (on ``POWERS``) whose temperatures give the flagged rows' labels the highest likelihood (each
    row's base temperature as served: ``ModelMetadata.temperatures`` with ``on_table``); 0 with fewer than
    MIN_FLAGGED flagged rows."""
    assert meta.calibration is not None and meta.ood is not None
    flagged = np.array([f for _, f in answers], dtype=bool)
    if flagged.sum() < MIN_FLAGGED:
        return 0.0
    z, y = logits[flagged].astype(np.float64), labels[flagged]
    ratios = np.array([flagged_ratio(s, meta.ood.threshold) for (s, f) in answers if f])  # as served
    base = meta.temperatures(len(logits), on_table=on_table)[flagged, 0]
    t = base[None, :] * ratios[None, :] ** POWERS[:, None]  # (powers, rows)
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
    door: dict[str, Door],
) -> None:
    """Half A's clean images, photos and (a digit model's) photos on a table and on a white desk, read through
    ``model_dir``'s served graph, leaving out fields with nothing written (served at 1/K), set
    ``meta.calibration``'s table temperature (``fit_table_temperature``), then its power (``fit_power``, with
    that temperature as the base of the rows it applies to)."""
    assert meta.calibration is not None
    sess, logits, answers, labels, on_table = served_session(model_dir), [], [], [], []
    for name in ("A clean", "A photos", "A table", "A desk"):
        if name in sets:
            px = sets[name]
            keep = np.array([not nothing_written(p) for p in px], dtype=bool)  # the rest is 1/K whatever p is
            lg, scores = served_run(sess, meta, px[keep])
            logits.append(lg)
            seen = door[name][keep] if name in door else None
            answers += ood_answers(meta, scores, px[keep], seen)
            labels.append(truth[name][keep])
            on_table.append(np.zeros(len(lg), dtype=bool) if seen is None else seen.on_table)
    z, y, tables = np.concatenate(logits), np.concatenate(labels), np.concatenate(on_table)
    meta.calibration.table_temperature = fit_table_temperature(z, answers, y, tables)
    meta.calibration.flagged_power = fit_power(meta, z, answers, y, tables)


def fit_table_temperature(
    logits: np.ndarray, answers: Answers, labels: np.ndarray, on_table: np.ndarray
) -> float | None:
    """The temperature of the answers not flagged among photos of a sheet the front door cut out of a table
    (``fit_temperature``: the likelihood of their labels); None with fewer than MIN_TABLE such rows."""
    rows = on_table & ~np.array([f for _, f in answers], dtype=bool)
    if rows.sum() < MIN_TABLE:
        return None
    return fit_temperature(logits[rows], labels[rows])
