"""Image classifiers: a faithful LeNet-5 and a modern conv/batch-norm CNN."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.registry import register_model

FAMILY = "image-classification"


# --------------------------------------------------------------------------------------------------
# LeNet-5 (LeCun, Bottou, Bengio & Haffner 1998, "Gradient-based learning applied to document
# recognition", Section II.B). Faithful in topology: C1 6@5x5, S2 trainable subsampling, C3 16@5x5 with
# the sparse S2->C3 connection table (Table I), S4, C5 120@5x5, F6 84, scaled tanh everywhere.
# One deliberate deviation: the output layer is linear + softmax cross-entropy instead of the paper's
# Euclidean RBF units, which the paper's own Appendix treats as a choice of loss, not of architecture.
# --------------------------------------------------------------------------------------------------

# Table I: which of the 6 S2 maps (rows) feed each of the 16 C3 maps (columns).
_C3_TABLE: tuple[tuple[int, ...], ...] = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (4, 5, 0), (5, 0, 1),  # 3 contiguous maps
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (3, 4, 5, 0), (4, 5, 0, 1), (5, 0, 1, 2),  # 4 contiguous
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),  # 4 discontinuous
    (0, 1, 2, 3, 4, 5),  # all
)


@dataclass(frozen=True)
class LeNet5Config:
    in_channels: int = 1
    num_classes: int = 10
    input_size: int = 28  # 28 (MNIST, padded by 2 to the paper's 32x32 field) or 32


class ScaledTanh(nn.Module):
    """f(a) = A tanh(S a) with A = 1.7159, S = 2/3 (LeCun et al. 1998, Appendix A)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1.7159 * torch.tanh(x * (2.0 / 3.0))


class Subsampling(nn.Module):
    """S2/S4: 2x2 average times a trainable per-map coefficient plus a trainable bias."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, H/2, W/2)
        return F.avg_pool2d(x, 2) * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class SparseConv2d(nn.Conv2d):
    """A conv whose input-output connections are restricted by a fixed 0/1 mask (C3's Table I)."""

    def __init__(self, table: tuple[tuple[int, ...], ...], in_channels: int, kernel_size: int) -> None:
        super().__init__(in_channels, len(table), kernel_size)
        mask = torch.zeros(len(table), in_channels, 1, 1)
        for out_map, in_maps in enumerate(table):
            mask[out_map, list(in_maps)] = 1.0
        self.mask: torch.Tensor
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias)


class LeNet5(nn.Module):
    def __init__(self, cfg: LeNet5Config) -> None:
        super().__init__()
        if cfg.input_size not in (28, 32):
            raise ValueError("LeNet-5 is defined on a 32x32 field: input_size must be 28 (padded) or 32")
        pad = (32 - cfg.input_size) // 2
        self.cfg = cfg
        self.features = nn.Sequential(
            nn.Conv2d(cfg.in_channels, 6, 5, padding=pad), ScaledTanh(),  # C1 (B, 6, 28, 28)
            Subsampling(6), ScaledTanh(),  # S2 (B, 6, 14, 14)
            SparseConv2d(_C3_TABLE, 6, 5), ScaledTanh(),  # C3 (B, 16, 10, 10)
            Subsampling(16), ScaledTanh(),  # S4 (B, 16, 5, 5)
            nn.Conv2d(16, 120, 5), ScaledTanh(),  # C5 (B, 120, 1, 1)
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),  # (B, 120)
            nn.Linear(120, 84), ScaledTanh(),  # F6 (B, 84)
            nn.Linear(84, cfg.num_classes),  # (B, K) logits
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, K)
        return self.classifier(self.features(x))


@register_model("lenet5", family=FAMILY, config=LeNet5Config)
def lenet5(cfg: LeNet5Config) -> nn.Module:
    """LeNet-5 (LeCun et al. 1998), the historical baseline: 61.7k parameters."""
    return LeNet5(cfg)


# --------------------------------------------------------------------------------------------------
# Modern CNN: stages of [conv3x3 -> batch-norm -> ReLU] x n, then max-pool -> dropout; the last stage
# ends in global average pooling and a linear head, so any input size works.
#
#   (B, C, H, W) ─ stage 1 ─► (B, c1, H/2, W/2) ─ stage 2 ─► (B, c2, H/4, W/4) ─ ... ─► GAP (B, cN) ─► (B, K)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CNNConfig:
    in_channels: int = 1
    num_classes: int = 10
    input_size: int = 28  # nominal; global average pooling accepts any size >= 2**(len(channels)-1)
    channels: tuple[int, ...] = (32, 64, 128)
    convs_per_stage: int = 2
    dropout: float = 0.1  # after each pooling
    head_dropout: float = 0.3  # before the linear head


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class CNN(nn.Module):
    def __init__(self, cfg: CNNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        cin = cfg.in_channels
        for i, cout in enumerate(cfg.channels):
            for j in range(cfg.convs_per_stage if i < len(cfg.channels) - 1 else 1):
                layers += _conv_bn_relu(cin if j == 0 else cout, cout)
            cin = cout
            if i < len(cfg.channels) - 1:
                layers += [nn.MaxPool2d(2), nn.Dropout(cfg.dropout)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),  # (B, cN)
            nn.Dropout(cfg.head_dropout), nn.Linear(cin, cfg.num_classes),  # (B, K)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, K)
        return self.head(self.features(x))


@register_model("cnn", family=FAMILY, config=CNNConfig)
def cnn(cfg: CNNConfig) -> nn.Module:
    """Conv/BN/ReLU/pool/dropout stages, global average pooling, linear head (any size, gray or RGB)."""
    return CNN(cfg)
