"""Autoencoders (Hinton & Salakhutdinov, Science 2006: a nonlinear generalisation of PCA).

Every autoencoder maps pixels in [0, 1] to a code and back: ``forward(x) -> (code, reconstruction)``,
so one exported graph serves both /v1/encode and /v1/reconstruct. The denoising and sparse variants are
the same networks with a training-time corruption or code penalty recorded in their config, which the
shared reconstruction training task reads.

    x (B, 1, 28, 28) ─ encoder ─► code (B, 30) ─ decoder ─► sigmoid ─► x̂ (B, 1, 28, 28)
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import nn

from models.registry import register_model

FAMILY = "autoencoder"


@dataclass(frozen=True)
class AutoencoderConfig:
    in_channels: int = 1
    input_size: int = 28
    hidden: tuple[int, ...] = (1000, 500, 250)  # the paper's 784-1000-500-250-30 topology
    code_size: int = 30
    conv_channels: tuple[int, ...] = (32, 64)  # convolutional variant only
    # training-time behaviour of the variants (read by the reconstruction task, not by forward)
    noise: str = "none"  # none | gaussian | masking   (denoising autoencoder, Vincent et al. 2008)
    noise_level: float = 0.0  # gaussian std, or fraction of pixels zeroed
    sparsity: str = "none"  # none | l1 | kl             (sparse autoencoder, Ng 2011 lecture notes)
    sparsity_weight: float = 0.0
    sparsity_target: float = 0.05  # rho of the KL penalty on mean sigmoid code activations


class DenseAutoencoder(nn.Module):
    """Fully connected encoder/decoder, mirrored, with a linear code layer (as in the paper)."""

    def __init__(self, cfg: AutoencoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.in_channels * cfg.input_size * cfg.input_size
        widths = [d, *cfg.hidden]
        enc: list[nn.Module] = [nn.Flatten()]
        for a, b in itertools.pairwise(widths):
            enc += [nn.Linear(a, b), nn.ReLU(inplace=True)]
        enc.append(nn.Linear(widths[-1], cfg.code_size))  # linear code units
        dec: list[nn.Module] = []
        back = [cfg.code_size, *reversed(cfg.hidden)]
        for a, b in itertools.pairwise(back):
            dec += [nn.Linear(a, b), nn.ReLU(inplace=True)]
        dec.append(nn.Linear(back[-1], d))
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # (B, C, H, W)
        code = self.encoder(x)  # (B, code)
        recon = torch.sigmoid(self.decoder(code)).view_as(x)  # (B, C, H, W) in [0, 1]
        return code, recon


class ConvAutoencoder(nn.Module):
    """Strided conv encoder -> linear code -> transposed-conv decoder (input_size divisible by 4)."""

    def __init__(self, cfg: AutoencoderConfig) -> None:
        super().__init__()
        if cfg.input_size % (2 ** len(cfg.conv_channels)):
            raise ValueError("input_size must be divisible by 2 ** len(conv_channels)")
        self.cfg = cfg
        chans = [cfg.in_channels, *cfg.conv_channels]
        enc: list[nn.Module] = []
        for a, b in itertools.pairwise(chans):
            enc += [nn.Conv2d(a, b, 3, stride=2, padding=1), nn.BatchNorm2d(b), nn.ReLU(inplace=True)]
        self.side = cfg.input_size // 2 ** len(cfg.conv_channels)
        flat = chans[-1] * self.side * self.side
        self.encoder = nn.Sequential(*enc, nn.Flatten(), nn.Linear(flat, cfg.code_size))  # (B, code)
        dec: list[nn.Module] = []
        back = list(reversed(chans))
        for i, (a, b) in enumerate(itertools.pairwise(back)):
            dec.append(nn.ConvTranspose2d(a, b, 3, stride=2, padding=1, output_padding=1))
            if i < len(back) - 2:
                dec += [nn.BatchNorm2d(b), nn.ReLU(inplace=True)]
        self.project = nn.Sequential(nn.Linear(cfg.code_size, flat), nn.ReLU(inplace=True))
        self.decoder = nn.Sequential(*dec)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        code = self.encoder(x)
        h = self.project(code).view(-1, self.cfg.conv_channels[-1], self.side, self.side)
        return code, torch.sigmoid(self.decoder(h))


@register_model("autoencoder", family=FAMILY, config=AutoencoderConfig)
def autoencoder(cfg: AutoencoderConfig) -> nn.Module:
    """Deep fully connected autoencoder, 784-1000-500-250-30 by default (Hinton & Salakhutdinov 2006)."""
    return DenseAutoencoder(cfg)


@register_model("conv-autoencoder", family=FAMILY, config=AutoencoderConfig)
def conv_autoencoder(cfg: AutoencoderConfig) -> nn.Module:
    """Convolutional autoencoder with a linear code."""
    return ConvAutoencoder(cfg)


@register_model(
    "denoising-autoencoder", family=FAMILY, config=AutoencoderConfig, defaults={"noise": "masking", "noise_level": 0.3}
)
def denoising_autoencoder(cfg: AutoencoderConfig) -> nn.Module:
    """The deep autoencoder trained to undo corruption (default: 30 % of pixels masked; Vincent et al. 2008)."""
    return DenseAutoencoder(cfg)


@register_model(
    "sparse-autoencoder", family=FAMILY, config=AutoencoderConfig, defaults={"sparsity": "l1", "sparsity_weight": 1e-3}
)
def sparse_autoencoder(cfg: AutoencoderConfig) -> nn.Module:
    """The deep autoencoder with a sparsity penalty on its code (default: L1, weight 1e-3)."""
    return DenseAutoencoder(cfg)
