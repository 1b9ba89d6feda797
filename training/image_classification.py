"""The image-classification training task: a registered model + a Dataset -> checkpoint dict."""

from __future__ import annotations

import argparse
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import models
from contract.data import Dataset, channel_stats
from contract.metadata import ImagePreprocessing
from training import distillation
from training.augment import PRESETS as AUGMENT_PRESETS
from training.augment import random_affine
from training.cli import common_config, load_images, model_args
from training.common import (
    Batch,
    TrainConfig,
    accuracy_summary,
    checkpoint_dict,
    classification_loss,
    final_metrics,
    fit,
    image_model_config,
    image_split,
    initial_weights,
    seed_everything,
)
from training.outliers import KINDS, OUTLIER, outlier_exposure_loss, outlier_pool
from training.photo_data import photo_pool
from training.plots import plot_curves, plot_images
from training.registry import Recipe, register_recipe

log = logging.getLogger(__name__)


def _normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    # the same formula as contract.images.normalize, in torch
    return (x * (1 / 255.0) - mean) / std


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    batch_size: int = 1000,
) -> tuple[float, np.ndarray]:
    """Mean cross-entropy and the (N, K) probabilities on uint8 images."""
    model.eval()
    losses, probs = [], []
    for i in range(0, len(images), batch_size):
        x = _normalize(images[i : i + batch_size].float(), mean, std).contiguous(memory_format=torch.channels_last)
        logits = model(x)
        losses.append(F.cross_entropy(logits, labels[i : i + batch_size], reduction="sum").item())
        probs.append(logits.softmax(1).numpy())
    return sum(losses) / len(images), np.concatenate(probs)


def distilled_targets(teachers: list[Any], x: torch.Tensor, y: torch.Tensor, k: int, agree: list[int]) -> torch.Tensor:
    """(B, 2K) targets for ``distillation.distillation_loss``: each row's one-hot label, then the teachers'
    probabilities on the row as augmented; an outlier row (label OUTLIER) is OUTLIER throughout, for
    ``outlier_exposure_loss`` to find, and costs no teacher's time. ``agree`` counts the labelled rows whose label
    is the teachers' top class, and those rows."""
    out = torch.full((len(y), 2 * k), float(OUTLIER))
    digit = y != OUTLIER
    soft = torch.from_numpy(distillation.ensemble_probs(teachers, x[digit].numpy()))
    agree[0], agree[1] = agree[0] + int((soft.argmax(1) == y[digit]).sum()), agree[1] + int(digit.sum())
    out[digit] = torch.cat([F.one_hot(y[digit], k).float(), soft], 1)
    return out


