"""The adversarial training task: a registered GAN + images -> checkpoint dict.

Objectives:
  * ``bce``: the non-saturating GAN loss of Goodfellow et al. 2014 (the generator maximises log D(G(z))),
    one discriminator step per generator step, Adam(2e-4, β1 = 0.5) as in Radford et al. 2016;
  * ``wgan-gp``: the Wasserstein critic with gradient penalty λ = 10 and ``n_critic`` = 5 critic steps per
    generator step, Adam(1e-4, β = (0, 0.9)) as in Gulrajani et al. 2017 (the critic gets a per-sample
    norm instead of batch norm, which would break the penalty).

The generator that is kept (and exported) is an exponential moving average of the trained generator's
weights (Yazıcı et al. 2019); it samples better than the last iterate at no training cost. After every
epoch a grid from fixed noise (one row per class for conditional models) is saved as a PNG, so progress
is visible while it trains.
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

import models
from contract.data import Dataset, stratified_split
from contract.images import image_grid
from training.cli import common_config, load_images, model_args, out_dir
from training.common import TrainConfig, checkpoint_dict, fixed_by_data, seed_everything
from training.plots import plot_series
from training.registry import Recipe, register_recipe

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GANTrainConfig(TrainConfig):
    model: str = "cgan"
    epochs: int = 15
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float | None = None  # None: 2e-4 (bce) / 1e-4 (wgan-gp)
    weight_decay: float = 0.0
    schedule: str = "none"
    augment: str = "none"
    gan_loss: str = "bce"  # bce | wgan-gp
    n_critic: int = 0  # discriminator steps per generator step; 0: 1 for bce, 5 for wgan-gp
    gp_weight: float = 10.0
    ema_decay: float = 0.999

    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else (1e-4 if self.gan_loss == "wgan-gp" else 2e-4)

    def critic_steps(self) -> int:
        return self.n_critic or (5 if self.gan_loss == "wgan-gp" else 1)


def gradient_penalty(disc: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor, labels: Any) -> torch.Tensor:
    """(‖∇D(x̂)‖₂ - 1)² on random interpolates x̂ of real and fake images (Gulrajani et al. 2017)."""
    eps = torch.rand(len(real), 1, 1, 1)
    mixed = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(disc(mixed, labels).sum(), mixed, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


@torch.no_grad()
def update_ema(ema: torch.nn.Module, live: torch.nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), live.parameters(), strict=True):
        e.lerp_(p, 1 - decay)
    for e, b in zip(ema.buffers(), live.buffers(), strict=True):
        e.copy_(b)  # batch-norm running statistics follow the live generator


def fixed_noise(latent_dim: int, num_classes: int, per_row: int = 10, seed: int = 1234) -> tuple[torch.Tensor, Any]:
    """The sample grid's inputs: one row per class (conditional) or 8 rows (unconditional)."""
    rows = num_classes or 8
    z = torch.from_numpy(np.random.default_rng(seed).standard_normal((rows * per_row, latent_dim), dtype=np.float32))
    labels = torch.arange(num_classes).repeat_interleave(per_row) if num_classes else None
    return z, labels


