"""The decode pool's guards (service/engine.py): which images are decoded on the event loop, and work for a request
that has gone stopping at its next item."""

from __future__ import annotations

import asyncio
import base64
import io
import threading
import time

import numpy as np
import pytest
from PIL import Image

from service.engine import check_abandoned, off_loop, small_pngs
from tests.test_abandoned_work import _chunk


def _png(side: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((side, side), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_only_small_pngs_of_the_models_size_whose_first_chunk_is_ihdr_are_decoded_on_the_loop():
    small, size = _png(28), (28, 28)
    assert small_pngs([small], 1 << 20, size) and small_pngs([base64.b64encode(small).decode()], 1 << 20, size)
    assert not small_pngs([small] * 3, 2 * len(small), size)  # over the bytes
    # any other size goes through the front door's ink finding (7-30 ms): never on the loop, however small
    assert not small_pngs([_png(40)], 1 << 20, size) and not small_pngs([small, _png(300)], 1 << 20, size)
    # Pillow reads past a private chunk before IHDR, so its bytes 16-24 are not the size: a crafted 1 x 1 there
    # must not send a large image to the event loop
    crafted = small[:8] + _chunk(b"faKe", (1).to_bytes(4, "big") * 2) + small[8:]
    assert not small_pngs([crafted], 1 << 20, size)
    assert not small_pngs([base64.b64encode(crafted).decode()], 1 << 20, size)


def test_a_second_ihdr_is_caught_by_the_size_pillow_reads_before_decoding():
    """Pillow takes the last IHDR before the pixels: bytes 16-24 can say 1 x 1 with a 3,400 x 3,400 IHDR after
    them, so the event loop decodes a small PNG only within the model's pixels as Pillow reads it, and a refusal
    there sends the image to the pool (Engine.image_rows)."""
    import struct
    import zlib

    from contract.images import ImageError, decode_image

    side = 3400
    idat = zlib.compress(b"\x00" * (side * 2 + 1) * side, 9)
    crafted = (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
        + _chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 16, 0, 0, 0, 0))
        + _chunk(b"IDAT", idat)
        + _chunk(b"IEND", b"")
    )
    assert small_pngs([crafted], 1 << 20, (1, 1))  # the bytes alone cannot tell
    with pytest.raises(ImageError) as e:
        decode_image(crafted, max_pixels=1)
    assert e.value.code == "image_too_large" and f"{side}x{side}" in str(e.value)


def test_a_cancelled_request_stops_its_job_at_the_next_item():
    done, stopped = [], threading.Event()

    def job() -> None:
        try:
            for i in range(200):
                check_abandoned()
                time.sleep(0.005)
                done.append(i)
        except Exception:
            stopped.set()
            raise

    async def main() -> None:
        task = asyncio.ensure_future(off_loop(job))
        await asyncio.sleep(0.1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    assert stopped.wait(2) and len(done) < 100, len(done)
    check_abandoned()  # outside the pool: nothing to stop


def test_a_photo_shrunk_to_the_input_size_is_not_read_on_the_loop():
    """A 28 x 28 PNG passes small_pngs by its header; one in the dataset's look is taken pixel for pixel on the
    loop, but a photo shrunk to 28 x 28 (grey paper at its border) is read as a photo, 3-4 ms an image here, so
    to_input(inline=True) refuses it (contract.images.NotAsIs) and the engine sends it to the pool (a review: 64
    of them stalled a worker's loop for 0.24 s)."""
    from contract.images import NotAsIs
    from contract.metadata import ImagePreprocessing, ModelMetadata
    from service.images import to_input

    pre = ImagePreprocessing(input_size=(28, 28), channels=1, mean=[0.1], std=[0.3], white_on_black=True, fit="digit")
    meta = ModelMetadata.model_construct(preprocessing=pre, name="m")
    digit = np.zeros((28, 28), dtype=np.uint8)
    digit[6:22, 12:16] = 255
    limits = {"max_bytes": 1 << 20, "max_pixels": 784, "max_side": 28, "max_scans": 100}

    def png(a: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        return buf.getvalue()

    for own in (digit, 255 - digit):  # MNIST's look, and dark ink on white: taken as they are
        x, _ = to_input(png(own), meta, index=0, inline=True, **limits)
        assert x.shape == (1, 28, 28)
    with pytest.raises(NotAsIs):
        to_input(png(np.clip(200 - digit.astype(int), 0, 255).astype(np.uint8)), meta, index=0, inline=True, **limits)
    x, reading = to_input(png(np.clip(200 - digit.astype(int), 0, 255).astype(np.uint8)), meta, index=0, **limits)
    assert (
        x.shape == (1, 28, 28) and reading.oddness > 0
    )  # off the loop: read as a photo (judged: pixel for pixel is 0)
