"""Generative models: DCGAN (optionally class-conditional) and the convolutional VAE (optionally conditional).

Both produce images with pixels in [0, 1] in the dataset's convention (MNIST: white ink on black), from a
latent vector drawn from a standard normal, plus a class label for the conditional variants:

    GAN   z (B, k) [+ label (B,)] ─ generator ─► image (B, C, H, W)          (discriminator: training only)
    VAE   image [+ label] ─ encoder ─► μ, log σ² ─ z = μ + σ·ε ─ decoder [+ label] ─► image

GAN: Goodfellow et al. 2014, with the DCGAN practice of Radford et al. 2016 (strided convolutions instead
of pooling, batch norm in the generator, LeakyReLU 0.2 in the discriminator, no norm on its first layer).
Conditional: the generator reads a learned label embedding beside z; the discriminator adds the projection
term ⟨embed(y), φ(x)⟩ of Miyato & Koyama 2018. The WGAN-GP objective (Gulrajani et al. 2017) is a training
option; it needs a per-sample critic norm (``critic_norm="layer"``), which the training task selects.

VAE: Kingma & Welling 2014, a Bernoulli decoder on pixel intensities and a diagonal Gaussian posterior.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.registry import register_model

GAN, VAE = "gan", "vae"  # registry families: each has its own training task


@dataclass(frozen=True)
class GANConfig:
    in_channels: int = 1
    input_size: int = 28  # a multiple of 4: two stride-2 stages from input_size / 4
    latent_dim: int = 64
    num_classes: int = 0  # > 0: class-conditional (the label is an input of both networks)
    width: int = 64  # generator's last / discriminator's first conv channels; the other stage has 2x
    embed_dim: int = 32  # generator's label embedding
    critic_norm: str = "batch"  # batch | layer | none  (WGAN-GP's gradient penalty needs layer or none)


def _norm2d(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)  # normalises each sample over (C, H, W)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown critic_norm {kind!r}")


class Generator(nn.Module):
    def __init__(self, cfg: GANConfig) -> None:
        super().__init__()
        if cfg.input_size % 4:
            raise ValueError(f"input_size must be a multiple of 4, got {cfg.input_size}")
        self.cfg = cfg
        s, w = cfg.input_size // 4, cfg.width
        self.embed = nn.Embedding(cfg.num_classes, cfg.embed_dim) if cfg.num_classes else None
        d_in = cfg.latent_dim + (cfg.embed_dim if cfg.num_classes else 0)
        self.project = nn.Sequential(
            nn.Linear(d_in, 2 * w * s * s, bias=False), nn.BatchNorm1d(2 * w * s * s), nn.ReLU(inplace=True)
        )
        self.shape = (2 * w, s, s)
        self.up = nn.Sequential(
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(w, cfg.in_channels, 4, 2, 1),
            nn.Sigmoid(),  # pixels in [0, 1]
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            if labels is None:
                raise ValueError("a conditional generator needs labels")
            z = torch.cat([z, self.embed(labels)], dim=1)
        return self.up(self.project(z).view(-1, *self.shape))


class Discriminator(nn.Module):
    def __init__(self, cfg: GANConfig) -> None:
        super().__init__()
        s, w = cfg.input_size // 4, cfg.width
        self.features = nn.Sequential(
            nn.Conv2d(cfg.in_channels, w, 4, 2, 1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(w, 2 * w, 4, 2, 1, bias=cfg.critic_norm == "none"),
            _norm2d(cfg.critic_norm, 2 * w),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Flatten(),
        )
        d = 2 * w * s * s
        self.out = nn.Linear(d, 1)
        self.project = nn.Embedding(cfg.num_classes, d) if cfg.num_classes else None
        if self.project is not None:
            nn.init.normal_(self.project.weight, std=0.01)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """-> one real/fake logit (or critic score) per image, (B,)."""
        h = self.features(x * 2 - 1)  # [0, 1] -> [-1, 1]
        score = self.out(h).squeeze(1)
        if self.project is not None:
            assert labels is not None
            score = score + (self.project(labels) * h).sum(1)
        return score


class DCGAN(nn.Module):
    """The generator/discriminator pair; ``forward`` is the generator (what is exported and served)."""

    def __init__(self, cfg: GANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.generator = Generator(cfg)
        self.discriminator = Discriminator(cfg)
        for m in self.modules():  # DCGAN initialisation: N(0, 0.02) weights, N(1, 0.02) norm scales
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.generator(z, labels)


@register_model("dcgan", family=GAN, config=GANConfig)
def dcgan(cfg: GANConfig) -> nn.Module:
    """DCGAN generator/discriminator pair (Radford et al. 2016), unconditional."""
    return DCGAN(cfg)


@register_model("cgan", family=GAN, config=GANConfig, defaults={"num_classes": 10})
def cgan(cfg: GANConfig) -> nn.Module:
    """Class-conditional DCGAN: label embedding in the generator, projection discriminator."""
    return DCGAN(cfg)


@dataclass(frozen=True)
class VAEConfig:
    in_channels: int = 1
    input_size: int = 28  # a multiple of 4
    latent_dim: int = 16
    num_classes: int = 0  # > 0: conditional VAE (Sohn et al. 2015): encoder and decoder read the label
    channels: tuple[int, ...] = (32, 64)  # two stride-2 conv stages
    hidden: int = 256
    embed_dim: int = 16


class ConvVAE(nn.Module):
    """``forward(x[, labels]) -> (logits, mu, logvar)`` for training; ``encode`` / ``decode`` for export."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        if cfg.input_size % 4 or len(cfg.channels) != 2:
            raise ValueError("the VAE has two stride-2 stages: input_size % 4 == 0 and two channel counts")
        self.cfg = cfg
        c1, c2 = cfg.channels
        s = cfg.input_size // 4
        e = cfg.embed_dim if cfg.num_classes else 0
        self.embed = nn.Embedding(cfg.num_classes, cfg.embed_dim) if cfg.num_classes else None
        self.conv = nn.Sequential(
            nn.Conv2d(cfg.in_channels, c1, 4, 2, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c1, c2, 4, 2, 1),
            nn.ReLU(inplace=True),
            nn.Flatten(),
        )
        self.to_posterior = nn.Sequential(
            nn.Linear(c2 * s * s + e, cfg.hidden), nn.ReLU(inplace=True), nn.Linear(cfg.hidden, 2 * cfg.latent_dim)
        )
        self.from_latent = nn.Sequential(
            nn.Linear(cfg.latent_dim + e, cfg.hidden),
            nn.ReLU(inplace=True),
            nn.Linear(cfg.hidden, c2 * s * s),
            nn.ReLU(inplace=True),
        )
        self.shape = (c2, s, s)
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(c2, c1, 4, 2, 1), nn.ReLU(inplace=True), nn.ConvTranspose2d(c1, cfg.in_channels, 4, 2, 1)
        )

    def _with_label(self, h: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if self.embed is None:
            return h
        if labels is None:
            raise ValueError("a conditional VAE needs labels")
        return torch.cat([h, self.embed(labels)], dim=1)

    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixels in [0, 1] -> posterior mean and log-variance, (B, k) each."""
        mu, logvar = self.to_posterior(self._with_label(self.conv(x), labels)).chunk(2, dim=1)
        return mu, logvar

    def decode_logits(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.deconv(self.from_latent(self._with_label(z, labels)).view(-1, *self.shape))

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Latent -> Bernoulli means, i.e. pixels in [0, 1]."""
        return torch.sigmoid(self.decode_logits(z, labels))

    def forward(
        self, x: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x, labels)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu  # reparameterisation
        return self.decode_logits(z, labels), mu, logvar


class VAEDecoder(nn.Module):
    """The exported generator of a VAE: z [+ labels] -> image."""

    def __init__(self, vae: ConvVAE) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.vae.decode(z, labels)


class VAEEncoder(nn.Module):
    """The exported encoder of a VAE: image [+ labels] -> (mu, logvar)."""

    def __init__(self, vae: ConvVAE) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.vae.encode(x, labels)


@register_model("vae", family=VAE, config=VAEConfig)
def vae(cfg: VAEConfig) -> nn.Module:
    """Convolutional VAE (Kingma & Welling 2014)."""
    return ConvVAE(cfg)


@register_model("cvae", family=VAE, config=VAEConfig, defaults={"num_classes": 10})
def cvae(cfg: VAEConfig) -> nn.Module:
    """Conditional convolutional VAE: encoder and decoder read a label embedding."""
    return ConvVAE(cfg)
