"""The photo front door (contract/ink.py's find_ink) side by side with its version at another commit, in one
process: the same EVAL_STYLE photos of validation digits, alternating rounds, medians.

    .venv/bin/python -m bench.frontdoor --base REV [--n 200] [--rounds 5]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import contract.ink
from bench.common import file_at
from contract.images import decode_image
from contract.metadata import load_metadata
from contract.photos import EVAL_STYLE, photograph
from export.calibrate import idx_split

REPO = Path(__file__).resolve().parent.parent


def _module_at(rev: str):
    path = Path(tempfile.mkdtemp()) / "ink_base.py"
    path.write_bytes(file_at(rev, "contract/ink.py"))
    spec = importlib.util.spec_from_file_location("ink_base", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["ink_base"] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="the commit whose contract/ink.py to compare with")
    p.add_argument("--model", default="mnist-cnn", help="whose fit (digits or garments) and dataset to photograph")
    p.add_argument("--data", type=Path, help="its IDX folder (default: ../shared/data/<its dataset>)")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    meta = load_metadata(REPO / "artifacts" / args.model)
    images, _, _, val = idx_split(meta, args.data or REPO.parent / "shared" / "data" / meta.dataset.name)
    rng = np.random.default_rng(5)
    fit = meta.image_preprocessing().fit
    photos = [
        decode_image(photograph(images[i, 0], fit, rng, EVAL_STYLE), max_pixels=1 << 24).convert("L")
        for i in val[: args.n]
    ]
    versions = {args.base: _module_at(args.base), "working tree": contract.ink}
    ms: dict[str, list[float]] = {name: [] for name in versions}
    for _ in range(args.rounds):
        for name, module in versions.items():
            t0 = time.perf_counter()
            for photo in photos:
                module.find_ink(photo, objects=fit == "contain")
            ms[name].append((time.perf_counter() - t0) * 1000 / len(photos))
    for name, values in ms.items():
        print(f"{name}: find_ink {np.median(values):.2f} ms per photo (median of {args.rounds} rounds)")
    print(f"ratio working tree / {args.base}: {np.median(ms['working tree']) / np.median(ms[args.base]):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
