"""Garments of every colour, in process: Fashion-MNIST validation items photographed (EVAL_STYLE) as coloured,
light and white garments on a light backdrop (a white T-shirt on a white sheet is what a user sends; `make photos`
draws colours in [0, 230) only); per garment model, how many it reads right, flags out of distribution, and
reads wrongly without a flag, as the service answers them. ``--thumbnail PX``: the coloured ones also shrunk to PX
pixels a side (a shop's thumbnail); ``--cut-outs``: the same items cut out on transparency (a shop's PNG), white,
light, coloured and dark, and the coloured photos placed on transparency (turned by 8 degrees with their corners
left transparent, and pasted with a margin);
``--same-brightness``: the items also photographed in colour as bright as their grey backdrop (``same_brightness``);
``--front-door REV``: read with contract/ink.py as it was at REV.

    .venv/bin/python -m bench.garments artifacts/fashion-cnn artifacts/fashion-resnet [--n 300] [--thumbnail 48]
"""

from __future__ import annotations

import argparse
import colorsys
import io
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from bench.frontdoor import add_front_door, read_with_front_door
from bench.odd_inputs import report
from contract.metadata import load_metadata
from contract.photos import EVAL_STYLE, photograph
from export.calibrate import idx_split

REPO = Path(__file__).resolve().parent.parent
SEED = 5
# each channel of the garment's colour in [low, high); the backdrop is grey 234-250 (contract/photos.py)
COLOURS = {"coloured": (0, 230), "light": (200, 235), "white": (235, 256)}
CUT_OUTS = {"white": (235, 256), "light": (190, 235), "coloured": (60, 190), "dark": (0, 60)}  # channel ranges


def cut_out(item: np.ndarray, rng: np.random.Generator, colour: tuple[int, int]) -> Image.Image:
    """A Fashion-MNIST item (light on black, 28 x 28) as a shop's cut-out: an RGBA PNG of 160-240 px whose garment,
    of one colour drawn from ``colour`` for each channel and shaded by the item's own light, is opaque and the rest
    transparent (the silhouette's edge soft), the garment's box 60-92 % of the frame's side and placed anywhere in
    it (it may touch an edge, as a tight crop does), decoded again."""
    side = int(rng.integers(160, 241))
    inner = int(side * rng.uniform(0.6, 0.92))
    g = np.asarray(Image.fromarray(item).resize((inner, inner), Image.Resampling.BICUBIC), dtype=np.float32)
    base = rng.integers(colour[0], colour[1], size=3).astype(np.float32)
    shade = 0.75 + 0.25 * g[..., None] / 255.0  # the item's own folds and seams, as light and shadow
    rgba = np.zeros((side, side, 4), dtype=np.uint8)
    top, left = (int(rng.integers(0, side - inner + 1)) for _ in range(2))
    rgba[top : top + inner, left : left + inner, :3] = np.clip(base * shade, 0, 255).astype(np.uint8)
    rgba[top : top + inner, left : left + inner, 3] = np.clip((g - 10.0) * 6.0, 0, 255).astype(np.uint8)
    return _png(Image.fromarray(rgba, "RGBA"))


def same_brightness(item: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A Fashion-MNIST item (light on black, 28 x 28) as a garment as bright as its backdrop, in colour: a grey
    backdrop of level 40-200, the garment of a vivid colour (saturation 0.5-1) whose luminance (ITU-R BT.601, as
    Pillow's 'L') is within 6 levels of it, shaded by the item's own light (0.8-1.0), 70 % of a 160-260 px frame,
    centred, a little noise and blur, saved as a JPEG of quality 60-95 and decoded (a red T-shirt on grey, a navy
    dress on black)."""
    side = int(rng.integers(160, 260))
    inner = int(side * 0.7)
    shade = np.asarray(Image.fromarray(item).resize((inner, inner), Image.Resampling.BICUBIC), dtype=np.float32) / 255
    grey = float(rng.uniform(40, 200))
    for _ in range(500):  # a colour of that luminance
        rgb = np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.5, 1.0), rng.uniform(0.3, 1.0))) * 255
        if abs(float(rgb @ np.array([0.299, 0.587, 0.114])) - grey) < 6:
            break
    frame = np.full((side, side, 3), grey, dtype=np.float32)
    at = (side - inner) // 2
    region = frame[at : at + inner, at : at + inner]
    region[:] = np.where((shade > 0.05)[..., None], rgb * (0.8 + 0.2 * shade[..., None]), region)
    frame += rng.normal(0, 2, frame.shape)
    img = Image.fromarray(np.clip(frame, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.8))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(rng.integers(60, 95)))
    return Image.open(io.BytesIO(buf.getvalue()))


def _pasted(img: Image.Image) -> Image.Image:
    """``img`` on a transparent canvas a tenth of its width wider each way."""
    m = img.width // 10
    canvas = Image.new("RGBA", (img.width + 2 * m, img.height + 2 * m), (0, 0, 0, 0))
    canvas.alpha_composite(img, (m, m))
    return canvas


def _png(img: Image.Image) -> Image.Image:
    """``img`` as a client's PNG decodes."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return Image.open(io.BytesIO(buf.getvalue()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("artifacts", type=Path, nargs="+", help="garment classifiers' folders")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "fashion-mnist")
    p.add_argument("--n", type=int, default=300, help="validation items (each photographed in every colour)")
    p.add_argument("--thumbnail", type=int, action="append", default=[], metavar="PX", help="the coloured at PX too")
    p.add_argument("--cut-outs", action="store_true", help="the items cut out on transparency too (a shop's PNG)")
    p.add_argument("--same-brightness", action="store_true", help="also in colour as bright as their backdrop")
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
    if args.cut_outs:
        for name, colour in CUT_OUTS.items():
            rng = np.random.default_rng(SEED)
            photos[f"{name} cut-out"] = [cut_out(images[i, 0], rng, colour) for i in picked]
        # the other pictures with transparency: photos placed on a transparent canvas, turned (an editor leaves the
        # corners transparent) or pasted with a margin
        coloured = [im.convert("RGBA") for im in photos["coloured"]]
        photos["coloured, turned 8 degrees"] = [_png(im.rotate(8, expand=True)) for im in coloured]
        photos["coloured, pasted"] = [_png(_pasted(im)) for im in coloured]
    if args.same_brightness:
        rng = np.random.default_rng(SEED)
        photos["as bright as the backdrop"] = [same_brightness(images[i, 0], rng) for i in picked]
    report(args.artifacts, photos, labels[picked], "garments")
    return 0


if __name__ == "__main__":
    sys.exit(main())
