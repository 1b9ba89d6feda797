"""What every training task shares: optimiser, schedule, early stopping, classification metrics."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

import models
from contract.metadata import DatasetInfo
from training import distributed

if TYPE_CHECKING:
    from contract.data import Dataset
    from contract.text_data import TextDataset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Defaults < dataset preset < CLI flags; saved verbatim in the checkpoint."""

    model: str = "cnn"
    epochs: int = 15
    batch_size: int = 128
    optimizer: str = "sgd"  # sgd (Nesterov momentum 0.9) | adam (AdamW)
    lr: float | None = None  # None: 0.05 for SGD, 3e-3 for Adam (peak of the one-cycle schedule)
    weight_decay: float = 5e-4
    schedule: str = "onecycle"  # onecycle | cosine | none
    label_smoothing: float = 0.0
    patience: int = 5  # early stopping: epochs without a better validation loss
    keep: str = "best"  # best: the epoch of lowest validation loss | last: the final epoch (no choice on validation)
    augment: str = "digits"
    photos: float = 0.0  # share of each batch drawn from training images rendered as photos (photo_data.py)
    photo_pool: int = 20_000  # how many training images are rendered as photos
    # outlier exposure (training/outliers.py): synthetic things of no class, the model taught to be unsure on them
    outliers: float = 0.0  # outlier rows added to each batch, as a share of the batch size
    outlier_weight: float = 0.5  # the outliers' term in the loss (Hendrycks et al. 2019: 0.5)
    outlier_loss: str = "uniform"  # the term: "uniform" (Hendrycks et al.) or "energy" (Liu et al. 2020)
    outlier_pool: int = 10_000  # how many outliers are made
    # distillation (training/distillation.py): exported classifiers whose averaged answers become soft targets
    teachers: tuple[str, ...] = ()
    teacher_weight: float = 0.5  # the soft term's share of the loss (distillation_loss)
    teacher_shares: tuple[float, ...] = ()  # each teacher's share of the teachers' average (empty: equal)
    distill_temperature: float = 2.0  # teachers' and student's logits are divided by it (fixed, not fitted)
    init_samples: int = 20_000  # training images a model that starts from the data sees (models/mlp.py's RBF)
    init: str | None = None  # start from this checkpoint's weights (fine-tuning: the same model, data and split)
    val_fraction: float = 0.1
    split_seed: int = 0  # the split does not move when --seed changes
    seed: int = 0
    threads: int = 0  # 0: torch default
    dry_run: bool = False
    progress: bool = True

    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else (0.05 if self.optimizer == "sgd" else 3e-3)


def image_split(ds: Dataset, cfg: Any) -> tuple[np.ndarray, np.ndarray]:
    """The stratified train/validation indices of an image recipe's config (val_fraction, split_seed); a dry run
    keeps one small batch each way, the pipeline end to end in seconds."""
    from contract.data import stratified_split

    train_idx, val_idx = stratified_split(ds.labels, cfg.val_fraction, cfg.split_seed)
    if cfg.dry_run:
        return train_idx[: cfg.batch_size], val_idx[: cfg.batch_size]
    return train_idx, val_idx


def image_model_config(name: str, ds: Dataset, overrides: dict[str, Any], **fixed: Any) -> Any:
    """A registered model's config for these images: their channels and size (and the values the recipe fixes,
    ``fixed``), under the command line's other overrides."""
    c, h, _ = ds.images.shape[1:]
    return models.make_config(name, **fixed_by_data(overrides, {"in_channels": c, "input_size": h, **fixed}))


def fixed_by_data(overrides: dict[str, Any], data: dict[str, Any], source: str = "the data fixes") -> dict[str, Any]:
    """The command line's overrides with ``data`` (the config values the data fixes: its channels, size, classes,
    vocabulary) over them, or ValueError for an override that contradicts one of them: --model-arg num_classes=5
    on two classes trained and exported a graph of 5 logits for 2 labels, which the server then refused at every
    start. An override equal to the data's value (10.0 for 10) is taken as the data's."""
    for key, value in overrides.items():
        if key in data and value != data[key]:
            raise ValueError(f"--model-arg {key}={value!r}: {source} it at {data[key]!r}; leave it out")
    return {**overrides, **data}


