"""Garments of every colour, in process: Fashion-MNIST validation items photographed (EVAL_STYLE) as coloured,
light and white garments on a light backdrop (a white T-shirt on a white sheet is what a user sends; `make photos`
draws colours in [0, 230) only); per garment model, how many it reads right, flags out of distribution, and
reads wrongly without a flag, as the service answers them. ``--thumbnail PX``: the coloured ones also shrunk to PX
pixels a side (a shop's thumbnail); ``--front-door REV``: read with contract/ink.py as it was at REV.

    .venv/bin/python -m bench.garments artifacts/fashion-cnn artifacts/fashion-resnet [--n 300] [--thumbnail 48]
"""

from __future__ import annotations

import argparse
import io
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from bench.frontdoor import add_front_door, read_with_front_door
from bench.odd_inputs import report
from contract.metadata import load_metadata
from contract.photos import EVAL_STYLE, photograph
from export.calibrate import idx_split

REPO = Path(__file__).resolve().parent.parent
SEED = 5
# each channel of the garment's colour in [low, high); the backdrop is grey 234-250 (contract/photos.py)
COLOURS = {"coloured": (0, 230), "light": (200, 235), "white": (235, 256)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("artifacts", type=Path, nargs="+", help="garment classifiers' folders")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "fashion-mnist")
    p.add_argument("--n", type=int, default=300, help="validation items (each photographed in every colour)")
    p.add_argument("--thumbnail", type=int, action="append", default=[], metavar="PX", help="the coloured at PX too")
    add_front_door(p)
    args = p.parse_args(argv)
    read_with_front_door(args.front_door)
    images, labels, _, val = idx_split(load_metadata(args.artifacts[0]), args.data)
    picked = val[: args.n]
    photos: dict[str, list[Image.Image]] = {}
    for name, colours in COLOURS.items():
        rng, style = np.random.default_rng(SEED), replace(EVAL_STYLE, garment=colours)
        photos[name] = [Image.open(io.BytesIO(photograph(images[i, 0], "contain", rng, style))) for i in picked]
    for side in args.thumbnail:
        photos[f"coloured, {side} px"] = [im.resize((side, side), Image.Resampling.BOX) for im in photos["coloured"]]
    report(args.artifacts, photos, labels[picked], "garments")
    return 0


if __name__ == "__main__":
    sys.exit(main())
