"""The sheet in a photo of pen strokes: where it lies when the photo shows the table around it (``page_box``, cut
out before the ink is looked for: contract/ink.py), how vivid its colour is (``page_saturation``: paper is
white to grey), and whether the marks on it have a pen's colour (``ink_hue``). Torch-free: numpy and Pillow."""

from __future__ import annotations

import numpy as np
from PIL import Image

# a sheet photographed on a table: the frame shows the table beyond the page's edges, which the background
# estimate follows as a dark margin (its edge then reads as long strokes) and which pulls the polarity fit; the
# page is cut out first (page_box; the limits chosen on bench/photos.py's kind of table photos, dark ones; one of
# 4,000 photos of a page alone is cut; tried on the negative too, for a table lighter than the paper, 3 of 2,000):
PAGE_GRID = 64  # longest side the page's edges are looked for at
PAGE_STEP = 0.25  # beyond the edge, every column (row) is at least this much darker than the paper past it
PAGE_REACH = 0.35  # the edge is looked for within this share of the frame from each side
PAGE_TABLE = 0.75  # beyond the page, at least this share of a column (row) is table
PAGE_STRAIGHT = 1.5  # where the paper begins, row after row, lies this close to a line (grid px, the median)
PAGE_SOLID = 0.5  # past where the paper begins, a row is light for at least this share (the median row)
PAGE_BOARD = 16.0  # a "table" darker than this is a drawing's board (MNIST's black), judged by the strict test alone
PAGE_LIGHT_PAPER = 100.0  # a table lighter than the paper is looked for where the frame's median is this light
# at least (photographed paper: 110-245 grey levels)
# paper is white to grey, tinted a little by the light; a page of pen strokes more vivid than this (the median
# saturation, page_saturation) is a scene: sky, skin, fur, leaves, a retina (EVAL_STYLE's tinted paper stays under
# 0.3; a sheet not cut out of a tinted table may not; the figures: README.md, How images are prepared, step 3)
PAPER_SATURATION = 0.5
# a sheet up to this vivid is plain paper, of oddness 0 (rising to 1 at PAPER_SATURATION): a page's oddness under 1
# still raises a photo's served score (ModelMetadata.ood_answer), which ordinary paper must not
PAPER_TINT = 0.3
SATURATION_FLOOR = 32.0  # grey levels: the value a dark pixel's chroma is divided by at least
# the photos are written in black, blue or pencil grey ink (the issue's, and contract/photos.py's INKS): each absorbs
# blue light no less than red or green, or all three alike. Ink absorbing red or green light least (red, orange,
# brown, yellow, green: a fruit, a leaf, a bird) by more than PEN_HUE (in ink_hue: the share of the paper's light
# it absorbs, per channel) is unlike a pen's, rising to oddness 1 at INK_HUE. Chosen on 900 EVAL_STYLE photos, a
# third each on a page, a dark table and a white desk (seed 4242: at most 0.15 on a page, 0.34 on a table, one desk
# photo at 0.55, the rest under 0.29); the cue itself came of looking at what bench/held_out.py's things the digit
# models let through, so its figures there flatter it a little (docs/REAL-INPUTS.md, Odd images no limit was chosen on)
PEN_HUE = 0.3
INK_HUE = 0.4
STRONG_INK = 0.8  # ink_hue: the ink's colour is read where its strength is at least this ...
BARE_PAPER = 0.05  # ... and the paper's where it is under this
SAMPLE = 256  # longest side a colour page is sampled at before it is averaged down to PAGE_GRID


def shrink(img: Image.Image, side: int) -> Image.Image:
    """``img`` at most ``side`` pixels a side (a box filter: each pixel the mean of those it covers)."""
    scale = side / max(img.size)
    if scale >= 1:
        return img
    return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.BOX)


def _edge(profile: np.ndarray) -> tuple[int, float]:
    """How many of a profile's first entries lie beyond the page, and a level between table and paper there:
    the first j entries, for the largest j within PAGE_REACH of the frame, are all darker by PAGE_STEP than
    both entries j + 1 and j + 2 (0-based); entry j, the page's blurred edge, is cut with them (j + 1 in all).
    The level is halfway between the brightest of the j and the dimmer of the two. (0, 0) where no j is."""
    reach = min(round(PAGE_REACH * len(profile)), len(profile) - 3)
    if reach < 1:
        return 0, 0.0
    outer = np.maximum.accumulate(profile)[:reach]  # outer[j - 1]: the brightest of the first j
    inner = np.minimum(profile[2 : reach + 2], profile[3 : reach + 3])  # inner[j - 1]: entries j + 1, j + 2
    cut = np.nonzero(outer < (1.0 - PAGE_STEP) * inner)[0]
    return (int(cut[-1]) + 2, float(outer[cut[-1]] + inner[cut[-1]]) / 2) if cut.size else (0, 0.0)


