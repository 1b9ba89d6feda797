"""Gibbs chains of a served RBM, drawn from a seed (torch-free): the training recipe's sample grids, the service's
/v1/generate and export/evaluate.py all run a chain through this, so a seed means the same images everywhere.

The exported graph (models/rbm.py, GibbsChain) runs up to K steps and takes its randomness as inputs:

    v (n, D) ── run 1: u_h (n, K, H), u_v (n, K, D), steps = K ──► v ── run 2 ──► … ── last run: steps = rest ──► image

Chain i draws from its own generator, ``default_rng([seed, i])``: its start v ~ Bernoulli(1/2) per pixel, then for
each run K hidden and K visible uniforms, so sample i is the same whatever the number of samples asked for.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

STEPS_PER_RUN = 10  # K: Gibbs steps one run of the exported graph can take
START = "bernoulli-0.5"  # the chains' start: every visible unit on with probability 1/2

# (v (n, D), u_h (n, K, H), u_v (n, K, D), steps (n,) int64) -> (v (n, D), image (n, C, H, W))
RunFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def chain_rngs(seed: int, n: int, first: int = 0) -> list[np.random.Generator]:
    """The generators of chains first .. first + n - 1."""
    return [np.random.default_rng([seed, i]) for i in range(first, first + n)]


def start_state(rngs: list[np.random.Generator], visible: int) -> np.ndarray:
    """(n, D) binary float32: each chain's first visible state."""
    return np.stack([(r.random(visible, dtype=np.float32) < 0.5).astype(np.float32) for r in rngs])


def run_noise(rngs: list[np.random.Generator], k: int, hidden: int, visible: int) -> tuple[np.ndarray, np.ndarray]:
    """One run's uniforms: u_h (n, K, H), u_v (n, K, D), float32 in [0, 1)."""
    u_h = np.stack([r.random((k, hidden), dtype=np.float32) for r in rngs])
    u_v = np.stack([r.random((k, visible), dtype=np.float32) for r in rngs])
    return u_h, u_v


def runs(steps: int, k: int) -> list[int]:
    """The steps each run takes: K, K, ..., the rest (a request of 25 steps with K = 10: [10, 10, 5])."""
    return [min(k, steps - done) for done in range(0, steps, k)]


def sample(run: RunFn, n: int, seed: int, steps: int, k: int, hidden: int, visible: int, first: int = 0) -> np.ndarray:
    """Chains first .. first + n - 1 of ``steps`` Gibbs steps from ``seed`` -> the last step's p(v | h) as images
    (n, C, H, W)."""
    if steps < 1:
        raise ValueError("a chain takes at least one step")
    rngs = chain_rngs(seed, n, first)
    v = start_state(rngs, visible)
    image = np.empty(0, dtype=np.float32)
    for todo in runs(steps, k):
        u_h, u_v = run_noise(rngs, k, hidden, visible)
        v, image = run(v, u_h, u_v, np.full(n, todo, dtype=np.int64))
    return image
