"""Export of associative memories (Hopfield networks), served as the ``recall`` task: one synchronous sweep,
state (B, N) ±1 -> next_state (B, N) ±1, energy (B,) of the next state, overlaps (B, P) with the stored patterns.
The stored patterns are inside the graph (the overlaps' weights); model.json's labels name each one's class, and
patterns.png beside the graph shows them. The service repeats the sweep (contract/hopfield.py)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch

from contract.hopfield import Reading
from contract.images import image_grid
from contract.metadata import ImagePreprocessing, TensorSpec
from export.spec import MAX_BATCH, PARITY_BATCHES, ExportSpec, register_spec

PATTERNS_FILE = "patterns.png"


def states(patterns: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n deterministic cues: stored patterns with 0-40 % of their units flipped, and (every third) random states."""
    rng = np.random.default_rng(seed)
    p, units = patterns.shape
    out = np.where(rng.random((n, units)) < 0.5, 1.0, -1.0).astype(np.float32)
    for i in range(n):
        if i % 3 != 2:
            flip = rng.random(units) < 0.1 * (i % 5)
            out[i] = np.where(flip, -patterns[i % p], patterns[i % p])
    return out


def patterns_png(patterns: np.ndarray, labels: list[str], pre: ImagePreprocessing) -> bytes:
    """The stored patterns as one grid image (ink white): a column per class when each class has as many."""
    h, w = pre.input_size
    images = ((patterns.reshape(len(patterns), pre.channels, h, w) + 1) / 2).astype(np.float32)
    classes = list(dict.fromkeys(labels))
    k = len(labels) // len(classes) if classes else 0
    if classes and labels == [c for c in classes for _ in range(k)]:  # class by class, k each
        order = [c * k + r for r in range(k) for c in range(len(classes))]
        images, cols = images[order], len(classes)
    else:
        cols = max(1, round(len(patterns) ** 0.5))
    buf = io.BytesIO()
    image_grid(images, cols=cols).save(buf, format="PNG")
    return buf.getvalue()


@register_spec("associative-memory", task="recall")
def recall_spec(ckpt: dict[str, Any]) -> ExportSpec:
    cfg = ckpt["model_config"]
    Reading.of(cfg)  # the service reads its inputs and matches by these: an artifact without them is not written
    n, p = cfg["units"], cfg["patterns"]
    patterns = ckpt["state_dict"]["patterns"].numpy()
    pre = ImagePreprocessing.model_validate(ckpt["preprocessing"])
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    return ExportSpec(
        example=(torch.from_numpy(states(patterns, 2, 0)),),
        inputs=[TensorSpec(name="state", dtype="float32", shape=[-1, n])],
        dynamic_shapes={"state": {0: batch}},
        parity_cases=[(states(patterns, b, seed=b),) for b in PARITY_BATCHES],
        preprocessing=pre,
        outputs=[
            TensorSpec(name="next_state", dtype="float32", shape=[-1, n]),
            TensorSpec(name="energy", dtype="float32", shape=[-1]),
            TensorSpec(name="overlaps", dtype="float32", shape=[-1, p]),
        ],
        files={PATTERNS_FILE: patterns_png(patterns, list(ckpt["labels"]), pre)},
    )
