"""Images in the artifact contract (torch-free): decoding under limits, and the one implementation of the
preprocessing that training, export and the service all apply, as ``model.json``'s ImagePreprocessing says."""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import ExifTags, Image, ImageOps

from contract.ink import SPARSE_INK, Ink, find_ink, stroke_width, widen
from contract.metadata import Fit, ImagePreprocessing

# MPO: the multi-picture JPEG some phone cameras save; Pillow decodes its first picture, the photo itself.
# WEBP: what Android apps and a browser canvas's toDataURL("image/webp") send; of an animation, the first frame
ACCEPTED_FORMATS = frozenset({"PNG", "JPEG", "MPO", "WEBP"})
# ISO-BMFF brands of HEIF images (an iPhone's HEIC photos), which Pillow does not identify (ISO/IEC 23008-12)
HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"})


class ImageError(ValueError):
    """An image the service must refuse; ``code`` maps to the HTTP error envelope."""

    def __init__(self, code: Literal["invalid_image", "image_too_large", "unsupported_media_type"], message: str):
        super().__init__(message)
        self.code = code


# an image of twice this many pixels a side or more is reduced by a whole factor (a box filter) to at least this side
# before any full-size copy: the front door reads ink at 256 px a side (contract/ink.py: WORK), so nothing it reads
# is lost, and a 5,000 x 5,000 RGBA PNG (the pixel limit's) took ~490 MB of one process to prepare at full size
# (an audit: 4 such 97-KB uploads held 2.9 GB over two workers); a JPEG is decoded at the reduced size (draft)
REDUCE_ABOVE = 1024
THIN_STROKE = 2.2  # px of a 28-px field: photographed strokes thinner than this are widened ...
WIDENED_TO = 2.4  # ... to this (chosen on the 3,000 tuning photos of bench/tuning.py, seed 777)
# an image at the model's input size is the dataset's own look when the lower quartile of its border, at MNIST's
# polarity, is at most this: always 0 in MNIST's training set, at most 11 in Fashion-MNIST's, and about 0 under any
# clipped noise (the playground's corrupted digits); a photo shrunk to 28 x 28 keeps its paper or backdrop there
# and is read as the photo it is
DATASET_BORDER = 16


# Pillow's ways of saying "not a valid image" (SyntaxError: a PNG it opens and fails to decode, a broken chunk)
NOT_AN_IMAGE = (OSError, SyntaxError, ValueError, EOFError)


