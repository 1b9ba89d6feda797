"""Restricted Boltzmann machines (Smolensky 1986; Hinton 2002), served as Gibbs samplers and feature extractors.

A bipartite energy model over visible units v (the D pixels) and hidden units h, with no connections within a
layer, so each layer is conditionally independent given the other:

    E(v, h) = -b_vᵀv - b_hᵀh - vᵀWh              W (D, H)
    p(h_j = 1 | v) = σ(b_h + vᵀW)_j              binary hidden units (the features)
    p(v_i = 1 | h) = σ(b_v + Wh)_i               logistic visible units; MNIST's grey levels are their probabilities

The hidden units may instead be linear with unit-variance Gaussian noise, h ~ N(b_h + vᵀW, 1) (Hinton &
Salakhutdinov 2006: the top RBM of the DBN, whose states are the 30-D code). Training (CD-k or PCD, training/rbm.py)
follows the gradient of the free energy F(v) = -log Σ_h exp(-E(v, h)), which is what ``free_energy`` computes.

Sampling runs a Gibbs chain v → h → v → … . The exported graph, ``GibbsChain``, takes its randomness as inputs
(uniform noise that the service draws from a request's seed), so the graph itself is deterministic:

    v (B, D), u_h (B, K, H), u_v (B, K, D), steps (B,)
        for t < K, where t < steps:  h ← [u_h[:, t] < p(h | v)],  v ← [u_v[:, t] < p(v | h)]
    ─► v (B, D) the chain's state, image (B, C, H, W) = p(v | h) of the last step, hidden (B, H) = p(h | v_in)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.registry import register_model

FAMILY = "rbm"


@dataclass(frozen=True)
class RBMConfig:
    in_channels: int = 1
    input_size: int = 28
    hidden: int = 500
    visible: int = 0  # 0: the image's pixels (in_channels * input_size²); a stacked RBM's: the layer below's units
    hidden_units: str = "binary"  # binary | gaussian (linear units with unit-variance noise)
    init_std: float = 0.01  # weights start N(0, init_std²): 0.01 in Hinton's 2010 guide (§8), 0.1 in the 2006 code


class RBM(nn.Module):
    """``forward(x) -> (p(h|x), p(v|p(h|x)))``: the features and the mean-field reconstruction, like an
    autoencoder's (code, reconstruction)."""

    def __init__(self, cfg: RBMConfig) -> None:
        super().__init__()
        if cfg.hidden_units not in ("binary", "gaussian"):
            raise ValueError(f"unknown hidden_units {cfg.hidden_units!r}")
        self.cfg = cfg
        d = cfg.visible or cfg.in_channels * cfg.input_size * cfg.input_size
        self.weight = nn.Parameter(torch.randn(d, cfg.hidden) * cfg.init_std)  # (D, H)
        self.visible_bias = nn.Parameter(torch.zeros(d))  # (D,)
        self.hidden_bias = nn.Parameter(torch.zeros(cfg.hidden))  # (H,)

    @property
    def gaussian_hidden(self) -> bool:
        return self.cfg.hidden_units == "gaussian"

    def hidden_mean(self, v: torch.Tensor) -> torch.Tensor:
        """E[h | v] (B, H): σ(b_h + vW) for binary units, b_h + vW for Gaussian ones."""
        a = F.linear(v, self.weight.t(), self.hidden_bias)
        return a if self.gaussian_hidden else torch.sigmoid(a)

    def visible_mean(self, h: torch.Tensor) -> torch.Tensor:
        """p(v = 1 | h) (B, D)."""
        return torch.sigmoid(F.linear(h, self.weight, self.visible_bias))

    def sample_hidden(self, v: torch.Tensor, gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (E[h | v], a sample of h)."""
        mean = self.hidden_mean(v)
        if self.gaussian_hidden:
            return mean, mean + torch.randn(mean.shape, generator=gen)
        return mean, (torch.rand(mean.shape, generator=gen) < mean).to(v.dtype)

    def sample_visible(self, h: torch.Tensor, gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.visible_mean(h)
        return mean, (torch.rand(mean.shape, generator=gen) < mean).to(h.dtype)

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        """F(v) (B,) with the hidden units summed (binary) or integrated (Gaussian) out: its gradient at the data
        minus its gradient at the model's samples is the log-likelihood gradient CD and PCD follow."""
        a = F.linear(v, self.weight.t(), self.hidden_bias)  # (B, H)
        hidden_term = 0.5 * a.pow(2) if self.gaussian_hidden else F.softplus(a)
        return -(v @ self.visible_bias) - hidden_term.sum(1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # (B, C, H, W) or (B, D)
        hidden = self.hidden_mean(x.flatten(1))  # (B, H)
        return hidden, self.visible_mean(hidden).view_as(x)  # (B, H), x's shape


class GibbsChain(nn.Module):
    """What is exported of a binary RBM: up to ``k`` Gibbs steps per run, the noise given as inputs (see the module's
    docstring); a row with ``steps`` <= t keeps its state at step t, so any number of steps is whole runs."""

    def __init__(self, rbm: RBM, k: int) -> None:
        super().__init__()
        if rbm.gaussian_hidden:
            raise ValueError("the exported Gibbs chain is for binary hidden units")
        self.rbm, self.k = rbm, k
        c, s = rbm.cfg.in_channels, rbm.cfg.input_size
        self.image_shape = (c, s, s)

    def forward(
        self, v: torch.Tensor, u_h: torch.Tensor, u_v: torch.Tensor, steps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden = self.rbm.hidden_mean(v)  # (B, H): the input's features
        image = v  # (B, D): a row that takes no step shows its state
        p_h = hidden
        for t in range(self.k):
            on = (steps > t).to(v.dtype).unsqueeze(1)  # (B, 1)
            h = (u_h[:, t] < p_h).to(v.dtype)  # (B, H)
            p_v = self.rbm.visible_mean(h)  # (B, D)
            v = on * (u_v[:, t] < p_v).to(v.dtype) + (1 - on) * v
            image = on * p_v + (1 - on) * image
            if t + 1 < self.k:
                p_h = self.rbm.hidden_mean(v)
        return v, image.view(-1, *self.image_shape), hidden


@register_model("rbm", family=FAMILY, config=RBMConfig)
def rbm(cfg: RBMConfig) -> nn.Module:
    """Binary restricted Boltzmann machine, 784-500 by default, trained by contrastive divergence."""
    return RBM(cfg)
