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
