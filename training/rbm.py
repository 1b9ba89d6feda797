"""The RBM training task: a registered RBM + images -> checkpoint dict, by contrastive divergence.

CD-k (Hinton 2002) starts the negative phase's chain at the data and runs k Gibbs steps; PCD (Tieleman 2008)
keeps one persistent chain per batch row across updates ("fantasy particles"), which samples the model far better
and is this recipe's default. Either way the update is the free energy's gradient at the data minus at the chain's
end (models/rbm.py, ``free_energy``), with probabilities, not samples, for the statistics (Hinton 2010, "A
practical guide to training RBMs", §3): SGD with momentum 0.5 for five epochs then 0.9, weight decay on W only.

Pixels are MNIST's grey levels in [0, 1], read as the logistic visible units' probabilities (Hinton &
Salakhutdinov 2006). Reported per epoch: the mean-field reconstruction's squared error per image, x -> p(h|x) ->
p(v|h), summed over pixels as for the autoencoders; and the free-energy gap, mean F(validation) - mean F(training
images), which grows when the model overfits (guide §6). After each epoch a grid of samples is written, drawn
exactly as the service draws them (contract/gibbs.py: seed 0, ``--sample-steps`` steps).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

import models
from contract import gibbs
from contract.data import Dataset
from contract.images import image_grid
from models.rbm import RBM, GibbsChain
from training.cli import common_config, load_images, model_args, out_dir
from training.common import (
    TrainConfig,
    build_scheduler,
    checkpoint_dict,
    image_model_config,
    image_split,
    seed_everything,
)
from training.plots import plot_series
from training.registry import Recipe, register_recipe

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RBMTrainConfig(TrainConfig):
    model: str = "rbm"
    epochs: int = 30
    batch_size: int = 100
    optimizer: str = "sgd"  # plain SGD with the momentum schedule below (the CD update is not a loss to Adam)
    lr: float | None = 0.01
    weight_decay: float = 2e-4  # on W only
    schedule: str = "cosine"  # the step size falls to 0, which PCD needs to settle (Tieleman 2008 decays it)
    augment: str = "none"
    keep: str = "last"  # no validation loss chooses the weights: CD follows no objective it could measure
    cd_k: int = 1  # Gibbs steps of the negative phase per update
    persistent: bool = True  # PCD; False: CD-k from the data
    momentum: float = 0.5  # for the first five epochs
    final_momentum: float = 0.5  # after them: 0.9 in CD (the DBN's layers), but it throws PCD's chains off course
    sample_steps: int = 1000  # Gibbs steps of the sample grids


def cd_update_loss(rbm: RBM, v0: torch.Tensor, start: torch.Tensor, k: int, gen: torch.Generator) -> tuple:
    """One CD-k / PCD-k negative phase from ``start`` -> (loss whose gradient is the update, chain's binary end).

    loss = mean F(v0) - mean F(v_k): its gradient is -(⟨v hᵀ⟩_data - ⟨v hᵀ⟩_model), with E[h | v] for h."""
    with torch.no_grad():
        _, h = rbm.sample_hidden(start, gen)
        for step in range(k):
            p_v, v = rbm.sample_visible(h, gen)
            if step + 1 < k:
                _, h = rbm.sample_hidden(v, gen)
    # the statistics use p(v | h) at the end (Hinton's code and guide §3.2); the chain carries the binary sample
    return rbm.free_energy(v0).mean() - rbm.free_energy(p_v).mean(), v


def per_image_sse(rbm: RBM, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    """Mean-field reconstruction error per image, x (N, D) -> (N,): squared error summed over units."""
    with torch.no_grad():
        return torch.cat(
            [((rbm.visible_mean(rbm.hidden_mean(x[i : i + batch])) - x[i : i + batch]) ** 2).sum(1)
             for i in range(0, len(x), batch)]
        )  # fmt: skip


def mean_free_energy(rbm: RBM, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float(torch.cat([rbm.free_energy(x[i : i + 1000]) for i in range(0, len(x), 1000)]).mean())


def contrastive_divergence(
    rbm: RBM,
    x_tr: torch.Tensor,
    x_va: torch.Tensor,
    cfg: RBMTrainConfig,
    gen: torch.Generator,
    epochs: int,
    desc: str = "",
    on_epoch: Callable[[int], None] | None = None,
) -> list[dict[str, float]]:
    """Train ``rbm`` on rows x_tr (N, D) in [0, 1] -> one history row per epoch (reconstruction error of training
    batches before their update and of x_va, free-energy gap). The DBN's layers are trained by this too."""
    weights = [rbm.weight]
    biases = [rbm.visible_bias, rbm.hidden_bias]
    groups = [{"params": weights, "weight_decay": cfg.weight_decay}, {"params": biases, "weight_decay": 0.0}]
    opt = torch.optim.SGD(groups, lr=cfg.resolved_lr(), momentum=cfg.momentum)
    steps = (len(x_tr) + cfg.batch_size - 1) // cfg.batch_size
    sched = build_scheduler(opt, cfg, steps * epochs)
    chains = (torch.rand(min(cfg.batch_size, len(x_tr)), x_tr.shape[1], generator=gen) < 0.5).float()
    probe = x_tr[torch.randperm(len(x_tr), generator=gen)[: len(x_va)]]  # training rows for the free-energy gap
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    for epoch in range(1, epochs + 1):
        for group in opt.param_groups:
            group["momentum"] = cfg.momentum if epoch <= 5 else cfg.final_momentum
        perm = torch.randperm(len(x_tr), generator=gen)
        sse_sum = 0.0
        bar = tqdm(range(steps), desc=f"{desc}epoch {epoch}/{epochs}", disable=not cfg.progress, leave=False)
        for step in bar:
            v0 = x_tr[perm[step * cfg.batch_size : (step + 1) * cfg.batch_size]]  # (B, D)
            start = chains[: len(v0)] if cfg.persistent else v0
            sse_sum += float(per_image_sse(rbm, v0).sum())  # before the update, as Hinton's code measures it
            loss, end = cd_update_loss(rbm, v0, start, cfg.cd_k, gen)
            if cfg.persistent:
                chains[: len(v0)] = end
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            bar.set_postfix(sse=f"{sse_sum / min((step + 1) * cfg.batch_size, len(x_tr)):.3f}")
        row = {
            "epoch": epoch,
            "train_sse": sse_sum / len(x_tr),
            "val_sse": float(per_image_sse(rbm, x_va).mean()),
            "free_energy_gap": mean_free_energy(rbm, x_va) - mean_free_energy(rbm, probe),
            "lr": opt.param_groups[0]["lr"],
            "elapsed_s": time.perf_counter() - t0,
        }
        history.append(row)
        log.info(
            "%sepoch %d/%d reconstruction error train %.3f validation %.3f, free-energy gap %.3f",
            desc,
            epoch,
            epochs,
            row["train_sse"],
            row["val_sse"],
            row["free_energy_gap"],
        )
        if on_epoch is not None:
            on_epoch(epoch)
    return history


def gibbs_samples(rbm: RBM, n: int, seed: int, steps: int) -> np.ndarray:
    """n samples (n, C, H, W) as the service draws them: contract/gibbs.py's chains through the exported module."""
    chain = GibbsChain(rbm, gibbs.STEPS_PER_RUN).eval()

    def run(v: np.ndarray, u_h: np.ndarray, u_v: np.ndarray, todo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            out = chain(*(torch.from_numpy(a) for a in (v, u_h, u_v, todo)))
        return out[0].numpy(), out[1].numpy()

    d, h = rbm.weight.shape
    return gibbs.sample(run, n, seed, steps, gibbs.STEPS_PER_RUN, h, d)


def train_rbm(
    ds: Dataset,
    cfg: RBMTrainConfig,
    model_overrides: dict[str, Any],
    preprocessing: dict[str, Any],
    sample_dir: Path | None = None,
) -> dict:
    gen = seed_everything(cfg)
    train_idx, val_idx = image_split(ds, cfg)
    model_cfg = image_model_config(cfg.model, ds, model_overrides)
    rbm = models.create_model(cfg.model, model_cfg)
    assert isinstance(rbm, RBM)
    x_tr = torch.from_numpy(ds.images[train_idx]).float().flatten(1) / 255.0  # (N, D) in [0, 1]
    x_va = torch.from_numpy(ds.images[val_idx]).float().flatten(1) / 255.0
    epochs = 1 if cfg.dry_run else cfg.epochs
    sample_steps = min(cfg.sample_steps, 20) if cfg.dry_run else cfg.sample_steps
    if sample_dir is not None:
        sample_dir.mkdir(parents=True, exist_ok=True)

    def save_samples(epoch: int) -> None:
        if sample_dir is not None:
            grid = gibbs_samples(rbm, 100, seed=0, steps=sample_steps)
            image_grid(grid, cols=10).save(sample_dir / f"epoch_{epoch:03d}.png")

    t0 = time.perf_counter()
    history = contrastive_divergence(rbm, x_tr, x_va, cfg, gen, epochs, on_epoch=save_samples)
    errors = per_image_sse(rbm, x_va).numpy()
    metrics: dict[str, Any] = {
        "val_sse": float(errors.mean()),
        "train_sse": history[-1]["train_sse"],
        "free_energy_gap": history[-1]["free_energy_gap"],
        "best_epoch": len(history),
        "epochs_run": len(history),
        "train_seconds": time.perf_counter() - t0,
        "n_train": len(train_idx),
        "n_val": len(val_idx),
        **{f"val_sse_p{q}": float(np.percentile(errors, q)) for q in (50, 90, 99)},
    }
    log.info("validation reconstruction error %.3f per image (mean field)", metrics["val_sse"])
    return checkpoint_dict(
        cfg=cfg,
        model=rbm,
        model_cfg=model_cfg,
        n_train=len(train_idx),
        n_val=len(val_idx),
        metrics=metrics,
        history=history,
        preprocessing=preprocessing,
        dataset=ds,
    )


PANELS = {
    "reconstruction squared error per image": ["train_sse", "val_sse"],
    "free-energy gap (validation - training)": ["free_energy_gap"],
}


def _add_args(p: argparse.ArgumentParser) -> None:
    d = RBMTrainConfig()
    g = p.add_argument_group("restricted Boltzmann machines (rbm, and the dbn's pretraining)")
    g.add_argument("--cd-k", type=int, default=d.cd_k, help="Gibbs steps of the negative phase per update")
    g.add_argument(
        "--persistent",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="persistent chains (PCD; the default) or CD-k from the data (the dbn's layers always start from the data)",
    )
    g.add_argument("--sample-steps", type=int, default=d.sample_steps, help="Gibbs steps of the sample grids")


def _run(args: argparse.Namespace) -> dict:
    ds, pre, _ = load_images(args)
    d = RBMTrainConfig()
    persistent = d.persistent if args.persistent is None else args.persistent
    cfg = RBMTrainConfig(
        **common_config(args, d), cd_k=args.cd_k, persistent=persistent, sample_steps=args.sample_steps
    )
    log.info("training %s on %s (%d images) with %s", args.model, ds.name, len(ds.labels), cfg)
    return train_rbm(ds, cfg, model_args(args), pre, sample_dir=out_dir(args) / "samples")


def _summary(ckpt: dict, out: Path) -> str:
    m = ckpt["metrics"]
    return (
        f"validation reconstruction error {m['val_sse']:.3f} per image (mean field), "
        f"free-energy gap {m['free_energy_gap']:.2f}"
    )


register_recipe(
    Recipe(
        family="rbm",
        run=_run,
        plot=lambda ckpt, title, path: plot_series(ckpt["history"], title, path, PANELS),
        summary=_summary,
        add_args=_add_args,
        own_loop="contrastive divergence is an update that is no loss's gradient, in its own loop",
        # plain SGD with its momentum schedule; no loss measured to stop at or keep by
        ignores=("optimizer", "augment", "label_smoothing", "patience", "keep"),
    )
)
