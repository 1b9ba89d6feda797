"""The deep autoencoder of Hinton & Salakhutdinov, "Reducing the dimensionality of data with neural networks"
(Science 2006): a stack of RBMs (models/rbm.py) pretrained greedily, one layer on the hidden probabilities of the
one below, then unrolled into an autoencoder whose decoder starts as the transposed encoder, and fine-tuned by
backpropagation (training/dbn.py).

    x (B, 784) ─ σ(W₁ᵀ) ─ 1000 ─ σ(W₂ᵀ) ─ 500 ─ σ(W₃ᵀ) ─ 250 ─ W₄ᵀ ─► code (B, 30)      RBMs 1-3 binary, RBM 4 with
    code ─ σ(W₄) ─ 250 ─ σ(W₃) ─ 500 ─ σ(W₂) ─ 1000 ─ σ(W₁) ─► x̂ (B, 784)              linear (Gaussian) hidden units

All units are logistic except the code's, which are linear as the top RBM's Gaussian hidden units are. Its
``forward(x) -> (code, reconstruction)`` is the autoencoders' (models/autoencoder.py), so it is exported and
served as one of them.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import nn

from models.rbm import RBM, RBMConfig
from models.registry import register_model

FAMILY = "dbn"


@dataclass(frozen=True)
class DBNConfig:
    in_channels: int = 1
    input_size: int = 28
    hidden: tuple[int, ...] = (1000, 500, 250)  # the paper's 784-1000-500-250-30
    code_size: int = 30
    init_std: float = 0.1  # the RBMs' initial weights, N(0, 0.1²) as in the paper's code


class DBNAutoencoder(nn.Module):
    """Logistic encoder and decoder around a linear code; ``unroll`` loads a pretrained RBM stack into it."""

    def __init__(self, cfg: DBNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        widths = self.widths()
        enc: list[nn.Module] = [nn.Flatten()]
        for a, b in itertools.pairwise(widths[:-1]):
            enc += [nn.Linear(a, b), nn.Sigmoid()]
        enc.append(nn.Linear(widths[-2], widths[-1]))  # linear code units
        dec: list[nn.Module] = []
        for a, b in itertools.pairwise(widths[::-1]):
            dec += [nn.Linear(a, b), nn.Sigmoid()]
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec[:-1])  # the output's sigmoid is applied in forward

    def widths(self) -> list[int]:
        """[D, *hidden, code]: the units of each layer, pixels first."""
        return [self.cfg.in_channels * self.cfg.input_size**2, *self.cfg.hidden, self.cfg.code_size]

    def rbm_configs(self) -> list[RBMConfig]:
        """The stack pretrained greedily: binary hidden units, except the top RBM's, which are Gaussian."""
        widths = self.widths()
        return [
            RBMConfig(
                visible=a,
                hidden=b,
                hidden_units="gaussian" if i == len(widths) - 2 else "binary",
                init_std=self.cfg.init_std,
            )
            for i, (a, b) in enumerate(itertools.pairwise(widths))
        ]

    @torch.no_grad()
    def unroll(self, rbms: list[RBM]) -> None:
        """Encoder layer i recognises with RBM i (W_iᵀ, b_h), decoder layer i generates with it (W_i, b_v)."""
        enc = [m for m in self.encoder if isinstance(m, nn.Linear)]
        dec = [m for m in self.decoder if isinstance(m, nn.Linear)][::-1]
        for rbm, up, down in zip(rbms, enc, dec, strict=True):
            up.weight.copy_(rbm.weight.t())
            up.bias.copy_(rbm.hidden_bias)
            down.weight.copy_(rbm.weight)
            down.bias.copy_(rbm.visible_bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # (B, C, H, W)
        code = self.encoder(x)  # (B, code)
        return code, torch.sigmoid(self.decoder(code)).view_as(x)  # (B, code), (B, C, H, W) in [0, 1]


@register_model("dbn-autoencoder", family=FAMILY, config=DBNConfig)
def dbn_autoencoder(cfg: DBNConfig) -> nn.Module:
    """Deep autoencoder pretrained as a stack of RBMs, 784-1000-500-250-30 (Hinton & Salakhutdinov 2006)."""
    return DBNAutoencoder(cfg)
