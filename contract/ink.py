"""From a photo or scan to the ink on it: the front half of the image contract for models trained on bright
shapes on black (MNIST digits, Fashion-MNIST garments). Torch-free: numpy and Pillow.

    photo ──► grey, at most WORK px a side ──► the sheet cut out of a table around it, if one shows
          ──► polarity (is the ink darker or lighter than the paper, which a plane plus a vignette fitted
              robustly follows? if no ink shows, does it clearly show at the other polarity: a shadow over
              most of the page fools the fit)
          ──► background (paper tone, lighting gradient, vignette, shadows) estimated by a coarse max
              (or min) filter and divided out of the page, its sensor noise averaged over about a pixel
          ──► relative ink strength in [0, 1]
          ──► contrast: a soft Otsu threshold kept above the paper's noise, the ink's robust maximum mapped to 1
          ──► the ink's bounding box, specks ignored
          ──► the page judged: how unlike any page of its kind it is (Ink.oddness: a scene is no page, nor is
              printed text, nor, where the photo has colour, a page more vivid than paper or ink of a colour no
              pen of black, blue or grey ink has)

The way MNIST was made (LeCun et al. 1998: size-normalised, anti-aliased, centred by mass) starts from clean
scans; these steps make a phone photo look like such a scan first. Every step is a whole-array numpy or
Pillow operation (Pillow's rank and blur filters run in C), so a 12-megapixel photo costs a few milliseconds
after decoding: it is first reduced to WORK pixels a side, more than enough for a 20-pixel digit.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image, ImageFilter

from contract.backdrop import backdrop, border_texture
from contract.enclosure import Winding, fill, inside_enclosure
from contract.page import ink_hue, page_box, shrink, vividness

WORK = 256  # longest side the ink is looked for at
COARSE = 48  # longest side the background is estimated at
DENOISE = 1.0  # Gaussian radius (px at WORK) of the noise averaging before pen strokes are thresholded
NOISE_K = 4.0  # pen strokes: the ink threshold is at least this many noise sigmas (robust, of the page)
POLARITY = 32  # longest side the ink's polarity is decided at
MIN_CONTRAST = 0.12  # the strongest ink must be this much darker (or lighter) than its paper, else: no ink
SHADOW_SIGMAS = 8.0  # ink at the polarity the fit did not choose is read when it stands this many noise sigmas out
HAIRLINE = 0.5  # the opening keeping less than this share of the ink: the strokes are as fine as specks, keep all
SPECK = (3, 7)  # opening size range (at WORK px): marks narrower than about half a pen stroke are specks
# the page unlike any a digit or a garment is photographed on (Ink.oddness; chosen on 1,000 EVAL_STYLE photos of
# each validation split, of which they flag 0.2 % of the digits and none of the garments, and on the natural
# photographs inside scikit-image and scikit-learn: export/odd_images.py's natural_photographs; docs/REAL-INPUTS.md
# has the figures):
SPARSE_INK = 0.02  # pen strokes: strong ink covering less of its box than this is specks or a scene's scattered
# edges, not strokes, and is never widened either (contract/images.py; a page of noise: < 1 %; a '7' drawn with a
# 1-px pen at 240 px: 2.2 %; photographed digits: 4 of the 2,987 tuning photos)
STRAY_INK = 0.05  # pen strokes: ink covers more than this share of the page outside its box (a scene's texture)
TEXTURED_BORDER = 1.5  # objects: the frame's border strays this many grey levels (median, noise blurred out) from
# a quadratic surface fitted to it (contract/backdrop.py): the background is a scene, not a plain table or sheet
SPARSE_OBJECT = 0.2  # objects: the object covers less of its box than this (a page of printed text: 16 %)
# pen strokes: a digit's ink crosses a row of its box a few times (the 90th percentile over the inked rows: 99 % of
# 2,389 EVAL_STYLE photos, a third each on a page, a dark table and a white desk, at most 5.4; the 8 above 7 were
# sheets whose table was read as ink, each already flagged by mnist-cnn); a line of print crosses it once or twice
# per letter (16-27 on export/odd_images.py's pages, 12 for small print, 13 for "Total: 42.50"). Past ROW_RUNS
# crossings the page grows odd, reaching 1 at TEXT_RUNS (a row of 10 handwritten digits: 11, no single digit).
ROW_RUNS = 7.0
TEXT_RUNS = 10.0
# pen strokes: a dot of the pen (a tap on the pad, a full stop) is one solid round mark whose extent is under
# BLOB_RATIO of its stroke widths (stroke_width: a disk's is its radius, so a disk measures 2) and which encloses
# no paper; fitted to 20 px it became a filled disk that every digit model read as a confident "0". Measured on
# pad dots 10-90 px wide: 2.2-2.7; on 4,500 EVAL_STYLE photos (page, table, desk) and 1,200 pad sketches, 17
# under 3.6: bold zeros (2.8-2.9, each a ring round paper, is_dot), and strokes read as a few pixels (stroke
# width under BLOB_WIDTH px at WORK, already flagged or misread). Such a mark is odd (BLOB_ODDNESS). What it
# flags and costs: python -m bench.canvas. A photographed dot is often not one: its ink's grain at the higher
# DOT_LEVELS reads as holes.
BLOB_RATIO = 3.2
BLOB_WIDTH = 3.0
BLOB_ODDNESS = 2.0
DOT_LEVELS = (0.5, 0.8, 0.9, 0.95)  # ink strengths a dot is judged solid at (is_dot)
DOT_FILL = 0.6  # the least share of its box a dot's ink covers (a disk's: 0.71-0.83 here)
# a canvas (the playground's pad, a drawing app's export) is mostly one exact grey level, as no photo whose paper
# holds sensor noise is: its polarity is plain, and a second reading at the other one only reads the canvas round
# the strokes (a small fat 8 or house, flagged, was read again as its outline, a confident "0"). A photo whose
# paper clipped to white can pass for one (of 300 EVAL_STYLE photos brightened 1.3x and 1.5x, 12 and 41), and
# so can a black-and-white scan, neither with a shadow to misread: their answers and flags were the same with
# and without (python -m bench.canvas)
FLAT_CANVAS = 0.5
# several characters side by side (a number, where one digit is asked for): the columns of the ink's box that
# hold ink of CHARACTER_INK or more fall into groups with paper between them, and two or more are
# CHARACTER_HEIGHT of the ink's height and CHARACTER_MASS of its ink each (a digit's detached stroke, a speck, a
# ruled line's end are not). Faint ink counts, so that a faint stroke broken by the 0.5 cut stays one character.
# No digit model reads two digits as one honestly, so such a page is odd (SEVERAL_ODDNESS). What it flags and
# costs: python -m bench.pairs
CHARACTER_INK = 0.15
CHARACTER_HEIGHT = 0.5
CHARACTER_MASS = 0.15
SEVERAL_ODDNESS = 2.0


@dataclass(frozen=True)
class Ink:
    """The ink of an image: strength in [0, 1] (H, W) float32, and where it is."""

    strength: np.ndarray
    box: tuple[int, int, int, int] | None  # top, left, bottom, right (exclusive); None: no ink found
    dark_on_light: bool
    oddness: float = 0.0  # how unlike a page of its kind the photo is: above 1, unlike any (the constants above)
    odd_reason: str = ""  # why oddness is above 1 (contract/reasons.py's vocabulary; oddest): "" where it is not
    printed: bool = False  # pen strokes crowded as print is (TEXT_RUNS): what the page is, at either polarity
    dot: bool = False  # a dot of the pen (is_dot): as odd at either polarity
    drawn: bool = False  # on a flat canvas (FLAT_CANVAS): drawn, not photographed, so no shadow to misread
    on_table: bool = False  # the sheet was cut out of a table around it (contract/page.py: page_box)


def _otsu(values: np.ndarray, bins: int = 64) -> float:
    """Otsu's threshold (1979) of values in [0, 1]: the cut maximising the between-class variance."""
    hist, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    p = hist.astype(np.float64) / max(1, hist.sum())
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(p)
    m0 = np.cumsum(p * centres)
    total = m0[-1]
    w1 = 1.0 - w0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (total * w0 - m0) ** 2 / (w0 * w1)
    between[~np.isfinite(between)] = 0.0
    return float(edges[int(np.argmax(between)) + 1])


