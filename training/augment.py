"""Batched data augmentation in plain torch (no torchvision): random affine warps and flips.

One ``affine_grid`` + ``grid_sample`` call warps a whole batch, so augmentation costs a few percent of
a training step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    rotate_deg: float = 0.0
    translate: float = 0.0  # fraction of the image size
    scale: float = 0.0  # +- fraction
    shear_deg: float = 0.0
    hflip: bool = False


PRESETS = {
    "none": AugmentConfig(),
    # handwriting: small rotations, shifts, scaling and shear (never flips: a flipped 2 is no digit)
    "digits": AugmentConfig(rotate_deg=10.0, translate=0.08, scale=0.1, shear_deg=8.0),
    # objects: mirror images are the same class, small shifts
    "objects": AugmentConfig(translate=0.08, scale=0.05, hflip=True),
}


def random_affine(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """(B, C, H, W) float -> (B, C, H, W), each image warped by its own random affine transform."""
    if cfg == PRESETS["none"]:
        return x
    b = x.shape[0]

    def u(lo: float, hi: float) -> torch.Tensor:
        return torch.rand(b, generator=generator) * (hi - lo) + lo

    ang = u(-cfg.rotate_deg, cfg.rotate_deg) * (math.pi / 180)
    shear = u(-cfg.shear_deg, cfg.shear_deg) * (math.pi / 180)
    s = u(1 - cfg.scale, 1 + cfg.scale)
    tx, ty = u(-cfg.translate, cfg.translate) * 2, u(-cfg.translate, cfg.translate) * 2  # grid units: [-1, 1]
    flip = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0) if cfg.hflip else torch.ones(b)
    cos, sin = torch.cos(ang), torch.sin(ang)
    # theta maps output coordinates to input coordinates: rotation @ shear / scale, then flip and shift
    theta = torch.stack(
        [
            torch.stack([cos / s * flip, (-sin + cos * torch.tan(shear)) / s, tx], 1),
            torch.stack([sin / s * flip, (cos + sin * torch.tan(shear)) / s, ty], 1),
        ],
        1,
    )  # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
