"""Digits drawn on the playground's pad, in process: MNIST validation digits redrawn as a pen draws them on the
pad (service/static/ui-pad.js: a 280-px white square, ink #111, a round pen 22 px wide; the PNG the page sends),
each along its stroke's centre line (scikit-image's skeleton of the digit enlarged tenfold), then per digit model
how many it reads right, flags out of distribution, and reads wrongly without a flag, as the service answers them
(second readings included). Four ways of drawing: filling the pad, as most people draw; small and anywhere on it;
with a thin pen (a stylus pressed lightly: 8 px); with a thick one (a finger on a phone's small pad: 36 px).

    .venv/bin/python -m bench.sketches artifacts/mnist-cnn artifacts/mnist-lenet5 [--n 600] [--front-door REV]
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from skimage.morphology import skeletonize

from bench.frontdoor import add_front_door, read_with_front_door
from bench.odd_inputs import report
from contract.metadata import load_metadata
from export.calibrate import idx_split

REPO = Path(__file__).resolve().parent.parent
PAD, PEN, INK = 280, 22, 17  # service/static/ui-pad.js: the pad's side, its pen's width, its ink's grey (#111)
SUPER = 2  # drawn at twice the size and reduced, so that the stroke's edge is smoothed as a browser's canvas does
SEED = 41
# way of drawing -> (the digit's 28-px frame scaled to this share of the pad, lowest and highest; the pen's width)
WAYS = {
    "filling the pad": ((0.9, 1.0), PEN),
    "small, anywhere": ((0.35, 0.6), PEN),
    "thin pen": ((0.9, 1.0), 8),
    "thick pen": ((0.9, 1.0), 36),
}


def drawn(digit: np.ndarray, share: float, pen: int, shift: tuple[float, float]) -> Image.Image:
    """``digit`` (28x28, white on black) drawn on the pad along its centre line: its frame scaled to ``share`` of
    the pad, moved ``shift`` (x, y: shares of the room left around it, -1 to 1 each way) from the middle, with a
    round pen ``pen`` pixels wide; what the pad sends, decoded."""
    side = max(28, round(share * PAD * SUPER))
    big = np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BILINEAR)) > 127
    room = PAD * SUPER - side
    left, top = room / 2 * (1 + shift[0]), room / 2 * (1 + shift[1])
    pad = Image.new("L", (PAD * SUPER, PAD * SUPER), 255)
    draw, r = ImageDraw.Draw(pad), pen * SUPER / 2
    for y, x in zip(*np.nonzero(skeletonize(big)), strict=True):
        cx, cy = left + x, top + y
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=INK)
    buf = io.BytesIO()
    pad.resize((PAD, PAD), Image.Resampling.LANCZOS).convert("RGB").save(buf, "PNG")
    return Image.open(io.BytesIO(buf.getvalue()))


def sketches(digits: np.ndarray, rng: np.random.Generator) -> dict[str, list[Image.Image]]:
    """Each way of drawing (WAYS) -> ``digits`` (N, 28, 28) drawn that way."""
    out: dict[str, list[Image.Image]] = {}
    for way, ((lo, hi), pen) in WAYS.items():
        anywhere = way.startswith("small")
        out[way] = [
            drawn(d, float(rng.uniform(lo, hi)), pen, tuple(rng.uniform(-1, 1, 2)) if anywhere else (0.0, 0.0))
            for d in digits
        ]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("artifacts", type=Path, nargs="+", help="digit classifiers' folders")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "mnist")
    p.add_argument("--n", type=int, default=600, help="validation digits (each drawn every way)")
    add_front_door(p)
    args = p.parse_args(argv)
    read_with_front_door(args.front_door)
    images, labels, _, val = idx_split(load_metadata(args.artifacts[0]), args.data)
    picked = val[np.random.default_rng(SEED).permutation(len(val))[: args.n]]
    report(args.artifacts, sketches(images[picked, 0], np.random.default_rng(SEED)), labels[picked], "digits")
    return 0


if __name__ == "__main__":
    sys.exit(main())