def decode_image(
    data: bytes, *, max_pixels: int, max_side: int | None = None, max_scans: int | None = None
) -> Image.Image:
    """Decode PNG/JPEG/WebP bytes, refusing non-images, other formats and decompression bombs.

    The pixel count (and with ``max_side`` each side) is checked from the header before any pixel is decoded;
    with ``max_scans`` so is a JPEG's number of scans (each scan of a progressive JPEG is a pass over the
    whole image: thousands cost seconds). Scans are counted by their start-of-scan markers (0xFFDA), which
    cannot occur inside entropy-coded data (a 0xFF there is followed by 0x00), so the count is an upper bound.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's other warnings ("Corrupt EXIF data"): a log line per request
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=None)
            fmt = img.format
            if fmt not in ACCEPTED_FORMATS:
                message = f"image format {fmt} is not supported; send PNG, JPEG or WebP"
                raise ImageError("unsupported_media_type", message)
            w, h = img.size
            if w < 1 or h < 1:
                raise ImageError("invalid_image", "image has no pixels")
            if w * h > max_pixels:
                raise ImageError("image_too_large", f"image is {w}x{h} = {w * h} pixels; the limit is {max_pixels}")
            if max_side is not None and max(w, h) > max_side:
                raise ImageError("image_too_large", f"image is {w}x{h}; the limit is {max_side} pixels a side")
            if max_scans is not None and fmt in ("JPEG", "MPO") and (scans := data.count(b"\xff\xda")) > max_scans:
                raise ImageError("image_too_large", f"JPEG has {scans} scans; the limit is {max_scans}")
            if fmt in ("JPEG", "MPO") and (factor := max(w, h) // REDUCE_ABOVE) >= 2:
                img.draft(img.mode, (max(1, w // factor), max(1, h // factor)))  # at 1/2, 1/4 or 1/8 scale
            img.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError("image_too_large", f"image refused as a decompression bomb: {e}") from None
    except Image.UnidentifiedImageError:
        if (fmt := _unread_format(data)) is not None:  # a format, not a broken file
            raise ImageError(
                "unsupported_media_type", f"image format {fmt} is not supported; send PNG, JPEG or WebP"
            ) from None
        raise ImageError("invalid_image", "not a PNG, JPEG or WebP image") from None
    except ValueError as e:
        if str(e).startswith("Decompressed data too large"):  # Pillow's bound on a PNG's text or ICC profile chunk
            message = "a metadata chunk (text or ICC profile) of the PNG decompresses past Pillow's 1 MiB"
            raise ImageError("image_too_large", message) from None
        raise ImageError("invalid_image", "cannot decode image: not a complete, valid PNG, JPEG or WebP") from None
    except NOT_AN_IMAGE:
        raise ImageError("invalid_image", "cannot decode image: not a complete, valid PNG, JPEG or WebP") from None
    return img


def _unread_format(data: bytes) -> str | None:
    """The format of bytes Pillow does not read, where it is one people send as an image: HEIF (an iPhone's
    photo), SVG, PDF."""
    if data[4:8] == b"ftyp" and data[8:12] in HEIF_BRANDS:
        return "HEIF"
    if data[:5] == b"%PDF-":
        return "PDF"
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return "SVG" if head.startswith((b"<svg", b"<?xml")) and b"<svg" in data[:4096].lower() else None


def _reduced(img: Image.Image) -> Image.Image:
    """``img`` reduced by a whole factor to at least REDUCE_ABOVE px a side where it is twice that or more (a box
    filter; with transparency, averaged premultiplied, so that a transparent pixel's hidden colour does not bleed
    into the strokes beside it); smaller images are returned as they are."""
    factor = max(img.size) // REDUCE_ABOVE
    if factor < 2:
        return img
    if img.mode in ("1", "P", "PA"):  # modes Pillow cannot reduce
        img = img.convert("L" if img.mode == "1" else "RGBA")
    elif img.mode.startswith("I;16"):
        img = img.convert("I")
    return img.reduce(factor)  # RGBA and LA are averaged premultiplied (Pillow's reduce converts them to RGBa, La)


def _upright(img: Image.Image) -> Image.Image:
    """Any PIL mode -> the image turned as its EXIF says, reduced where it is large (``_reduced``), 16-bit greys
    brought to 'L' by their depth, transparency (an alpha channel, or an 8-bit grey or colour PNG's transparent value)
    composited over white (a canvas drawing's paper); colour stays colour (convert to 'L' or 'RGB' next)."""
    with contextlib.suppress(Exception), warnings.catch_warnings():  # broken EXIF metadata (any of Pillow's
        warnings.simplefilter("ignore")  # parser errors, its warnings a log line a request): the pixels are fine
        if img.getexif().get(ExifTags.Base.Orientation, 1) != 1:  # else no copy of a large image
            img = ImageOps.exif_transpose(img) or img
    if img.mode in ("L", "RGB") and "transparency" in img.info:  # a PNG's tRNS chunk: one value is transparent
        img = img.convert("RGBA")
    img = _reduced(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # a 16-bit grey PNG (a large one reduced as 'I')
        a = np.asarray(img, dtype=np.float64) / (1.0 if img.mode == "F" else 257.0)  # its full range, as 8-bit's
        img = Image.fromarray(np.clip(a, 0, 255).round().astype(np.uint8), "L")  # (was its own min to max: a
        # blank page's noise of one level was stretched into marks, a digit 4 % darker than its paper into ink)
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return img


def _as_is(a: np.ndarray, size: tuple[int, int], white_on_black: bool) -> tuple[bool, bool]:
    """Whether a grey image is the dataset's own look at its input size (``DATASET_BORDER``), and whether it is
    dark ink on light paper, flipped to MNIST's polarity when it is taken as it is (its border light)."""
    border = np.concatenate([a[0].ravel(), a[-1].ravel(), a[:, 0].ravel(), a[:, -1].ravel()])
    flip = white_on_black and float(border.mean()) > 127.5
    if a.shape != size:
        return False, flip
    quarter = np.partition(255 - border if flip else border, len(border) // 4)[len(border) // 4]  # lower quartile
    return int(quarter) <= DATASET_BORDER, flip


def _photos(pre: ImagePreprocessing) -> bool:
    """Whether a grey image not in the dataset's look is read as a photo (contract/ink.py)."""
    return pre.channels == 1 and pre.white_on_black and pre.fit in ("digit", "contain")


class NotAsIs(Exception):
    """``read(..., as_is_only=True)`` of an image it would read as a photo (its ink found: milliseconds)."""


def _fit_ink(ink: Ink, size: tuple[int, int], fit: Fit) -> np.ndarray:
    """The ink found in a photo -> the model's field: nothing written gives a black field."""
    if ink.box is None:
        return np.zeros(size, dtype=np.uint8)
    top, left, bottom, right = ink.box
    strength = ink.strength[top:bottom, left:right]
    if fit == "digit":
        return _fit_digit((_widen_thin(strength, size) * 255.0).round().astype(np.uint8), size)
    return np.asarray(_fit_contain(Image.fromarray((strength * 255.0).round().astype(np.uint8)), size, 0))


def _widen_thin(strength: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Strokes that would come out thinner than THIN_STROKE in the model's field (a fine pen, a pencil, a
    digit written small and photographed from afar) widened to WIDENED_TO, at the ink's own resolution. MNIST
    was written with pens a few pixels wide in its field, and its models misread hairlines: on bench/tuning.py's
    3,000 photos LeNet-5 misread 8 % of those with strokes thinner or thicker than 96 % of MNIST's, against
    2.6 % of the rest; widening the thin ones took it from 96.73 to 97.17 % and mnist-cnn from 97.03 to 97.60 %
    (narrowing the thickest ones did not help)."""
    mask = strength >= 0.5
    if mask.mean() < SPARSE_INK:  # specks scattered over a page (noise), not strokes: widening makes them ink
        return strength
    extent = _ink_extent(strength)
    assert extent is not None  # the mask above holds ink
    scale = _digit_box(size) / max(extent[0].stop - extent[0].start, extent[1].stop - extent[1].start)
    unit = min(size) / 28  # the thresholds are in pixels of a 28-pixel field
    width = stroke_width(mask) * scale
    if width >= THIN_STROKE * unit:
        return strength
    pixels = round((WIDENED_TO * unit - width) / scale)
    return widen(strength, pixels) if pixels > 0 else strength


def _ink_extent(a: np.ndarray) -> tuple[slice, slice] | None:
    """Rows and columns of the ink that _fit_digit scales into its box: what is over a quarter of the peak."""
    if a.max() <= 0:
        return None
    rows, cols = np.nonzero(a > 0.25 * a.max())
    return slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1)


def _digit_box(size: tuple[int, int]) -> int:
    """The side of the box a digit is fitted into: 20 of a 28-pixel field, as MNIST's."""
    return max(1, round(min(size) * 20 / 28))


def _fit_digit(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """MNIST's preparation: the ink's bounding box, scaled to fit 20x20 (for 28x28) keeping its aspect,
    pasted so its centre of mass is at the centre of the field (LeCun et al. 1998, Section III.A)."""
    h, w = size
    extent = _ink_extent(a)
    if extent is None:
        return np.asarray(Image.fromarray(a).resize((w, h), Image.Resampling.BILINEAR))
    crop = a[extent]
    scale = _digit_box(size) / max(crop.shape)
    nh, nw = max(1, round(crop.shape[0] * scale)), max(1, round(crop.shape[1] * scale))
    small = np.asarray(Image.fromarray(crop).resize((nw, nh), Image.Resampling.LANCZOS), dtype=np.float64)
    total = small.sum()
    cy, cx = ((np.indices(small.shape) * small).reshape(2, -1).sum(1) / total) if total > 0 else (nh / 2, nw / 2)
    top = int(np.clip(round(h / 2 - cy), 0, h - nh))
    left = int(np.clip(round(w / 2 - cx), 0, w - nw))
    out = np.zeros((h, w), dtype=np.uint8)
    out[top : top + nh, left : left + nw] = np.clip(small.round(), 0, 255).astype(np.uint8)
    return out


def _fit_contain(img: Image.Image, size: tuple[int, int], fill: int | tuple[int, int, int]) -> Image.Image:
    h, w = size
    scale = min(h / img.height, w / img.width)
    nw, nh = max(1, round(img.width * scale)), max(1, round(img.height * scale))
    canvas = Image.new(img.mode, (w, h), fill)
    canvas.paste(img.resize((nw, nh), Image.Resampling.LANCZOS), ((w - nw) // 2, (h - nh) // 2))
    return canvas


def prepare_image(img: Image.Image, pre: ImagePreprocessing) -> np.ndarray:
    """A decoded image of any size and mode -> uint8 array (C, H, W) in the model's pixel convention
    (``read``'s pixels)."""
    return read(img, pre).pixels


@dataclass(frozen=True)
class Reading:
    """What the front door made of an image: uint8 (C, H, W) pixels in the model's convention; for a photo, how
    unlike a photo of the model's kind of input it is (``Ink.oddness``: above 1, unlike any; None when the image
    was taken as it is); and for a photo read as pen strokes, their polarity (dark on light: True), which a
    second reading may turn over (``second_reading_kept``; None: no second reading, as for print, ``Ink.printed``,
    and a dot of the pen, ``Ink.dot``: that is what the page is at either polarity, not a polarity misread; and
    a drawing on a flat canvas, ``Ink.drawn``, whose polarity is plain); and
    whether the sheet was cut out of a table around it (``Ink.on_table``: such an answer is read at its own
    temperature, ``Calibration``); and the reason of its oddness (``Ink.odd_reason``, contract/reasons.py)."""

    pixels: np.ndarray
    oddness: float | None = None
    dark_ink: bool | None = None
    on_table: bool = False
    odd_reason: str = ""


# A photo of pen strokes whose reading the model flags as out of distribution is read again at the other
# polarity (a shadow over most of the page, or faint pencil, fools the polarity fit, and the model then sees the
# paper around the digit), and that reading is kept when the model finds it typical: not flagged, and scored
# under this share of its threshold. Chosen on bench/tuning.py's 3,000 photos (seed 777): mnist-cnn 97.77 ->
# 98.07 %, LeNet-5 97.33 -> 97.60 %, mnist-mlp 96.63 -> 96.83 %, mnist-rbf 91.00 -> 90.93 %. With the threshold
# itself as the bar, the gain was about the same, but 2-4 right answers per model turned wrong and 3-4 more of the
# natural photographs (export/odd_images.py) were let through (README.md: How images are prepared).
SECOND_READING = 0.5


def second_reading_kept(threshold: float | None, score: float | None, flagged: bool) -> bool:
    """Is a second reading (scored ``score``, ``flagged`` or not, by a model whose threshold is ``threshold``)
    kept over a first one that the model flagged?"""
    return bool(
        threshold and threshold > 0 and score is not None and not flagged and score <= SECOND_READING * threshold
    )


def both_readings(img: Image.Image, pre: ImagePreprocessing) -> tuple[Reading, Reading | None]:
    """An image's reading and, for a photo read as pen strokes, its second reading at the other polarity (which
    the service takes where the model flags the first and ``second_reading_kept`` says so)."""
    first = read(img, pre)
    return first, None if first.dark_ink is None else read(img, pre, not first.dark_ink)


def read(img: Image.Image, pre: ImagePreprocessing, dark: bool | None = None, as_is_only: bool = False) -> Reading:
    """A decoded image of any size and mode -> its ``Reading``; ``dark``: a photo of pen strokes is read at that
    polarity instead of the one its page's fit decides; ``as_is_only``: raise NotAsIs rather than read a photo
    (a server reading small images on its event loop).

    An image already at the model's input size in the dataset's look (a black border, after mode conversion and
    polarity) is taken pixel for pixel, so the training set's own images pass through unchanged. Any other
    image (a photo shrunk to the input size included), for a model
    trained on bright shapes on black with the 'digit' or 'contain' fit (MNIST, Fashion-MNIST), is read like
    a photo or scan: its ink is found with the background, lighting and polarity removed (contract/ink.py),
    then fitted as the dataset was made.
    """
    size = (pre.input_size[0], pre.input_size[1])
    upright = _upright(img)
    img = upright.convert("L" if pre.channels == 1 else "RGB")
    if pre.channels == 1:
        a = np.asarray(img, dtype=np.uint8)
        own, flip = _as_is(a, size, pre.white_on_black)
        if not own and _photos(pre):
            if as_is_only:
                raise NotAsIs
            objects = pre.fit == "contain"
            colour = None if upright.mode in ("L", "1") else upright
            ink = find_ink(img, objects=objects, dark=None if objects else dark, colour=colour)
            pixels = _fit_ink(ink, size, pre.fit)[None].copy()
            once = objects or ink.printed or ink.dot or ink.drawn  # no polarity misread: no second reading
            return Reading(pixels, ink.oddness, None if once else ink.dark_on_light, ink.on_table, ink.odd_reason)
        if flip:
            a = 255 - a
        if a.shape != size:
            if pre.fit == "digit":
                a = _fit_digit(a, size)
            elif pre.fit == "contain":
                a = np.asarray(_fit_contain(Image.fromarray(a), size, 0))
            else:
                a = np.asarray(Image.fromarray(a).resize(size[::-1], Image.Resampling.BILINEAR))
        return Reading(a[None].copy())
    if img.size != size[::-1]:
        img = (
            _fit_contain(img, size, (0, 0, 0))
            if pre.fit == "contain"
            else img.resize(size[::-1], Image.Resampling.BILINEAR)
        )
    return Reading(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy())


def normalize(pixels: np.ndarray, pre: ImagePreprocessing) -> np.ndarray:
    """uint8 (..., C, H, W) -> float32 standardised with the training set's per-channel mean/std."""
    mean = np.asarray(pre.mean, dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(pre.std, dtype=np.float32).reshape(-1, 1, 1)
    return ((pixels.astype(np.float32) * np.float32(1 / 255.0)) - mean) / std


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Floats in [0, 1] (any shape) -> uint8, rounded."""
    return (np.clip(pixels, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def to_pil(pixels: np.ndarray) -> Image.Image:
    """(C, H, W) floats in [0, 1] -> an 'L' or 'RGB' image."""
    a = to_uint8(pixels)
    return Image.fromarray(a[0]) if a.shape[0] == 1 else Image.fromarray(a.transpose(1, 2, 0))


def image_grid(images: np.ndarray, cols: int, pad: int = 2) -> Image.Image:
    """(N, C, H, W) floats in [0, 1] -> one image, ``cols`` per row, ``pad`` dark pixels between cells."""
    n, c, h, w = images.shape
    cols = max(1, min(cols, n))
    rows = -(-n // cols)
    canvas = np.zeros((c, rows * (h + pad) + pad, cols * (w + pad) + pad), dtype=np.float32)
    for i, img in enumerate(images):
        r, q = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + q * (w + pad)
        canvas[:, top : top + h, left : left + w] = img
    return to_pil(canvas)
