"""Digits marked as people mark them, in process: MNIST validation digits photographed (EVAL_STYLE, the whole mark
in the frame) alone, circled in the same pen as a teacher marks an answer, inside a box as on a form, written on a
box's bottom line, and circled tightly enough to touch; per digit model, how many it reads right, flags out of
distribution, and reads wrongly without a flag, as the service answers them (second readings included).
``--front-door REV``: with contract/ink.py's find_ink (and contract/page.py, contract/enclosure.py) as at that
commit.

    .venv/bin/python -m bench.circled artifacts/mnist-cnn artifacts/mnist-lenet5 [--n 300] [--front-door REV]
"""

from __future__ import annotations

import argparse
import io
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from bench.frontdoor import add_front_door, read_with_front_door
from bench.odd_inputs import report
from contract.metadata import load_metadata
from contract.photos import EVAL_STYLE, render_digit_photo
from export.calibrate import idx_split

REPO = Path(__file__).resolve().parent.parent
SIDE = 56  # the canvas a 28x28 digit is marked on, before it is photographed: room for the mark's corners to turn
MARK = 44  # the mark's box: a few pixels clear of the digit's 28
SEED = 31
# the marked canvas is photographed as a digit would be, but never larger than the frame (render_digit_photo
# scales a 28-px canvas's 20 px to digit_fraction of the frame): a user photographs the whole circle
MARKS = ("alone", "circled", "boxed", "on its line", "circled tight")
STYLE = replace(EVAL_STYLE, digit_fraction=(EVAL_STYLE.digit_fraction[0], 0.95 * 20 / 28))


def marked(digit: np.ndarray, mark: str, rng: np.random.Generator) -> np.ndarray:
    """``digit`` (28x28, white on black) in the middle of a SIDE-px canvas, with a mark (MARKS) drawn round it in
    strokes as wide as MNIST's (2-3 px): a circle or box a few pixels clear of the digit's frame, a box whose bottom
    line is the digit's foot, or a circle 3 px outside the digit's longer side, touching or crossing its ends."""
    canvas = Image.new("L", (SIDE, SIDE), 0)
    canvas.paste(Image.fromarray(digit), ((SIDE - 28) // 2, (SIDE - 28) // 2))
    # the mark's place and pen are drawn for every digit, alone too, so that the photo's own draws that follow are
    # the same for a digit alone, circled and boxed
    edge = (SIDE - MARK) // 2
    lo, hi = edge + int(rng.integers(1, 4)), SIDE - 1 - edge - int(rng.integers(1, 4))
    width = int(rng.integers(2, 4))
    draw = ImageDraw.Draw(canvas)
    if mark in ("circled", "boxed"):
        shape = draw.ellipse if mark == "circled" else draw.rectangle
        shape((lo, lo, hi, hi), outline=255, width=width)
    elif mark != "alone":  # marks that touch the digit, drawn from its own frame
        rows, cols = np.nonzero(np.asarray(canvas) > 127)
        top, bottom, left, right = rows.min(), rows.max(), cols.min(), cols.max()
        if mark == "on its line":  # a form's box whose bottom line the digit is written on
            draw.rectangle((left - 6, top - 6, right + 6, bottom), outline=255, width=width)
        else:  # "circled tight": a circle round the digit's middle that touches or crosses its ends
            cy, cx, r = (top + bottom) / 2, (left + right) / 2, max(bottom - top, right - left) / 2 + 3
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=255, width=width)
    return np.asarray(canvas)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("artifacts", type=Path, nargs="+", help="digit classifiers' folders")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "mnist")
    p.add_argument("--n", type=int, default=300, help="validation digits (each photographed alone and under each mark)")
    add_front_door(p)
    args = p.parse_args(argv)
    read_with_front_door(args.front_door)
    images, labels, _, val = idx_split(load_metadata(args.artifacts[0]), args.data)
    picked = val[: args.n]
    photos: dict[str, list[Image.Image]] = {}
    for mark in MARKS:
        rng = np.random.default_rng(SEED)  # the same photo of each digit, but for the mark
        photos[mark] = [
            Image.open(io.BytesIO(render_digit_photo(marked(images[i, 0], mark, rng), rng, STYLE))) for i in picked
        ]
    report(args.artifacts, photos, labels[picked], "digits")
    return 0


if __name__ == "__main__":
    sys.exit(main())
