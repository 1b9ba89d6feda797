"""What the associative-memory recipe measures and draws: recall of corrupted patterns against the number stored
and the corruption (random patterns, where the Hebbian rule's ≈ 0.138 N capacity applies, and MNIST digits),
recall of unseen digits, and energy traces. Every recall runs the torch module's sweep through
contract.hopfield.recall, the loop the service runs over the exported graph."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

import models
from contract.hopfield import Sweep, best_match, recall
from models.hopfield import FAMILY, RULES, HopfieldNetwork
from training.common import fixed_by_data

HEBBIAN_CAPACITY = 0.138  # Amit, Gutfreund & Sompolinsky 1985: random patterns, N -> infinity


def torch_sweep(model: HopfieldNetwork) -> Sweep:
    def sweep(states: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with torch.no_grad():
            nxt, energy, overlaps = model(torch.from_numpy(states))
        return nxt.numpy(), energy.numpy(), overlaps.numpy()

    return sweep


def arch_of(rule: str) -> str:
    """The registered Hopfield architecture that stores by ``rule`` (from the registry, not a table of names)."""
    (arch,) = [a for a in models.list_models(FAMILY) if models.make_config(a).rule == rule]
    return arch


def network(arch: str, patterns: np.ndarray, **overrides: Any) -> HopfieldNetwork:
    """A network of a registered Hopfield architecture storing (P, N) ±1 patterns."""
    p, n = patterns.shape
    model = models.create_model(arch, **fixed_by_data(overrides, {"units": n, "patterns": p}, "the patterns fix"))
    assert isinstance(model, HopfieldNetwork)
    return model.store(torch.from_numpy(patterns.astype(np.float32))).eval()


def corrupt(patterns: np.ndarray, level: float, trials: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``trials`` cues cycling through the patterns, each with round(level * N) units flipped, and their indices."""
    idx = np.arange(trials) % len(patterns)
    cues = patterns[idx].copy()
    k = round(level * patterns.shape[1])
    for row in cues:
        row[rng.choice(len(row), size=k, replace=False)] *= -1
    return cues, idx


def recall_rate(
    model: HopfieldNetwork, patterns: np.ndarray, level: float, trials: int, max_sweeps: int, rng: np.random.Generator
) -> tuple[float, float]:
    """(share of cues that end matching the pattern they came from, mean sweeps)."""
    cues, idx = corrupt(patterns, level, trials, rng)
    out = recall(torch_sweep(model), cues, max_sweeps)
    min_overlap = model.cfg.match_overlap
    hits = [best_match(r.overlaps, min_overlap)[0] == i for r, i in zip(out, idx, strict=True)]
    return float(np.mean(hits)), float(np.mean([r.sweeps for r in out]))


def random_patterns(p: int, n: int, rng: np.random.Generator) -> np.ndarray:
    return np.where(rng.random((p, n)) < 0.5, 1.0, -1.0).astype(np.float32)


def capacity_rows(
    source: str,
    sets: dict[int, np.ndarray],
    levels: tuple[float, ...],
    trials: int,
    max_sweeps: int,
    rng: np.random.Generator,
    match_overlap: float,
) -> list[dict[str, Any]]:
    """Recall rate for both rules, each pattern set (P -> (P, N) patterns) and each corruption level."""
    rows = []
    for rule in RULES:
        for p, patterns in sets.items():
            try:
                model = network(arch_of(rule), patterns, match_overlap=match_overlap)
            except ValueError:  # the pseudo-inverse of dependent patterns
                continue
            for level in levels:
                rate, sweeps = recall_rate(model, patterns, level, trials, max_sweeps, rng)
                n = patterns.shape[1]
                rows.append(
                    {"source": source, "rule": rule, "patterns": p, "alpha": p / n, "corruption": level,
                     "recall": rate, "sweeps": sweeps}
                )  # fmt: skip
    return rows


