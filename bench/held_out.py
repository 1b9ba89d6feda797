"""Odd images that no front-door or out-of-distribution choice was tuned on, for ``bench.odd_inputs --held-out``:
pictures from three Debian packages, fetched once by ``make held-out`` (``apt-get download`` and ``dpkg-deb -x``
into a git-ignored folder; nothing is installed and nothing is fetched while serving or testing):

- ``mate-backgrounds``: the 12 photographs of MATE's "nature" wallpapers (water, grass, flowers, a ladybird,
  a storm, wood) and 6 random square crops of each, 20-80 % of its shorter side: 84 scenes;
- ``tuxpaint-stamps-default``: Tux Paint's stamps of things (animals, fruit and vegetables, plants, tools, sport,
  planets; photographs cut out, and some drawings), on white as a product photo shows them, and on a plain
  grey-brown table;
- ``openclipart-png``: 200 clip-art drawings of food, animals, plants and tools (drawn at random), the same two ways.

Export/odd_images.py's sets were what the front door's limits were chosen on; the first two were first looked at
on 2026-12-04, after every limit was set, and the ink-colour cue (contract/page.py: ink_hue) came of looking at
what the digit models let through of the stamps. The clip art was first counted on 2026-12-05, after that cue.

    make held-out && .venv/bin/python -m bench.odd_inputs artifacts/mnist-cnn --held-out bench/.held-out
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from export.odd_images import square_crops

PACKAGES = ("mate-backgrounds", "tuxpaint-stamps-default", "openclipart-png")
NATURE = "usr/share/backgrounds/mate/nature"
STAMPS = "usr/share/tuxpaint/stamps"
STAMP_KINDS = (
    "animals/birds", "animals/mammals", "animals/mammals/bovines", "animals/mammals/rodents", "animals/fish",
    "animals/insects", "food/fruit", "food/vegetables", "plants/flowers", "plants/trees", "household",
    "household/tools", "sports", "space/planets",
)  # fmt: skip
CLIPART = "usr/share/openclipart/png"
CLIPART_KINDS = ("food", "animals", "plants", "tools")
DRAWINGS = 200
LARGEST = 1 << 24  # pixels: a few clip-art files are posters of 170 megapixels, drawn at random or not
TABLE = (150, 140, 130)


def fetch(dest: Path) -> None:
    """The two packages' files under ``dest`` (each package's tree unpacked there, as dpkg would install it)."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", *PACKAGES], cwd=tmp, check=True)
        for deb in sorted(Path(tmp).glob("*.deb")):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True)


def _opened(path: Path, side: int) -> Image.Image:
    img = Image.open(path)
    img.load()
    img.thumbnail((side, side))
    return img


def _on(stamp: Image.Image, colour: tuple[int, int, int]) -> Image.Image:
    """A cut-out stamp in the middle of a plain background 1.3 times its size."""
    rgba = stamp.convert("RGBA")
    page = Image.new("RGBA", (round(rgba.width * 1.3), round(rgba.height * 1.3)), (*colour, 255))
    page.alpha_composite(rgba, ((page.width - rgba.width) // 2, (page.height - rgba.height) // 2))
    return page.convert("RGB")


def held_out_images(root: Path) -> dict[str, list[Image.Image]]:
    """The held-out odd images under ``root`` (``make held-out``'s folder), by kind."""
    photos = [_opened(p, 1600) for p in sorted((root / NATURE).glob("*.jpg"))]
    if not photos:
        raise FileNotFoundError(f"no photographs under {root / NATURE}: run `make held-out` first")
    crops = square_crops(photos, 6, (0.2, 0.8), np.random.default_rng(99))
    stamps = [_opened(p, 400) for kind in STAMP_KINDS for p in sorted((root / STAMPS / kind).glob("*.png"))]
    drawings = [_opened(p, 400) for p in _drawn(root / CLIPART)]
    return {
        "held-out scene": photos + crops,
        "held-out thing on white": [_on(s, (255, 255, 255)) for s in stamps],
        "held-out thing on a table": [_on(s, TABLE) for s in stamps],
        "held-out drawing on white": [_on(d, (255, 255, 255)) for d in drawings],
        "held-out drawing on a table": [_on(d, TABLE) for d in drawings],
    }


def _pixels(path: Path) -> int:
    """An image file's pixel count, from its header (the file closed again)."""
    with Image.open(path) as img:
        return img.width * img.height


def _drawn(root: Path) -> list[Path]:
    """DRAWINGS of the clip-art files of CLIPART_KINDS (sub-folders included), drawn at random (seed 5)."""
    files = [p for kind in CLIPART_KINDS for p in sorted((root / kind).rglob("*.png"))]
    with warnings.catch_warnings():  # the posters' headers alone are read here, and they are let be
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        files = [p for p in files if _pixels(p) <= LARGEST]
    pick = np.random.default_rng(5).choice(len(files), DRAWINGS, replace=False)
    return [files[i] for i in sorted(pick)]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.held_out", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("folder", nargs="?", type=Path, default=Path(__file__).parent / ".held-out",
                    help="where the packages are unpacked (default: bench/.held-out)")  # fmt: skip
    fetch(ap.parse_args(argv).folder)


if __name__ == "__main__":
    main()
