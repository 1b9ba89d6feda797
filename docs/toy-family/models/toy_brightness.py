"""The toy family of docs/ARCHITECTURE.md ("add a family"): an image in, one number out (how bright it is)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.registry import register_model

FAMILY = "image-regression"


@dataclass(frozen=True)
class ToyConfig:
    in_channels: int = 1
    grid: int = 4  # the image is average-pooled to grid x grid cells before the read-out


class PooledRegressor(nn.Module):
    def __init__(self, cfg: ToyConfig) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(cfg.grid)
        self.head = nn.Linear(cfg.in_channels * cfg.grid * cfg.grid, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(x).flatten(1)).squeeze(1)  # (B, C, H, W) -> (B,)


@register_model("toy-brightness", family=FAMILY, config=ToyConfig)
def toy_brightness(cfg: ToyConfig) -> nn.Module:
    """Average-pooled pixels and a linear read-out of one number."""
    return PooledRegressor(cfg)
