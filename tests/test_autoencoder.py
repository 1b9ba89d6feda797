"""The reconstruction task: dry runs over the registry, corruption, code penalties, the PCA baseline."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

import models
from training.__main__ import main as train_main
from training.autoencoder import code_penalty, corrupt, pca_sse

AUTOENCODERS = models.list_models("autoencoder")


@pytest.mark.parametrize("name", AUTOENCODERS)
def test_dry_run(tmp_path, name):
    assert train_main([name, "--dry-run", "--out", str(tmp_path), "--no-progress"]) == 0
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    m = ckpt["metrics"]
    assert ckpt["family"] == "autoencoder" and m["val_sse"] > 0 and m["val_sse_p99"] >= m["val_sse_p50"]
    assert ckpt["model_config"]["noise"] == models.make_config(name).noise  # the variant is recorded
    history = json.loads((tmp_path / "metrics.json").read_text())["history"]
    assert "val_sse" in history[0]


def test_pca_error_decreases_with_code_size(digits):
    x = digits.images[:, 0] / 255.0
    errors = [pca_sse(x[:1500], x[1500:], k) for k in (2, 5, 10, 30, 60)]
    assert all(a > b for a, b in itertools.pairwise(errors)), errors
    assert pca_sse(x[:1500], x[1500:], 784) < 1e-6  # a full basis reconstructs exactly


def test_corruption_and_penalties():
    g = torch.Generator().manual_seed(0)
    x = torch.full((4, 1, 28, 28), 0.5)
    masked = corrupt(x, models.make_config("autoencoder", noise="masking", noise_level=0.3), g)
    assert 0.2 < float((masked == 0).float().mean()) < 0.4
    noisy = corrupt(x, models.make_config("autoencoder", noise="gaussian", noise_level=0.2), g)
    assert float(noisy.min()) >= 0 and float(noisy.max()) <= 1 and not torch.equal(noisy, x)
    assert torch.equal(corrupt(x, models.make_config("autoencoder"), g), x)
    code = torch.randn(8, 30)
    assert float(code_penalty(code, models.make_config("sparse-autoencoder"))) > 0
    assert float(code_penalty(code, models.make_config("sparse-autoencoder", sparsity="kl", sparsity_weight=1.0))) > 0
    assert float(code_penalty(code, models.make_config("autoencoder"))) == 0


def test_autoencoder_learns_digits(tmp_path):
    """A few epochs on scikit-learn's digits: the validation reconstruction error falls by more than half."""
    argv = ["autoencoder", "--data", "sklearn-digits", "--epochs", "6", "--threads", "2", "--no-progress"]
    small = ["--model-arg", "hidden=[256,128]", "--model-arg", "code_size=10"]
    assert train_main([*argv, *small, "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "metrics.json").read_text())
    sse = [row["val_sse"] for row in report["history"]]
    assert np.isfinite(sse).all() and sse[-1] < 0.5 * sse[0], sse
    best = report["metrics"]["best_epoch"]  # the epoch with the lowest validation loss is the one kept
    assert report["metrics"]["val_sse"] == pytest.approx(sse[best - 1], rel=1e-4)
