"""Training recipe of the image-regression toy family: synthetic grey images, each labelled with its mean
brightness; the shared epoch loop (training.common.fit) with a squared-error loss."""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

import models
from contract.data import Dataset
from training.cli import common_config, model_args
from training.common import Batch, TrainConfig, checkpoint_dict, fit, seed_everything
from training.plots import plot_curves
from training.registry import Recipe, register_recipe

PREPROCESSING = {
    "input_size": [28, 28],
    "channels": 1,
    "white_on_black": False,
    "fit": "resize",
    "mean": [0.0],
    "std": [1.0],
}


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n images of uniform grey plus noise (N, 1, 28, 28) in [0, 1], and their mean brightness (N,)."""
    rng = np.random.default_rng(seed)
    level = rng.random((n, 1, 1, 1), dtype=np.float32)
    x = np.clip(level + 0.1 * rng.standard_normal((n, 1, 28, 28), dtype=np.float32), 0, 1)
    return x, x.mean(axis=(1, 2, 3))


def _run(args: argparse.Namespace) -> dict:
    defaults = TrainConfig(model=args.model, epochs=5, optimizer="adam", lr=1e-2, weight_decay=0.0, augment="none")
    cfg = TrainConfig(**common_config(args, defaults))
    seed_everything(cfg)
    model = models.create_model(cfg.model, **model_args(args))
    x_train, y_train = (torch.from_numpy(a) for a in synthetic(64 if cfg.dry_run else 2048, cfg.seed))
    x_val, y_val = (torch.from_numpy(a) for a in synthetic(256, cfg.split_seed + 1))

    def batches() -> Iterator[Batch]:
        order = torch.randperm(len(x_train))
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            yield (x_train[idx],), y_train[idx]

    def loss_fn(pred: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, float]:
        loss = ((pred - y) ** 2).mean()
        return loss, float(loss.detach()) * len(y)

    def evaluate() -> tuple[float, float]:
        model.eval()
        with torch.no_grad():
            mse = float(((model(x_val) - y_val) ** 2).mean())
        return mse, mse

    started = time.perf_counter()
    steps = -(-len(x_train) // cfg.batch_size)
    epochs = 1 if cfg.dry_run else cfg.epochs
    history, stopper = fit(model, cfg, epochs, batches, steps, evaluate, loss_fn=loss_fn, metric="mse")
    val_mse, _ = evaluate()
    data = Dataset(np.zeros((0, 1, 28, 28), np.uint8), np.zeros(0, np.int64), [], "synthetic-brightness", "synthetic")
    metrics = {"val_mse": val_mse, "best_epoch": stopper.best_epoch, "train_seconds": time.perf_counter() - started}
    return checkpoint_dict(
        cfg=cfg,
        model=model,
        model_cfg=models.make_config(cfg.model, **model_args(args)),
        labels=[],
        dataset=data,
        n_train=len(x_train),
        n_val=len(x_val),
        metrics=metrics,
        history=history,
        preprocessing=PREPROCESSING,
    )


def _summary(ckpt: dict, out: Path) -> str:
    return f"validation squared error {ckpt['metrics']['val_mse']:.5f} at epoch {ckpt['metrics']['best_epoch']}"


register_recipe(
    Recipe(
        family="image-regression",
        run=_run,
        plot=lambda ckpt, title, path: plot_curves(ckpt["history"], title, path, "mse"),
        summary=_summary,
    )
)