def initial_weights(cfg: TrainConfig, model_cfg: Any, dataset: Dataset) -> dict[str, torch.Tensor]:
    """The weights of ``cfg.init``, a checkpoint to fine-tune: refused unless it is the same model, trained on
    the same files split the same way (``DatasetInfo.same_split``, as for a teacher: a checkpoint of another
    split has seen this run's validation rows)."""
    assert cfg.init is not None
    try:  # plain data only, as export reads a checkpoint (TorchVersion: a str subclass older ones carry)
        with torch.serialization.safe_globals([torch.torch_version.TorchVersion]):
            ckpt = torch.load(cfg.init, map_location="cpu", weights_only=True)
    except Exception as e:  # a text file or another tool's pickle: torch's own advice (weights_only=False) was shown
        raise ValueError(
            f"--init {cfg.init}: not a checkpoint written by python -m training ({type(e).__name__})"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != "nnserve-checkpoint/1":
        raise ValueError(f"--init {cfg.init}: not an nnserve checkpoint")
    theirs = (ckpt.get("model_name"), ckpt.get("model_config"))
    if theirs != (cfg.model, dataclasses.asdict(model_cfg)):
        raise ValueError(f"--init {cfg.init}: another model or architecture {theirs}; fine-tune only this run's own")
    recorded = DatasetInfo(**ckpt["dataset"])
    ours = recorded.model_copy(
        update={
            "sha256": dataset.sha256,
            "split": "stratified",
            "val_fraction": cfg.val_fraction,
            "split_seed": cfg.split_seed,
        }
    )
    if not recorded.same_split(ours):
        raise ValueError(
            f"--init {cfg.init}: another split seed, validation share or data files (seed {recorded.split_seed}, "
            f"{recorded.val_fraction}, files {sorted(recorded.sha256)}): it may have trained on this run's "
            "validation rows"
        )
    log.info("starting from %s (validation accuracy %.4f)", cfg.init, ckpt["metrics"]["accuracy"])
    return dict(ckpt["state_dict"])


def seed_everything(cfg: TrainConfig) -> torch.Generator:
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    return torch.Generator().manual_seed(cfg.seed)


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for p in (p for p in model.parameters() if p.requires_grad):  # a fixed part (RBF centres) is not optimised
        (no_decay if p.ndim <= 1 else decay).append(p)  # no weight decay on biases and norm scales
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.resolved_lr(), momentum=0.9, nesterov=True)
    if cfg.optimizer == "adam":
        return torch.optim.AdamW(groups, lr=cfg.resolved_lr())
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")


def build_scheduler(
    opt: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    if cfg.schedule == "onecycle":
        # warm-up for a fifth of the steps; torch divides by zero when that is exactly one step (5 in all)
        pct = 0.2 if 0.2 * total_steps != 1 else 0.3
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=cfg.resolved_lr(), total_steps=total_steps, pct_start=pct
        )
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
    if cfg.schedule == "none":
        return None
    raise ValueError(f"unknown schedule {cfg.schedule!r}")


class EarlyStopping:
    """Keeps the weights of the epoch with the lowest validation loss; says when to stop."""

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.best_loss = float("inf")
        self.best_epoch = 0
        self.best_state: dict[str, torch.Tensor] = {}
        self.since_best = 0

    def step(self, epoch: int, val_loss: float, model: torch.nn.Module) -> bool:
        """Record an epoch; True when training should stop. An epoch whose weights or statistics are not all finite
        is never the best, whatever its loss (a run at a learning rate of 1e12 saved a BatchNorm's variances as
        inf beside a finite loss of 3e32, and exported a model that answered the same for any input)."""
        state = model.state_dict()
        if val_loss < self.best_loss and all(bool(v.isfinite().all()) for v in state.values() if v.is_floating_point()):
            self.best_loss, self.best_epoch, self.since_best = val_loss, epoch, 0
            self.best_state = {k: v.detach().clone() for k, v in state.items()}
            return False
        self.since_best += 1
        if self.since_best >= self.patience:
            log.info("early stopping: no better validation loss for %d epochs", self.patience)
            return True
        return False

    def restore(self, model: torch.nn.Module) -> None:
        if not self.best_state:  # no epoch's validation loss (or weights) were numbers
            raise ValueError("the validation loss or the weights were not finite in any epoch (diverged): lower --lr")
        model.load_state_dict(self.best_state)

    def state_dict(self) -> dict[str, Any]:
        keys = ("best_loss", "best_epoch", "best_state", "since_best")
        return {k: getattr(self, k) for k in keys}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, v)


def classification_metrics(probs: np.ndarray, labels: np.ndarray, names: list[str]) -> dict[str, Any]:
    pred = probs.argmax(1)
    k = len(names)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (labels, pred), 1)
    # a class with no validation row has no accuracy to state (not 0)
    per_class = {names[i]: float(cm[i, i] / cm[i].sum()) for i in range(k) if cm[i].sum()}
    return {
        "accuracy": float((pred == labels).mean()),
        "error_rate": float((pred != labels).mean()),
        "per_class_accuracy": per_class,
        "confusion_matrix": cm.tolist(),
    }


