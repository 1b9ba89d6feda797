"""The variational training task: a registered VAE + images -> checkpoint dict.

Loss: the negative ELBO of Kingma & Welling 2014 in nats per image, a Bernoulli decoder's cross-entropy
summed over pixels plus KL(q(z|x) ‖ N(0, I)) in closed form, with one reparameterised sample per image.
Pixels are MNIST's grey levels in [0, 1], not binarised, so the figure is not comparable with the
binarised-MNIST likelihoods of the literature (a grey pixel's cross-entropy is above zero even when it is
reconstructed exactly).

Validation reports the negative ELBO (one seeded sample per image), its two terms, and the squared error
of the reconstruction decoded from the posterior mean (summed over pixels, as for the autoencoders).
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

import torch
import torch.nn.functional as F

import models
from contract.data import Dataset
from contract.images import image_grid
from training.cli import common_config, load_images, model_args, out_dir
from training.common import Batch, TrainConfig, checkpoint_dict, fit, image_model_config, image_split, seed_everything
from training.gan import fixed_noise
from training.plots import plot_series
from training.registry import Recipe, register_recipe

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VAETrainConfig(TrainConfig):
    model: str = "vae"
    epochs: int = 30
    batch_size: int = 128
    optimizer: str = "adam"
    lr: float | None = 1e-3
    weight_decay: float = 0.0
    schedule: str = "cosine"
    patience: int = 5
    augment: str = "none"


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) ‖ N(0, I)) per row, (B,)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)


def neg_elbo_terms(logits: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> tuple:
    """-> (reconstruction nats (B,), KL nats (B,))."""
    rec = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
    return rec, kl_divergence(mu, logvar)


def train_vae(
    ds: Dataset,
    cfg: VAETrainConfig,
    model_overrides: dict[str, Any],
    preprocessing: dict[str, Any],
    sample_dir: Path | None = None,
) -> dict:
    gen = seed_everything(cfg)
    train_idx, val_idx = image_split(ds, cfg)
    model_cfg = image_model_config(cfg.model, ds, model_overrides)
    if model_cfg.num_classes and model_cfg.num_classes != len(ds.label_names):
        raise ValueError(f"{cfg.model} has {model_cfg.num_classes} classes, the data {len(ds.label_names)}")
    model = models.create_model(cfg.model, model_cfg)
    conditional = model_cfg.num_classes > 0
    x_tr = torch.from_numpy(ds.images[train_idx]).float() / 255.0
    x_va = torch.from_numpy(ds.images[val_idx]).float() / 255.0
    y_tr = torch.from_numpy(ds.labels[train_idx]).long()
    y_va = torch.from_numpy(ds.labels[val_idx]).long()
    steps_per_epoch = math.ceil(len(x_tr) / cfg.batch_size)
    epochs = 1 if cfg.dry_run else cfg.epochs
    z_fixed, y_fixed = fixed_noise(model_cfg.latent_dim, model_cfg.num_classes)
    if sample_dir is not None:
        sample_dir.mkdir(parents=True, exist_ok=True)

    def loss_fn(out: tuple[torch.Tensor, ...], x: torch.Tensor) -> tuple[torch.Tensor, float]:
        logits, mu, logvar = out
        rec, kl = neg_elbo_terms(logits, x, mu, logvar)
        nelbo = rec + kl
        return nelbo.mean(), float(nelbo.detach().sum())

    def batches() -> Iterator[Batch]:
        perm = torch.randperm(len(x_tr), generator=gen)
        for step in range(steps_per_epoch):
            idx = perm[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            yield ((x_tr[idx], y_tr[idx]) if conditional else (x_tr[idx],)), x_tr[idx]

    @torch.no_grad()
    def measure() -> dict[str, float]:
        model.eval()
        val_gen = torch.Generator().manual_seed(0)  # the same ε every epoch: comparable figures
        rec_sum = kl_sum = sse_sum = 0.0
        for i in range(0, len(x_va), 1000):
            x = x_va[i : i + 1000]
            y = y_va[i : i + 1000] if conditional else None
            mu, logvar = model.encode(x, y)
            z = mu + torch.randn(mu.shape, generator=val_gen) * torch.exp(0.5 * logvar)
            rec, kl = neg_elbo_terms(model.decode_logits(z, y), x, mu, logvar)
            rec_sum, kl_sum = rec_sum + float(rec.sum()), kl_sum + float(kl.sum())
            sse_sum += float(((model.decode(mu, y) - x) ** 2).flatten(1).sum(1).sum())
        n = len(x_va)
        return {"val_neg_elbo": (rec_sum + kl_sum) / n, "val_rec_nats": rec_sum / n, "val_kl_nats": kl_sum / n,
                "val_sse": sse_sum / n}  # fmt: skip

    epoch_counter = iter(range(1, epochs + 1))

    def validate() -> tuple[float, float]:
        m = measure()
        if sample_dir is not None:
            with torch.no_grad():
                grid = model.decode(z_fixed, y_fixed).numpy()
            image_grid(grid, cols=10).save(sample_dir / f"epoch_{next(epoch_counter):03d}.png")
        return m["val_neg_elbo"], m["val_sse"]

    t0 = time.perf_counter()
    history, stopper = fit(model, cfg, epochs, batches, steps_per_epoch, validate, loss_fn=loss_fn, metric="sse")
    for row in history:  # fit names the training metric after the validation one; in training it is -ELBO
        row["train_neg_elbo"] = row.pop("train_sse")
        row["val_neg_elbo"] = row["val_loss"]
    m = measure()
    metrics: dict[str, Any] = {
        **m,
        "val_elbo": -m["val_neg_elbo"],
        "best_epoch": stopper.best_epoch,
        "epochs_run": len(history),
        "train_seconds": time.perf_counter() - t0,
        "n_train": len(train_idx),
        "n_val": len(val_idx),
    }
    log.info(
        "validation -ELBO %.2f nats/image (reconstruction %.2f + KL %.2f), squared error %.3f",
        m["val_neg_elbo"],
        m["val_rec_nats"],
        m["val_kl_nats"],
        m["val_sse"],
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


PANELS = {"-ELBO (nats per image)": ["train_neg_elbo", "val_neg_elbo"], "squared error": ["val_sse"]}


def _run(args: argparse.Namespace) -> dict:
    ds, pre, _ = load_images(args)
    cfg = VAETrainConfig(**common_config(args, VAETrainConfig()))
    log.info("training %s on %s (%d images) with %s", args.model, ds.name, len(ds.labels), cfg)
    return train_vae(ds, cfg, model_args(args), pre, sample_dir=out_dir(args) / "samples")


def _summary(ckpt: dict, out: Path) -> str:
    m = ckpt["metrics"]
    return f"validation -ELBO {m['val_neg_elbo']:.2f} nats/image at epoch {m['best_epoch']}"


register_recipe(
    Recipe(
        family="vae",
        run=_run,
        plot=lambda ckpt, title, path: plot_series(ckpt["history"], title, path, PANELS),
        summary=_summary,
        ignores=("augment", "label_smoothing"),
    )
)
