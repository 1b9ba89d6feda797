"""The digit models' tuning set, in process: 3,000 EVAL_STYLE photos of MNIST validation digits (seed 777, which
neither `make photos` (2027), calibration (5) nor export/second_reading.py (6) uses), read through the front door
and each artifact's graph, beside its clean validation accuracy; then with the second reading of a photo the model
flags (contract.images.second_reading_kept, which the service takes where model.json's ood.second_reading says
so); with two or more artifacts, the photos they misread in common.

    .venv/bin/python -m bench.tuning artifacts/mnist-cnn artifacts/mnist-lenet5

The front-door and retraining figures on "tuning photos" in docs/REAL-INPUTS.md come from here. Rendering takes
~1.5 minutes on two processes; the answers are the front door's and the graph's, so a change to either shows here
first.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from contract.metadata import load_metadata
from contract.photos import EVAL_STYLE, readings_in_chunks
from export.calibrate import idx_split
from export.evaluate import predict_images
from export.second_reading import served_labels

REPO = Path(__file__).resolve().parent.parent
SEED, N, CHUNK = 777, 3000, 500


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("artifacts", type=Path, nargs="+", help="digit classifiers' folders")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "mnist")
    args = p.parse_args(argv)
    meta = load_metadata(args.artifacts[0])
    images, labels, _, val = idx_split(meta, args.data)
    pick = val[np.random.default_rng(SEED).permutation(len(val))[:N]]
    seeds = [SEED * 1000 + i for i in range(0, len(pick), CHUNK)]
    readings = readings_in_chunks(images[pick], meta.image_preprocessing(), EVAL_STYLE, CHUNK, seeds)
    # photos already read by the front door: (N, 1, 28, 28), which predict_images takes as they are
    photos = np.stack([first.pixels for first, _ in readings])
    wrong = {}
    for folder in args.artifacts:
        m = load_metadata(folder)
        wrong[folder] = predict_images(folder, photos, m) != labels[pick]
        clean = predict_images(folder, images[val], m) != labels[val]
        served, twice, kept = served_labels(folder, m, readings, second_reading=True)
        print(
            f"{folder}: tuning photos {100 * (1 - wrong[folder].mean()):.2f} %, "
            f"clean validation {100 * (1 - clean.mean()):.2f} % ({clean.sum()} errors / {len(val)}); "
            f"with second readings: {100 * (served == labels[pick]).mean():.2f} % ({twice} photos read twice, "
            f"{kept} second readings kept; served: {'yes' if m.ood and m.ood.second_reading else 'no'})"
        )
    if len(wrong) > 1:
        print(f"misread by all: {np.logical_and.reduce(list(wrong.values())).sum()} of {N}")
        for folder, w in wrong.items():
            others = np.logical_or.reduce([v for f, v in wrong.items() if f != folder])
            print(f"misread by {folder} alone: {(w & ~others).sum()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
