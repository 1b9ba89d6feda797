"""Printed characters photographed, in process: each digit and each letter (capitals, then lower case) in the
TrueType fonts this machine has (Debian's DejaVu and Liberation where installed; Pillow's own font always),
150 px on grey paper of a random tone, blurred, with sensor noise, saved as JPEG; per digit model, how it reads
the digits (right, flagged, wrong and not flagged) and how many letters it lets through without the flag, and
which (each letter and the digit it was read as, as the service answers: second readings included).

    .venv/bin/python -m bench.letters artifacts/mnist-cnn artifacts/mnist-lenet5 [--front-door REV]

A letter is no digit, so an honest digit model flags it; some are written as digits are (O, I, l, S, Z, q, g),
and reading those as 0, 1, 5, 2 or 9 is the best a digit model can do.
"""

from __future__ import annotations

import argparse
import io
import string
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from bench.frontdoor import add_front_door, read_with_front_door
from bench.odd_inputs import answered
from contract.images import both_readings
from contract.metadata import load_metadata
from export.second_reading import served_answers

SIDE, SIZE, SEED = 320, 150, 43
FONTS = (  # Debian's fonts-dejavu-core and fonts-liberation; those missing are skipped
    "dejavu/DejaVuSans.ttf",
    "dejavu/DejaVuSerif-Bold.ttf",
    "dejavu/DejaVuSansMono.ttf",
    "liberation/LiberationSans-Regular.ttf",
    "liberation/LiberationSansNarrow-Italic.ttf",
    "dejavu/DejaVuSerifCondensed-Italic.ttf",
)


Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


def fonts() -> list[Font]:
    """The fonts of FONTS installed here, then Pillow's own (which every install has)."""
    found: list[Font] = []
    for name in FONTS:
        path = Path("/usr/share/fonts/truetype", name)
        if path.is_file():
            found.append(ImageFont.truetype(str(path), SIZE))
    return [*found, ImageFont.load_default(SIZE)]


def photographed(char: str, font: Font, rng: np.random.Generator) -> Image.Image:
    """``char`` printed dark in the middle of a SIDE-px grey page, blurred, noisy, saved as JPEG and decoded."""
    page = Image.new("L", (SIDE, SIDE), int(rng.integers(180, 236)))
    draw = ImageDraw.Draw(page)
    left, top, right, bottom = draw.textbbox((0, 0), char, font=font)
    at = ((SIDE - (right - left)) / 2 - left, (SIDE - (bottom - top)) / 2 - top)
    draw.text(at, char, font=font, fill=int(rng.integers(10, 61)))
    pixels = np.asarray(page.filter(ImageFilter.GaussianBlur(1.2)), dtype=np.float32) + rng.normal(0, 4, page.size)
    buf = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).convert("RGB").save(buf, "JPEG", quality=80)
    return Image.open(io.BytesIO(buf.getvalue()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("artifacts", type=Path, nargs="+", help="digit classifiers' folders")
    add_front_door(p)
    args = p.parse_args(argv)
    read_with_front_door(args.front_door)
    rng, faces = np.random.default_rng(SEED), fonts()
    print(f"{len(faces)} fonts (those of FONTS installed here, and Pillow's own)")
    digits = [photographed(c, f, rng) for f in faces for c in string.digits]
    truth = np.array([int(c) for _ in faces for c in string.digits])
    letters = {
        kind: ([photographed(c, f, rng) for f in faces for c in chars], [c for _ in faces for c in chars])
        for kind, chars in (("capitals", string.ascii_uppercase), ("lower case", string.ascii_lowercase))
    }
    for folder in args.artifacts:
        meta = load_metadata(folder)
        said = [f"digits: {answered(folder, meta, digits, truth)}"]
        for kind, (images, chars) in letters.items():
            readings = [both_readings(img, meta.image_preprocessing()) for img in images]
            second = meta.ood is not None and meta.ood.second_reading
            served, flagged = served_answers(folder, meta, readings, second)[:2]
            through = [f"{c}>{meta.labels[s]}" for c, s, f in zip(chars, served, flagged, strict=True) if not f]
            said.append(f"{kind}: {len(through)} of {len(chars)} let through ({' '.join(sorted(set(through)))})")
        print(f"{folder}: " + "; ".join(said))
    return 0


if __name__ == "__main__":
    sys.exit(main())
