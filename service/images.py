"""Request images -> model input tensors, with the contract's preprocessing and the service's limits; and images
in answers (base64 PNGs, grids)."""

from __future__ import annotations

import base64
import binascii
import io
import math
import time

import numpy as np
from PIL import Image

from contract.images import ImageError, Reading, decode_image, normalize, read, to_pil
from contract.metadata import ModelMetadata
from service.errors import ApiError
from service.metrics import PREPROCESS_SECONDS, child


def b64_to_bytes(data: str, index: int, max_bytes: int) -> bytes:
    if data[:5].lower() == "data:" and "," in data[:1024]:  # a data URL: data:image/png;base64,... (RFC 2397)
        data = data.split(",", 1)[1]
    if len(data) > (max_bytes * 4) // 3 + 4 and len(data.translate(_NO_SPACES)) > (max_bytes * 4) // 3 + 4:
        raise ApiError("image_too_large", f"images[{index}] is over {max_bytes} bytes", [{"index": index}])
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        pass
    # MIME's line breaks and spaces around or inside are no image bytes; the URL-safe alphabet (RFC 4648, 5:
    # Python's urlsafe_b64encode) and padding left off (RFC 4648, 3.2) are base64 too
    data = data.translate(_NO_SPACES).translate(_URL_SAFE)
    data += "=" * (-len(data) % 4 if len(data) % 4 != 1 else 0)
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError("invalid_image", f"images[{index}] is not valid base64", [{"index": index}]) from None


# MIME's base64 (RFC 2045; GNU base64 without -w0, Python's encodebytes) breaks its lines every 76 characters;
# a text editor or a form adds spaces (until 2026-12-07 anything but CR and LF was a 400, an image audit's)
_NO_SPACES = str.maketrans("", "", " \t\r\n\f\v")
_URL_SAFE = str.maketrans("-_", "+/")


def to_input(
    data: bytes,
    meta: ModelMetadata,
    *,
    index: int,
    max_bytes: int,
    max_pixels: int,
    max_side: int,
    max_scans: int,
    dark: bool | None = None,
    inline: bool = False,
) -> tuple[np.ndarray, Reading]:
    """Encoded PNG/JPEG -> float32 (C, H, W) exactly as the model was trained, and the front door's reading
    (``contract.images.read``: for a photo, how unlike one of the model's kind it is and its ink's polarity;
    ``dark``: a photo of pen strokes read at that polarity). ``inline``: raise contract.images.NotAsIs rather than
    find the ink of a photo, and leave the preprocessing time to the caller to count (once all rows are read)."""
    t0 = time.perf_counter()
    if len(data) > max_bytes:
        raise ApiError("image_too_large", f"images[{index}] is over the limit of {max_bytes} bytes", [{"index": index}])
    try:
        img = decode_image(data, max_pixels=max_pixels, max_side=max_side, max_scans=max_scans)
        pre = meta.image_preprocessing()
        reading = read(img, pre, dark, as_is_only=inline)
        x = normalize(reading.pixels, pre)
    except ImageError as e:
        raise ApiError(e.code, f"images[{index}]: {e}", [{"index": index}]) from None
    if not inline:
        child(PREPROCESS_SECONDS, meta.name).observe(time.perf_counter() - t0)
    return x, reading


def pixels(x: np.ndarray, meta: ModelMetadata) -> np.ndarray:
    """A normalised input row (C, H, W) -> its pixels in [0, 1]: what the model saw."""
    pre = meta.image_preprocessing()
    mean = np.asarray(pre.mean, dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(pre.std, dtype=np.float32).reshape(-1, 1, 1)
    return x * std + mean


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def png_b64(pixels: np.ndarray) -> str:
    """(C, H, W) floats in [0, 1] -> base64 PNG."""
    return b64(png(to_pil(pixels)))


def grid_cols(n: int) -> int:
    """Columns of a near-square grid of n images."""
    return math.ceil(math.sqrt(n))
