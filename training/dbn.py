"""The DBN autoencoder's training task (Hinton & Salakhutdinov, Science 2006): greedy layer-wise RBM pretraining,
unrolling, fine-tuning -> checkpoint dict.

1. Pretraining: RBM 1 (784-1000) by CD-1 on the pixels in [0, 1]; RBM 2 on RBM 1's hidden probabilities; and so
   on up to RBM 4 (250-30), whose hidden units are linear with unit-variance Gaussian noise. As in the paper's
   code (rbm.m, rbmhidlinear.m): 50 epochs each, batches of 100, step 0.1 (0.001 for the Gaussian layer), momentum
   0.5 then 0.9 after five epochs, weight decay 2e-4, weights started N(0, 0.1²). training/rbm.py trains each one.
2. Unrolling: models/dbn.py, ``unroll``: the encoder recognises with Wᵀ, the decoder generates with W.
3. Fine-tuning: backpropagation of the pixels' cross-entropy through the whole autoencoder, the autoencoders'
   loss (training/autoencoder.py). The paper ran 200 epochs of conjugate gradients (three line searches on
   batches of 1000); this recipe uses Adam on batches of 100 with a cosine schedule, the weights of the epoch with
   the lowest validation loss kept. ``--augment digits`` warps the fine-tuning's digits as ``mnist-ae``'s recipe
   does (the paper did not).

Reported, like the autoencoders: squared error summed over the 784 pixels, averaged over validation images, for
the unrolled stack before fine-tuning and after it, beside PCA with as many components as the code on the same
split (the paper, on MNIST's test set: 3.00 for the autoencoder, 13.87 for PCA-30).
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
from models.dbn import DBNAutoencoder
from models.rbm import RBM
from training.augment import PRESETS as AUGMENT_PRESETS
from training.augment import random_affine
from training.autoencoder import pca_sse, per_image_sse, reconstruction_errors
from training.cli import common_config, load_images, model_args
from training.common import Batch, TrainConfig, checkpoint_dict, fit, image_model_config, image_split, seed_everything
from training.plots import plot_series
from training.rbm import RBMTrainConfig, contrastive_divergence
from training.registry import Recipe, register_recipe

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DBNTrainConfig(TrainConfig):
    model: str = "dbn-autoencoder"
    epochs: int = 50  # fine-tuning
    batch_size: int = 100
    optimizer: str = "adam"
    lr: float | None = 1e-3
    weight_decay: float = 0.0
    schedule: str = "cosine"
    patience: int = 10
    augment: str = "none"
    loss: str = "bce"  # bce | mse, as for the autoencoders
    pretrain_epochs: int = 50  # per RBM
    pretrain_lr: float = 0.1  # binary hidden units
    pretrain_lr_gaussian: float = 0.001  # the top RBM's linear units
    cd_k: int = 1


def pretrain(
    x_tr: torch.Tensor, x_va: torch.Tensor, model: DBNAutoencoder, cfg: DBNTrainConfig, gen: torch.Generator
) -> tuple[list[RBM], dict[str, list[dict[str, float]]]]:
    """Greedy layer-wise: each RBM learns from the hidden probabilities of the one below -> the stack, its curves."""
    rbms, curves = [], {}
    epochs = 1 if cfg.dry_run else cfg.pretrain_epochs
    for i, rbm_cfg in enumerate(model.rbm_configs(), start=1):
        rbm = RBM(rbm_cfg)
        gaussian = rbm_cfg.hidden_units == "gaussian"
        layer_cfg = RBMTrainConfig(
            batch_size=cfg.batch_size,
            lr=cfg.pretrain_lr_gaussian if gaussian else cfg.pretrain_lr,
            schedule="none",
            final_momentum=0.9,
            persistent=False,
            cd_k=cfg.cd_k,
            progress=cfg.progress,
        )
        desc = f"RBM {i} ({rbm_cfg.visible}-{rbm_cfg.hidden}{', Gaussian' if gaussian else ''}) "
        curves[f"rbm{i}"] = contrastive_divergence(rbm, x_tr, x_va, layer_cfg, gen, epochs, desc)
        with torch.no_grad():
            x_tr, x_va = rbm.hidden_mean(x_tr), rbm.hidden_mean(x_va)  # the next layer's data
        rbms.append(rbm.eval())
    return rbms, curves


def train_dbn(ds: Dataset, cfg: DBNTrainConfig, model_overrides: dict[str, Any], preprocessing: dict[str, Any]) -> dict:
    gen = seed_everything(cfg)
    train_idx, val_idx = image_split(ds, cfg)
    model_cfg = image_model_config(cfg.model, ds, model_overrides)
    model = models.create_model(cfg.model, model_cfg)
    assert isinstance(model, DBNAutoencoder)
    x_tr = torch.from_numpy(ds.images[train_idx]).float() / 255.0  # (N, C, H, W) in [0, 1]
    x_va = torch.from_numpy(ds.images[val_idx]).float() / 255.0

    t0 = time.perf_counter()
    rbms, curves = pretrain(x_tr.flatten(1), x_va.flatten(1), model, cfg, gen)
    pretrain_seconds = time.perf_counter() - t0
    model.unroll(rbms)
    pretrained_sse = float(reconstruction_errors(model, x_va).mean())
    log.info("unrolled RBM stack: validation squared error per image %.3f before fine-tuning", pretrained_sse)

    recon_loss = F.binary_cross_entropy if cfg.loss == "bce" else F.mse_loss
    steps_per_epoch = math.ceil(len(x_tr) / cfg.batch_size)

    def loss_fn(out: tuple[torch.Tensor, torch.Tensor], target: torch.Tensor) -> tuple[torch.Tensor, float]:
        return recon_loss(out[1], target), float(per_image_sse(out[1].detach(), target).sum())

    def batches() -> Iterator[Batch]:
        perm = torch.randperm(len(x_tr), generator=gen)
        for step in range(steps_per_epoch):
            x = x_tr[perm[step * cfg.batch_size : (step + 1) * cfg.batch_size]]
            x = random_affine(x, AUGMENT_PRESETS[cfg.augment], gen)  # none by default (the paper has none)
            yield (x,), x

    @torch.no_grad()
    def validate() -> tuple[float, float]:
        model.eval()
        recon = torch.cat([model(x_va[i : i + 1000])[1] for i in range(0, len(x_va), 1000)])
        loss = float(recon_loss(recon, x_va, reduction="sum")) / len(x_va) / x_va[0].numel()
        return loss, float(per_image_sse(recon, x_va).mean())

    epochs = 1 if cfg.dry_run else cfg.epochs
    history, stopper = fit(model, cfg, epochs, batches, steps_per_epoch, validate, loss_fn=loss_fn, metric="sse")
    errors = reconstruction_errors(model, x_va)
    metrics: dict[str, Any] = {
        "val_sse": float(errors.mean()),
        "val_loss": validate()[0],
        "pretrained_val_sse": pretrained_sse,
        "pca_val_sse": pca_sse(ds.images[train_idx] / 255.0, ds.images[val_idx] / 255.0, model_cfg.code_size),
        **{f"rbm{i}_val_sse": rows[-1]["val_sse"] for i, rows in enumerate(curves.values(), start=1)},
        "best_epoch": stopper.best_epoch,
        "epochs_run": len(history),
        "pretrain_seconds": pretrain_seconds,
        "train_seconds": time.perf_counter() - t0,
        "n_train": len(train_idx),
        "n_val": len(val_idx),
        **{f"val_sse_p{q}": float(np.percentile(errors, q)) for q in (50, 90, 95, 99, 99.9)},
    }
    log.info(
        "validation squared error per image %.3f (unrolled before fine-tuning %.3f, PCA-%d %.3f)",
        metrics["val_sse"],
        pretrained_sse,
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
        pretraining=curves,
    )


def _add_args(p: argparse.ArgumentParser) -> None:
    d = DBNTrainConfig()
    g = p.add_argument_group("DBN autoencoder (dbn-autoencoder)")
    g.add_argument("--pretrain-epochs", type=int, default=d.pretrain_epochs, help="CD epochs per RBM")
    g.add_argument("--pretrain-lr", type=float, default=d.pretrain_lr, help="CD step size of the binary RBMs")


def _run(args: argparse.Namespace) -> dict:
    ds, pre, _ = load_images(args)
    cfg = DBNTrainConfig(
        **common_config(args, DBNTrainConfig()),
        augment=args.augment or "none",
        loss=args.loss,
        cd_k=args.cd_k,
        pretrain_epochs=args.pretrain_epochs,
        pretrain_lr=args.pretrain_lr,
    )
    log.info("training %s on %s (%d images) with %s", args.model, ds.name, len(ds.labels), cfg)
    return train_dbn(ds, cfg, model_args(args), pre)


def _plot(ckpt: dict, title: str, path: Path) -> None:
    """curves.png: fine-tuning; pretraining.png beside it: each RBM's reconstruction error per row by epoch."""
    plot_series(ckpt["history"], title, path, {"loss": ["train_loss", "val_loss"], "sse": ["train_sse", "val_sse"]})
    stack: dict[str, list[dict[str, float]]] = ckpt.get("pretraining", {})
    epochs = min((len(h) for h in stack.values()), default=0)
    keys = ("train_sse", "val_sse")
    rows = [{"epoch": e, **{f"{n}_{k}": stack[n][e - 1][k] for n in stack for k in keys}} for e in range(1, epochs + 1)]
    if rows:
        panels = {f"{name}: squared error per row": [f"{name}_train_sse", f"{name}_val_sse"] for name in stack}
        plot_series(rows, f"{title}: pretraining", path.with_name("pretraining.png"), panels)


def _summary(ckpt: dict, out: Path) -> str:
    m = ckpt["metrics"]
    return (
        f"validation squared error per image {m['val_sse']:.3f} at epoch {m['best_epoch']} "
        f"(unrolled before fine-tuning {m['pretrained_val_sse']:.3f}, PCA-30 {m['pca_val_sse']:.3f})"
    )


register_recipe(
    Recipe(
        family="dbn",
        run=_run,
        plot=_plot,
        summary=_summary,
        add_args=_add_args,
        own_loop="its greedy pretraining is training/rbm.py's contrastive-divergence loop",
        borrows=("cd_k", "loss"),  # its RBMs' Gibbs steps (rbm's flag) and its fine-tuning loss (the autoencoder's)
        ignores=("label_smoothing",),
    )
)
