"""Training images as users send them: a pool of training digits (or garments) rendered as phone photos by
contract/photos.py's TRAIN_STYLE and read back through the service's own front door (contract.images's
prepare_image), so the model learns what the front door makes of real photos, artefacts included.

Rendering and reading a photo costs ~10 ms, too much per step, so the pool is made once per dataset, split
and seed (in parallel processes, each chunk with its own seed: the same inputs give the same pool), cached
under runs/.photo-cache/ keyed by the code that makes it, and mixed into each batch by ``TrainConfig.photos``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from contract.metadata import ImagePreprocessing
from contract.photos import TRAIN_STYLE, photographs_in_chunks

log = logging.getLogger(__name__)
CACHE = Path("runs/.photo-cache")
CHUNK = 500
# the renderer and the whole front door: a change to any of them makes the pool again
CODE = [
    Path(__file__).resolve().parent.parent / "contract" / f
    for f in ("photos.py", "ink.py", "page.py", "enclosure.py", "images.py")
]


def photo_pool(
    images: np.ndarray, labels: np.ndarray, pre: ImagePreprocessing, size: int, seed: int, workers: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """``size`` images drawn from ``images`` (N, 1, H, W) uint8, rendered as photos and prepared as the service
    prepares uploads -> (photos (size, 1, H, W) uint8, their labels)."""
    size = min(size, len(images))
    pick = np.random.default_rng(seed).choice(len(images), size, replace=False)
    parts = [
        *(f.read_bytes() for f in CODE),
        images[pick].tobytes(),
        pre.model_dump_json(exclude={"mean", "std"}).encode(),
    ]

    def make() -> np.ndarray:
        seeds = [seed * 100_003 + i for i in range(0, size, CHUNK)]
        return photographs_in_chunks(images[pick], pre, TRAIN_STYLE, CHUNK, seeds, workers)

    what = f"{size} training images as photos ({workers} processes)"
    return cached("", parts, f"-{size}-{seed}", make, what), labels[pick]


def cached(prefix: str, parts: Iterable[bytes], suffix: str, make: Callable[[], np.ndarray], what: str) -> np.ndarray:
    """``make()``'s array, kept in CACHE as ``prefix`` + the sha256 of ``parts`` (16 hex digits) + ``suffix`` .npy
    and loaded from there when it is made again (``what``: how the log names it)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    path = CACHE / f"{prefix}{h.hexdigest()[:16]}{suffix}.npy"
    if path.exists():
        return np.load(path)
    log.info("rendering %s; cached in %s", what, path)
    array = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array)
    return array
