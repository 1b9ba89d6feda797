"""The reconstruction training task: a registered autoencoder + images -> checkpoint dict.

Pixels are in [0, 1]. The loss is binary cross-entropy (the paper's choice for MNIST) or MSE, plus the
variant's code penalty; a denoising variant sees corrupted inputs and is scored against the clean ones.
The reported metric is the paper's: squared error summed over the 784 pixels, averaged over images.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import models
from contract.data import Dataset
from training.augment import PRESETS as AUGMENT_PRESETS
from training.augment import random_affine
from training.cli import common_config, load_images, model_args
from training.common import Batch, TrainConfig, checkpoint_dict, fit, image_model_config, image_split, seed_everything
from training.plots import plot_curves
from training.registry import Recipe, register_recipe

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AETrainConfig(TrainConfig):
    model: str = "autoencoder"
    epochs: int = 30
    batch_size: int = 128
    optimizer: str = "adam"
    lr: float | None = 1e-3
    weight_decay: float = 0.0
    patience: int = 5
    augment: str = "none"
    loss: str = "bce"  # bce | mse


def corrupt(x: torch.Tensor, mcfg: Any, gen: torch.Generator) -> torch.Tensor:
    """Training-time corruption of a denoising autoencoder (Vincent et al. 2008): Gaussian or masking."""
    if mcfg.noise == "gaussian":
        return (x + torch.randn(x.shape, generator=gen) * mcfg.noise_level).clamp(0, 1)
    if mcfg.noise == "masking":
        return x * (torch.rand(x.shape, generator=gen) >= mcfg.noise_level)
    return x


def code_penalty(code: torch.Tensor, mcfg: Any) -> torch.Tensor:
    """Sparsity on the code: L1 of the activations, or KL(rho || mean sigmoid activation) per unit."""
    if mcfg.sparsity == "l1":
        return mcfg.sparsity_weight * code.abs().mean()
    if mcfg.sparsity == "kl":
        rho, rho_hat = mcfg.sparsity_target, torch.sigmoid(code).mean(0).clamp(1e-6, 1 - 1e-6)
        kl = rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))
        return mcfg.sparsity_weight * kl.sum()
    return code.new_zeros(())


def per_image_sse(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return ((recon - x) ** 2).flatten(1).sum(1)  # (B,)


@torch.no_grad()
def reconstruction_errors(model: torch.nn.Module, x: torch.Tensor, batch: int = 1000) -> np.ndarray:
    model.eval()
    return np.concatenate(
        [per_image_sse(model(x[i : i + batch])[1], x[i : i + batch]).numpy() for i in range(0, len(x), batch)]
    )


def pca_sse(x_train: np.ndarray, x_val: np.ndarray, k: int) -> float:
    """PCA baseline with the same code size: mean per-image squared error of the rank-k reconstruction
    (principal components from an SVD of the centred training pixels)."""
    a = x_train.reshape(len(x_train), -1).astype(np.float64)
    mean = a.mean(0)
    _, _, vt = np.linalg.svd(a - mean, full_matrices=False)
    basis = vt[:k]  # (k, D)
    v = x_val.reshape(len(x_val), -1).astype(np.float64) - mean
    recon = (v @ basis.T) @ basis
    return float(((recon - v) ** 2).sum(1).mean())


def train_autoencoder(
    ds: Dataset, cfg: AETrainConfig, model_overrides: dict[str, Any], preprocessing: dict[str, Any]
) -> dict:
    gen = seed_everything(cfg)
    train_idx, val_idx = image_split(ds, cfg)
    model_cfg = image_model_config(cfg.model, ds, model_overrides)
    model = models.create_model(cfg.model, model_cfg)
    x_tr = torch.from_numpy(ds.images[train_idx]).float() / 255.0  # (N, C, H, W) in [0, 1]
    x_va = torch.from_numpy(ds.images[val_idx]).float() / 255.0
    steps_per_epoch = math.ceil(len(x_tr) / cfg.batch_size)
    epochs = 1 if cfg.dry_run else cfg.epochs
    recon_loss = F.binary_cross_entropy if cfg.loss == "bce" else F.mse_loss

    def loss_fn(out: tuple[torch.Tensor, torch.Tensor], target: torch.Tensor) -> tuple[torch.Tensor, float]:
        code, recon = out
        loss = recon_loss(recon, target) + code_penalty(code, model_cfg)
        return loss, float(per_image_sse(recon.detach(), target).sum())

    def batches() -> Iterator[Batch]:
        perm = torch.randperm(len(x_tr), generator=gen)
        for step in range(steps_per_epoch):
            x = x_tr[perm[step * cfg.batch_size : (step + 1) * cfg.batch_size]]
            x = random_affine(x, AUGMENT_PRESETS[cfg.augment], gen)  # input and target warped alike
            yield (corrupt(x, model_cfg, gen),), x

    @torch.no_grad()
    def validate() -> tuple[float, float]:
        model.eval()
        losses, sse = [], []
        for i in range(0, len(x_va), 1000):
            x = x_va[i : i + 1000]
            _, recon = model(x)
            losses.append(float(recon_loss(recon, x, reduction="sum")) / x[0].numel())
            sse.append(per_image_sse(recon, x))
        return sum(losses) / len(x_va), float(torch.cat(sse).mean())

    t0 = time.perf_counter()
    history, stopper = fit(model, cfg, epochs, batches, steps_per_epoch, validate, loss_fn=loss_fn, metric="sse")
    errors = reconstruction_errors(model, x_va)
    metrics: dict[str, Any] = {
        "val_sse": float(errors.mean()),
        "val_loss": validate()[0],
        "pca_val_sse": pca_sse(ds.images[train_idx] / 255.0, ds.images[val_idx] / 255.0, model_cfg.code_size),
        "best_epoch": stopper.best_epoch,
        "epochs_run": len(history),
        "train_seconds": time.perf_counter() - t0,
        "n_train": len(train_idx),
        "n_val": len(val_idx),
        **{f"val_sse_p{q}": float(np.percentile(errors, q)) for q in (50, 90, 95, 99, 99.9)},
    }
    log.info(
        "validation squared error per image %.3f (PCA-%d: %.3f)",
        metrics["val_sse"],
        model_cfg.code_size,
        metrics["pca_val_sse"],
    )
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


def _add_args(p: argparse.ArgumentParser) -> None:
    ae = p.add_argument_group("autoencoders")
    ae.add_argument("--loss", choices=["bce", "mse"], default=AETrainConfig().loss, help="reconstruction loss")


def _run(args: argparse.Namespace) -> dict:
    ds, pre, _ = load_images(args)
    cfg = AETrainConfig(**common_config(args, AETrainConfig()), loss=args.loss, augment=args.augment or "none")
    log.info("training %s on %s (%d images) with %s", args.model, ds.name, len(ds.labels), cfg)
    return train_autoencoder(ds, cfg, model_args(args), pre)


def _summary(ckpt: dict, out: Path) -> str:
    m = ckpt["metrics"]
    return f"validation squared error per image {m['val_sse']:.3f} at epoch {m['best_epoch']}"


register_recipe(
    Recipe(
        family="autoencoder",
        run=_run,
        plot=lambda ckpt, title, path: plot_curves(ckpt["history"], title, path, "sse"),
        summary=_summary,
        add_args=_add_args,
        ignores=("label_smoothing",),
    )
)
