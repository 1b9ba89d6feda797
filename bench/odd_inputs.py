"""The image classifiers on the odd inputs (export/odd_images.py: blank pages, noise, printed text, natural
photographs), in process: per kind, how many each artifact lets through (not flagged out of distribution) as the
service answers them, a digit model's second reading at the other polarity included, and why it flags the others
(``ood_reason``, contract/reasons.py, counted per kind); the natural photographs also counted apart before and from
the ``--split``-th (the 69 of before 2026-12-04 and the 98 added then).
``--front-door REV``: with contract/ink.py's find_ink (and contract/page.py, contract/enclosure.py) as they were
at that commit.
``--held-out DIR``: also bench/held_out.py's scenes and things, which no limit was chosen on (``make held-out``).

    .venv/bin/python -m bench.odd_inputs artifacts/mnist-cnn artifacts/mnist-lenet5 [--front-door REV] [--held-out DIR]
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from bench.frontdoor import add_front_door, read_with_front_door
from bench.held_out import held_out_images
from contract.images import both_readings
from contract.metadata import ModelMetadata, load_metadata
from contract.reasons import OodReason
from export.odd_images import odd_images
from export.second_reading import served_answers


def flags(folder: Path, meta: ModelMetadata, images: list[Image.Image]) -> list[OodReason | None]:
    """Why the service would flag each of ``images`` out of distribution (None: it would not)."""
    readings = [both_readings(img, meta.image_preprocessing()) for img in images]
    second = meta.ood is not None and meta.ood.second_reading
    return served_answers(folder, meta, readings, second_reading=second).reasons


def let_through(folder: Path, meta: ModelMetadata, images: list[Image.Image]) -> np.ndarray:
    """Which of ``images`` the service would answer without the out-of-distribution flag."""
    return np.array([why is None for why in flags(folder, meta, images)], dtype=bool)


def answered(folder: Path, meta: ModelMetadata, images: list[Image.Image], truth: np.ndarray) -> str:
    """How the service answers ``images`` of labels ``truth``: the shares read right, flagged out of distribution
    (with the counts of its reasons), and read wrongly without a flag (second readings included where the card
    says so)."""
    readings = [both_readings(img, meta.image_preprocessing()) for img in images]
    second = meta.ood is not None and meta.ood.second_reading
    served = served_answers(folder, meta, readings, second)
    right, wrong_unflagged = served.labels == truth, (served.labels != truth) & ~served.flagged
    why = tally(served.reasons)
    return (
        f"right {right.mean():.1%}, flagged {served.flagged.mean():.1%}{f' ({why})' if why else ''}, "
        f"wrong and not flagged {wrong_unflagged.mean():.1%}"
    )


def tally(reasons: list[OodReason | None]) -> str:
    """The reasons of the flagged answers among ``reasons``, counted, most frequent first."""
    return ", ".join(f"{r} {n}" for r, n in Counter(r for r in reasons if r is not None).most_common())


def report(artifacts: list[Path], sets: dict[str, list[Image.Image]], truth: np.ndarray, noun: str) -> None:
    """For each artifact, one line: how the service answers each set of labelled photos (``answered``)."""
    for folder in artifacts:
        meta = load_metadata(folder)
        counts = [f"{name}: {answered(folder, meta, images, truth)}" for name, images in sets.items()]
        print(f"{folder} ({len(truth)} {noun}): " + "; ".join(counts))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("artifacts", type=Path, nargs="+", help="image classifiers' folders")
    add_front_door(p)
    p.add_argument("--split", type=int, default=69, help="natural photographs counted apart from this one on")
    p.add_argument("--held-out", type=Path, metavar="DIR", help="make held-out's folder: its images too")
    args = p.parse_args(argv)
    read_with_front_door(args.front_door)
    sets = odd_images()
    if args.held_out:
        sets |= held_out_images(args.held_out)
    for folder in args.artifacts:
        meta = load_metadata(folder)
        counts, why = [], []
        for kind, images in sets.items():
            reasons = flags(folder, meta, images)
            through = np.array([r is None for r in reasons], dtype=bool)
            counts.append(f"{kind} {through.sum()} of {len(through)}")
            if kind == "natural photograph":
                head, tail = through[: args.split], through[args.split :]
                counts[-1] += f" ({head.sum()} of the first {len(head)}, {tail.sum()} of the other {len(tail)})"
            why.append(f"{kind}: {tally(reasons)}")
        print(f"{folder}: let through: " + "; ".join(counts))
        print(f"{folder}: flagged, by ood_reason: " + "; ".join(why))
    return 0


if __name__ == "__main__":
    sys.exit(main())
