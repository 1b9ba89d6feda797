"""How far a classifier's confidence is from its accuracy: expected calibration error, what chance alone gives
a calibrated model on as many inputs, and the split of a validation set into a fitting half and a measuring half
(export/calibrate.py fits on half A and measures on half B)."""

from __future__ import annotations

import numpy as np

from contract.data import DataError

BINS = 15


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = BINS, answered: np.ndarray | None = None) -> float:
    """Expected calibration error: the gap between confidence and accuracy, averaged over equal-width
    confidence bins weighted by their share of the inputs (Naeini et al. 2015). ``answered``: the labels given,
    where a row's top probability may tie (a field with nothing written is 1/K for every label and answered with
    the graph's label); the most probable label without it."""
    conf = probs.max(1)
    right = (probs.argmax(1) if answered is None else answered) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            total += sel.mean() * abs(float(right[sel].mean()) - float(conf[sel].mean()))
    return float(total)


def ece_floor(probs: np.ndarray, draws: int = 200, seed: int = 0) -> float:
    """What ``ece`` scores on a perfectly calibrated model with these confidences and this many inputs: each
    input right with the probability its confidence states, the median over ``draws``. An ECE near it is all
    sampling noise (on 344 sentences it is about 4 %, so a 1.5 % goal cannot be told from noise there)."""
    rng = np.random.default_rng(seed)
    conf = probs.max(1)
    top = probs.argmax(1)
    other = (top + 1) % probs.shape[1]
    scores = [ece(probs, np.where(rng.random(len(conf)) < conf, top, other)) for _ in range(draws)]
    return float(np.median(scores))


def halves(n: int, seed: int = 0, what: str = "the validation split") -> tuple[np.ndarray, np.ndarray]:
    """Positions 0..n-1 cut at random into half A (fitting) and half B (measuring), each sorted; DataError for
    fewer than 2 (a half would be empty: nothing to fit on, or nothing to measure on), naming ``what`` is cut."""
    if n < 2:
        raise DataError(f"{what} holds {n} row{'s' * (n != 1)}: calibration needs 2 at least")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[: n // 2]), np.sort(perm[n // 2 :])
