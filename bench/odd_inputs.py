"""The image classifiers on the odd inputs (export/odd_images.py: blank pages, noise, printed text, natural
photographs), in process: per kind, how many each artifact lets through (not flagged out of distribution) as the
service answers them, a digit model's second reading at the other polarity included; the natural photographs
also counted apart before and from the ``--split``-th (the 69 of before 2026-12-04 and the 98 added then).
``--front-door REV``: with contract/ink.py's find_ink (and contract/page.py) as they were at that commit.

    .venv/bin/python -m bench.odd_inputs artifacts/mnist-cnn artifacts/mnist-lenet5 [--front-door REV]
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

import contract.images
from bench.frontdoor import ink_at
from contract.images import Reading, normalize, read, second_reading_kept
from contract.metadata import ModelMetadata, load_metadata
from export.odd_images import odd_images


def let_through(folder: Path, meta: ModelMetadata, images: list[Image.Image]) -> np.ndarray:
    """Which of ``images`` the service would answer without the out-of-distribution flag."""
    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    pre, ood = meta.image_preprocessing(), meta.ood
    names = [meta.outputs[0].name] + ([ood.output] if ood is not None and ood.output else [])

    def answer(r: Reading) -> tuple[float | None, bool]:
        outs = sess.run(names, {meta.inputs[0].name: normalize(r.pixels[None], pre)})
        return meta.ood_answer(float(outs[1][0]) if len(outs) > 1 else None, r.oddness, r.pixels)

    through = []
    for img in images:
        first = read(img, pre)
        _, flagged = answer(first)
        if flagged and ood is not None and ood.second_reading and first.dark_ink is not None:
            flagged = not second_reading_kept(ood.threshold, *answer(read(img, pre, not first.dark_ink)))
        through.append(not flagged)
    return np.array(through)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("artifacts", type=Path, nargs="+", help="image classifiers' folders")
    p.add_argument("--front-door", metavar="REV", help="the commit whose contract/ink.py (and page.py) to read with")
    p.add_argument("--split", type=int, default=69, help="natural photographs counted apart from this one on")
    args = p.parse_args(argv)
    if args.front_door:
        old = ink_at(args.front_door).find_ink
        takes_colour = "colour" in inspect.signature(old).parameters
        contract.images.find_ink = old if takes_colour else lambda img, colour=None, **kw: old(img, **kw)
    sets = odd_images()
    for folder in args.artifacts:
        meta = load_metadata(folder)
        counts = []
        for kind, images in sets.items():
            through = let_through(folder, meta, images)
            counts.append(f"{kind} {through.sum()} of {len(through)}")
            if kind == "natural photograph":
                head, tail = through[: args.split], through[args.split :]
                counts[-1] += f" ({head.sum()} of the first {len(head)}, {tail.sum()} of the other {len(tail)})"
        print(f"{folder}: let through: " + "; ".join(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
