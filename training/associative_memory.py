"""The associative-memory recipe: choose P binary patterns from a digit dataset and store them in a Hopfield network
(models/hopfield.py) with its architecture's rule. Nothing is learned by gradient, so there are no epochs: the
weights follow from the patterns in one step, and the rest of the run measures what the network recalls.

Patterns: each image is binarised (a pixel above ``binarize`` is +1, ink; the rest -1), and each class gives
``--per-class`` of its training digits: the medoids of a k-means clustering of that class (the real digit nearest
each cluster's mean), so the stored digits are typical and differ in style. MNIST digits overlap heavily (most
pixels are background in every one of them): the Hebbian rule cannot store even ten of them, the pseudo-inverse
rule can (the recipe measures both).

Measured (``metrics``, and ``curves.png`` / ``energy.png`` beside the checkpoint):
- the stored patterns, each with round(c N) of its units flipped, c from 0 to 50 %: the share recalled;
- the validation digits (never chosen as patterns): the share that ends in a stored pattern, and in one of its
  own digit, how recall stops, and how often a synchronous sweep raised the energy;
- with ``--study`` (the default): recall against the load P/N and the corruption for both rules, on random ±1
  patterns (to compare with the Hebbian rule's ≈ 0.138 N) and on MNIST medoids of 1 to 20 per class.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import models
from contract.data import stratified_split
from contract.hopfield import to_state
from training.cli import DESCENT_FLAGS, common_config, load_images, model_args
from training.common import TrainConfig, checkpoint_dict, seed_everything
from training.hopfield_study import (
    HEBBIAN_CAPACITY,
    capacity_rows,
    crossing,
    energy_traces,
    network,
    plot_capacity,
    plot_energy,
    random_patterns,
    recall_rate,
    unseen_digits,
)
from training.registry import Recipe, register_recipe

log = logging.getLogger(__name__)
LEVELS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)  # corruption of the served model's cues
STUDY_LEVELS = (0.0, 0.1, 0.2, 0.3)
ALPHAS = (0.025, 0.05, 0.075, 0.1, 0.125, 0.138, 0.15, 0.175, 0.2, 0.25, 0.3, 0.4, 0.5)
PER_CLASS = (1, 2, 3, 5, 10, 15, 20)


@dataclass(frozen=True)
class HopfieldTrainConfig(TrainConfig):
    model: str = "hopfield-pseudo-inverse"
    epochs: int = 0  # storing is one step
    augment: str = "none"
    per_class: int = 3  # patterns stored per class: k-means medoids of its training digits
    trials: int = 200  # cues per measured point
    max_sweeps: int = 100  # the sweep limit of every recall measured
    study: bool = True  # measure recall against the load for both rules (random patterns and digits)


def medoids(states: np.ndarray, k: int, rng: np.random.Generator, iters: int = 10) -> np.ndarray:
    """k-means (Lloyd, Euclidean) of (n, N) ±1 states -> the k members nearest their cluster's mean (k, N)."""
    centres = states[rng.choice(len(states), size=k, replace=False)].astype(np.float64)
    for _ in range(iters):
        # argmin ||x - c||² = argmax (x·c - ||c||² / 2)
        near = np.argmax(states @ centres.T - 0.5 * (centres**2).sum(1), axis=1)
        for j in range(k):
            members = states[near == j]
            centres[j] = members.mean(0) if len(members) else states[rng.integers(len(states))]
    near = np.argmax(states @ centres.T - 0.5 * (centres**2).sum(1), axis=1)
    out = []
    for j in range(k):
        members = np.flatnonzero(near == j) if (near == j).any() else np.arange(len(states))
        dist = ((states[members] - centres[j]) ** 2).sum(1)
        out.append(states[members[np.argmin(dist)]])
    return np.stack(out)


def choose_patterns(
    states: np.ndarray, labels: np.ndarray, names: list[str], per_class: int, seed: int
) -> tuple[np.ndarray, list[str]]:
    """``per_class`` medoids of each class, class by class: patterns (P, N) ±1 and their labels (P,)."""
    rng = np.random.default_rng(seed)
    patterns, out_labels = [], []
    for c in np.unique(labels):
        patterns.append(medoids(states[labels == c], per_class, rng))
        out_labels += [names[c]] * per_class
    return np.concatenate(patterns).astype(np.float32), out_labels


def study(
    cfg: HopfieldTrainConfig,
    source: str,
    train_states: np.ndarray,
    train_labels: np.ndarray,
    names: list[str],
    match: float,
) -> list[dict[str, Any]]:
    """Recall against the load for both rules: random ±1 patterns, and the dataset's (``source``) medoids of
    1-20 per class."""
    rng = np.random.default_rng(cfg.seed + 1)
    n = train_states.shape[1]
    alphas = ALPHAS[1::5] if cfg.dry_run else ALPHAS
    randoms = {round(a * n): random_patterns(round(a * n), n, rng) for a in alphas}
    rows = capacity_rows("random", randoms, STUDY_LEVELS, cfg.trials, cfg.max_sweeps, rng, match)
    digits = {}
    for k in PER_CLASS[:3:2] if cfg.dry_run else PER_CLASS:
        pats, _ = choose_patterns(train_states, train_labels, names, k, cfg.seed)
        digits[len(pats)] = pats
    return rows + capacity_rows(source, digits, (*STUDY_LEVELS, 0.4), cfg.trials, cfg.max_sweeps, rng, match)


