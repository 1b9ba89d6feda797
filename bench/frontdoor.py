"""The photo front door (contract/ink.py's find_ink, with contract/page.py) side by side with its version at
another commit, in one process: the same EVAL_STYLE photos of validation digits (in colour, given as the
service gives them where a version takes the colour), alternating rounds, medians; ``--side``: the photos
enlarged to that many pixels a side first (a phone's photo: 3000).

    .venv/bin/python -m bench.frontdoor --base REV [--n 200] [--rounds 5] [--side PX]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import inspect
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

import contract.images
import contract.ink
from bench.common import file_at
from contract.images import decode_image
from contract.metadata import load_metadata
from contract.photos import EVAL_STYLE, photograph
from export.calibrate import idx_split

REPO = Path(__file__).resolve().parent.parent


def _load(name: str, source: bytes):
    path = Path(tempfile.mkdtemp()) / f"{name}.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def ink_at(rev: str):
    """contract/ink.py as it was at ``rev``, with contract/page.py, contract/enclosure.py and contract/backdrop.py as
    they were there where it had them; its find_ink takes today's ``colour`` argument either way (a version without
    the colour cue ignores it) and returns today's Ink (the fields a version lacked at their defaults: no ink was
    ``printed`` before the cue)."""
    source = file_at(rev, "contract/ink.py")
    for helper in ("page", "enclosure", "backdrop"):
        if f"from contract.{helper} import".encode() in source:
            _load(f"{helper}_base", file_at(rev, f"contract/{helper}.py"))
            source = source.replace(f"from contract.{helper} import".encode(), f"from {helper}_base import".encode())
    module = _load("ink_base", source)
    if "colour" not in inspect.signature(module.find_ink).parameters:
        grey_only = module.find_ink
        module.find_ink = lambda img, colour=None, **kw: grey_only(img, **kw)
    if {f.name for f in dataclasses.fields(module.Ink)} != {f.name for f in dataclasses.fields(contract.ink.Ink)}:
        old = module.find_ink
        module.find_ink = lambda *a, **kw: _today(old(*a, **kw))
    return module


def add_front_door(p: argparse.ArgumentParser) -> None:
    """The --front-door option of the benches that read photos in process (``read_with_front_door``)."""
    p.add_argument(
        "--front-door",
        metavar="REV",
        help="the commit whose contract/ink.py (page.py, enclosure.py, backdrop.py) to read with",
    )


def read_with_front_door(rev: str | None) -> None:
    """With ``rev``, the service's front door (contract.images) reads ink as contract/ink.py did at that commit."""
    if rev:
        contract.images.find_ink = ink_at(rev).find_ink


def _today(ink) -> contract.ink.Ink:
    """Another version's Ink as today's (its fields copied, not the arrays)."""
    return contract.ink.Ink(**{f.name: getattr(ink, f.name) for f in dataclasses.fields(ink)})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True, help="the commit whose contract/ink.py to compare with")
    p.add_argument("--model", default="mnist-cnn", help="whose fit (digits or garments) and dataset to photograph")
    p.add_argument("--data", type=Path, help="its IDX folder (default: ../shared/data/<its dataset>)")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--side", type=int, help="enlarge the photos to this many pixels a side first")
    args = p.parse_args(argv)
    meta = load_metadata(REPO / "artifacts" / args.model)
    images, _, _, val = idx_split(meta, args.data or REPO.parent / "shared" / "data" / meta.dataset.name)
    rng = np.random.default_rng(5)
    fit = meta.image_preprocessing().fit
    photos = [decode_image(photograph(images[i, 0], fit, rng, EVAL_STYLE), max_pixels=1 << 24) for i in val[: args.n]]
    if args.side:
        photos = [photo.resize((args.side, args.side), Image.Resampling.BICUBIC) for photo in photos]
    greys = [photo.convert("L") for photo in photos]
    versions = {args.base: ink_at(args.base), "working tree": contract.ink}
    ms: dict[str, list[float]] = {name: [] for name in versions}
    for _ in range(args.rounds):
        for name, module in versions.items():
            t0 = time.perf_counter()
            for grey, photo in zip(greys, photos, strict=True):
                module.find_ink(grey, objects=fit == "contain", colour=photo)
            ms[name].append((time.perf_counter() - t0) * 1000 / len(photos))
    for name, values in ms.items():
        print(f"{name}: find_ink {np.median(values):.2f} ms per photo (median of {args.rounds} rounds)")
    print(f"ratio working tree / {args.base}: {np.median(ms['working tree']) / np.median(ms[args.base]):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
