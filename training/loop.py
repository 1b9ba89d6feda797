"""The image-classification training task: a registered model + a Dataset -> checkpoint dict."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

import models
from training.augment import PRESETS as AUGMENT_PRESETS
from training.augment import random_affine
from training.data import Dataset, channel_stats, stratified_split

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Defaults < dataset preset < CLI flags; saved verbatim in the checkpoint."""

    model: str = "cnn"
    epochs: int = 15
    batch_size: int = 128
    optimizer: str = "sgd"  # sgd (Nesterov momentum 0.9) | adam
    lr: float | None = None  # None: 0.05 for SGD, 3e-3 for Adam (peak of the one-cycle schedule)
    weight_decay: float = 5e-4
    schedule: str = "onecycle"  # onecycle | cosine | none
    label_smoothing: float = 0.0
    patience: int = 5  # early stopping: epochs without a better validation loss
    augment: str = "digits"
    val_fraction: float = 0.1
    split_seed: int = 0  # the split does not move when --seed changes
    seed: int = 0
    threads: int = 0  # 0: torch default
    dry_run: bool = False
    progress: bool = True

    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else (0.05 if self.optimizer == "sgd" else 3e-3)


def _normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    # the same formula as export.contract.normalize, in torch
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


def classification_metrics(probs: np.ndarray, labels: np.ndarray, names: list[str]) -> dict[str, Any]:
    pred = probs.argmax(1)
    k = len(names)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (labels, pred), 1)
    per_class = {names[i]: float(cm[i, i] / max(cm[i].sum(), 1)) for i in range(k)}
    return {
        "accuracy": float((pred == labels).mean()),
        "error_rate": float((pred != labels).mean()),
        "per_class_accuracy": per_class,
        "confusion_matrix": cm.tolist(),
    }


def train(ds: Dataset, cfg: TrainConfig, model_overrides: dict[str, Any], preprocessing: dict[str, Any]) -> dict:
    """Train ``cfg.model`` on ``ds`` and return the checkpoint dict (plain data + state_dict)."""
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    gen = torch.Generator().manual_seed(cfg.seed)

    train_idx, val_idx = stratified_split(ds.labels, cfg.val_fraction, cfg.split_seed)
    if cfg.dry_run:  # one small batch each way: the pipeline end to end, in seconds
        train_idx, val_idx = train_idx[: cfg.batch_size], val_idx[: cfg.batch_size]
    mean_l, std_l = channel_stats(ds.images[train_idx])
    pre = {**preprocessing, "mean": mean_l, "std": std_l}
    c, h, _ = ds.images.shape[1:]
    overrides = {"in_channels": c, "num_classes": len(ds.label_names), "input_size": h, **model_overrides}
    model_cfg = models.make_config(cfg.model, **overrides)
    model = models.create_model(cfg.model, model_cfg).to(memory_format=torch.channels_last)

    x_tr, y_tr = torch.from_numpy(ds.images[train_idx]), torch.from_numpy(ds.labels[train_idx])
    x_va, y_va = torch.from_numpy(ds.images[val_idx]), torch.from_numpy(ds.labels[val_idx])
    mean = torch.tensor(mean_l).view(1, -1, 1, 1)
    std = torch.tensor(std_l).view(1, -1, 1, 1)
    aug = AUGMENT_PRESETS[cfg.augment]

    lr = cfg.resolved_lr()
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)  # no weight decay on biases and norm scales
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
    elif cfg.optimizer == "adam":
        opt = torch.optim.AdamW(groups, lr=lr)
    else:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}")
    steps_per_epoch = math.ceil(len(x_tr) / cfg.batch_size)
    epochs = 1 if cfg.dry_run else cfg.epochs
    total = steps_per_epoch * epochs
    sched: torch.optim.lr_scheduler.LRScheduler | None
    if cfg.schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.2)
    elif cfg.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    elif cfg.schedule == "none":
        sched = None
    else:
        raise ValueError(f"unknown schedule {cfg.schedule!r}")

    history: list[dict[str, float]] = []
    best: dict[str, Any] = {"val_loss": float("inf")}
    since_best = 0
    t0 = time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        perm = torch.randperm(len(x_tr), generator=gen)
        seen, loss_sum, correct = 0, 0.0, 0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch}/{epochs}", disable=not cfg.progress, leave=False)
        for step in bar:
            idx = perm[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            x = random_affine(x_tr[idx].float(), aug, gen)
            x = _normalize(x, mean, std).contiguous(memory_format=torch.channels_last)
            y = y_tr[idx]
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            seen += len(y)
            loss_sum += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}")
        val_loss, val_probs = evaluate(model, x_va, y_va, mean, std)
        val_acc = float((val_probs.argmax(1) == y_va.numpy()).mean())
        row = {
            "epoch": epoch,
            "train_loss": loss_sum / seen,
            "train_accuracy": correct / seen,
            "val_loss": val_loss,
            "val_accuracy": val_acc,
            "lr": opt.param_groups[0]["lr"],
            "elapsed_s": time.perf_counter() - t0,
        }
        history.append(row)
        log.info(
            "epoch %d/%d train_loss %.4f train_acc %.4f val_loss %.4f val_acc %.4f",
            epoch,
            epochs,
            row["train_loss"],
            row["train_accuracy"],
            val_loss,
            val_acc,
        )
        if val_loss < best["val_loss"]:
            best = {
                "val_loss": val_loss,
                "epoch": epoch,
                "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
            }
            since_best = 0
        else:
            since_best += 1
            if since_best >= cfg.patience:
                log.info("early stopping: no better validation loss for %d epochs", cfg.patience)
                break

    model.load_state_dict(best["state_dict"])
    val_loss, val_probs = evaluate(model, x_va, y_va, mean, std)
    metrics = classification_metrics(val_probs, y_va.numpy(), ds.label_names)
    metrics.update(
        val_loss=val_loss,
        best_epoch=best["epoch"],
        epochs_run=len(history),
        train_seconds=time.perf_counter() - t0,
        n_train=len(train_idx),
        n_val=len(val_idx),
    )
    return {
        "format": "nnserve-checkpoint/1",
        "model_name": cfg.model,
        "family": models.get_entry(cfg.model).family,
        "model_config": dataclasses.asdict(model_cfg),
        "state_dict": {k: v.contiguous() for k, v in model.state_dict().items()},
        "labels": list(ds.label_names),
        "preprocessing": pre,
        "dataset": {
            "name": ds.name,
            "source": ds.source,
            "sha256": ds.sha256,
            "n_train": len(train_idx),
            "n_val": len(val_idx),
            "split_seed": cfg.split_seed,
            "val_fraction": cfg.val_fraction,
        },
        "train_config": dataclasses.asdict(cfg),
        "metrics": metrics,
        "history": history,
        "torch_version": str(torch.__version__),
    }
