"""Fully connected image classifiers of the classic canon: the multilayer perceptron trained by backpropagation,
and the radial-basis-function network.

Both see the image as a flat vector of its H*W*C normalised pixels, so they are trained, exported and served by
the image-classification family's recipe, spec and task like the CNNs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.registry import register_model

FAMILY = "image-classification"


# --------------------------------------------------------------------------------------------------
# Multilayer perceptron (Rumelhart, Hinton & Williams 1986): affine layers with a nonlinearity between them,
# trained by backpropagation. The default 784-800-800-10 is Simard, Steinkraus & Platt 2003's "2-layer MLP"
# (800 hidden units per layer); dropout (Srivastava et al. 2014) after each hidden layer.
#
#   (B, C, H, W) ─ flatten ─► (B, CHW) ─ [Linear ─ act ─ dropout] × len(hidden) ─► Linear ─► (B, K)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MLPConfig:
    in_channels: int = 1
    num_classes: int = 10
    input_size: int = 28
    hidden: tuple[int, ...] = (800, 800)
    activation: str = "relu"  # relu | tanh
    dropout: float = 0.2
    input_dropout: float = 0.0


class MLP(nn.Module):
    def __init__(self, cfg: MLPConfig) -> None:
        super().__init__()
        if cfg.activation not in ("relu", "tanh"):
            raise ValueError(f"activation must be relu or tanh, not {cfg.activation!r}")
        self.cfg = cfg
        width = cfg.in_channels * cfg.input_size * cfg.input_size
        layers: list[nn.Module] = [nn.Flatten(), nn.Dropout(cfg.input_dropout)]  # (B, CHW)
        for h in cfg.hidden:
            act = nn.ReLU() if cfg.activation == "relu" else nn.Tanh()
            layers += [nn.Linear(width, h), act, nn.Dropout(cfg.dropout)]
            width = h
        layers.append(nn.Linear(width, cfg.num_classes))  # (B, K) logits
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, K)
        return self.net(x)


@register_model("mlp", family=FAMILY, config=MLPConfig)
def mlp(cfg: MLPConfig) -> nn.Module:
    """Multilayer perceptron 784-800-800-10 (ReLU, dropout), trained by backpropagation: 1.28 M parameters."""
    return MLP(cfg)


# --------------------------------------------------------------------------------------------------
# Radial-basis-function network (Broomhead & Lowe 1988; Moody & Darken 1989): M Gaussian units
# phi_j(x) = exp(-||x - c_j||^2 / (2 sigma_j^2)) on the flat input, then a linear output layer.
# Moody & Darken's recipe: centres by k-means, each width from the centres' spread (the distance to the nearest
# other centres), the output weights by least squares. ``init_from_data`` does all three; the recipe then trains
# the output layer by gradient descent on the cross-entropy from there (least squares fits one-hot targets, so its
# outputs are scaled to the cross-entropy's best first). ``learn_centres`` lets gradient descent move the centres
# and widths too: on MNIST that lost 4 points of validation accuracy in our runs, so it is off.
#
#   (B, C, H, W) ─ flatten ─► (B, D) ─ squared distances to the centres (B, M) ─ exp(-d / 2σ²) ─► Linear ─► (B, K)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RBFConfig:
    in_channels: int = 1
    num_classes: int = 10
    input_size: int = 28
    centres: int = 1000
    width_neighbours: int = 5  # sigma_j: the RMS distance from centre j to its p nearest other centres
    width_scale: float = 1.0
    learn_centres: bool = False  # False: gradient descent trains the output layer only (centres and widths stay)


class RBFNetwork(nn.Module):
    def __init__(self, cfg: RBFConfig) -> None:
        super().__init__()
        self.cfg = cfg
        dim = cfg.in_channels * cfg.input_size * cfg.input_size
        self.centres = nn.Parameter(torch.randn(cfg.centres, dim) * 0.1)  # (M, D)
        self.log_sigma = nn.Parameter(torch.zeros(cfg.centres))  # (M,)
        self.out = nn.Linear(cfg.centres, cfg.num_classes)
        self.centres.requires_grad_(cfg.learn_centres)
        self.log_sigma.requires_grad_(cfg.learn_centres)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, M) activations in (0, 1]
        v = x.flatten(1)  # (B, D)
        # ||v - c||^2 = ||v||^2 - 2 v.c + ||c||^2, clamped: rounding can make it slightly negative
        d2 = (v.pow(2).sum(1, keepdim=True) - 2 * v @ self.centres.t() + self.centres.pow(2).sum(1)).clamp_min(0)
        return torch.exp(-d2 * torch.exp(-2 * self.log_sigma) / 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, K)
        return self.out(self.hidden(x))

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator, iters: int = 20) -> None:
        """Moody & Darken: k-means centres on (a sample of) the normalised training images ``x`` (N, C, H, W),
        widths from the centres' spread, output weights by regularised least squares onto one-hot ``y``."""
        v = x.flatten(1)
        m = self.cfg.centres
        if len(v) >= m:
            origin = torch.randperm(len(v), generator=generator)[:m]  # the image each centre starts on
            c = v[origin].clone()  # (M, D)
        else:  # fewer images than centres (a small folder): some start on the same image, a little apart
            origin = torch.randint(len(v), (m,), generator=generator)
            c = v[origin] + 0.01 * torch.randn(m, v.shape[1], generator=generator)
        for _ in range(iters):  # Lloyd's algorithm
            assign = torch.cdist(v, c).argmin(1)  # (N,)
            sums = torch.zeros_like(c).index_add_(0, assign, v)
            counts = torch.bincount(assign, minlength=m).unsqueeze(1)
            c = torch.where(counts > 0, sums / counts.clamp_min(1), c)
        self.centres.copy_(c)
        dist = torch.cdist(c, c)
        # a centre's spread is measured to the centres of other images: copies of its own image, 0.01 apart, made
        # every width ~0 on 108 images and 1,000 centres, so that no unit answered any other image (chance accuracy)
        distinct = len(torch.unique(origin))
        same = origin[:, None] == origin[None, :] if distinct > 1 else torch.eye(m, dtype=torch.bool)
        dist[same] = float("inf")
        p = min(self.cfg.width_neighbours, (distinct if distinct > 1 else m) - 1)
        sigma = dist.topk(p, largest=False).values.pow(2).mean(1).sqrt() * self.cfg.width_scale
        self.log_sigma.copy_(sigma.clamp_min(1e-3).log())
        phi = torch.cat([self.hidden(x), torch.ones(len(x), 1)], 1)  # (N, M + 1)
        target = nn.functional.one_hot(y.long(), self.cfg.num_classes).float()
        gram = phi.t() @ phi + 1e-3 * torch.eye(phi.shape[1])
        w = torch.linalg.solve(gram, phi.t() @ target)  # (M + 1, K)
        # least squares fits 0/1 targets, not logits: scale it to the cross-entropy's best on the same images
        scores = phi @ w
        scale = min((1, 2, 5, 10, 20, 50, 100), key=lambda a: nn.functional.cross_entropy(a * scores, y.long()).item())
        self.out.weight.copy_(scale * w[:-1].t())
        self.out.bias.copy_(scale * w[-1])


@register_model("rbf", family=FAMILY, config=RBFConfig)
def rbf(cfg: RBFConfig) -> nn.Module:
    """Radial-basis-function network: 1000 Gaussian units (k-means centres, widths from their spread) and a
    linear output layer (least squares, then gradient descent)."""
    return RBFNetwork(cfg)
