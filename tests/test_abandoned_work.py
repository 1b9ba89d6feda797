"""Work for a request that has gone (its timeout fired) stops: the decode pool does not go on preparing the rest of
its images while the requests queued behind them time out too (found by a hostile-client review, 2026-12-05)."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import httpx
import pytest
from PIL import Image

from tests.server import Server

pytestmark = [pytest.mark.server, pytest.mark.slow]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def costly_png(side: int = 3400) -> bytes:
    """A 16-bit grey PNG of side x side pixels in about 30 KB (one bright bar, the rest black): within every
    limit, and a tenth of a second or more to decode and prepare."""
    row = bytearray(side * 2)
    row[side : side + 100] = b"\xff" * 100
    ihdr = struct.pack(">IIBBBBB", side, side, 16, 0, 0, 0, 0)
    idat = zlib.compress((b"\x00" + bytes(row)) * side, 9)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def srv(artifact_root, tmp_path_factory):
    env = {"NNSERVE_API_WORKERS": "1", "NNSERVE_DECODE_THREADS": "1", "NNSERVE_REQUEST_TIMEOUT_S": "1"}
    server = Server(artifact_root, tmp_path_factory.mktemp("abandoned") / "serve.log", **env).start()
    yield server
    server.stop()


def test_a_timed_out_request_stops_its_decoding_and_starves_no_one(srv):
    heavy = base64.b64encode(costly_png()).decode()
    buf = io.BytesIO()
    Image.new("L", (28, 28), 0).save(buf, format="JPEG")  # a JPEG: decoded in the pool, behind the costly images
    small = base64.b64encode(buf.getvalue()).decode()
    with httpx.Client(base_url=srv.url, timeout=60) as c:
        r = c.post("/v1/classify", json={"model": "digits-cnn", "images": [heavy] * 40})
        assert r.status_code == 504, r.text  # 40 costly images take far longer than the 1 s allowed
        # the pool's one thread stops the abandoned job at its next image, so this one gets its turn in time
        r = c.post("/v1/classify", json={"model": "digits-cnn", "images": [small]})
        assert r.status_code == 200, r.text
