"""What a model family contributes to export: an ExportSpec (example inputs, dynamic axes, parity cases, the
preprocessing record, extra files and metadata), built from its checkpoint. One module of export/specs/ per
family registers its builder here (``register_spec``); export/onnx_export.py does the rest for every family."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from contract.discovery import import_modules
from contract.images import normalize
from contract.metadata import GraphInfo, ImagePreprocessing, TensorSpec, TextPreprocessing

PARITY_BATCHES = (1, 8)
MAX_BATCH, MAX_SEQ = 4096, 100_000


@dataclass
class ExportSpec:
    example: tuple[torch.Tensor, ...]
    inputs: list[TensorSpec]
    dynamic_shapes: dict[str, dict[int, Any]]
    parity_cases: list[tuple[np.ndarray, ...]]
    preprocessing: ImagePreprocessing | TextPreprocessing
    outputs: list[TensorSpec]
    seq_lens: list[int] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)  # written beside model.onnx
    wrap: Callable[[Any], torch.nn.Module] | None = None  # the part of the model to export
    encoder: ExportSpec | None = None  # a second graph, written to ENCODER_FILE (VAE)
    # ModelMetadata fields the family adds (an autoencoder's anomaly threshold, a generator's info; "training":
    # entries added to the recipe's), given the encoder graph's record when there is one
    extras: Callable[[GraphInfo | None], dict[str, Any]] | None = None


Builder = Callable[[dict[str, Any]], ExportSpec]
SPECS: dict[str, Builder] = {}
TASKS: dict[str, str] = {}  # family -> the task its artifacts are served as (model.json's task)


def register_spec(*families: str, task: str | None = None) -> Callable[[Builder], Builder]:
    """Register ``build(checkpoint) -> ExportSpec`` for the model families named (models' registry ``family``);
    their artifacts are served as ``task`` (default: the family's own name)."""

    def wrap(build: Builder) -> Builder:
        for family in families:
            if family in SPECS:
                raise ValueError(f"an export spec for {family!r} is registered twice")
            SPECS[family] = build
            TASKS[family] = task or family
        return build

    return wrap


def load_specs(package: str = "export.specs") -> dict[str, Builder]:
    """Import every module of export/specs/ (each registers its families' builders)."""
    import_modules(package)
    return SPECS


def parity_inputs(pre: ImagePreprocessing, n: int, seed: int = 0) -> np.ndarray:
    """Deterministic pseudo-images in the model's input convention: blobs of ink on a dark field."""
    rng = np.random.default_rng(seed)
    h, w = pre.input_size
    pixels = rng.integers(0, 256, size=(n, pre.channels, h, w), dtype=np.uint8)
    pixels[rng.random(pixels.shape) < 0.7] = 0  # mostly background, like real digits and garments
    return normalize(pixels, pre)


def token_inputs(vocab_size: int, batch: int, seq_len: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic right-padded id batches; the first row always fills ``seq_len``."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, seq_len + 1, size=batch).astype(np.int64)
    lengths[0] = seq_len
    ids = rng.integers(2, vocab_size, size=(batch, seq_len)).astype(np.int64)
    ids[np.arange(seq_len)[None, :] >= lengths[:, None]] = 0
    return ids, lengths


def latent_inputs(latent_dim: int, num_classes: int, n: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Deterministic z ~ N(0, I) rows, plus labels cycling through the classes for conditional models."""
    z = np.random.default_rng(seed).standard_normal((n, latent_dim), dtype=np.float32)
    return (z, np.arange(n, dtype=np.int64) % num_classes) if num_classes else (z,)
