"""Shared fixtures: tiny real artifacts built from scikit-learn's bundled digits (nothing downloaded)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
REPO = Path(__file__).resolve().parent.parent


def png_bytes(a: np.ndarray, mode: str | None = None, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a, mode=mode).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="session")
def digits():
    from training.data import load_sklearn_digits

    return load_sklearn_digits(28)


@pytest.fixture(scope="session")
def artifact_root(tmp_path_factory, digits) -> Path:
    """Train two small classifiers on the digits for a few epochs and export them: a real model dir.

    ``digits-cnn`` reaches >90 % on held-out digits, so HTTP tests can check answers, not just shapes.
    """
    from export.onnx_export import export_checkpoint
    from training.loop import TrainConfig, train

    root = tmp_path_factory.mktemp("artifacts")
    runs = tmp_path_factory.mktemp("runs")
    pre = {"input_size": [28, 28], "channels": 1, "white_on_black": True, "fit": "digit", "mean": [0], "std": [1]}
    import torch

    for name, arch, epochs, overrides in (
        ("digits-cnn", "cnn", 6, {"channels": [16, 32, 64]}),
        ("digits-lenet5", "lenet5", 2, {}),
    ):
        cfg = TrainConfig(model=arch, epochs=epochs, batch_size=64, progress=False, threads=2, patience=10)
        ckpt = train(digits, cfg, overrides, pre)
        path = runs / f"{name}.pt"
        torch.save(ckpt, path)
        export_checkpoint(path, root / name, name=name)
    return root