Batch = tuple[tuple[torch.Tensor, ...], torch.Tensor]  # (model inputs, targets)
# (model output, targets) -> (mean loss to minimise, sum of the epoch metric over the batch's rows)
LossFn = Callable[[Any, torch.Tensor], tuple[torch.Tensor, float]]


def classification_loss(label_smoothing: float = 0.0) -> LossFn:
    """Cross-entropy on logits; the metric is the number of correct top-1 predictions (-> accuracy)."""

    def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, float]:
        loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
        return loss, float((logits.argmax(1) == y).sum())

    return loss_fn


def fit(
    model: torch.nn.Module,
    cfg: TrainConfig,
    epochs: int,
    batches: Callable[[], Iterator[Batch]],
    steps_per_epoch: int,
    evaluate: Callable[[], tuple[float, float]],
    clip_grad: float | None = None,
    loss_fn: LossFn | None = None,
    metric: str = "accuracy",
    data: dict[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], EarlyStopping]:
    """The epoch loop every task shares; ``batches()`` yields one epoch, ``evaluate()`` -> (val loss, val
    metric). ``loss_fn`` defaults to classification; ``metric`` names the per-row average it reports.

    On one process or on N under torchrun (training/distributed.py: each rank trains on its share of every
    global batch, DDP all-reduces the gradients, rank 0 validates); it resumes from and writes the run's state.
    Ends with the best epoch's weights loaded into ``model`` (``cfg.keep == "last"``: the final epoch's, so the
    validation figure is not also the one that chose them), on the CPU. A resumed run must read what the stopped
    one read: ``data`` (the recipe's record of its data: digests, labels, preprocessing) and the model's tensor
    shapes are kept in the state and compared, besides the training configuration.
    """
    run = distributed.current()
    loss_fn = loss_fn or classification_loss(cfg.label_smoothing)
    model.to(run.device)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch * epochs)
    history: list[dict[str, Any]] = []
    stopper = EarlyStopping(cfg.patience)
    done, first = False, 1
    identity = {"data": data or {}, "shapes": {k: list(v.shape) for k, v in model.state_dict().items()}}
    if run.resume is not None:
        state = distributed.load_state(run.resume, dataclasses.asdict(cfg), identity)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if sched is not None:
            sched.load_state_dict(state["scheduler"])
        stopper.load_state_dict(state["early_stopping"])
        history, done, first = state["history"], state["done"], state["epoch"] + 1
        log.info("resuming %s after epoch %d; replaying the data order of its epochs", run.resume, state["epoch"])
        for _ in range(state["epoch"]):  # the recipe's generators, where the finished epochs left them
            for _ in batches():
                pass
        distributed.restore_rng(state["rng"], cfg.seed)
    else:
        distributed.fork_rng(cfg.seed)
    net = distributed.wrap(model)
    t0 = time.perf_counter() - (history[-1]["elapsed_s"] if history else 0.0)
    for epoch in range(first, 0 if done else epochs + 1):
        net.train()
        # per step, this rank's: loss x rows, rows, metric sum; then one column per rank for its rows
        steps: list[list[float]] = []
        seen, loss_sum, metric_sum = 0, 0.0, 0.0  # this rank's, for the progress bar
        bar = tqdm(
            batches(),
            total=steps_per_epoch,
            desc=f"epoch {epoch}/{epochs}",
            disable=not (cfg.progress and run.is_main),
            leave=False,
        )
        for inputs, y in bar:
            inputs, y, n, weight = distributed.shard(inputs, y)
            loss, batch_metric = loss_fn(net(*map(distributed.to_device, inputs)), distributed.to_device(y))
            opt.zero_grad(set_to_none=True)
            (loss if weight == 1.0 else loss * weight).backward()
            if clip_grad:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
            opt.step()
            if sched is not None:
                sched.step()
            row_counts = [0.0] * run.world_size
            row_counts[run.rank] = n
            steps.append([loss.item() * n, n, batch_metric if n else 0.0, *row_counts])
            seen, loss_sum, metric_sum = seen + n, loss_sum + steps[-1][0], metric_sum + steps[-1][2]
            bar.set_postfix(loss=f"{loss_sum / max(seen, 1):.4f}", **{metric: f"{metric_sum / max(seen, 1):.4f}"})
        totals = distributed.all_sum(torch.tensor(steps, dtype=torch.float64))  # (steps, 3 + N)
        seen = int(totals[:, 1].sum())
        val_loss = val_metric = 0.0
        if run.is_main:  # the recipe's validation, on the CPU; the other ranks wait for its figures
            with distributed.on_cpu(model):
                val_loss, val_metric = evaluate()
        val_loss, val_metric = distributed.from_main([val_loss, val_metric])
        row = {
            "epoch": epoch,
            "train_loss": float(totals[:, 0].sum()) / max(seen, 1),
            f"train_{metric}": float(totals[:, 2].sum()) / max(seen, 1),
            "val_loss": val_loss,
            f"val_{metric}": val_metric,
            "lr": opt.param_groups[0]["lr"],
            "elapsed_s": time.perf_counter() - t0,
            "step_loss": (totals[:, 0] / totals[:, 1].clamp(min=1)).tolist(),  # each global batch's mean loss
            "rows_per_rank": totals[:, 3:].sum(0).tolist(),
        }
        history.append(row)
        log.info(
            "epoch %d/%d train_loss %.4f train_%s %.4f val_loss %.4f val_%s %.4f",
            epoch,
            epochs,
            row["train_loss"],
            metric,
            row[f"train_{metric}"],
            val_loss,
            metric,
            val_metric,
        )
        done = stopper.step(epoch, val_loss, model)
        distributed.save_state(
            {
                "epoch": epoch,
                "done": done or epoch == epochs,
                "model": {k: v.cpu() for k, v in model.state_dict().items()},
                "optimizer": opt.state_dict(),
                "scheduler": None if sched is None else sched.state_dict(),
                "early_stopping": stopper.state_dict(),
                "history": history,
                "rng": distributed.gather(distributed.rng_state()),
                "train_config": dataclasses.asdict(cfg),
                "identity": identity,
            }
        )
        if done:
            break
        if run.stop_after == epoch and epoch < epochs:
            raise distributed.Stopped(epoch, run.state_path)
    model.to("cpu")
    if cfg.keep == "last":
        stopper.best_epoch = len(history)
    else:
        stopper.restore(model)
    return history, stopper