def train(ds: Dataset, cfg: TrainConfig, model_overrides: dict[str, Any], preprocessing: dict[str, Any]) -> dict:
    """Train ``cfg.model`` on ``ds`` and return the checkpoint dict (plain data + state_dict)."""
    gen = seed_everything(cfg)

    train_idx, val_idx = image_split(ds, cfg)
    mean_l, std_l = channel_stats(ds.images[train_idx])
    pre = {**preprocessing, "mean": mean_l, "std": std_l}
    model_cfg = image_model_config(cfg.model, ds, model_overrides, num_classes=len(ds.label_names))
    model = models.create_model(cfg.model, model_cfg).to(memory_format=torch.channels_last)

    x_tr, y_tr = torch.from_numpy(ds.images[train_idx]), torch.from_numpy(ds.labels[train_idx])
    x_va, y_va = torch.from_numpy(ds.images[val_idx]), torch.from_numpy(ds.labels[val_idx])
    mean = torch.tensor(mean_l).view(1, -1, 1, 1)
    std = torch.tensor(std_l).view(1, -1, 1, 1)
    from_data = getattr(model, "init_from_data", None)
    if cfg.init is not None:  # fine-tuning: the weights of a checkpoint of this model, data and split
        model.load_state_dict(initial_weights(cfg, model_cfg, ds))
    elif from_data is not None:  # a model that starts from the data (the RBF network: k-means centres, least squares)
        pick = torch.randperm(len(x_tr), generator=gen)[: cfg.init_samples]
        t_init = time.perf_counter()
        from_data(_normalize(x_tr[pick].float(), mean, std), y_tr[pick], gen)
        log.info("initialised from %d training images in %.1f s", len(pick), time.perf_counter() - t_init)
    aug = AUGMENT_PRESETS[cfg.augment]
    n_photo = round(cfg.photos * cfg.batch_size)
    if n_photo:  # photos of training images, read through the service's front door (training/photo_data.py)
        ph, ph_y = photo_pool(
            ds.images[train_idx],
            ds.labels[train_idx],
            ImagePreprocessing(**pre),
            64 if cfg.dry_run else cfg.photo_pool,
            cfg.seed,
            workers=max(1, cfg.threads or 1),
        )
        x_ph, y_ph = torch.from_numpy(ph), torch.from_numpy(ph_y)

    n_out = round(cfg.outliers * cfg.batch_size)
    if n_out:  # outlier exposure (training/outliers.py)
        pool = outlier_pool(
            ImagePreprocessing(**pre), 64 if cfg.dry_run else cfg.outlier_pool, cfg.seed, max(1, cfg.threads or 1)
        )
        x_out = torch.from_numpy(pool)

    teachers = distillation.teachers(cfg, ds, "stratified", distillation.ImageTeacher)
    agree = [0, 0]  # training rows (as augmented) whose label is the teachers' top class, rows asked about

    steps_per_epoch = math.ceil(len(x_tr) / cfg.batch_size)
    epochs = 1 if cfg.dry_run else cfg.epochs

    def batches() -> Iterator[Batch]:
        perm = torch.randperm(len(x_tr), generator=gen)
        for step in range(steps_per_epoch):
            idx = perm[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            x, y = x_tr[idx], y_tr[idx]
            if n_photo:  # the first n_photo rows of the batch become photos
                k = min(n_photo, len(idx))
                pick = torch.randint(len(x_ph), (k,), generator=gen)
                x, y = torch.cat([x_ph[pick], x[k:]]), torch.cat([y_ph[pick], y[k:]])
            if n_out:  # outliers added after the batch's rows, labelled OUTLIER
                pick = torch.randint(len(x_out), (n_out,), generator=gen)
                x, y = torch.cat([x, x_out[pick]]), torch.cat([y, torch.full((n_out,), OUTLIER, dtype=y.dtype)])
            x = random_affine(x.float(), aug, gen)
            if teachers:  # the teachers' answers on the batch's digits as the student sees them: (B, 2K) targets
                y = distilled_targets(teachers, x, y, len(ds.label_names), agree)
            yield (_normalize(x, mean, std).contiguous(memory_format=torch.channels_last),), y

    def validate() -> tuple[float, float]:
        loss, probs = evaluate(model, x_va, y_va, mean, std)
        return loss, float((probs.argmax(1) == y_va.numpy()).mean())

    t0 = time.perf_counter()
    loss_fn = distillation.distillation_loss(cfg.teacher_weight, cfg.distill_temperature) if teachers else None
    if n_out:  # the outliers' term beside the labels' (or beside the teachers', which keep the digits as they were)
        base = loss_fn or classification_loss(cfg.label_smoothing)
        loss_fn = outlier_exposure_loss(cfg.outlier_weight, base, cfg.outlier_loss)
    data = {"sha256": ds.sha256, "labels": ds.label_names, "preprocessing": preprocessing}
    history, stopper = fit(model, cfg, epochs, batches, steps_per_epoch, validate, loss_fn=loss_fn, data=data)
    val_loss, val_probs = evaluate(model, x_va, y_va, mean, std)
    metrics = final_metrics(
        val_probs, y_va.numpy(), ds.label_names, val_loss, stopper, history, t0, len(train_idx), len(val_idx)
    )
    checkpoint = checkpoint_dict(
        cfg=cfg,
        model=model,
        model_cfg=model_cfg,
        n_train=len(train_idx),
        n_val=len(val_idx),
        metrics=metrics,
        history=history,
        preprocessing=pre,
        dataset=ds,
    )
    if teachers:
        checkpoint["distillation"] = distillation.record(teachers, cfg, agree[0] / max(1, agree[1]))
    return checkpoint


def _add_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("image classifiers")
    g.add_argument(
        "--photos",
        type=float,
        default=None,
        help="share of each batch that are training images rendered as phone photos and read through the "
        "service's front door (default 0)",
    )
    g.add_argument("--photo-pool", type=int, default=None, help="training images rendered as photos (20000)")
    g.add_argument(
        "--outliers",
        type=float,
        default=None,
        help="outlier exposure: synthetic things of no class added to each batch, as a share of it, on which the "
        "model learns to be unsure (training/outliers.py; default 0)",
    )
    g.add_argument("--outlier-weight", type=float, default=None, help="the outliers' term in the loss (0.5)")
    g.add_argument(
        "--outlier-loss",
        choices=KINDS,
        default=None,
        help="the outliers' term: uniform (Hendrycks et al. 2019; default) or energy (Liu et al. 2020's hinges, at "
        "margins set from mnist-cnn's energies: training/outliers.py)",
    )
    g.add_argument(
        "--init",
        default=None,
        metavar="CHECKPOINT",
        help="start from this checkpoint's weights (fine-tuning; the same model, data files and split)",
    )


def _run(args: argparse.Namespace) -> dict:
    ds, pre, preset = load_images(args)
    d = TrainConfig()
    cfg = TrainConfig(
        **common_config(args, d),
        augment=args.augment or preset.augment,
        photos=d.photos if args.photos is None else args.photos,
        photo_pool=d.photo_pool if args.photo_pool is None else args.photo_pool,
        outliers=d.outliers if args.outliers is None else args.outliers,
        outlier_weight=d.outlier_weight if args.outlier_weight is None else args.outlier_weight,
        outlier_loss=args.outlier_loss or d.outlier_loss,
        init=args.init,
    )
    log.info(
        "training %s on %s (%d images, %d classes) with %s",
        args.model,
        ds.name,
        len(ds.labels),
        len(ds.label_names),
        cfg,
    )
    return train(ds, cfg, model_args(args), pre)


def _plot(ckpt: dict, title: str, path: Path) -> None:
    """The curves; for a model with centres (the RBF network) also 50 of them as images, in pixel units."""
    plot_curves(ckpt["history"], title, path, "accuracy")
    centres = ckpt["state_dict"].get("centres")
    if centres is not None:
        pre, size = ckpt["preprocessing"], ckpt["model_config"]["input_size"]
        c = centres[:50].reshape(-1, ckpt["model_config"]["in_channels"], size, size)[:, 0]
        pixels = (c * pre["std"][0] + pre["mean"][0]) * 255  # normalised -> 0..255, as contract.images.normalize
        plot_images(pixels.numpy(), f"{title}: 50 of the {len(centres)} centres", path.with_name("centres.png"))


register_recipe(
    Recipe(
        family="image-classification",
        run=_run,
        plot=_plot,
        summary=accuracy_summary,
        add_args=_add_args,
        distils=True,
        needs=(("photo_pool", "photos"), ("outlier_weight", "outliers"), ("outlier_loss", "outliers")),
    )
)
