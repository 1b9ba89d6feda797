"""Dots of the pen and flat canvases at the front door (contract/ink.py: is_dot, FLAT_CANVAS), in process:

1. dots tapped on the playground's pad (8-90 px across, at three places): how many each model answers unflagged;
2. photographed dots (EVAL_STYLE photos of disks 4-12 px across in a 28-px frame): taken for dots, let through;
3. validation digits photographed (EVAL_STYLE on a page, on a table, on a white desk) and drawn on the pad
   (bench/sketches.py's four ways): how many are taken for dots;
4. the photos brightened 1.3x and 1.5x (paper clipped to white): how many pass for a flat canvas, and each
   model's right answers and flags with the canvas rule and without it.

    .venv/bin/python -m bench.canvas artifacts/mnist-cnn artifacts/mnist-lenet5 [--n 1500] [--seed 777]
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

import contract.ink
from bench.odd_inputs import let_through
from bench.sketches import PAD, WAYS, drawn
from contract.images import both_readings
from contract.ink import find_ink
from contract.metadata import load_metadata
from contract.photos import EVAL_STYLE, LIGHT_TABLE_STYLE, on_table, render_digit_photo
from export.calibrate import idx_split
from export.second_reading import served_answers

REPO = Path(__file__).resolve().parent.parent


def is_dot(img: Image.Image) -> bool:
    """Does the front door take this image's ink for a dot of the pen?"""
    return find_ink(img.convert("L")).dot


def pad_dots() -> list[Image.Image]:
    out = []
    for width in (8, 12, 16, 22, 30, 36, 44, 60, 90):
        for x, y in ((140, 140), (60, 200), (220, 50)):
            pad = Image.new("L", (PAD, PAD), 255)
            r = width / 2
            ImageDraw.Draw(pad).ellipse((x - r, y - r, x + r, y + r), fill=17)
            out.append(pad.convert("RGB"))
    return out


def photographed_dots(rng: np.random.Generator, n: int = 60) -> list[Image.Image]:
    out = []
    for _ in range(n):
        frame = Image.new("L", (28, 28), 0)
        r, c = rng.uniform(2, 6), 14 + rng.uniform(-3, 3)
        ImageDraw.Draw(frame).ellipse((c - r, c - r, c + r, c + r), fill=255)
        out.append(Image.open(io.BytesIO(render_digit_photo(np.asarray(frame), rng, EVAL_STYLE))))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("artifacts", type=Path, nargs="+")
    p.add_argument("--n", type=int, default=1500, help="validation digits photographed each way")
    p.add_argument("--seed", type=int, default=777)
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "mnist")
    args = p.parse_args(argv)
    metas = {folder: load_metadata(folder) for folder in args.artifacts}
    images, labels, _, val = idx_split(next(iter(metas.values())), args.data)
    rng = np.random.default_rng(args.seed)
    dots, shot = pad_dots(), photographed_dots(rng)
    for folder, meta in metas.items():
        pad, photos = int(let_through(folder, meta, dots).sum()), int(let_through(folder, meta, shot).sum())
        print(f"{folder.name}: pad dots let through {pad} of {len(dots)}; photographed dots {photos} of {len(shot)}")
    print(f"taken for dots: pad dots {sum(map(is_dot, dots))} of {len(dots)}, photographed {sum(map(is_dot, shot))}")
    idx = rng.choice(val, args.n, replace=False)
    counts: dict[str, int] = {}
    for i in idx:
        photo = render_digit_photo(images[i, 0], rng, EVAL_STYLE)
        table, desk = on_table(photo, rng), on_table(photo, rng, LIGHT_TABLE_STYLE)
        for kind, data in (("page", photo), ("table", table), ("desk", desk)):
            counts[kind] = counts.get(kind, 0) + is_dot(Image.open(io.BytesIO(data)))
    for way, (share, pen) in WAYS.items():
        for i in idx[:300]:
            sketch = drawn(images[i, 0], rng.uniform(*share), pen, (rng.uniform(-1, 1), rng.uniform(-1, 1)))
            counts[way] = counts.get(way, 0) + is_dot(sketch)
    found = ", ".join(f"{k} {v}" for k, v in counts.items())
    print(f"validation digits taken for dots: {found} (of {args.n} photos each way, 300 sketches each way)")
    bright_idx = idx[:300]
    for gain in (1.3, 1.5):
        shots = []
        for i in bright_idx:
            rgb = np.asarray(Image.open(io.BytesIO(render_digit_photo(images[i, 0], rng, EVAL_STYLE))).convert("RGB"))
            shots.append(Image.fromarray(np.clip(rgb * gain, 0, 255).astype(np.uint8)))
        flat = sum(find_ink(s.convert("L")).drawn for s in shots)
        for folder, meta in metas.items():
            line, rule = [], contract.ink.FLAT_CANVAS
            second = meta.ood is not None and meta.ood.second_reading
            for bar in (rule, 1.01):  # the rule's bar, and one no image reaches
                contract.ink.FLAT_CANVAS = bar
                readings = [both_readings(s, meta.image_preprocessing()) for s in shots]
                served, flagged = served_answers(folder, meta, readings, second)[:2]
                line.append(f"right {np.mean(served == labels[bright_idx]):.3f}, flagged {np.mean(flagged):.3f}")
            contract.ink.FLAT_CANVAS = rule
            head = f"{folder.name}, photos x{gain} ({flat} of {len(shots)} flat)"
            print(f"{head}: with the rule {line[0]}; without {line[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
