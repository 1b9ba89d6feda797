"""Recall in a Hopfield network (models/hopfield.py), torch-free: how a state is read from an image, how sweeps
are repeated until the state settles, and how the final state is matched to a stored pattern. Training's
evaluation (over the torch module) and the service (over the exported graph) both recall through here, so the
figures a model is shipped with are measured exactly as the service answers.

    s0 ─► sweep ─► s1 ─► sweep ─► s2 ─► ...   stop at the first of:
                                              s_t+1 == s_t     "fixed-point" (the sweep that shows it counts)
                                              s_t+1 == s_t-1   "2-cycle"     (s_t+1 is the state answered)
                                              t + 1 == limit   "max-sweeps"
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

Outcome = Literal["fixed-point", "2-cycle", "max-sweeps"]
# one sweep over rows: states (B, N) ±1 -> next states (B, N), their energies (B,), overlaps (B, P)
Sweep = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Reading:
    """How a served memory reads its inputs and answers: the pixel level above which a unit is +1, the overlap a
    final state needs to match a stored pattern, and the storage rule (for the model card)."""

    binarize: float
    match_overlap: float
    rule: str

    @classmethod
    def of(cls, architecture: Mapping[str, object]) -> Reading:
        """From an artifact's architecture config (models/hopfield.py's HopfieldConfig as exported); ValueError
        names a missing or wrong field instead of a default silently standing in for it."""
        values = {}
        for field, kind in (("binarize", float), ("match_overlap", float), ("rule", str)):
            v = architecture.get(field)
            if kind is float and isinstance(v, int | float) and not isinstance(v, bool):
                v = float(v)
            if not isinstance(v, kind):
                raise ValueError(f"architecture config: {field} is {v!r}, not a {kind.__name__}")
            values[field] = v
        reading = cls(**values)  # type: ignore[arg-type]
        if not (0.0 <= reading.binarize < 1.0 and 0.0 < reading.match_overlap <= 1.0):
            raise ValueError(f"architecture config: binarize in [0, 1) and match_overlap in (0, 1]: {reading}")
        return reading


def to_state(pixels: np.ndarray, threshold: float) -> np.ndarray:
    """Pixels in [0, 1] of any shape (..., C, H, W) -> ±1 float32 states (..., C*H*W): above ``threshold`` is +1."""
    lead = pixels.shape[:-3] if pixels.ndim >= 3 else pixels.shape[:-1]
    flat = pixels.reshape(*lead, -1)
    return np.where(flat > threshold, 1.0, -1.0).astype(np.float32)


@dataclass
class Recalled:
    """One row's recall: its final state (N,) ±1, the energy after each sweep, the final overlaps with the stored
    patterns (P,), and why it stopped."""

    state: np.ndarray
    energies: list[float]
    overlaps: np.ndarray
    outcome: Outcome

    @property
    def sweeps(self) -> int:
        return len(self.energies)


def recall(sweep: Sweep, states: np.ndarray, max_sweeps: int | np.ndarray) -> list[Recalled]:
    """Repeat ``sweep`` on each row of ``states`` (B, N) until it settles or reaches its limit (``max_sweeps``:
    one for all rows, or one per row, each ≥ 1). Rows that settled drop out of later sweeps; every row's answer
    depends on its own state only."""
    n = len(states)
    limit = np.broadcast_to(np.asarray(max_sweeps, dtype=np.int64), (n,))
    if n and limit.min() < 1:
        raise ValueError("max_sweeps must be at least 1")
    cur = states.astype(np.float32, copy=True)
    prev = np.zeros_like(cur)  # no ±1 state equals it: no 2-cycle before the second sweep
    energies: list[list[float]] = [[] for _ in range(n)]
    overlaps: np.ndarray | None = None
    outcomes: list[Outcome | None] = [None] * n
    active = np.arange(n)
    while active.size:
        nxt, energy, over = sweep(cur[active])
        if overlaps is None:
            overlaps = np.zeros((n, over.shape[1]), dtype=np.float32)
        fixed = (nxt == cur[active]).all(axis=1)
        cycle = (nxt == prev[active]).all(axis=1)
        prev[active], cur[active], overlaps[active] = cur[active], nxt, over
        still = []
        for k, row in enumerate(active):
            energies[row].append(float(energy[k]))
            if fixed[k]:
                outcomes[row] = "fixed-point"
            elif cycle[k]:
                outcomes[row] = "2-cycle"
            elif len(energies[row]) >= limit[row]:
                outcomes[row] = "max-sweeps"
            else:
                still.append(row)
        active = np.asarray(still, dtype=np.int64)
    return [
        Recalled(state=cur[i], energies=energies[i], overlaps=overlaps[i], outcome=o)  # type: ignore[index, arg-type]
        for i, o in enumerate(outcomes)
    ]


def best_match(overlaps: np.ndarray, min_overlap: float) -> tuple[int | None, float]:
    """The stored pattern a final state matched: (its index, the overlap), or (None, the largest overlap) when
    even the closest one is under ``min_overlap`` (a spurious state: a mixture, a reversed pattern, ...)."""
    best = int(np.argmax(overlaps))
    value = float(overlaps[best])
    return (best if value >= min_overlap else None), value
