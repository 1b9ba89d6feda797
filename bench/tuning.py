"""The digit models' tuning set, in process: 3,000 EVAL_STYLE photos of MNIST validation digits (seed 777, which
neither `make photos` (2027) nor calibration (5) uses), read through the front door and each artifact's graph,
beside its clean validation accuracy; then as the service answers them, with the second reading of a photo the
model flags (contract.images.second_reading_kept); with two or more artifacts, the photos they misread in common.

    .venv/bin/python -m bench.tuning artifacts/mnist-cnn artifacts/mnist-lenet5

The README's front-door and retraining figures on "tuning photos" come from here. Rendering takes ~1.5 minutes
on two processes; the answers are the front door's and the graph's, so a change to either shows here first.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import cast

import numpy as np
import onnxruntime as ort

from contract.images import Reading, normalize, second_reading_kept
from contract.metadata import ModelMetadata, load_metadata
from contract.photos import EVAL_STYLE, readings_in_chunks
from export.calibrate import idx_split
from export.evaluate import predict_images

REPO = Path(__file__).resolve().parent.parent
SEED, N, CHUNK = 777, 3000, 500


def read_twice(
    folder: Path, meta: ModelMetadata, readings: list[tuple[Reading, Reading | None]]
) -> tuple[np.ndarray, int, int]:
    """The served label of each photo (the service's classify route: a flagged first reading replaced by its second
    reading when that is kept), how many photos were read twice and how many second readings were kept."""
    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    pre, ood = meta.image_preprocessing(), meta.ood
    names = [meta.outputs[0].name] + ([ood.output] if ood is not None and ood.output else [])

    def answers(rows: list[Reading]) -> tuple[np.ndarray, list[tuple[float | None, bool]]]:
        outs = sess.run(names, {meta.inputs[0].name: normalize(np.stack([r.pixels for r in rows]), pre)})
        scores = [float(v) for v in outs[1]] if len(outs) > 1 else [None] * len(rows)
        blank = [bool(r.pixels.max() == r.pixels.min()) for r in rows]
        return outs[0].argmax(1), [
            meta.ood_answer(s, r.oddness, b) for s, r, b in zip(scores, rows, blank, strict=True)
        ]

    labels, first = answers([r for r, _ in readings])
    again = [i for i, (_, flagged) in enumerate(first) if flagged and readings[i][1] is not None]
    if not again or ood is None:
        return labels, 0, 0
    second_labels, second = answers([cast(Reading, readings[i][1]) for i in again])
    kept = [j for j, answer in enumerate(second) if second_reading_kept(ood.threshold, *answer)]
    labels = labels.copy()
    labels[[again[j] for j in kept]] = second_labels[kept]
    return labels, len(again), len(kept)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("artifacts", type=Path, nargs="+", help="digit classifiers' folders")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "mnist")
    args = p.parse_args(argv)
    meta = load_metadata(args.artifacts[0])
    images, labels, _, val = idx_split(meta, args.data)
    pick = val[np.random.default_rng(SEED).permutation(len(val))[:N]]
    seeds = [SEED * 1000 + i for i in range(0, N, CHUNK)]
    readings = readings_in_chunks(images[pick], meta.image_preprocessing(), EVAL_STYLE, CHUNK, seeds)
    # photos already read by the front door: (N, 1, 28, 28), which predict_images takes as they are
    photos = np.stack([first.pixels for first, _ in readings])
    wrong = {}
    for folder in args.artifacts:
        m = load_metadata(folder)
        wrong[folder] = predict_images(folder, photos, m) != labels[pick]
        clean = predict_images(folder, images[val], m) != labels[val]
        served, twice, kept = read_twice(folder, m, readings)
        print(
            f"{folder}: tuning photos {100 * (1 - wrong[folder].mean()):.2f} %, "
            f"clean validation {100 * (1 - clean.mean()):.2f} % ({clean.sum()} errors / {len(val)}); "
            f"as served, with second readings: {100 * (served == labels[pick]).mean():.2f} % "
            f"({twice} photos read twice, {kept} second readings kept)"
        )
    if len(wrong) > 1:
        print(f"misread by all: {np.logical_and.reduce(list(wrong.values())).sum()} of {N}")
        for folder, w in wrong.items():
            others = np.logical_or.reduce([v for f, v in wrong.items() if f != folder])
            print(f"misread by {folder} alone: {(w & ~others).sum()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