def _sheet_edge(g: np.ndarray, level: float) -> tuple[bool, bool]:
    """Is what ``g`` shows from its left side (the frame between the cuts across it) a sheet's edge on a table,
    strictly and softly: the outermost column is table from end to end (a digit's stroke running along the
    frame's edge is not), the place where each row first turns lighter than ``level`` lies on a line, within
    PAGE_STRAIGHT grid pixels (the median distance; a light digit's outline is a curve), and past it the rows
    stay light for the most part (a sheet is solid; past a light digit's stroke on a dark board comes board
    again). Light: strictly, lighter than ``level``; softly, lighter than halfway between the table's light end
    and ``level``, so that a sheet darker away from its edge (a shadow, the light's fall-off) is still solid;
    not on a board darker than PAGE_BOARD (a drawing's black, never a photographed table), where light digits'
    blurred strokes would pass as solid."""
    light = g >= level
    table = float(np.quantile(g[:, 0], 0.95))
    if table >= level:
        return False, False
    found = light.any(axis=1)
    if found.sum() < 4:
        return False, False
    y = np.nonzero(found)[0].astype(np.float64)
    first = light[found].argmax(axis=1)
    x = first.astype(np.float64)
    half = len(y) // 2  # a line through the medians of either half: the corners of a turned sheet may stray
    slope = (np.median(x[half:]) - np.median(x[:half])) / max(np.median(y[half:]) - np.median(y[:half]), 1.0)
    off = x - slope * y
    if float(np.median(np.abs(off - np.median(off)))) > PAGE_STRAIGHT:
        return False, False
    rest = g.shape[1] - first  # each row from its first light pixel on
    strict = np.median(light[found].sum(axis=1) / rest) >= PAGE_SOLID
    soft = table >= PAGE_BOARD and np.median((g[found] >= (table + level) / 2).sum(axis=1) / rest) >= PAGE_SOLID
    return bool(strict), bool(strict or soft)


def page_box(grey: Image.Image) -> tuple[int, int, int, int] | None:
    """Where the sheet lies in a photo of it on a table (left, top, right, bottom: a crop box of ``grey``), or
    None when the page fills the frame (and for images under PAGE_GRID / 2 pixels a side). A table darker than
    the paper is looked for first (``_table_cut``); where none is found and the frame is mostly light
    (PAGE_LIGHT_PAPER), a lighter one: the same on the page's negative (the table then lighter by PAGE_STEP of
    what the paper leaves to white: grey paper on a white desk; a dark board under light strokes, an MNIST-style
    digit, is left alone)."""
    if min(grey.size) < PAGE_GRID // 2:
        return None
    g = np.asarray(shrink(grey, PAGE_GRID), dtype=np.float32)
    h, w = g.shape
    if min(h, w) < 8:
        return None
    cut = _table_cut(g)
    if cut is None and np.median(g) >= PAGE_LIGHT_PAPER:  # a board under light strokes is no sheet on a desk
        cut = _table_cut(255.0 - g)
    if cut is None:
        return None
    left, top, right, bottom = cut
    sx, sy = grey.width / w, grey.height / h
    return round(left * sx), round(top * sy), round((w - right) * sx), round((h - bottom) * sy)


def vividness(colour: Image.Image, box: tuple[int, int, int, int] | None, size: tuple[int, int]) -> float:
    """``page_saturation`` as a page's oddness: 0 up to PAPER_TINT, 1 at PAPER_SATURATION."""
    return max(0.0, (page_saturation(colour, box, size) - PAPER_TINT) / (PAPER_SATURATION - PAPER_TINT))


def _in_colour(
    colour: Image.Image, box: tuple[int, int, int, int] | None, size: tuple[int, int]
) -> tuple[float, float, float, float]:
    """The sheet's crop box (``box`` of an image of ``size``, or all of it) in ``colour``'s pixels."""
    sx, sy = colour.width / size[0], colour.height / size[1]
    left, top, right, bottom = (0, 0, size[0], size[1]) if box is None else box
    return left * sx, top * sy, right * sx, bottom * sy


