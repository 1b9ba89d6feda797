"""Render dataset images the way users send them: a digit written on paper and photographed with a phone, a
garment photographed on a light table (torch-free, numpy + Pillow).

A rendering is a pure function of the source image, a ``numpy.random.Generator`` and a ``PhotoStyle`` (the
ranges every random choice is drawn from), so the same seed gives the same photo. Two styles:

- ``TRAIN_STYLE``: what training augments with (training/photo_data.py);
- ``EVAL_STYLE``: what the photo figures are measured on (export/evaluate.py, bench/photos.py): wider ranges
  than training on every axis (darker and more tinted paper, harder light and shadows, smaller and more
  rotated digits, more blur, noise and compression, more perspective), drawn with other seeds, so the figure
  is not a measure of the training generator itself.

``on_table`` lays such a photo on a table and photographs it again from further back (``TABLE_STYLE``): what a
user sends who does not fill the frame with the page. Neither style has it; bench/photos.py measures it apart.

What a photo has: paper from white to mid-grey, tinted; a light gradient, a vignette and sometimes a soft
shadow across the page; plain, lined or squared paper; ink in black, blue or pencil grey, with thinner or
thicker strokes; the digit small or large, anywhere in the frame, rotated; a little perspective; lens blur,
sensor noise and JPEG compression.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from PIL import Image, ImageFilter

from contract.images import Reading, both_readings, decode_image, read
from contract.metadata import ImagePreprocessing

T = TypeVar("T")

Range = tuple[float, float]

INKS = {  # RGB of the ink itself, and how opaque a stroke is
    "black": ((22, 22, 28), (0.75, 1.0)),
    "blue": ((25, 45, 150), (0.7, 1.0)),
    "pencil": ((85, 85, 92), (0.45, 0.75)),
}


@dataclass(frozen=True)
class PhotoStyle:
    """Ranges (low, high) every rendering draws from."""

    frame: tuple[int, int] = (140, 360)  # side of the square photo, pixels
    digit_fraction: Range = (0.3, 0.75)  # the digit's height as a share of the frame
    paper: Range = (135.0, 240.0)  # paper grey level before lighting
    tint: float = 14.0  # per-channel paper tint, +-
    light_gradient: Range = (0.0, 0.4)  # brightness fall-off across the page
    vignette: Range = (0.0, 0.35)
    shadow: Range = (0.0, 0.35)  # darkening of a soft-edged shadow over part of the page
    shadow_chance: float = 0.3
    lines_chance: float = 0.3  # lined or squared paper
    stroke: Range = (-1.0, 1.0)  # thinner (< 0) or thicker (> 0), in units of ~1/60 of the digit's side
    rotation_deg: float = 12.0
    perspective: float = 0.04  # corner displacement, share of the frame
    blur: Range = (0.3, 1.5)  # Gaussian blur radius, pixels
    noise: Range = (2.0, 9.0)  # sensor noise std, grey levels
    jpeg_quality: tuple[int, int] = (30, 95)
    garment: tuple[int, int] = (0, 256)  # a garment's colour, each channel in [low, high): white ones included


TRAIN_STYLE = PhotoStyle()
EVAL_STYLE = PhotoStyle(
    frame=(120, 480),
    digit_fraction=(0.22, 0.8),
    paper=(110.0, 245.0),
    tint=20.0,
    light_gradient=(0.0, 0.5),
    vignette=(0.0, 0.45),
    shadow=(0.0, 0.45),
    shadow_chance=0.4,
    lines_chance=0.4,
    stroke=(-1.5, 1.5),
    rotation_deg=18.0,
    perspective=0.06,
    blur=(0.3, 2.0),
    noise=(2.0, 12.0),
    jpeg_quality=(25, 95),
    garment=(0, 230),  # as `make photos` has always drawn them (white garments are measured apart: bench/garments.py)
)


@dataclass(frozen=True)
class TableStyle:
    """Ranges for a photographed sheet laid on a table and photographed again from further back (``on_table``)."""

    sheet: Range = (0.6, 0.92)  # the sheet's side as a share of the frame's
    table: Range = (20.0, 130.0)  # the table's grey level: dark wood to a grey desk (paper: 110-245)
    tint: float = 25.0  # per-channel table tint, +-
    grain: Range = (2.0, 14.0)  # the table's texture (wood grain, a desk's speckle), grey levels
    turn_deg: float = 5.0  # the sheet lies this far from square to the frame, at most
    # the camera of the second shot: light blur, noise and JPEG
    camera: PhotoStyle = PhotoStyle(blur=(0.3, 1.0), noise=(2.0, 6.0), jpeg_quality=(50, 95))


TABLE_STYLE = TableStyle()
LIGHT_TABLE_STYLE = TableStyle(table=(190.0, 250.0))  # a white desk or tablecloth: lighter than most paper


def _uniform(rng: np.random.Generator, r: Range) -> float:
    return float(rng.uniform(r[0], r[1]))


def _lighting(rng: np.random.Generator, n: int, style: PhotoStyle) -> np.ndarray:
    """(n, n) multiplicative light field: a gradient in a random direction, a vignette, maybe a shadow."""
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / max(n - 1, 1) - 0.5
    angle = rng.uniform(0, 2 * np.pi)
    ramp = xx * np.cos(angle) + yy * np.sin(angle)  # -0.71 .. 0.71
    light = 1.0 - _uniform(rng, style.light_gradient) * (ramp + 0.71) / 1.42
    light *= 1.0 - _uniform(rng, style.vignette) * (xx**2 + yy**2) * 2
    if rng.random() < style.shadow_chance:  # a soft shadow edge (a hand, a phone) across part of the page
        a2 = rng.uniform(0, 2 * np.pi)
        edge = xx * np.cos(a2) + yy * np.sin(a2) - rng.uniform(-0.3, 0.4)
        light *= 1.0 - _uniform(rng, style.shadow) / (1.0 + np.exp(-edge / rng.uniform(0.01, 0.08)))
    return light


def _stroke(ink: Image.Image, rng: np.random.Generator, style: PhotoStyle) -> Image.Image:
    """Thinner or thicker pen strokes: a grey-level erosion or dilation of the scaled digit."""
    amount = _uniform(rng, style.stroke) * ink.width / 60
    k = round(abs(amount)) * 2 + 1
    if k < 3:
        return ink
    return ink.filter(ImageFilter.MaxFilter(k) if amount > 0 else ImageFilter.MinFilter(k))


def _ruling(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, n) coverage of printed lines: ruled or squared paper."""
    step = int(rng.integers(max(6, n // 14), max(8, n // 7)))
    width = int(rng.integers(1, 3))
    off = int(rng.integers(0, step))
    idx = (np.arange(n) + off) % step < width
    cover = np.zeros((n, n), dtype=np.float32)
    cover[idx, :] = 1.0
    if rng.random() < 0.5:
        cover[:, idx] = 1.0
    return cover * rng.uniform(0.12, 0.35)


def _perspective(img: Image.Image, rng: np.random.Generator, amount: float) -> Image.Image:
    n = img.width
    d = rng.uniform(-amount, amount, size=8) * n
    corners = [(0 + d[0], 0 + d[1]), (n + d[2], 0 + d[3]), (n + d[4], n + d[5]), (0 + d[6], n + d[7])]
    dst = [(0, 0), (n, 0), (n, n), (0, n)]
    # the coefficients mapping output pixels to input pixels (PIL's PERSPECTIVE convention)
    rows = []
    for (x, y), (u, v) in zip(dst, corners, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    b = np.array([c for pt in corners for c in pt], dtype=np.float64)
    coeffs = np.linalg.solve(np.array(rows, dtype=np.float64), b)
    edge = tuple(int(v) for v in np.asarray(img)[0, 0])
    return img.transform(
        img.size, Image.Transform.PERSPECTIVE, tuple(coeffs), Image.Resampling.BILINEAR, fillcolor=edge
    )


def render_digit_photo(digit: np.ndarray, rng: np.random.Generator, style: PhotoStyle = TRAIN_STYLE) -> bytes:
    """A 28x28 MNIST digit (uint8, bright ink on black) as a JPEG phone photo of ink on paper."""
    frame = int(rng.integers(style.frame[0], style.frame[1] + 1))
    n = frame + 2 * round(frame * style.perspective * 1.5)  # the page extends beyond the photo's frame
    side = max(8, round(frame * _uniform(rng, style.digit_fraction) * 28 / 20))  # MNIST digits fill 20 of 28 rows
    ink = Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC)
    ink = _stroke(ink, rng, style)
    ink = ink.rotate(rng.uniform(-style.rotation_deg, style.rotation_deg), Image.Resampling.BICUBIC)
    page = Image.new("L", (n, n), 0)
    margin = (n - frame) // 2
    x0 = margin + int(rng.integers(0, max(1, frame - side)))
    y0 = margin + int(rng.integers(0, max(1, frame - side)))
    page.paste(ink, (x0, y0))
    colour, opacity = INKS[str(rng.choice(list(INKS)))]
    alpha = np.asarray(page, dtype=np.float32)[..., None] / 255.0 * _uniform(rng, opacity)
    paper = _uniform(rng, style.paper) + rng.uniform(-style.tint, style.tint, size=3)
    sheet = np.broadcast_to(paper, (n, n, 3)).astype(np.float32)
    if rng.random() < style.lines_chance:
        line_colour = np.array([120.0, 150.0, 200.0]) if rng.random() < 0.6 else np.array([120.0, 120.0, 120.0])
        cover = _ruling(rng, n)[..., None]
        sheet = sheet * (1 - cover) + line_colour * cover
    rgb = sheet * (1 - alpha) + np.asarray(colour, dtype=np.float32) * alpha
    rgb *= _lighting(rng, n, style)[..., None]
    img = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
    if style.perspective > 0:
        img = _perspective(img, rng, style.perspective)
    m = (n - frame) // 2
    return _camera(np.asarray(img, dtype=np.float32)[m : m + frame, m : m + frame], rng, style)


def render_product_photo(
    item: np.ndarray, rng: np.random.Generator, colour: tuple[int, int, int], style: PhotoStyle = TRAIN_STYLE
) -> bytes:
    """A 28x28 Fashion-MNIST item (uint8, bright on black) as a JPEG colour photo on a light background."""
    n = int(rng.integers(style.frame[0], style.frame[1] + 1))
    side = round(n * rng.uniform(0.6, 0.9))
    shape = Image.fromarray(item).resize((side, side), Image.Resampling.BICUBIC)
    page = Image.new("L", (n, n), 0)
    page.paste(shape, ((n - side) // 2, (n - side) // 2))
    amount = np.asarray(page, dtype=np.float32)[..., None] / 255.0  # the garment's brightness: its shading
    background = np.array([242.0, 240.0, 236.0]) + rng.uniform(-8, 8, size=3)
    shaded = np.asarray(colour, dtype=np.float32) * (0.45 + 0.55 * amount)
    mask = np.clip(amount * 4.0, 0.0, 1.0)  # the garment's silhouette, soft at the edge
    rgb = background * (1 - mask) + shaded * mask
    light = 1.0 - _uniform(rng, (0.0, 0.15)) * np.linspace(0, 1, n, dtype=np.float32)[None, :]
    return _camera(rgb * light[..., None], rng, style)


def _camera(rgb: np.ndarray, rng: np.random.Generator, style: PhotoStyle) -> bytes:
    """Lens blur, sensor noise and JPEG compression."""
    img = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
    img = img.filter(ImageFilter.GaussianBlur(_uniform(rng, style.blur)))
    noisy = np.asarray(img, dtype=np.float32) + rng.normal(0.0, _uniform(rng, style.noise), size=(*img.size[::-1], 3))
    out = io.BytesIO()
    quality = int(rng.integers(style.jpeg_quality[0], style.jpeg_quality[1] + 1))
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB").save(out, format="JPEG", quality=quality)
    return out.getvalue()


def on_table(photo: bytes, rng: np.random.Generator, style: TableStyle = TABLE_STYLE) -> bytes:
    """A photographed sheet (``render_digit_photo``'s JPEG) lying on a table, photographed from further back:
    the table shows beyond the page's edges, on every side or, with the sheet pushed off centre, on fewer; the
    sheet a few degrees from square."""
    sheet = Image.open(io.BytesIO(photo)).convert("RGB")
    side = sheet.width
    n = round(side / _uniform(rng, style.sheet))
    colour = _uniform(rng, style.table) + rng.uniform(-style.tint, style.tint, size=3)
    grain = rng.normal(0.0, 1.0, size=(max(2, n // 16), max(2, n // 3)))  # streaks along one axis: wood grain
    grain_img = Image.fromarray(((grain - grain.min()) / max(np.ptp(grain), 1e-6) * 255).astype(np.uint8))
    streaks = np.asarray(grain_img.resize((n, n), Image.Resampling.BICUBIC), dtype=np.float32) / 255 - 0.5
    texture = streaks if rng.random() < 0.5 else streaks.T
    table = colour + (2 * _uniform(rng, style.grain) * texture)[..., None]
    img = Image.fromarray(np.clip(table, 0, 255).astype(np.uint8), "RGB")
    sheet, mask = turned(sheet, rng.uniform(-style.turn_deg, style.turn_deg))
    free_x, free_y = max(0, n - sheet.width), max(0, n - sheet.height)
    img.paste(sheet, (int(rng.integers(0, free_x + 1)), int(rng.integers(0, free_y + 1))), mask)
    return _camera(np.asarray(img, dtype=np.float32), rng, style.camera)


def turned(sheet: Image.Image, degrees: float) -> tuple[Image.Image, Image.Image]:
    """``sheet`` turned (its frame grown to hold it), and the mask of where the sheet lies in that frame."""
    mask = Image.new("L", sheet.size, 255).rotate(degrees, Image.Resampling.BICUBIC, expand=True)
    return sheet.rotate(degrees, Image.Resampling.BICUBIC, expand=True), mask


def photograph(item: np.ndarray, fit: str, rng: np.random.Generator, style: PhotoStyle) -> bytes:
    """A 28x28 dataset image as the photo a user would take of it: a handwritten digit on paper for models
    with the 'digit' fit, otherwise a garment of a random colour on a light background."""
    if fit == "digit":
        return render_digit_photo(item, rng, style)
    colour = tuple(int(c) for c in rng.integers(style.garment[0], style.garment[1], size=3))
    return render_product_photo(item, rng, colour, style)  # type: ignore[arg-type]


def photographs(images: np.ndarray, pre: ImagePreprocessing, style: PhotoStyle, rng: np.random.Generator) -> np.ndarray:
    """uint8 (N, 1, H, W) dataset images -> the same photographed and read back through the service's front
    door (``prepare_image``): what a model gets when users send photos of them."""
    return read_photographs(images, pre, style, rng)[0]


def _photographs_of(args: tuple[np.ndarray, ImagePreprocessing, PhotoStyle, int]) -> np.ndarray:
    images, pre, style, seed = args
    return photographs(images, pre, style, np.random.default_rng(seed))


def _in_chunks(
    fn: Callable[[tuple[np.ndarray, ImagePreprocessing, PhotoStyle, int]], T],
    images: np.ndarray,
    pre: ImagePreprocessing,
    style: PhotoStyle,
    chunk: int,
    seeds: list[int],
    workers: int,
) -> list[T]:
    """``fn`` over ``images`` in chunks of ``chunk`` (the last may be shorter), the i-th drawn with ``seeds[i]``,
    in ``workers`` processes: the same inputs give the same photos however many processes run."""
    if len(seeds) != -(-len(images) // chunk):
        raise ValueError(f"{len(images)} images in chunks of {chunk} need {-(-len(images) // chunk)} seeds")
    chunks = [(images[i * chunk : (i + 1) * chunk], pre, style, seed) for i, seed in enumerate(seeds)]
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers) as pool:
            return list(pool.map(fn, chunks))
    return [fn(c) for c in chunks]


def photographs_in_chunks(
    images: np.ndarray, pre: ImagePreprocessing, style: PhotoStyle, chunk: int, seeds: list[int], workers: int = 2
) -> np.ndarray:
    """``photographs`` of ``images`` in chunks (``_in_chunks``)."""
    return np.concatenate(_in_chunks(_photographs_of, images, pre, style, chunk, seeds, workers))


def _readings_of(args: tuple[np.ndarray, ImagePreprocessing, PhotoStyle, int]) -> list[tuple[Reading, Reading | None]]:
    images, pre, style, seed = args
    rng = np.random.default_rng(seed)
    out: list[tuple[Reading, Reading | None]] = []
    for item in images:
        out.append(both_readings(decode_image(photograph(item[0], pre.fit, rng, style), max_pixels=1 << 24), pre))
    return out


def readings_in_chunks(
    images: np.ndarray, pre: ImagePreprocessing, style: PhotoStyle, chunk: int, seeds: list[int], workers: int = 2
) -> list[tuple[Reading, Reading | None]]:
    """The same photos as ``photographs_in_chunks``, each as the front door's reading and, for a photo read as pen
    strokes, its second reading at the other polarity (which the service keeps when the model flags the first:
    ``contract.images.second_reading_kept``)."""
    return [r for part in _in_chunks(_readings_of, images, pre, style, chunk, seeds, workers) for r in part]


@dataclass(frozen=True)
class Door:
    """What the front door found of each image of a set, as ``Reading`` holds it for one: how unlike a photo of
    its kind it is (``oddness``, NaN where it took the image as it is) and whether it cut the sheet out of a table
    around it (``on_table``). ``door[rows]`` is the same of those rows."""

    oddness: np.ndarray
    on_table: np.ndarray

    @classmethod
    def of(cls, readings: list[Reading]) -> Door:
        """The front door's findings of ``readings``, in order."""
        return cls(
            np.array([np.nan if r.oddness is None else r.oddness for r in readings], dtype=np.float64),
            np.array([r.on_table for r in readings], dtype=bool),
        )

    def __getitem__(self, rows: np.ndarray) -> Door:
        return Door(self.oddness[rows], self.on_table[rows])


def read_photographs(
    images: np.ndarray,
    pre: ImagePreprocessing,
    style: PhotoStyle,
    rng: np.random.Generator,
    table: TableStyle | None = None,
) -> tuple[np.ndarray, Door]:
    """``photographs`` (with ``table``, each sheet laid on a table: ``on_table``), and what the front door found
    of each (``Door``)."""
    readings = []
    for img in images:
        blob = photograph(img[0], pre.fit, rng, style)
        if table is not None:
            blob = on_table(blob, rng, table)
        readings.append(read(decode_image(blob, max_pixels=1 << 24), pre))
    out = np.empty((len(images), 1, *pre.input_size), dtype=np.uint8)
    for i, r in enumerate(readings):
        out[i] = r.pixels
    return out, Door.of(readings)
