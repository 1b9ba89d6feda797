"""Two digits side by side (a number, where one digit is asked for), in process: pairs of MNIST validation digits
written with a space between them (1-8 px of MNIST's 28, as people space the digits of a number) or touching,
photographed (EVAL_STYLE, on a page) and drawn on the playground's pad (bench/sketches.py's pen, the pair
filling the pad's width); per digit model, how many it lets through without the out-of-distribution flag, as the
service answers them (second readings included). A digit model that answers one digit for two is wrong whichever
it names, so an honest one flags them. The same left digits alone, written and photographed the same way, are the
control: how the model answers one digit.

    .venv/bin/python -m bench.pairs artifacts/mnist-cnn artifacts/mnist-lenet5 [--n 300] [--front-door REV]
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from bench.frontdoor import add_front_door, read_with_front_door
from bench.odd_inputs import answered, let_through
from bench.sketches import PEN, drawn
from contract.metadata import load_metadata
from contract.photos import EVAL_STYLE, render_digit_photo
from export.calibrate import idx_split

REPO = Path(__file__).resolve().parent.parent
SEED = 47
GAPS = {"spaced": (1, 8), "touching": (0, 0)}  # px of MNIST's 28 between the two digits' ink


def side_by_side(digits: list[np.ndarray], gap: int) -> np.ndarray:
    """28x28 digits (white on black), each cut to the columns its ink spans, written in a row ``gap`` px apart: a
    strip 28 rows high."""
    cut = []
    for digit in digits:
        cols = np.flatnonzero(digit.max(axis=0) > 40)
        cut.append(digit[:, cols[0] : cols[-1] + 1] if cols.size else digit)
    spaced = [np.pad(c, ((0, 0), (0, gap))) for c in cut[:-1]] + cut[-1:]
    return np.concatenate(spaced, axis=1)


def pair(left: np.ndarray, right: np.ndarray, gap: int) -> np.ndarray:
    """Two 28x28 digits (white on black) side by side, ``gap`` px apart, in the middle of a square as wide as
    MNIST's frame around both (the pair 20 rows high, as a digit is)."""
    strip = side_by_side([left, right], gap)
    side = max(strip.shape[1] + 8, 28)
    out = np.zeros((side, side), np.uint8)
    top, x = (side - 28) // 2, (side - strip.shape[1]) // 2
    out[top : top + 28, x : x + strip.shape[1]] = strip
    return out


def _photo(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    return Image.open(io.BytesIO(render_digit_photo(digit, rng, EVAL_STYLE)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("artifacts", type=Path, nargs="+", help="digit models' folders")
    p.add_argument("--n", type=int, default=300, help="pairs of each spacing, written each way")
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "mnist")
    add_front_door(p)
    args = p.parse_args(argv)
    read_with_front_door(args.front_door)
    metas = {folder: load_metadata(folder) for folder in args.artifacts}
    images, labels, _, val = idx_split(next(iter(metas.values())), args.data)
    rng = np.random.default_rng(args.seed)
    lefts, rights = rng.choice(val, args.n), rng.choice(val, args.n)
    sets: dict[str, list[Image.Image]] = {}
    for spacing, (lo, hi) in GAPS.items():
        pairs = [
            pair(images[i, 0], images[j, 0], int(rng.integers(lo, hi + 1))) for i, j in zip(lefts, rights, strict=True)
        ]
        sets[f"{spacing}, photographed"] = [_photo(d, rng) for d in pairs]
        sets[f"{spacing}, on the pad"] = [drawn(d, float(rng.uniform(0.9, 1.0)), PEN, (0.0, 0.0)) for d in pairs]
    alone = {
        "photographed": [_photo(images[i, 0], rng) for i in lefts],
        "on the pad": [drawn(images[i, 0], float(rng.uniform(0.9, 1.0)), PEN, (0.0, 0.0)) for i in lefts],
    }
    for folder, meta in metas.items():
        counts = [f"{kind} {int(let_through(folder, meta, imgs).sum())}" for kind, imgs in sets.items()]
        print(f"{folder.name}: pairs let through (of {args.n} each): " + ", ".join(counts))
        control = [f"{way}: {answered(folder, meta, imgs, labels[lefts])}" for way, imgs in alone.items()]
        print(f"{folder.name}: the left digits alone: " + "; ".join(control))
    return 0


if __name__ == "__main__":
    sys.exit(main())