def train_gan(
    ds: Dataset,
    cfg: GANTrainConfig,
    model_overrides: dict[str, Any],
    preprocessing: dict[str, Any],
    sample_dir: Path | None = None,
) -> dict:
    gen = seed_everything(cfg)
    train_idx, val_idx = stratified_split(ds.labels, cfg.val_fraction, cfg.split_seed)
    if cfg.dry_run:
        train_idx, val_idx = train_idx[: 2 * cfg.batch_size], val_idx[: cfg.batch_size]
    c, h, _ = ds.images.shape[1:]
    overrides = fixed_by_data(model_overrides, {"in_channels": c, "input_size": h})
    if cfg.gan_loss == "wgan-gp":
        overrides = {"critic_norm": "layer", **overrides}
    model_cfg = models.make_config(cfg.model, **overrides)
    if model_cfg.num_classes and model_cfg.num_classes != len(ds.label_names):
        raise ValueError(f"{cfg.model} has {model_cfg.num_classes} classes, the data {len(ds.label_names)}")
    if cfg.gan_loss == "wgan-gp" and model_cfg.critic_norm == "batch":
        raise ValueError("wgan-gp needs critic_norm 'layer' or 'none' (batch norm breaks the gradient penalty)")
    model = models.create_model(cfg.model, model_cfg)
    G, D = model.generator, model.discriminator
    ema = copy.deepcopy(G).eval()
    betas = (0.0, 0.9) if cfg.gan_loss == "wgan-gp" else (0.5, 0.999)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.resolved_lr(), betas=betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.resolved_lr(), betas=betas)
    x_tr = torch.from_numpy(ds.images[train_idx]).float() / 255.0
    y_tr = torch.from_numpy(ds.labels[train_idx]).long()
    conditional = model_cfg.num_classes > 0
    k, n_critic = model_cfg.latent_dim, cfg.critic_steps()
    steps = math.ceil(len(x_tr) / cfg.batch_size)
    epochs = 1 if cfg.dry_run else cfg.epochs
    z_fixed, y_fixed = fixed_noise(k, model_cfg.num_classes)
    if sample_dir is not None:
        sample_dir.mkdir(parents=True, exist_ok=True)

    def d_loss(real: torch.Tensor, fake: torch.Tensor, y: Any) -> tuple[torch.Tensor, float, float]:
        s_real, s_fake = D(real, y), D(fake, y)
        if cfg.gan_loss == "wgan-gp":
            loss = s_fake.mean() - s_real.mean() + cfg.gp_weight * gradient_penalty(D, real, fake, y)
            return loss, float(s_real.detach().mean()), float(s_fake.detach().mean())
        loss = F.softplus(-s_real).mean() + F.softplus(s_fake).mean()  # -log D(x) - log(1 - D(G(z)))
        return loss, float(torch.sigmoid(s_real.detach()).mean()), float(torch.sigmoid(s_fake.detach()).mean())

    def g_loss(score: torch.Tensor) -> torch.Tensor:
        return -score.mean() if cfg.gan_loss == "wgan-gp" else F.softplus(-score).mean()  # -log D(G(z))

    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    step = 0
    for epoch in range(1, epochs + 1):
        G.train()
        D.train()
        sums = {"d_loss": 0.0, "g_loss": 0.0, "d_real": 0.0, "d_fake": 0.0}
        n_d = n_g = 0
        perm = torch.randperm(len(x_tr), generator=gen)
        bar = tqdm(range(steps), desc=f"epoch {epoch}/{epochs}", disable=not cfg.progress, leave=False)
        for i in bar:
            idx = perm[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            real, y = x_tr[idx], (y_tr[idx] if conditional else None)
            z = torch.randn(len(real), k, generator=gen)
            with torch.no_grad():
                fake = G(z, y)
            loss, s_real, s_fake = d_loss(real, fake, y)
            opt_d.zero_grad(set_to_none=True)
            loss.backward()
            opt_d.step()
            sums["d_loss"] += loss.item()
            sums["d_real"] += s_real
            sums["d_fake"] += s_fake
            n_d += 1
            step += 1
            if step % n_critic:
                continue
            y_g = torch.randint(0, model_cfg.num_classes, (cfg.batch_size,), generator=gen) if conditional else None
            z = torch.randn(cfg.batch_size, k, generator=gen)
            lg = g_loss(D(G(z, y_g), y_g))
            opt_g.zero_grad(set_to_none=True)
            lg.backward()
            opt_g.step()
            update_ema(ema, G, cfg.ema_decay if step > 10 * n_critic else 0.0)
            sums["g_loss"] += lg.item()
            n_g += 1
            bar.set_postfix(d=f"{sums['d_loss'] / n_d:.3f}", g=f"{sums['g_loss'] / max(n_g, 1):.3f}")
        row = {
            "epoch": epoch,
            "d_loss": sums["d_loss"] / max(n_d, 1),
            "g_loss": sums["g_loss"] / max(n_g, 1),
            "d_real": sums["d_real"] / max(n_d, 1),
            "d_fake": sums["d_fake"] / max(n_d, 1),
            "elapsed_s": time.perf_counter() - t0,
        }
        history.append(row)
        log.info(
            "epoch %d/%d d_loss %.4f g_loss %.4f D(x) %.3f D(G(z)) %.3f",
            epoch,
            epochs,
            row["d_loss"],
            row["g_loss"],
            row["d_real"],
            row["d_fake"],
        )
        if sample_dir is not None:
            with torch.no_grad():
                grid = ema(z_fixed, y_fixed).numpy()
            image_grid(grid, cols=10).save(sample_dir / f"epoch_{epoch:03d}.png")

    model.generator.load_state_dict(ema.state_dict())  # ship the averaged generator
    metrics: dict[str, Any] = {
        "final_d_loss": history[-1]["d_loss"],
        "final_g_loss": history[-1]["g_loss"],
        "epochs_run": len(history),
        "train_seconds": time.perf_counter() - t0,
        "n_train": len(train_idx),
        "n_val": len(val_idx),
    }
    return checkpoint_dict(
        cfg=cfg,
        model=model,
        model_cfg=model_cfg,
        n_train=len(train_idx),
        n_val=len(val_idx),
        metrics=metrics,
        history=history,
        preprocessing=preprocessing,
        dataset=ds,
    )


PANELS = {"loss": ["d_loss", "g_loss"], "discriminator output": ["d_real", "d_fake"]}


def _add_args(p: argparse.ArgumentParser) -> None:
    g = GANTrainConfig()
    gan = p.add_argument_group("GANs")
    gan.add_argument("--gan-loss", choices=["bce", "wgan-gp"], default=g.gan_loss, help="adversarial objective")
    gan.add_argument("--n-critic", type=int, default=g.n_critic, help="critic steps per generator step (0: auto)")
    gan.add_argument("--gp-weight", type=float, default=g.gp_weight, help="WGAN-GP gradient-penalty weight")
    gan.add_argument("--ema-decay", type=float, default=g.ema_decay, help="generator weight averaging")


def _run(args: argparse.Namespace) -> dict:
    ds, pre, _ = load_images(args)
    cfg = GANTrainConfig(
        **common_config(args, GANTrainConfig()),
        gan_loss=args.gan_loss,
        n_critic=args.n_critic,
        gp_weight=args.gp_weight,
        ema_decay=args.ema_decay,
    )
    log.info("training %s on %s (%d images) with %s", args.model, ds.name, len(ds.labels), cfg)
    return train_gan(ds, cfg, model_args(args), pre, sample_dir=out_dir(args) / "samples")


register_recipe(
    Recipe(
        family="gan",
        run=_run,
        plot=lambda ckpt, title, path: plot_series(ckpt["history"], title, path, PANELS),
        summary=lambda ckpt, out: (
            f"trained {ckpt['metrics']['epochs_run']} epochs; samples per epoch in {out / 'samples'}"
        ),
        add_args=_add_args,
        own_loop="its adversarial loop alternates two optimisers and keeps a moving average of the generator",
        # Adam with each objective's own betas, every epoch kept (the moving average is the generator served)
        ignores=("optimizer", "weight_decay", "schedule", "patience", "keep", "augment", "label_smoothing"),
    )
)
