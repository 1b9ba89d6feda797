"""A digit inside a closed line: a teacher's circle around an answer, the printed box of a form's field. The line
is no part of the digit, and a model that reads both sees a "0" around something; the front door (contract/ink.py)
keeps what the line encloses and drops the line. Torch-free, numpy only.

On a grid of cells about ``1/CELLS`` of the ink's extent a side (each cell inked where any of its pixels is strong
ink): the paper outside is what a 4-connected flood from the border reaches without coming within GAP cells of ink
(so a line broken by a pencil's dashes still closes); the outer ink is every 8-connected stroke that faces that
paper; the inner ink is the rest, strokes inside a loop of another. Where the drawing touches the line (a digit
written on a box's bottom line, a tight circle), the two are one stroke, and what lies clear of the line is not read
(nothing, or a speck too small to read): the line is then peeled off as a band of its own width from the paper outside
(``_peeled``); the pieces further in that hug the band go with it (the line drawn thicker there, a thick stroke's
core) unless they reach deep into what it encloses (a stroke drawn across a tight circle), and what is left is read
unless a stroke crosses the line out (a slashed 0) or it is small, in many pieces, or off the line's middle. A
loop's contents are kept only when they are a digit's size beside the loop (not a speck inside a 6's or an 8's loop)
and the loop is round or square, as a circle or a box is, not a 0's tall loop; a line left open wider than the gap
changes nothing. Each flood stops after PASSES steps, so a hostile zig-zag costs a few milliseconds (about 5 ms for
four hanging in a box). Measured with ``python -m bench.circled`` (README.md: How images are prepared).
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
# a line that touches what it encloses (``_peeled``):
RING_SHARE = 0.75  # its width: enough to reach across it from this share of its outer edge
# a piece of what it encloses with more than this share of the cells round it the line's is the line's own (a thick
# stroke's core peeled like a line, in a 6's or an 8's loop: a third or more of them, on 3,000 tuning photos)
TOUCH = 0.25
# but a piece reaching further than this share of the line's height from it is a stroke drawn across what the line
# encloses, touching it at its ends (a 1 or a 7 circled tightly; on 1,000 photos of digits alone, 4 of 230 hugging
# pieces reach over it, on 300 circled tightly 61 of 173)
REACH = 0.15
MAX_PIECES = 4  # what it encloses, in more pieces than this (specks of the line's own included), is not read
PEELED_EXTENT = 0.45  # what is read fills this share of the line's height: a line drawn tight enough to touch hugs it
CENTRED = 0.25  # and its middle is at most this share of the line's extent from the line's middle, both ways
GAP = 2  # cells: a line broken by up to twice this many still closes
PASSES = 2 * CELLS  # a flood that has not settled after this many steps winds like no circle: left as it is


class Winding(Exception):
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


def fill(seed: np.ndarray, within: np.ndarray, diagonal: bool) -> np.ndarray:
    """The part of ``within`` connected to ``seed`` (geodesic reconstruction: grow and clip until it stops)."""
    region = seed & within
    for _ in range(PASSES):
        grown = _grow(region, diagonal) & within
        if np.array_equal(grown, region):
            return region
        region = grown
    raise Winding


def _cells(strength: np.ndarray) -> tuple[np.ndarray, int]:
    """Strong ink pooled into cells (any pixel of the cell), and the cell's side in pixels."""
    h, w = strength.shape
    f = max(1, -(-max(h, w) // CELLS))
    padded = np.zeros((-(-h // f) * f, -(-w // f) * f), dtype=bool)
    padded[:h, :w] = strength >= INK
    cells = np.asarray(padded.reshape(padded.shape[0] // f, f, padded.shape[1] // f, f).any(axis=(1, 3)))
    return cells, f


def _line_width(ink: np.ndarray, halo: np.ndarray) -> int:
    """How many cells thick a closed line is: across it, from its edge facing the paper outside (``halo``: that
    paper grown GAP cells, up to the ink) to the first cell that is not ink, at RING_SHARE of that edge's cells (at
    most half the grid: then nothing is left inside it)."""
    edge = ink & _grow(halo, diagonal=True)
    need, reached = RING_SHARE * int(edge.sum()), ~ink & ~halo  # what the ink closes on
    for steps in range(1, CELLS // 2):
        reached = _grow(reached, diagonal=True)
        if int((edge & reached).sum()) >= need:
            return steps
    return CELLS // 2


def _peeled(ink: np.ndarray, halo: np.ndarray, clear: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A closed line that touches what it encloses, as (the line, the rest): the band of ink within the line's width
    (``_line_width``) of the paper outside (``halo``: that paper grown GAP cells, up to the ink), and what lies
    further in, less the pieces of it that hug the band (more than TOUCH of the cells round a piece are the band's:
    the core of a thick stroke, the line drawn thicker there, a sheet's own edge read as a thicker line) and lie
    within REACH of the band's height of it, which go with the line; what lay clear of the line (``clear``: not read
    on its own, a speck) is kept with the rest but counts for neither the height nor the middle rule below. Nothing
    (all of the ink the line) when a stroke of the band leads away from what the band encloses (more than ``width``
    of its cells lie over ``width`` + 1 cells from it: a stroke crossing the line out, a slashed 0, a 1 drawn
    through a circle), when what is left is under PEELED_EXTENT of the band's height or off its middle
    (``_centred``), when what lies further in is more than MAX_PIECES pieces (those that go with the line counted
    too), or when ink lies within GAP + 1 cells of the grid's border (no paper outside there to measure the band
    from: the line would be read with the digit)."""
    nothing = np.zeros_like(ink)
    edge = GAP + 1  # ink this near the grid's border (a line at the photo's edge) has no paper outside that side
    if ink[:edge].any() or ink[-edge:].any() or ink[:, :edge].any() or ink[:, -edge:].any():
        return ink, nothing
    width = _line_width(ink, halo)
    band = ink & _widened(halo, width)
    within = ~halo & ~band  # what the band encloses (a stroke crossing the line out has none beside it)
    line = band & _widened(within, width + 1)
    if int((fill(line, band, diagonal=True) & ~line).sum()) > width:
        return ink, nothing
    pieces = _pieces(ink & ~band)
    if pieces is None:
        return ink, nothing
    inner, near, height = np.zeros_like(ink), None, _extent(band)[0]
    for piece in pieces:
        outline = _grow(piece, diagonal=False) & ~piece
        if int((outline & band).sum()) > TOUCH * int(outline.sum()):  # it hugs the line: the line's, unless deep
            if near is None:
                near = _widened(band, int(REACH * height))
            if not (piece & ~near).any():
                continue
        inner |= piece
    body = inner & ~clear  # what lay clear of the line was too small to read, and counts for none of these rules
    if not body.any() or _extent(body)[0] < PEELED_EXTENT * height or not _centred(body, band):
        return ink, nothing
    return ink & ~inner, inner


def _pieces(mask: np.ndarray) -> list[np.ndarray] | None:
    """``mask``'s 8-connected pieces, found together in one flood: each cell takes the least label among its
    neighbours until none changes (PASSES steps at most, as ``fill``); None for more than MAX_PIECES."""
    none = mask.size
    labels = np.where(mask, np.arange(none, dtype=np.int32).reshape(mask.shape), none).astype(np.int32)
    for _ in range(PASSES):
        least = labels.copy()  # the least label of each cell's 3x3 neighbourhood: down the columns, then the rows
        np.minimum(least[1:], labels[:-1], out=least[1:])
        np.minimum(least[:-1], labels[1:], out=least[:-1])
        rows = least.copy()
        np.minimum(least[:, 1:], rows[:, :-1], out=least[:, 1:])
        np.minimum(least[:, :-1], rows[:, 1:], out=least[:, :-1])
        least[~mask] = none
        if np.array_equal(least, labels):
            found = np.unique(labels[mask])
            return None if len(found) > MAX_PIECES else [labels == v for v in found]
        labels = least
    raise Winding


def _centred(inner: np.ndarray, line: np.ndarray) -> bool:
    """Whether the middle of ``inner``'s box lies in the middle half of ``line``'s, both ways (a drawing inside a
    line, not a strip along one side of it: a piece of a sheet's own edge on a white desk, read as a box)."""
    (ir, ic), (lr, lc) = np.nonzero(inner), np.nonzero(line)
    for i, o in ((ir, lr), (ic, lc)):
        middle = (int(i.min()) + int(i.max())) / 2
        if abs(middle - (int(o.min()) + int(o.max())) / 2) > CENTRED * (int(o.max()) - int(o.min()) + 1):
            return False
    return True


def _extent(mask: np.ndarray) -> tuple[int, int]:
    rows, cols = np.nonzero(mask)
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


def inside_enclosure(strength: np.ndarray) -> np.ndarray | None:
    """Where an enclosing line's contents are (bool, ``strength``'s shape), or None when no closed line encloses a
    digit-sized drawing (the usual case: the ink is read as it is)."""
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
    except Winding:
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
    outside = fill(seen & paper, paper, diagonal=False)
    if np.array_equal(outside, paper):  # no loop closes on any paper (a 1, 2, 3, 5 or 7): nothing is enclosed
        return None
    halo = _widened(outside, GAP)  # the paper outside, up to the ink
    outer = fill(ink & _grow(halo, diagonal=True), ink, diagonal=True)  # ink facing the paper outside
    if not outer.any():  # ink all round the border (a dark frame, a table read as ink): no line to drop
        return None
    oh, ow = _extent(outer)  # the ink's own box (its outermost cells face the paper outside), peeled or not
    if ow < ROUND * oh:  # a 0's tall loop, a 6's or an 8's, not a circle or a box
        return None
    inner = ink & ~outer
    if not _readable(outer, inner):  # the line may touch what it encloses: peel it off as a band of its own width
        outer, inner = _peeled(ink, halo, inner)
        if not _readable(outer, inner):
            return None
    kept = (~outside & ~_widened(outer, GAP + 1)) | inner  # the line's faint edge and its gaps left out too
    h, w = strength.shape
    return np.repeat(np.repeat(kept, f, axis=0), f, axis=1)[:h, :w]


def _readable(outer: np.ndarray, inner: np.ndarray) -> bool:
    """Whether ``inner`` is a drawing enclosed by the line ``outer``: a digit's size beside it."""
    n_inner = int(inner.sum())
    return (
        n_inner >= MIN_INNER_CELLS
        and n_inner >= INNER_INK * int(outer.sum())
        and (_extent(inner)[0] >= INNER_EXTENT * _extent(outer)[0])
    )
