"""Outlier exposure (Hendrycks, Mazeika & Dietterich 2019, "Deep anomaly detection with outlier exposure"): the
classifier also sees images of no class and learns to be unsure on them (cross-entropy to the uniform
distribution), so that what it was never shown scores as unlike its training data.

The outliers here are made, not downloaded, and are none of the sets the front door or the OOD scores are
judged on (export/odd_images.py, bench/held_out.py): synthetic things in 28x28 — a blob with a random smooth
outline, filled with shaded texture, drawn solid, outlined like clip art or both; a few blobs together; a
patch of texture with no outline — half of them as they are (what a /v2 tensor or a 28x28 upload is) and half
rendered as phone photos of a page by contract/photos.py's TRAIN_STYLE and read back through the service's
front door, as training/photo_data.py does with the digits. Made once per seed and front door, cached beside
the photo pool.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from contract.metadata import ImagePreprocessing
from contract.photos import TRAIN_STYLE, photographs_in_chunks
from training import photo_data
from training.common import LossFn

log = logging.getLogger(__name__)
SIDE = 28
OUTLIER = -1  # the label an outlier row carries in a batch


def _texture(rng: np.random.Generator) -> np.ndarray:
    """Smooth random texture in [0, 1] at SIDE x SIDE: value noise from a coarse grid of 3-8 cells a side."""
    cells = int(rng.integers(3, 9))
    coarse = (rng.random((cells, cells)) * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((SIDE, SIDE), Image.Resampling.BICUBIC), np.float32) / 255


def _blob(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """A blob with a random smooth outline: (coverage in [0, 1] anti-aliased, its distance from the centre over
    the outline's, 1 at the rim)."""
    cy, cx = rng.uniform(SIDE / 2 - 3, SIDE / 2 + 3, 2)
    aspect = rng.uniform(0.6, 1.4)
    dy, dx = yy - cy, (xx - cx) * aspect
    theta, dist = np.arctan2(dy, dx), np.hypot(dy, dx)
    k = np.arange(2, 6)[:, None, None]
    wobble = rng.uniform(0, 0.15, (4, 1, 1)) * np.cos(k * theta + rng.uniform(0, 2 * np.pi, (4, 1, 1)))
    rim = radius * (1 + wobble.sum(0))
    return np.clip(rim - dist + 0.5, 0, 1), dist / np.maximum(rim, 1e-3)


def synthetic_thing(rng: np.random.Generator) -> np.ndarray:
    """One SIDE x SIDE uint8 outlier, bright on black as the datasets' images are."""
    yy, xx = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32)
    kind = rng.random()
    if kind < 0.15:  # texture with no outline: a surface, a scene's crop
        return (255 * _texture(rng) * rng.uniform(0.5, 1.0)).astype(np.uint8)
    if kind < 0.3:  # a few small blobs: grapes, pebbles, a bunch of anything
        out = np.zeros((SIDE, SIDE), np.float32)
        for _ in range(int(rng.integers(2, 6))):
            cover, _ = _blob(rng, yy + rng.uniform(-7, 7), xx + rng.uniform(-7, 7), rng.uniform(3, 6))
            out = np.maximum(out, cover * rng.uniform(0.5, 1.0))
        return (255 * out).astype(np.uint8)
    cover, r = _blob(rng, yy, xx, rng.uniform(6, 12))
    t = rng.uniform(0, 0.7)  # how much texture shows; shading darkens (or lightens) towards the rim
    fill = rng.uniform(0.4, 1.0) * ((1 - t) + t * _texture(rng)) * (1 - rng.uniform(-0.3, 0.6) * np.clip(r, 0, 1) ** 2)
    style = rng.random()
    if style < 0.3:  # clip art: a dark outline around a lighter fill
        width = rng.uniform(0.08, 0.2)
        fill = np.where(r > 1 - width, 1.0, fill * rng.uniform(0.35, 0.7))  # no empty ring: that is a 0
    elif style < 0.5:  # solid, with an outline
        fill = np.where(r > 0.9, 1.0, fill)
    return (255 * np.clip(cover * fill, 0, 1)).astype(np.uint8)


def outlier_pool(pre: ImagePreprocessing, size: int, seed: int, workers: int = 2) -> np.ndarray:
    """``size`` synthetic outliers (size, 1, SIDE, SIDE) uint8: the first half as they are, the rest photographed
    and read through the front door."""
    parts = [pre.model_dump_json(exclude={"mean", "std"}).encode(), *(f.read_bytes() for f in photo_data.CODE)]

    def make() -> np.ndarray:
        rng = np.random.default_rng(seed)
        things = np.stack([synthetic_thing(rng) for _ in range(size)])[:, None]
        half = size // 2
        seeds = [seed * 100_019 + i for i in range(0, size - half, photo_data.CHUNK)]
        photos = photographs_in_chunks(things[half:], pre, TRAIN_STYLE, photo_data.CHUNK, seeds, workers)
        return np.concatenate([things[:half], photos])

    what = f"{size} synthetic outliers, half as photos ({workers} processes)"
    return photo_data.cached("outliers-", [*parts, Path(__file__).read_bytes()], f"-{size}-{seed}", make, what)


KINDS = ("uniform", "energy")
ENERGY_MARGINS = (-11.0, -5.0)  # (in, out): mnist-cnn's upper quartile of training digits, its outliers' median


def _hinge(x: torch.Tensor) -> torch.Tensor:
    return F.relu(x).pow(2).mean() if x.numel() else x.sum()


def outlier_exposure_loss(weight: float, base: LossFn, kind: str = "uniform") -> LossFn:
    """``base`` on the rows with a class (labels, or distillation's (B, 2K) targets), plus ``weight`` times the
    outliers' term: ``uniform``, the cross-entropy from the uniform distribution to the model's on the OUTLIER rows
    (Hendrycks et al. 2019); ``energy``, squared hinges that push the energy -logsumexp(logits) of rows with a
    class under ENERGY_MARGINS[0] and of outliers over ENERGY_MARGINS[1] (Liu et al. 2020, "Energy-based
    out-of-distribution detection"), leaving alone the rows already on their side. The metric is ``base``'s,
    counted over every row as if the outliers' share were answered as the rest (so that the epoch's figure stays
    an accuracy)."""
    if kind not in KINDS:
        raise ValueError(f"outlier loss {kind!r}: one of {KINDS}")

    def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, float]:
        out = y == OUTLIER if y.ndim == 1 else (y == OUTLIER).all(1)  # (B, 2K) distillation targets: a row of them
        # under torchrun a rank's share of the batch may hold outliers alone (they come last in it)
        loss, metric = base(logits[~out], y[~out]) if (~out).any() else (logits.sum() * 0.0, 0.0)
        if kind == "energy":
            energy = -torch.logsumexp(logits, 1)
            loss = loss + weight * (_hinge(energy[~out] - ENERGY_MARGINS[0]) + _hinge(ENERGY_MARGINS[1] - energy[out]))
        elif out.any():
            loss = loss + weight * -F.log_softmax(logits[out], 1).mean(1).mean()
        return loss, metric * len(y) / max(1, int((~out).sum()))

    return loss_fn
