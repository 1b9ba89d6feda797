"""A small pre-activation ResNet for 28x28 images (He, Zhang, Ren & Sun 2016, "Identity Mappings in Deep
Residual Networks": BN -> ReLU -> conv in each residual branch, nothing on the identity path).

The CIFAR layout of the original ResNet paper (He et al. 2015, Section 4.2): a 3x3 stem, three stages of
``blocks`` basic blocks at ``widths`` channels, the second and third halving the resolution with a strided
conv (and a 1x1 strided projection on the shortcut), global average pooling and a linear head. The defaults,
4 blocks per stage at 16-32-64 channels (a ResNet-26), are 0.37 M parameters; the paper's ResNet-20 is 3 blocks
(0.27 M). On two CPU cores an epoch of Fashion-MNIST takes about 2 minutes a thread at these widths and 7 at
32-64-128 (`--model-arg 'widths=[32, 64, 128]'`, 1.1 M parameters).

  (B, C, 28, 28) ─ stem ─► (B, w1, 28, 28) ─ stage 1 ─► stage 2 (B, w2, 14, 14) ─ stage 3 (B, w3, 7, 7)
                 ─ BN ─ ReLU ─ GAP ─► (B, w3) ─ Linear ─► (B, K)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.registry import register_model


@dataclass(frozen=True)
class ResNetConfig:
    in_channels: int = 1
    num_classes: int = 10
    input_size: int = 28  # nominal: global average pooling accepts any size >= 4
    widths: tuple[int, ...] = (16, 32, 64)
    blocks: int = 4  # basic blocks per stage
    dropout: float = 0.0  # before the linear head


class PreActBlock(nn.Module):
    """x + conv(relu(bn(conv(relu(bn(x)))))); the shortcut is a strided 1x1 conv when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(cin), nn.BatchNorm2d(cout)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride, bias=False) if stride != 1 or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, cin, H, W) -> (B, cout, H/s, W/s)
        out = F.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x  # the projection sees the pre-activation
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + skip


class PreActResNet(nn.Module):
    def __init__(self, cfg: ResNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.stem = nn.Conv2d(cfg.in_channels, cfg.widths[0], 3, padding=1, bias=False)
        layers: list[nn.Module] = []
        cin = cfg.widths[0]
        for i, w in enumerate(cfg.widths):
            for j in range(cfg.blocks):
                layers.append(PreActBlock(cin, w, 2 if (i > 0 and j == 0) else 1))
                cin = w
        self.stages = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.BatchNorm2d(cin), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),  # (B, w3)
            nn.Dropout(cfg.dropout), nn.Linear(cin, cfg.num_classes),  # (B, K)
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, K)
        return self.head(self.stages(self.stem(x)))


@register_model("resnet", family="image-classification", config=ResNetConfig)
def resnet(cfg: ResNetConfig) -> nn.Module:
    """Pre-activation ResNet (He et al. 2016): 3 stages of 4 basic blocks at 16-32-64 channels, 0.37 M parameters."""
    return PreActResNet(cfg)
