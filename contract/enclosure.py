"""A digit inside a closed line that does not touch it: a teacher's circle around an answer, the printed box of
a form's field. The line is no part of the digit, and a model that reads both sees a "0" around something; the
front door (contract/ink.py) keeps what the line encloses and drops the line. Torch-free, numpy only.

On a grid of cells about ``1/CELLS`` of the ink's extent a side (each cell inked where any of its pixels is strong
ink): the paper outside is what a 4-connected flood from the border reaches without coming within GAP cells of
ink (so a line broken by a pencil's dashes still closes); the outer ink is every 8-connected stroke that faces
that paper; the inner ink is the rest, strokes inside a loop of another. A loop's contents are kept only when they
are a digit's size beside the loop (not a speck inside a 6's or an 8's loop) and the loop is round or square, as
a circle or a box is, not a 0's tall loop; ink touching the line, or a line left open wider than the gap, changes
nothing. Each flood stops after PASSES steps, so a hostile zig-zag costs a few milliseconds at most. Measured
with ``python -m bench.circled`` (README.md: How images are prepared).
"""

from __future__ import annotations

import numpy as np

CELLS = 64  # the grid's longest side, across the ink's extent: at most 4 px of contract/ink.py's 256-px image
INK = 0.5  # strength at which a pixel is ink (contract/ink.py's box uses the same)
# what a loop must enclose to be a digit and not a speck or a 0's dot, against the loop's own box: this share of
# its height, and of its ink cells
INNER_EXTENT = 0.3
INNER_INK = 0.1
MIN_INNER_CELLS = 6
# a circle or a box drawn round a digit is about as wide as tall, or wider; a 0 is a taller loop, and a slash or a
# dot inside it that does not touch it is still a 0 (a slashed zero read as its slash, a "1", was a reviewer's find)
ROUND = 0.75
GAP = 2  # cells: a line broken by up to twice this many still closes
PASSES = 2 * CELLS  # a flood that has not settled after this many steps winds like no circle: left as it is


class _Winding(Exception):
    """A flood did not settle within PASSES steps (a zig-zag of ink built to make it slow)."""


def _grow(a: np.ndarray, diagonal: bool) -> np.ndarray:
    """``a`` and its 4-neighbours (with ``diagonal``, 8-neighbours)."""
    out = a.copy()
    out[1:] |= a[:-1]
    out[:-1] |= a[1:]
    out[:, 1:] |= a[:, :-1]
    out[:, :-1] |= a[:, 1:]
    if diagonal:
        out[1:, 1:] |= a[:-1, :-1]
        out[1:, :-1] |= a[:-1, 1:]
        out[:-1, 1:] |= a[1:, :-1]
        out[:-1, :-1] |= a[1:, 1:]
    return out


def _widened(a: np.ndarray, cells: int) -> np.ndarray:
    """``a`` grown by ``cells`` cells every way (8-neighbours, ``cells`` times)."""
    for _ in range(cells):
        a = _grow(a, diagonal=True)
    return a


def _fill(seed: np.ndarray, within: np.ndarray, diagonal: bool) -> np.ndarray:
    """The part of ``within`` connected to ``seed`` (geodesic reconstruction: grow and clip until it stops)."""
    region = seed & within
    for _ in range(PASSES):
        grown = _grow(region, diagonal) & within
        if np.array_equal(grown, region):
            return region
        region = grown
    raise _Winding


def _cells(strength: np.ndarray) -> tuple[np.ndarray, int]:
    """Strong ink pooled into cells (any pixel of the cell), and the cell's side in pixels."""
    h, w = strength.shape
    f = max(1, -(-max(h, w) // CELLS))
    padded = np.zeros((-(-h // f) * f, -(-w // f) * f), dtype=bool)
    padded[:h, :w] = strength >= INK
    cells = np.asarray(padded.reshape(padded.shape[0] // f, f, padded.shape[1] // f, f).any(axis=(1, 3)))
    return cells, f


def _extent(mask: np.ndarray) -> tuple[int, int]:
    rows, cols = np.nonzero(mask)
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


def inside_enclosure(strength: np.ndarray) -> np.ndarray | None:
    """Where an enclosing line's contents are (bool, ``strength``'s shape), or None when no closed line that does
    not touch them encloses a digit-sized drawing (the usual case: the ink is read as it is)."""
    rows, cols = np.nonzero(strength >= INK)
    if rows.size == 0:
        return None
    # the grid spans the ink and paper round it wider than the barrier below, so a small circled digit gets cells
    # as fine as a big one
    pad = (-(-(max(np.ptp(rows), np.ptp(cols)) + 1) // CELLS) + 1) * (GAP + 2)
    top, left = max(0, int(rows.min()) - pad), max(0, int(cols.min()) - pad)
    bottom, right = int(rows.max()) + 1 + pad, int(cols.max()) + 1 + pad
    try:
        kept = _enclosed(strength[top:bottom, left:right])
    except _Winding:
        return None
    if kept is None:
        return None
    out = np.zeros(strength.shape, dtype=bool)
    out[top:bottom, left:right] = kept
    return out


def _enclosed(strength: np.ndarray) -> np.ndarray | None:
    """``inside_enclosure`` on the ink's own frame."""
    ink, f = _cells(strength)
    if ink.sum() < MIN_INNER_CELLS or min(ink.shape) < 3:
        return None
    # the line may be broken (a pencil's dashes, a pen lifted): ink grown by GAP cells bars the paper outside
    barrier = _widened(ink, GAP)
    paper = ~barrier
    # paper seen in a straight line from the border is outside; the flood then fills the pockets around it
    seen = ~np.logical_or.accumulate(barrier, axis=0) | ~np.logical_or.accumulate(barrier[::-1], axis=0)[::-1]
    seen |= ~np.logical_or.accumulate(barrier, axis=1) | ~np.logical_or.accumulate(barrier[:, ::-1], axis=1)[:, ::-1]
    outside = _fill(seen & paper, paper, diagonal=False)
    if np.array_equal(outside, paper):  # no loop closes on any paper (a 1, 2, 3, 5 or 7): nothing is enclosed
        return None
    outer = _fill(ink & _widened(outside, GAP + 1), ink, diagonal=True)  # ink facing the paper outside
    if not outer.any():  # ink all round the border (a dark frame, a table read as ink): no line to drop
        return None
    inner = ink & ~outer
    n_inner = int(inner.sum())
    if n_inner < MIN_INNER_CELLS or n_inner < INNER_INK * int(outer.sum()):
        return None
    (ih, _), (oh, ow) = _extent(inner), _extent(outer)
    if ih < INNER_EXTENT * oh or ow < ROUND * oh:
        return None
    kept = (~outside & ~_widened(outer, GAP + 1)) | inner  # the line's faint edge and its gaps left out too
    h, w = strength.shape
    return np.repeat(np.repeat(kept, f, axis=0), f, axis=1)[:h, :w]