def page_saturation(colour: Image.Image, box: tuple[int, int, int, int] | None, size: tuple[int, int]) -> float:
    """How vivid the page of a colour photo is: the median saturation (chroma over value, the value floored at
    SATURATION_FLOOR so that a dark page's noise is no colour) at PAGE_GRID pixels a side, of the sheet where
    ``box`` (a crop box of an image of ``size``) cut one out of a table. Paper is white to grey, a little tinted by
    the light; a scene's sky, skin, fur or leaves are not. Sampled at SAMPLE pixels a side and averaged down from
    there: a fraction of a millisecond at any size."""
    source = _in_colour(colour, box, size)
    w, h = source[2] - source[0], source[3] - source[1]
    grid = [max(1, round(side * min(1.0, PAGE_GRID / max(w, h)))) for side in (w, h)]
    sampled = [max(1, round(side * min(1.0, SAMPLE / max(w, h)))) for side in (w, h)]
    small = colour.resize(sampled, Image.Resampling.NEAREST, box=source).resize(grid, Image.Resampling.BOX)
    r, g, b = (np.asarray(band, dtype=np.float32) for band in small.convert("RGB").split())
    value = np.maximum(np.maximum(r, g), b)
    return float(np.median((value - np.minimum(np.minimum(r, g), b)) / np.maximum(value, SATURATION_FLOOR)))


def ink_hue(
    colour: Image.Image, box: tuple[int, int, int, int] | None, size: tuple[int, int], strength: np.ndarray
) -> float:
    """How unlike a pen's the colour of dark ink on a colour photo is, as oddness (0 up to PEN_HUE, 1 at INK_HUE):
    per channel, the share of the paper's light the ink absorbs (1 - ink / paper: the light's tint divides out),
    the median colour of the strong ink (STRONG_INK) against the bare paper's (BARE_PAPER); where red or green is the
    channel absorbed least, by how much less than the most. ``strength``: the ink of the sheet as contract/ink.py
    found it, in an image of ``size`` (``box``: the sheet's crop box there, where one was cut out of a table)."""
    strong, bare = strength >= STRONG_INK, strength < BARE_PAPER
    if strong.sum() < 5 or bare.sum() < 5:
        return 0.0
    h, w = strength.shape
    source = _in_colour(colour, box, size)
    # sampled at every other pixel of every other row of the ink's grid (a median over many pixels needs no
    # averaging first; strokes are several pixels wide there): the same estimate at a quarter of the cost
    rgb = np.asarray(colour.resize((w, h), Image.Resampling.NEAREST, box=source).convert("RGB"))
    step = 2 if strong[::2, ::2].sum() >= 5 and bare[::2, ::2].sum() >= 5 else 1
    rgb, strong, bare = rgb[::step, ::step], strong[::step, ::step], bare[::step, ::step]
    ink, paper = np.median(rgb[strong], axis=0), np.median(rgb[bare], axis=0)
    absorbed = 1.0 - ink / np.maximum(paper, 8.0)
    if int(np.argmin(absorbed)) == 2:  # blue absorbed least: blue ink (black and grey absorb all three alike)
        return 0.0
    return max(0.0, (float(absorbed.max() - absorbed.min()) - PEN_HUE) / (INK_HUE - PEN_HUE))


def _table_cut(g: np.ndarray) -> tuple[int, int, int, int] | None:
    """How many columns (rows) of ``g`` are table darker than the paper (in ``g``, which may be a negative) on
    each side (left, top, right, bottom), or None where no side is: from each side, the columns darker by
    PAGE_STEP than the paper just past them (``_edge``), in the level PAGE_TABLE of each column lies under (beyond
    the page the column is table, but for slivers of a sheet turned a few degrees; across it, paper, but for the
    ink it crosses); and what a cut side shows must look like a sheet's edge (``_sheet_edge``): every side
    softly, at least one strictly (on a drawing's black board, where soft is strict, every side strictly: light
    digits' strokes pass on some sides, never on all)."""
    h, w = g.shape
    cols = np.sort(g, axis=0)[round(PAGE_TABLE * (h - 1))]
    rows = np.sort(g, axis=1)[:, round(PAGE_TABLE * (w - 1))]
    (left, lp), (right, rp), (top, tp), (bottom, bp) = (_edge(cols), _edge(cols[::-1]), _edge(rows), _edge(rows[::-1]))
    if not (left or right or top or bottom):
        return None
    edges = [
        _sheet_edge(seen, level)
        for depth, level, seen in (  # each cut side, seen from the left, between the sides across it
            (left, lp, g[top : h - bottom]),
            (right, rp, g[top : h - bottom, ::-1]),
            (top, tp, g[:, left : w - right].T),
            (bottom, bp, g[::-1, left : w - right].T),
        )
        if depth
    ]
    if not all(soft for _, soft in edges) or not any(strict for strict, _ in edges):
        return None
    return left, top, right, bottom
