"""Whether a digit classifier's served answers read a flagged photo a second time at the other polarity
(contract.images.second_reading_kept): only where that mends more answers than it breaks, which depends on how
well the model's out-of-distribution score tells a digit from the paper around it. Measured on 3,000 EVAL_STYLE
photos of validation half A (seed 6, which no other measurement uses) and written into model.json's
``ood.second_reading``, with the counts in ``ood.figures``; export/calibrate.py runs it after calibrating, or
alone on a calibrated artifact:

    python -m export.calibrate artifacts/mnist-cnn --data ../shared/data/mnist --second-reading
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, cast

import numpy as np
import onnxruntime as ort

from contract.images import Reading, normalize, second_reading_kept
from contract.metadata import ModelMetadata
from contract.photos import EVAL_STYLE, readings_in_chunks
from contract.reasons import OodReason, beyond, flag_reason

N, CHUNK, SEED = 3000, 500, 6


def served_labels(
    folder: Path, meta: ModelMetadata, readings: list[tuple[Reading, Reading | None]], second_reading: bool
) -> tuple[np.ndarray, int, int]:
    """The label the service answers for each photo (with ``second_reading``, a flagged first reading replaced by
    its second reading when that is kept), how many photos were read twice and how many second readings kept."""
    served = served_answers(folder, meta, readings, second_reading)
    return served.labels, served.twice, served.kept


class Served(NamedTuple):
    labels: np.ndarray
    flagged: np.ndarray  # bool: flagged out of distribution
    twice: int  # photos read a second time
    kept: int  # second readings kept
    reasons: list[OodReason | None]  # why each is flagged (contract/reasons.py), as the service says


def served_answers(
    folder: Path, meta: ModelMetadata, readings: list[tuple[Reading, Reading | None]], second_reading: bool
) -> Served:
    """``served_labels``, and beside the labels whether the service flags each answer out of distribution, and
    why (a flagged answer is its first reading's: a second reading is kept only where it is not flagged)."""
    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    pre, ood = meta.image_preprocessing(), meta.ood
    names = [meta.outputs[0].name] + ([ood.output] if ood is not None and ood.output else [])

    def answers(rows: list[Reading]) -> tuple[np.ndarray, list[tuple[float | None, bool]]]:
        outs = sess.run(names, {meta.inputs[0].name: normalize(np.stack([r.pixels for r in rows]), pre)})
        scores = [float(v) for v in outs[1]] if len(outs) > 1 else [None] * len(rows)
        return outs[0].argmax(1), [meta.ood_answer(s, r.oddness, r.pixels) for s, r in zip(scores, rows, strict=True)]

    labels, first = answers([r for r, _ in readings])
    flagged = np.array([f for _, f in first], dtype=bool)
    reasons = [
        flag_reason(f, beyond(ood, s), r.oddness, r.odd_reason, r.pixels)
        for (r, _), (s, f) in zip(readings, first, strict=True)
    ]
    again = [i for i, (_, f) in enumerate(first) if f and readings[i][1] is not None]
    if not second_reading or not again or ood is None:
        return Served(labels, flagged, 0, 0, reasons)
    second_labels, second = answers([cast(Reading, readings[i][1]) for i in again])
    kept = [j for j, answer in enumerate(second) if second_reading_kept(ood.threshold, *answer)]
    labels = labels.copy()
    labels[[again[j] for j in kept]] = second_labels[kept]
    flagged[[again[j] for j in kept]] = False
    for j in kept:
        reasons[again[j]] = None
    return Served(labels, flagged, len(again), len(kept), reasons)


def decide(model_dir: Path, meta: ModelMetadata, images: np.ndarray, labels: np.ndarray, half_a: np.ndarray) -> None:
    """Set ``meta.ood.second_reading`` for a calibrated digit classifier (the fit that reads pen strokes) from its
    half-A photos (``half_a``: positions in ``images``); other models keep it off."""
    pre = meta.image_preprocessing()
    if meta.ood is None or pre.fit != "digit" or not pre.white_on_black:
        return
    pick = half_a[:N]
    seeds = [SEED * 1000 + i for i in range(0, len(pick), CHUNK)]  # a small data set has fewer than N photos
    readings = readings_in_chunks(images[pick], pre, EVAL_STYLE, CHUNK, seeds)
    truth = labels[pick]
    right = served_labels(model_dir, meta, readings, second_reading=False)[0] == truth
    served, twice, kept = served_labels(model_dir, meta, readings, second_reading=True)
    mended, broke = int(((served == truth) & ~right).sum()), int(((served != truth) & right).sum())
    meta.ood.second_reading = mended > broke
    meta.ood.figures |= {
        "second_reading_photos_read_twice": twice / len(pick),
        "second_reading_kept": float(kept),
        "second_reading_mended": float(mended),
        "second_reading_broke": float(broke),
    }
