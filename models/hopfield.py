"""The Hopfield network (Hopfield, PNAS 1982): an associative memory of P binary patterns over N units.

A state is a vector of N units, each +1 or -1 (for an image, a unit per pixel: ink +1, background -1). Storing
sets the symmetric weights W (zero diagonal); recall updates a state until it stops changing, and a corrupted
pattern falls back into the stored one it is closest to, or into a spurious state (a mixture, a reversed
pattern). The exported graph is ONE synchronous sweep, every unit at once (Little 1974):

    s (B, N) ±1 ─► h = W s - b ─► s' = sign(h), a unit with h = 0 keeps its value
                                  E(s') = -1/2 s'ᵀ W s' + bᵀ s'        the energy of the new state
                                  m = Ξ s' / N                         overlaps with the P stored patterns

and whoever runs it (training's evaluation, the service) repeats the sweep until a fixed point, a 2-cycle or a
sweep limit: with a symmetric W, synchronous dynamics ends in a fixed point or a cycle of two states (Goles et
al. 1985; Bruck 1990). The fixed points are those of the classic asynchronous dynamics, but E need not fall at
every synchronous sweep (the monotone quantity is a two-state Lyapunov function); training records how often it
rises.

The storage rules (``rule``):
- ``hebbian``: W = Σ_μ ξ^μ ξ^μᵀ, zero diagonal (Hopfield 1982). Capacity ≈ 0.138 N for random patterns (Amit,
  Gutfreund & Sompolinsky 1985), far less for correlated ones such as digits, which share most background pixels.
- ``pseudo-inverse`` (the projection rule; Personnaz, Guyon & Dreyfus 1985; Kanter & Sompolinsky 1987):
  W = Ξᵀ (Ξ Ξᵀ)⁻¹ Ξ, the projection onto the patterns' span, with its diagonal removed (which widens the basins).
  Every linearly independent pattern set of P < N is stored as fixed points, correlated or not.

Fields are exact: the Hebbian W is left as integer counts (the textbook's 1/N changes no sign), and the
pseudo-inverse W is rounded to multiples of 2^-16, so every partial sum of W s is a float32 without rounding
(|Σ_j W_ij s_j| ≤ √N ‖W_i‖ ≤ √N < 2^8). A tie h = 0 is then exactly 0, and a row's sweep does not depend on the
order in which a runtime sums, nor on the rows it is batched with.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.registry import register_model

FAMILY = "associative-memory"
RULES = ("hebbian", "pseudo-inverse")
GRID = 2.0**-16  # the pseudo-inverse weights' rounding step


@dataclass(frozen=True)
class HopfieldConfig:
    units: int = 784  # N: one unit per pixel of a 28 x 28 image
    patterns: int = 30  # P: stored patterns (the rows of the overlap read-out)
    rule: str = "pseudo-inverse"  # hebbian | pseudo-inverse: how store() sets W
    # read by training and the service, not by forward
    binarize: float = 0.5  # a pixel in [0, 1] above it is +1 (ink), otherwise -1
    match_overlap: float = 0.9  # a final state matches its closest stored pattern when their overlap reaches this


def hebbian_weights(patterns: torch.Tensor) -> torch.Tensor:
    """(P, N) ±1 -> W (N, N) = Σ_μ ξ^μ ξ^μᵀ with a zero diagonal (integer counts)."""
    xi = patterns.double()
    w = xi.T @ xi  # (N, N)
    w.fill_diagonal_(0.0)
    return w.float()


def pseudo_inverse_weights(patterns: torch.Tensor) -> torch.Tensor:
    """(P, N) ±1 -> W (N, N) = Ξᵀ (Ξ Ξᵀ)⁻¹ Ξ with a zero diagonal, rounded to multiples of 2^-16. Raises when the
    patterns are linearly dependent (a repeated pattern, P ≥ N): their overlap matrix is singular."""
    xi = patterns.double()  # (P, N)
    overlaps = xi @ xi.T  # (P, P)
    if torch.linalg.matrix_rank(overlaps) < len(xi):
        raise ValueError("the patterns are linearly dependent: the pseudo-inverse rule cannot store them")
    w = xi.T @ torch.linalg.solve(overlaps, xi)  # (N, N)
    w.fill_diagonal_(0.0)
    return (torch.round(w / GRID) * GRID).float()


class HopfieldNetwork(nn.Module):
    """Weights W (N, N) and threshold b (N,) (zero under both rules): fixed parameters, set by ``store`` and never
    by gradient (of W's N² entries, N(N-1)/2 are free: it is symmetric with a zero diagonal); the stored patterns
    Ξ (P, N), a buffer, are the overlap read-out. ``forward`` is one synchronous sweep."""

    patterns: torch.Tensor

    def __init__(self, cfg: HopfieldConfig) -> None:
        super().__init__()
        if cfg.rule not in RULES:
            raise ValueError(f"unknown rule {cfg.rule!r}; one of {RULES}")
        self.cfg = cfg
        self.weight = nn.Parameter(torch.zeros(cfg.units, cfg.units), requires_grad=False)  # (N, N)
        self.threshold = nn.Parameter(torch.zeros(cfg.units), requires_grad=False)  # (N,)
        self.register_buffer("patterns", torch.zeros(cfg.patterns, cfg.units))  # (P, N)

    @torch.no_grad()
    def store(self, patterns: torch.Tensor) -> HopfieldNetwork:
        """Store (P, N) ±1 patterns with the configured rule."""
        if patterns.shape != self.patterns.shape:
            raise ValueError(f"expected {tuple(self.patterns.shape)} patterns, got {tuple(patterns.shape)}")
        if not bool(((patterns == 1) | (patterns == -1)).all()):
            raise ValueError("patterns must be ±1")
        rule = hebbian_weights if self.cfg.rule == "hebbian" else pseudo_inverse_weights
        self.weight.copy_(rule(patterns))
        self.threshold.zero_()
        self.patterns.copy_(patterns.float())
        return self

    def forward(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # (B, N) ±1
        field = state @ self.weight - self.threshold  # (B, N); W is symmetric
        nxt = torch.where(field > 0, 1.0, torch.where(field < 0, -1.0, state))  # (B, N)
        energy = -0.5 * (nxt * (nxt @ self.weight)).sum(1) + nxt @ self.threshold  # (B,)
        overlaps = nxt @ self.patterns.T / self.cfg.units  # (B, P)
        return nxt, energy, overlaps


@register_model("hopfield-hebbian", family=FAMILY, config=HopfieldConfig, defaults={"rule": "hebbian"})
def hopfield_hebbian(cfg: HopfieldConfig) -> nn.Module:
    """Hopfield network, Hebbian rule (Hopfield 1982): capacity ≈ 0.138 N for random patterns."""
    return HopfieldNetwork(cfg)


@register_model("hopfield-pseudo-inverse", family=FAMILY, config=HopfieldConfig, defaults={"rule": "pseudo-inverse"})
def hopfield_pseudo_inverse(cfg: HopfieldConfig) -> nn.Module:
    """Hopfield network, pseudo-inverse (projection) rule (Personnaz et al. 1985): stores correlated patterns."""
    return HopfieldNetwork(cfg)