def final_metrics(
    probs: np.ndarray,
    labels: np.ndarray,
    names: list[str],
    val_loss: float,
    stopper: EarlyStopping,
    history: list[dict[str, float]],
    started: float,
    n_train: int,
    n_val: int,
) -> dict[str, Any]:
    """Validation metrics of the restored best epoch, plus how training went."""
    metrics = classification_metrics(probs, labels, names)
    metrics.update(
        val_loss=val_loss,
        best_epoch=stopper.best_epoch,
        epochs_run=len(history),
        train_seconds=time.perf_counter() - started,
        n_train=n_train,
        n_val=n_val,
    )
    return metrics


def checkpoint_dict(
    *,
    cfg: TrainConfig,
    model: torch.nn.Module,
    model_cfg: Any,
    dataset: Dataset | TextDataset,
    n_train: int,
    n_val: int,
    metrics: dict[str, Any],
    history: list[dict[str, float]],
    labels: list[str] | None = None,
    **task: Any,
) -> dict[str, Any]:
    """The checkpoint: plain data and a state_dict (never a pickled module); ``task`` adds what the
    task's export needs (image preprocessing, or tokenizer settings and vocabulary). ``labels`` are the
    dataset's classes unless the recipe names its own (an associative memory: one per stored pattern)."""
    run = distributed.current()
    return {
        "format": "nnserve-checkpoint/1",
        "model_name": cfg.model,
        "family": models.get_entry(cfg.model).family,
        "model_config": dataclasses.asdict(model_cfg),
        "state_dict": {k: v.contiguous() for k, v in model.state_dict().items()},
        "labels": list(dataset.label_names if labels is None else labels),
        **task,
        "dataset": {
            "name": dataset.name,
            "source": dataset.source,
            "sha256": dataset.sha256,
            "n_train": n_train,
            "n_val": n_val,
            "split_seed": cfg.split_seed,
            "val_fraction": cfg.val_fraction,
            "columns": dataset.columns,
        },
        "train_config": dataclasses.asdict(cfg),
        "metrics": metrics,
        "history": history,
        "torch_version": str(torch.__version__),
        "distributed": {"world_size": run.world_size, "backend": run.backend},
    }


def accuracy_summary(ckpt: dict[str, Any], out: Path) -> str:
    """A classifier's one-line summary (its recipe's Recipe.summary)."""
    m = ckpt["metrics"]
    return f"validation accuracy {m['accuracy']:.4f} (error {100 * m['error_rate']:.2f}%) at epoch {m['best_epoch']}"
