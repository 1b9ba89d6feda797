"""The latent codes a generator's samples are decoded from, drawn from a seed (torch-free): /v1/generate and
export/evaluate.py both draw them here, so a seed means the same images in both (an RBM's Gibbs chains: gibbs.py).
"""

from __future__ import annotations

import numpy as np


def latents(seed: int, n: int, dim: int) -> np.ndarray:
    """z ~ N(0, I), (n, dim) float32, from numpy's ``default_rng(seed)``: row i is the same for any n >= i + 1."""
    return np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)


def cycled_labels(n: int, classes: int) -> np.ndarray:
    """A conditional generator's labels when none is asked for: 0, 1, ..., classes - 1, 0, 1, ... (int64)."""
    return np.arange(n, dtype=np.int64) % classes