def _background(grey: Image.Image, dark_ink: bool) -> np.ndarray:
    """The paper without the ink, at ``grey``'s size (float32): a morphological closing (dark ink) or opening
    (light ink) with a window wider than a pen stroke, which removes strokes but keeps what is larger than
    the window (a lighting gradient, a shadow and its edge) where it is; then lightly smoothed."""
    coarse = shrink(grey, COARSE)
    k = max(3, (max(coarse.size) // 3) | 1)  # an odd window of ~1/3 of the frame: wider than any stroke
    # padded by repeating the edge, so light falling off towards the border (a vignette) is kept as it is:
    # a closing is exact on a monotone ramp, and the repeated edge keeps the ramp monotone
    c = np.pad(np.asarray(coarse), 2 * (k // 2), mode="edge")
    closed_a = _rank(_rank(c, k, np.max), k, np.min) if dark_ink else _rank(_rank(c, k, np.min), k, np.max)
    closed = Image.fromarray(closed_a).filter(ImageFilter.GaussianBlur(1))
    return np.asarray(closed.resize(grey.size, Image.Resampling.BILINEAR), dtype=np.float32)


@functools.lru_cache(maxsize=64)
def _surface_design(h: int, w: int) -> np.ndarray:
    """(h * w, 4): 1, x, y, x² + y² at every pixel of an h x w image (coordinates -0.5 .. 0.5)."""
    yy, xx = np.mgrid[0:h, 0:w]
    u, v = xx.ravel() / w - 0.5, yy.ravel() / h - 0.5
    return np.stack([np.ones_like(u), u, v, u * u + v * v], axis=1)


def _dark_ink(grey: Image.Image) -> bool:
    """Polarity: is the ink darker than the paper? The paper is what a smooth surface fitted robustly to the
    image follows (a plane and a radial term: tilt, gradient and vignette; refitted three times on the pixels
    near the fit, which drops the ink, always the minority); the ink is the side whose far tail (the 1st or
    99th percentile of what is left) lies further from the paper. Decided at POLARITY px a side, which averages
    sensor noise out. A local reference (a blurred copy) is fooled by big, thick strokes: near them it is
    darker than the paper, and the paper looks like light ink (1.5 % of evaluation photos were read inverted)."""
    small = shrink(grey, POLARITY)
    y = np.asarray(small, dtype=np.float64).ravel()
    design = _surface_design(small.height, small.width)
    keep = np.ones(len(y), dtype=bool)
    for _ in range(3):
        a = design[keep]
        coef = np.linalg.solve(a.T @ a + 1e-9 * np.eye(4), a.T @ y[keep])
        if coef[3] > 0:  # brighter towards the edges is no vignette but a big dark digit in the middle: a plane
            coef = np.append(np.linalg.solve(a[:, :3].T @ a[:, :3] + 1e-9 * np.eye(3), a[:, :3].T @ y[keep]), 0.0)
        resid = y - design @ coef
        centre = np.median(resid[keep])
        mad = float(np.median(np.abs(resid[keep] - centre))) + 0.5
        keep = np.abs(resid - centre) < 2.5 * 1.4826 * mad
    lo, mid, hi = np.percentile(resid, [1, 50, 99])
    return bool(mid - lo > hi - mid)


def find_ink(
    img: Image.Image, objects: bool = False, dark: bool | None = None, colour: Image.Image | None = None
) -> Ink:
    """An 'L' image of any size -> its ink (at most WORK px a side; of the sheet alone where a table around it
    was cut off), background removed, contrast normalised.

    ``objects``: the image is a product photo (Fashion-MNIST's kind): the background is the frame's border,
    and the object's shading is kept (no threshold) instead of turning strokes into solid ink. ``dark``: pen
    strokes of that polarity (dark on light: True) are read, instead of the polarity the page's fit decides.
    ``colour``: the same image in colour, where it has colour: a page of pen strokes more vivid than paper
    (contract/page.py: vividness), or dark ink of a colour no pen of black, blue or grey ink has (``ink_hue``), is
    odd; an object as bright as its backdrop is read by its colour."""
    grey = shrink(img, WORK)
    if objects:
        return _object_ink(np.asarray(grey, dtype=np.uint8), colour)
    box = page_box(grey)  # the table around the sheet is no part of it
    sheet = grey if box is None else grey.crop(box)
    ink = _pen_ink(sheet, dark)
    if box is not None:
        ink = replace(ink, on_table=True)
    counts = sheet.histogram()
    if max(counts) >= FLAT_CANVAS * sum(counts):
        ink = replace(ink, drawn=True)
    if colour is None:
        return ink
    # the colour of what is darker than the paper, whichever polarity this reading takes: a pen's is black, blue
    # or grey, and a photo whose dark marks are of another colour stays odd when read at the other polarity
    dark_marks = ink if ink.dark_on_light else _pen_ink(sheet, True)
    hue = 0.0 if dark_marks.box is None else ink_hue(colour, box, grey.size, dark_marks.strength)
    odd = oddest(
        (vividness(colour, box, grey.size), "vivid_colours"), (hue, "ink_colour"), (ink.oddness, ink.odd_reason)
    )
    return replace(ink, oddness=odd[0], odd_reason=odd[1])


def oddest(*parts: tuple[float, str]) -> tuple[float, str]:
    """The page is as odd as its oddest part (oddness, reason); its reason is the first of ``parts`` that is odd
    (above 1; none: ""). The parts come in order of precedence, what the whole picture is first: a scene's colours
    or texture say more about it than the several blobs or the dot it also holds."""
    return max(part[0] for part in parts), next((why for v, why in parts if v > 1), "")


def _pen_ink(grey: Image.Image, dark: bool | None) -> Ink:
    """``find_ink`` on a sheet of pen strokes (``grey``: at most WORK px a side, the table cut off)."""
    forced = dark is not None
    dark = _dark_ink(grey) if dark is None else dark
    # pen strokes: sensor noise averaged over about a pixel first (a stroke is several pixels wide here), else
    # around a faint digit the noise passes the threshold as ink and the ink's box becomes the noisy page
    x = np.asarray(grey.filter(ImageFilter.GaussianBlur(DENOISE)), np.float32)
    ink = _stroke_ink(grey, x, dark)
    if ink.box is None and not forced:
        # a shadow over most of the page pulls the polarity fit its way (the lit rest then looks like light ink
        # on dark paper, and no such ink is found): ink that stands out clearly at the other polarity is read
        other = _stroke_ink(grey, x, not dark, min_sigmas=SHADOW_SIGMAS)
        if other.box is not None:
            return other
    return ink


def _object_ink(a: np.ndarray, colour: Image.Image | None = None) -> Ink:
    """A product photo's object: its shading against the backdrop (contract/backdrop.py), darker or lighter, scaled to
    [0, 1]; where no shading stands out and the photo has colour (``colour``, of which ``a`` is the grey shrunk to
    WORK), the object's colour against the backdrop's, in the channel furthest from it."""
    bg = backdrop(a)
    dark = bool(np.median(bg) > 127.5)
    # both sides of the backdrop (a light one leaves no room to be lighter): on grey, one side alone kept a white
    # sneaker's black sole ("Sandal", unflagged) or nothing of a black T-shirt on grey 120 (a garment audit)
    raw = np.clip(np.abs(_relative(a.astype(np.float32), bg, dark)), 0.0, 1.0)
    peak = float(np.percentile(raw, 99.9))
    if peak < MIN_CONTRAST and colour is not None:
        # as bright as its backdrop in grey (a red T-shirt on grey, a navy dress on black: a review found such
        # garments read as nothing written, 12 of 12), not in colour
        rgb = np.asarray(shrink(colour.convert("RGB"), WORK), dtype=np.float32).transpose(2, 0, 1)
        channels = [np.abs(_relative(c, backdrop(c), dark)) for c in rgb]
        raw = np.clip(np.max(channels, axis=0), 0.0, 1.0)
        peak = float(np.percentile(raw, 99.9))
    if peak < MIN_CONTRAST:
        return Ink(np.zeros_like(raw), None, dark)
    floor = MIN_CONTRAST / 2
    strength = np.clip((raw - floor) / max(peak - floor, 1e-3), 0.0, 1.0).astype(np.float32)
    box = _box(strength >= 0.1)
    texture = (border_texture(a) / TEXTURED_BORDER, "textured_backdrop")
    odd = oddest(texture, (SPARSE_OBJECT / max(_density(strength >= 0.1, box), 1e-6), "sparse_object"))
    return Ink(strength, box, dark, *odd)


def _density(mask: np.ndarray, box: tuple[int, int, int, int] | None) -> float:
    """The share of ``box`` that ``mask`` covers (1 without a box: nothing to judge)."""
    if box is None:
        return 1.0
    top, left, bottom, right = box
    return float(mask[top:bottom, left:right].mean())


def _relative(x: np.ndarray, bg: np.ndarray, dark: bool) -> np.ndarray:
    """Relative darkness (the share of the paper's light the ink absorbs: lighting divides out), or lightness."""
    return (bg - x) / np.maximum(bg, 8.0) if dark else (x - bg) / np.maximum(255.0 - bg, 8.0)


def _stroke_ink(grey: Image.Image, x: np.ndarray, dark: bool, min_sigmas: float = 0.0) -> Ink:
    """Pen strokes of one polarity on ``grey`` (``x``: the same, denoised): no ink unless the strongest stands
    MIN_CONTRAST and ``min_sigmas`` noise sigmas clear of the paper."""
    relative = _relative(x, _background(grey, dark), dark)
    raw = np.clip(relative, 0.0, 1.0)
    peak = float(np.percentile(raw, 99.9))
    # Otsu's cut falls inside the paper's noise when the ink is a small share of the page: the threshold is
    # also kept NOISE_K sigmas (the paper's, 1.4826 x its median absolute deviation, from every other pixel
    # of every other row: the same estimate at a quarter of the cost) above the paper
    every_other = relative[::2, ::2]
    sigma = 1.4826 * float(np.median(np.abs(every_other - np.median(every_other))))
    if peak < max(MIN_CONTRAST, min_sigmas * sigma):  # blank or uniform paper: nothing written on it
        return Ink(np.zeros_like(raw), None, dark)
    t = max(_otsu(raw / peak) * peak, MIN_CONTRAST / 2, NOISE_K * sigma)
    strong = raw[raw >= t]
    top = float(np.percentile(strong, 90)) if strong.size else peak
    floor = 0.7 * t  # soft threshold: below 0.7 of the cut is paper; from there ink rises to 1 at the ink's top
    strength = np.clip((raw - floor) / max(top - floor, 1e-3), 0.0, 1.0).astype(np.float32)
    edge = max(1, min(strength.shape) // 50)  # a photo's outermost pixels are its frame, not ink
    strength[:edge], strength[-edge:], strength[:, :edge], strength[:, -edge:] = 0, 0, 0, 0
    enclosed = inside_enclosure(strength)  # a circle or a printed box around the digit is no part of it
    if enclosed is not None:
        strength = strength * enclosed
    box = _box(strength >= 0.5)
    if box is None:
        return Ink(strength, box, dark)
    top, left, bottom, right = box
    inside = strength[top:bottom, left:right]
    crowded = max(0.0, (row_runs(inside >= 0.5) - ROW_RUNS) / (TEXT_RUNS - ROW_RUNS))
    dot = is_dot(inside)
    several = characters(inside >= CHARACTER_INK) >= 2
    odd = oddest(
        *_stroke_oddness(strength, box),
        (crowded, "printed_text"),
        (BLOB_ODDNESS if dot else 0.0, "dot"),
        (SEVERAL_ODDNESS if several else 0.0, "several_characters"),
    )
    return Ink(strength, box, dark, *odd, printed=crowded > 1, dot=dot)


def is_dot(strength: np.ndarray) -> bool:
    """Is the ink (``strength`` in [0, 1], its box) a dot of the pen: solid, round, its extent under BLOB_RATIO
    stroke widths, and enclosing no paper at any of DOT_LEVELS (a bold 0 does: a blurred photo's small hole reads
    as faint ink, 0.7-0.9, that fills it at the 0.5 the rest of the front door cuts at)? Paper enclosed at the
    highest level counts only where the level below encloses some too: a photo's grain opens specks of paper in a
    dot's core there alone (photographed dots taken for dots: 11 -> 27 of 60, python -m bench.canvas)."""
    mask = strength >= 0.5
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return False
    h, w = int(rows[-1] - rows[0]) + 1, int(cols[-1] - cols[0]) + 1
    own = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    # round, and covering most of its box (a disk: pi/4; photographed digits, the 99th percentile: 0.6): the
    # cheap tests first, as nearly every page fails them
    if min(h, w) < 0.75 * max(h, w) or own.sum() < DOT_FILL * h * w:
        return False
    width = stroke_width(own)
    if width < BLOB_WIDTH or max(h, w) >= BLOB_RATIO * width:
        return False
    ink = strength[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    found = [_enclosed_paper(ink >= level) for level in DOT_LEVELS]
    holes = [paper >= max(2, 0.02 * inked) for paper, inked in found]
    return not any(holes[:-1]) and not (holes[-1] and (len(found) == 1 or found[-2][0] > 0))


def _enclosed_paper(mask: np.ndarray, side: int = 48) -> tuple[int, int]:
    """The paper in ``mask`` (the ink's own box) that no 4-connected path of paper links to the border, and the ink,
    in pixels, judged at most ``side`` px a side (a ring's hole is wide; a dot's edge pixels are no hole)."""
    if max(mask.shape) > side:
        scale = side / max(mask.shape)
        size = (max(1, round(mask.shape[1] * scale)), max(1, round(mask.shape[0] * scale)))
        mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.Resampling.BOX)) >= 128
    paper = ~np.pad(mask, 1)
    border = np.zeros_like(paper)
    border[0], border[-1], border[:, 0], border[:, -1] = True, True, True, True
    try:
        outside = fill(border, paper, diagonal=False)
    except Winding:  # paper winding like no dot's edge: as much as a hole can be
        return int(paper.sum()), int(mask.sum())
    return int((paper & ~outside).sum()), int(mask.sum())


def _stroke_oddness(strength: np.ndarray, box: tuple[int, int, int, int]) -> tuple[tuple[float, str], ...]:
    """A page of pen strokes is plain paper around dense strokes; a scene read as strokes is its edges scattered
    over a large box (strong ink covering under SPARSE_INK of it), or texture all over the page (over STRAY_INK
    of what lies outside the box is ink): the two parts' (oddness, reason). (Printed text, many strokes side by
    side: ROW_RUNS.)"""
    top, left, bottom, right = box
    outside = np.ones(strength.shape, dtype=bool)
    outside[top:bottom, left:right] = False
    stray = float((strength[outside] > 0.1).mean()) if outside.any() else 0.0
    sparse = SPARSE_INK / max(_density(strength >= 0.5, box), 1e-6)
    return (sparse, "scattered_marks"), (stray / STRAY_INK, "textured_page")


def characters(mask: np.ndarray) -> int:
    """How many characters stand side by side in ``mask`` (the ink's box): groups of inked columns, with paper
    between them, that each reach CHARACTER_HEIGHT of the ink's height and hold CHARACTER_MASS of its ink."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return 0
    height, total = rows[-1] - rows[0] + 1, int(mask.sum())
    inked = np.concatenate(([False], mask.any(axis=0), [False]))
    starts, ends = np.flatnonzero(inked[1:] & ~inked[:-1]), np.flatnonzero(~inked[1:] & inked[:-1])
    count = 0
    for start, end in zip(starts, ends, strict=True):
        group = mask[:, start:end]
        own = np.flatnonzero(group.any(axis=1))
        count += own[-1] - own[0] + 1 >= CHARACTER_HEIGHT * height and group.sum() >= CHARACTER_MASS * total
    return count


def row_runs(mask: np.ndarray) -> float:
    """How many separate runs of ink a row of ``mask`` crosses: the 90th percentile over the rows with ink."""
    runs = (mask[:, 1:] & ~mask[:, :-1]).sum(axis=1) + mask[:, 0]
    inked = runs[runs > 0]
    return float(np.percentile(inked, 90)) if inked.size else 0.0


def _rank(a: np.ndarray, k: int, op) -> np.ndarray:
    """A k x k max or min filter (``op`` np.max or np.min), separable, over the windows that fit: the result
    is k - 1 smaller on each axis (pad first)."""
    rows = op(sliding_window_view(a, k, axis=0), axis=-1)
    return op(sliding_window_view(rows, k, axis=1), axis=-1)


def stroke_width(mask: np.ndarray) -> float:
    """The ink's typical stroke width in pixels: a stroke of width w and length l covers w x l pixels and has
    ~2 l on its edge, so 2 x area / edge pixels (those with a neighbour, of 8, outside the ink)."""
    inner = _rank(np.pad(mask, 1), 3, np.min)
    perimeter = max(1, int(mask.sum()) - int(inner.sum()))
    return 2.0 * float(mask.sum()) / perimeter


def widen(strength: np.ndarray, pixels: int) -> np.ndarray:
    """Strokes ``pixels`` wider: a grey dilation (the largest strength within a (pixels + 1)-square window)."""
    n = pixels + 1
    return _rank(np.pad(strength, ((n // 2, n - 1 - n // 2), (n // 2, n - 1 - n // 2))), n, np.max)


def _speck_size(mask: np.ndarray) -> int:
    """An odd opening size of about 0.6 pen strokes."""
    return int(np.clip(round(0.6 * stroke_width(mask)), SPECK[0], SPECK[1])) | 1


def _box(mask: np.ndarray, trim: float = 0.003, margin: int = 6) -> tuple[int, int, int, int] | None:
    """Bounding box of the ink, specks ignored: a morphological opening drops marks narrower than SPECK, then
    rows and columns at either end holding less than ``trim`` of the ink (a far-away speck) are left out, and
    the box grows by ``margin`` pixels so that the ends of real strokes are kept."""
    if not mask.any():
        return None
    k = _speck_size(mask)
    opened = _rank(_rank(np.pad(mask, 2 * (k // 2)), k, np.min), k, np.max)
    if opened.sum() < HAIRLINE * mask.sum():  # most of the ink is as narrow as a speck: a fine pen's strokes
        opened = mask

    def span(mass: np.ndarray) -> tuple[int, int]:
        c = np.cumsum(mass) / mass.sum()
        lo = int(np.searchsorted(c, trim, side="right"))
        hi = int(np.searchsorted(c, 1.0 - trim, side="left"))
        return max(0, lo - margin), min(len(mass), hi + 1 + margin)

    top, bottom = span(opened.sum(axis=1).astype(np.float64))
    left, right = span(opened.sum(axis=0).astype(np.float64))
    return top, left, bottom, right