def train_hopfield(ds: Any, cfg: HopfieldTrainConfig, overrides: dict[str, Any], preprocessing: dict) -> dict:
    """Choose and store the patterns, then measure recall; the checkpoint carries the figures' data."""
    seed_everything(cfg)
    started = time.perf_counter()
    train_idx, val_idx = stratified_split(ds.labels, cfg.val_fraction, cfg.split_seed)
    if cfg.dry_run:
        val_idx = val_idx[:100]
    threshold = models.make_config(cfg.model, **overrides).binarize
    train_states = to_state(ds.images[train_idx].astype(np.float32) / 255.0, threshold)
    val_states = to_state(ds.images[val_idx].astype(np.float32) / 255.0, threshold)
    patterns, labels = choose_patterns(train_states, ds.labels[train_idx], ds.label_names, cfg.per_class, cfg.seed)
    model = network(cfg.model, patterns, **overrides)
    model_cfg = model.cfg
    rng = np.random.default_rng(cfg.seed)
    cross = patterns @ patterns.T / patterns.shape[1]
    np.fill_diagonal(cross, -1.0)
    metrics: dict[str, Any] = {
        "units": patterns.shape[1],
        "patterns": len(patterns),
        "max_pattern_overlap": float(cross.max()),
    }
    for level in LEVELS:
        rate, sweeps = recall_rate(model, patterns, level, cfg.trials, cfg.max_sweeps, rng)
        metrics[f"recall_{round(100 * level):02d}"] = rate
        metrics[f"sweeps_{round(100 * level):02d}"] = sweeps
    log.info("recall of stored patterns by corruption: %s", {k: v for k, v in metrics.items() if "recall" in k})
    truth = [ds.label_names[c] for c in ds.labels[val_idx]]
    metrics |= unseen_digits(model, val_states, labels, truth, cfg.max_sweeps)
    traces = energy_traces(model, labels, val_states, truth, (0.1, 0.2, 0.3, 0.4), cfg.max_sweeps, rng)
    if cfg.study:
        rows = study(cfg, ds.name, train_states, ds.labels[train_idx], ds.label_names, model_cfg.match_overlap)
        metrics["capacity"] = rows
        for rule in ("hebbian", "pseudo-inverse"):
            key = rule.replace("-", "_")
            for level in (0.0, 0.1):
                metrics[f"{key}_random_load_{round(100 * level):02d}"] = crossing(rows, "random", rule, level)
    metrics["train_seconds"] = time.perf_counter() - started
    for trace in traces:
        trace["states"] = torch.from_numpy(trace["states"]).to(torch.int8)  # plain tensors: weights_only loads
    return checkpoint_dict(
        cfg=cfg,
        model=model,
        model_cfg=model_cfg,
        labels=labels,
        dataset=ds,
        n_train=len(train_idx),
        n_val=len(val_idx),
        metrics=metrics,
        history=[],
        preprocessing=preprocessing,
        traces=traces,
    )


def _add_args(p: argparse.ArgumentParser) -> None:
    d = HopfieldTrainConfig()
    g = p.add_argument_group("Hopfield networks (associative memory)")
    g.add_argument("--per-class", type=int, default=d.per_class, help="patterns stored per class (k-means medoids)")
    g.add_argument("--trials", type=int, default=d.trials, help="recall cues per measured point")
    g.add_argument("--max-sweeps", type=int, default=d.max_sweeps, help="sweep limit of each recall measured")
    g.add_argument(
        "--study",
        action=argparse.BooleanOptionalAction,
        default=d.study,
        help="measure recall against the load for both rules, random patterns and digits",
    )


def _run(args: argparse.Namespace) -> dict:
    ds, pre, _ = load_images(args)
    d = HopfieldTrainConfig()
    trials = min(args.trials, 20) if args.dry_run else args.trials
    cfg = HopfieldTrainConfig(
        **common_config(args, d), per_class=args.per_class, trials=trials, max_sweeps=args.max_sweeps, study=args.study
    )
    log.info("storing %s patterns per class of %s (%d images) in %s", cfg.per_class, ds.name, len(ds.labels), cfg.model)
    return train_hopfield(ds, cfg, model_args(args), pre)


def _plot(ckpt: dict[str, Any], title: str, path: Path) -> None:
    """curves.png: recall against the load (the study); energy.png: energy traces with their states."""
    rows = ckpt["metrics"].get("capacity", [])
    if rows:
        plot_capacity(rows, f"recall of corrupted patterns, synchronous sweeps ({title})", path)
    h, w = ckpt["preprocessing"]["input_size"]
    traces = [{**t, "states": t["states"].float().numpy()} for t in ckpt["traces"]]
    plot_energy(
        traces,
        ckpt["labels"],
        (h, w),
        f"{title}: recall of {ckpt['metrics']['patterns']} stored digits",
        path.parent / "energy.png",
    )


def _summary(ckpt: dict[str, Any], out: Path) -> str:
    m = ckpt["metrics"]
    line = (
        f"{m['patterns']} patterns ({ckpt['model_config']['rule']}): recalled {100 * m['recall_30']:.1f} % at 30 % "
        f"flipped, {100 * m['recall_40']:.1f} % at 40 %; unseen digits end in a stored pattern "
        f"{100 * m['val_digits_matched']:.1f} % of the time, their own digit "
        f"{100 * m['val_digits_label_accuracy']:.1f} %"
    )
    if "hebbian_random_load_00" in m:
        line += f"; Hebbian capacity (random patterns) {m['hebbian_random_load_00']:.3f} N vs {HEBBIAN_CAPACITY} N"
    return line


register_recipe(
    Recipe(
        family="associative-memory",
        run=_run,
        plot=_plot,
        summary=_summary,
        add_args=_add_args,
        own_loop="storing the patterns is one closed-form matrix formula: there is no gradient descent to share",
        ignores=(*DESCENT_FLAGS, "augment", "label_smoothing"),
    )
)