def crossing(rows: list[dict[str, Any]], source: str, rule: str, level: float, at: float = 0.5) -> float:
    """The load P/N at which the recall rate first falls below ``at`` (linear between the measured loads); the
    largest load measured when it never does."""
    pts = sorted(
        (r["alpha"], r["recall"]) for r in rows if (r["source"], r["rule"], r["corruption"]) == (source, rule, level)
    )
    for (a0, r0), (a1, r1) in itertools.pairwise(pts):
        if r0 >= at > r1:
            return a0 + (r0 - at) / (r0 - r1) * (a1 - a0)
    return pts[-1][0] if pts and pts[-1][1] >= at else (pts[0][0] if pts else float("nan"))


def unseen_digits(
    model: HopfieldNetwork, states: np.ndarray, labels: list[str], truth: list[str], max_sweeps: int
) -> dict[str, float]:
    """Real digits the patterns were not chosen from (``truth``: their classes), recalled: how many end in a stored
    pattern (``labels``: their classes), whether it is one of their own digit, how they stop, and how often a
    sweep raised the energy."""
    out = recall(torch_sweep(model), states, max_sweeps)
    match = [best_match(r.overlaps, model.cfg.match_overlap)[0] for r in out]
    matched = np.asarray([m is not None for m in match])
    right = np.asarray([m is not None and labels[m] == t for m, t in zip(match, truth, strict=True)])
    nearest = np.argmax(states @ model.patterns.numpy().T, axis=1)  # no dynamics: the closest stored pattern
    rises = sum(int(np.sum(np.diff(r.energies) > 1e-3)) for r in out)
    steps = sum(max(r.sweeps - 1, 0) for r in out)
    return {
        "val_digits": float(len(out)),
        "val_digits_matched": float(matched.mean()),
        "val_digits_label_accuracy": float(right[matched].mean()) if matched.any() else 0.0,
        "val_digits_nearest_accuracy": float(np.mean([labels[m] == t for m, t in zip(nearest, truth, strict=True)])),
        "val_digits_fixed_points": float(np.mean([r.outcome == "fixed-point" for r in out])),
        "val_digits_two_cycles": float(np.mean([r.outcome == "2-cycle" for r in out])),
        "val_digits_mean_sweeps": float(np.mean([r.sweeps for r in out])),
        "val_digits_max_sweeps": float(max(r.sweeps for r in out)),
        "val_energy_rises": rises / max(steps, 1),
    }


def trajectory(model: HopfieldNetwork, cue: np.ndarray, max_sweeps: int) -> dict[str, Any]:
    """One recall with every state on the way (for the figure): the cue, then the state after each sweep, with
    the energies the service reports (after each sweep) and the cue's own energy before them."""
    out = recall(torch_sweep(model), cue[None], max_sweeps)[0]
    sweep = torch_sweep(model)
    states = [cue]
    for _ in range(out.sweeps):
        states.append(sweep(states[-1][None])[0][0])
    w, b = model.weight.numpy(), model.threshold.numpy()
    start = float(-0.5 * cue @ w @ cue + b @ cue)
    match, overlap = best_match(out.overlaps, model.cfg.match_overlap)
    return {
        "states": np.stack(states),
        "energies": [start, *out.energies],
        "outcome": out.outcome,
        "matched": -1 if match is None else match,
        "overlap": overlap,
    }


def energy_traces(
    model: HopfieldNetwork,
    labels: list[str],
    digits: np.ndarray,
    truth: list[str],
    levels: tuple[float, ...],
    max_sweeps: int,
    rng: np.random.Generator,
) -> list[dict[str, Any]]:
    """Recalls for the figure: two stored patterns (``labels``: their classes) corrupted at each level, and two
    unseen digits (``truth``: theirs). A trace's ``source`` is the class its cue came from."""
    patterns = model.patterns.numpy()
    traces = []
    for level in levels:
        chosen = rng.permutation(len(patterns))[:2]
        cues, _ = corrupt(patterns[chosen], level, 2, rng)
        traces += [
            {"cue": f"{round(100 * level)} % flipped", "source": labels[i], **trajectory(model, c, max_sweeps)}
            for c, i in zip(cues, chosen, strict=True)
        ]
    traces += [
        {"cue": "unseen digit", "source": t, **trajectory(model, d, max_sweeps)}
        for d, t in zip(digits[:2], truth[:2], strict=True)
    ]
    return traces


COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


def plot_capacity(rows: list[dict[str, Any]], title: str, out: Path) -> None:
    """Recall rate against the load P/N: a colour per corruption level, solid Hebbian, dashed pseudo-inverse; one
    panel for random patterns, one for the dataset's digits."""
    from matplotlib.lines import Line2D

    sources = list(dict.fromkeys(r["source"] for r in rows))
    fig, axes = plt.subplots(1, len(sources), figsize=(6.5 * len(sources), 4.5), squeeze=False)
    for ax, source in zip(axes[0], sources, strict=True):
        mine = [r for r in rows if r["source"] == source]
        levels = sorted({r["corruption"] for r in mine})
        for rule, style in zip(RULES, ("-", "--"), strict=True):
            for level, color in zip(levels, COLORS, strict=False):
                pts = sorted((r["alpha"], r["recall"]) for r in mine if r["rule"] == rule and r["corruption"] == level)
                if pts:
                    ax.plot(*zip(*pts, strict=True), style, marker="o", ms=3, color=color)
        handles = [
            Line2D([], [], color=c, label=f"{round(100 * lv)} % flipped") for lv, c in zip(levels, COLORS, strict=False)
        ]
        handles += [Line2D([], [], color="k", ls=st, label=rule) for rule, st in zip(RULES, ("-", "--"), strict=True)]
        if source == "random":
            ax.axvline(HEBBIAN_CAPACITY, color="grey", ls=":")
            handles.append(Line2D([], [], color="grey", ls=":", label="0.138 N (Hebbian, N → ∞)"))
        n = round(mine[0]["patterns"] / mine[0]["alpha"])
        what = "random ±1 patterns" if source == "random" else f"{source} digits (k-means medoids per class)"
        ax.set(xlabel=f"load P / N (N = {n} units)", ylabel="recall rate", title=what, ylim=(-0.02, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(handles=handles, fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def _strip(states: np.ndarray, shape: tuple[int, int], cols: int, pad: int = 2) -> np.ndarray:
    """A recall's states as one row of images: the first ``cols - 1`` and the last."""
    keep = list(states[: cols - 1]) + ([states[-1]] if len(states) >= cols else [])
    h, w = shape
    row = np.full((h + 2 * pad, cols * (w + pad) + pad), 0.5)
    for i, s in enumerate(keep):
        row[pad : pad + h, pad + i * (w + pad) : pad + i * (w + pad) + w] = (s.reshape(h, w) + 1) / 2
    return row


def plot_energy(
    traces: list[dict[str, Any]], labels: list[str], shape: tuple[int, int], title: str, out: Path, cols: int = 8
) -> None:
    """Energy after each sweep (sweep 0: the cue's own), and each recall's states from the cue on, with what it
    ended in (``labels``: the stored patterns' classes)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [1, 1.25]})
    kinds = list(dict.fromkeys(t["cue"] for t in traces))
    for t in traces:
        color = COLORS[kinds.index(t["cue"]) % len(COLORS)]
        end = "" if t["matched"] >= 0 else " (spurious)"
        left.plot(range(len(t["energies"])), t["energies"], "o-", ms=3, color=color, label=t["cue"] + end)
    handles, texts = left.get_legend_handles_labels()
    unique = dict(zip(texts, handles, strict=True))
    left.legend(unique.values(), unique.keys(), fontsize=8)
    left.set(xlabel="sweep (0: the cue)", ylabel="energy E = -1/2 sᵀWs + bᵀs", title="energy per synchronous sweep")
    left.grid(alpha=0.3)
    right.imshow(np.concatenate([_strip(t["states"], shape, cols) for t in traces]), cmap="gray", vmin=0, vmax=1)
    names = [
        f"{t['source']}, {t['cue']} → {labels[t['matched']] if t['matched'] >= 0 else 'spurious'}, "
        f"{len(t['energies']) - 1} sweeps"
        for t in traces
    ]
    right.set_yticks([(i + 0.5) * (shape[0] + 4) for i in range(len(traces))], names, fontsize=7)
    right.set_xticks([])
    right.set_title("cue, then the state after each sweep (the last column: the final state)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
