"""A product photo's backdrop, for the front door of models of objects (Fashion-MNIST's kind; contract/ink.py:
``find_ink(..., objects=True)``): the plain surface behind the object, fitted to the frame's border, and how far
that border strays from any such surface (a scene's does). Torch-free: numpy and Pillow."""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image, ImageFilter

# frames under this many px a side are enlarged to it before their border's texture is measured: at 64 px and under,
# the blur's reach into the frame took a thumbnail's garment for texture, and 6-33 % of 200 EVAL_STYLE garment
# photos shrunk to 32-64 px were flagged, 1.5 % at full size; 3.5-11.5 % after (README: How images are prepared);
# never past TEXTURE_LONGEST on the longer side (contract/ink.py's WORK, what the frame was shrunk to): a 1 x 256
# strip enlarged by its short side alone would be 128 x 32,768, and its border fit a 260,000-row matrix, cached
TEXTURE_SIDE = 128
TEXTURE_LONGEST = 256


def backdrop(a: np.ndarray) -> np.ndarray:
    """The background of an object photo: a quadratic surface (``_surface``: a lighting gradient, a studio's
    vignette, sweep or fall-off into a corner) fitted to the frame's border pixels by least squares, refitted
    twice without those more than 3 robust sigmas (and 3 grey levels) from it, at ``a``'s size. Objects fill
    most of their frame, so the coarse rank filter used for pen strokes would take the object for paper."""
    h, w = a.shape
    where, design, fit = _border_fit(h, w)
    values = a[where].astype(np.float64)
    c = every = fit @ values  # the fit to every border pixel
    res = values - np.median(values)  # from the border's median: an object touching the frame bends a first fit
    for _ in range(2):  # an object touching the frame is no backdrop: border pixels far from the fit are left out
        keep = np.abs(res) <= max(3.0 * 1.4826 * float(np.median(np.abs(res - np.median(res)))), 3.0)
        if keep.all():  # a plain backdrop, however lit
            c = every
            break
        if keep.sum() < 4 * design.shape[1]:
            break
        d = design[keep]
        try:  # the normal equations: 6 x 6 (a least-squares solver's SVD of the border costs ten times more)
            c = np.linalg.solve(d.T @ d, d.T @ values[keep])
        except np.linalg.LinAlgError:
            c = np.linalg.lstsq(d, values[keep], rcond=None)[0]
        res = values - design @ c
    # every pixel's terms, a row's and a column's broadcast together (no h x w x 6 copy)
    terms = _surface(np.arange(h)[:, None], np.arange(w), h, w)
    return sum((ci * t for ci, t in zip(c, terms, strict=True)), np.zeros((h, w))).astype(np.float32)


def _surface(yy: np.ndarray, xx: np.ndarray, h: int, w: int) -> tuple[np.ndarray, ...]:
    """The background's terms at pixels (yy, xx) of an h x w frame, broadcast: 1, x, y, x², y², xy (x, y from the
    centre); a plane alone took every garment under a studio's vignette or in a corner's fall-off for a scene."""
    x, y = xx / w - 0.5, yy / h - 0.5
    return np.ones_like(x * y), x, y, x * x, y * y, x * y


def _border(shape: tuple[int, ...]) -> np.ndarray:
    """The frame's border strip, 1/32 of the shorter side wide (at least a pixel)."""
    h, w = shape
    edge = np.zeros((h, w), dtype=bool)
    m = max(1, min(h, w) // 32)
    edge[:m], edge[-m:], edge[:, :m], edge[:, -m:] = True, True, True, True
    return edge


def border_texture(a: np.ndarray) -> float:
    """How far the frame's border strays from a quadratic surface (``_surface``, least squares) fitted to it, in
    grey levels (the median; sensor noise blurred out first): about 1 on a plain background however lit, 2-50
    where the border is a scene (a room, a street). A frame under TEXTURE_SIDE px a side (a thumbnail) is enlarged
    towards it first (its longer side to TEXTURE_LONGEST at most): the blur reaches about 12 px into the frame,
    which on a 48-px thumbnail is the object itself."""
    h, w = a.shape
    scale = min(TEXTURE_SIDE / min(h, w), TEXTURE_LONGEST / max(h, w))
    if scale > 1:
        a = np.asarray(Image.fromarray(a).resize((round(w * scale), round(h * scale)), Image.Resampling.BILINEAR))
        h, w = a.shape
    m = max(1, min(h, w) // 32)
    reach = m + 12  # the strip and as far as the blur reaches into it (3 box passes of about 3 px)
    smooth = np.zeros((h, w))
    for strip, keep in (  # each side blurred alone (a quarter of the frame's pixels in all), its strip kept
        ((slice(0, reach), slice(None)), (slice(0, m), slice(None))),
        ((slice(h - reach, h), slice(None)), (slice(-m, None), slice(None))),
        ((slice(None), slice(0, reach)), (slice(None), slice(0, m))),
        ((slice(None), slice(w - reach, w)), (slice(None), slice(-m, None))),
    ):
        blurred = np.asarray(Image.fromarray(a[strip]).filter(ImageFilter.GaussianBlur(2)), dtype=np.float64)
        smooth[strip][keep] = blurred[keep]
    where, design, fit = _border_fit(h, w)
    values = smooth[where]
    return float(np.median(np.abs(values - design @ (fit @ values))))


@functools.lru_cache(maxsize=64)
def _border_fit(h: int, w: int) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray, np.ndarray]:
    """An h x w frame's border pixels (rows, columns), _surface's terms there and its least squares solution
    operator: the surface through values on the border is design @ (fit @ values)."""
    yy, xx = np.nonzero(_border((h, w)))
    design = np.stack(_surface(yy, xx, h, w), axis=-1)
    return (yy, xx), design, np.linalg.pinv(design)
