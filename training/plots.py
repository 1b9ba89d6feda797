"""Training curves as a PNG (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def plot_series(
    history: list[dict[str, float]], title: str, out: Path, panels: dict[str, list[str]], log_panels: tuple = ()
) -> None:
    """One panel per entry of ``panels``: its history keys against the epoch."""
    epochs = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (name, keys) in zip(axes[0], panels.items(), strict=True):
        for key in keys:
            ax.plot(epochs, [r[key] for r in history], "o-", label=key)
        ax.set(xlabel="epoch", ylabel=name, title=name)
        if name in log_panels:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def plot_curves(history: list[dict[str, float]], title: str, out: Path, metric: str = "accuracy") -> None:
    """Supervised tasks: train/validation loss and metric."""
    panels = {"loss": ["train_loss", "val_loss"], metric: [f"train_{metric}", f"val_{metric}"]}
    plot_series(history, title, out, panels, log_panels=("loss",))


def plot_images(images, title: str, out: Path, cols: int = 10) -> None:
    """A grid of gray images (N, H, W), each scaled to its own range (weights and centres have no fixed range)."""
    n = len(images)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.9, rows * 0.9 + 0.5), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, img in zip(axes.ravel(), images, strict=False):
        ax.imshow(img, cmap="gray")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
