"""Work for a request that has gone (its timeout fired) stops: the decode pool does not go on preparing the rest of
its images while the requests queued behind them time out too (found by a hostile-client review, 2026-12-05)."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import socket
import struct
import time
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
    env["NNSERVE_WRITE_TIMEOUT_S"] = "1"
    server = Server(artifact_root, tmp_path_factory.mktemp("abandoned") / "serve.log", **env).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def patient(artifact_root, tmp_path_factory):
    """The same server with the default request timeout (30 s), so that only its client's leaving stops a
    request, and two slots."""
    env = {"NNSERVE_API_WORKERS": "1", "NNSERVE_DECODE_THREADS": "1", "NNSERVE_MAX_CONCURRENCY": "2"}
    server = Server(artifact_root, tmp_path_factory.mktemp("patient") / "serve.log", **env).start()
    yield server
    server.stop()


def jpeg_digit() -> str:
    """A small base64 JPEG: decoded in the pool, behind any costly images there."""
    buf = io.BytesIO()
    Image.new("L", (28, 28), 0).save(buf, format="JPEG")
    return base64.b64encode(buf.getvalue()).decode()


def test_a_timed_out_request_stops_its_decoding_and_starves_no_one(srv):
    heavy = base64.b64encode(costly_png()).decode()
    small = jpeg_digit()
    with httpx.Client(base_url=srv.url, timeout=60) as c:
        r = c.post("/v1/classify", json={"model": "digits-cnn", "images": [heavy] * 40})
        assert r.status_code == 504, r.text  # 40 costly images take far longer than the 1 s allowed
        # the pool's one thread stops the abandoned job at its next image, so this one gets its turn in time
        r = c.post("/v1/classify", json={"model": "digits-cnn", "images": [small]})
        assert r.status_code == 200, r.text


def test_an_answer_read_slowly_is_cut_by_neither_the_request_nor_the_write_timeout(srv):
    """A helper's audit: the request timeout kept running while an answer waited for a slow client to read the
    answers before it on the connection (requests pipelined), and cut it: uvicorn's plain-text 500, an ERROR
    line in the log. The timeout is for starting an answer; a client that reads, however slowly, gets all of
    them (one that reads nothing is the write timeout's, tests/test_slow_clients.py). The same audit: the write
    timeout saw no progress while the kernel's send queue (megabytes) drained and the transport's buffer stayed
    still, and dropped the connection of a client reading 1 MB/s (here the fourth answer was cut)."""
    rows = 64
    body = json.dumps(
        {
            "inputs": [
                {"name": "input", "shape": [rows, 1, 28, 28], "datatype": "FP32", "data": [0.123456] * (rows * 784)}
            ]
        }
    ).encode()
    head = "POST /v2/models/digits-ae/infer HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    request = head.encode() + b"Content-Length: %d\r\n\r\n" % len(body) + body
    pipelined = 6  # about 1 MB of answer each: more than the socket buffers hold, so the later answers wait
    logged = srv.log_path.stat().st_size
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", srv.port))
        s.sendall(request * pipelined)
        s.settimeout(30)
        got = b""
        while got.count(b"HTTP/1.1 ") < pipelined or not got.rstrip().endswith(b"}"):
            chunk = s.recv(65536)
            assert chunk, got.count(b"HTTP/1.1 ")
            got += chunk
            time.sleep(len(chunk) / 1e6)  # about 1 MB/s: 6 s for the six answers, the timeout 1 s
    statuses = re.findall(rb"HTTP/1\.1 (\d{3})", got)
    assert statuses == [b"200"] * pipelined, statuses
    assert b"ASGI callable returned" not in srv.log_path.read_bytes()[logged:]


def test_a_request_whose_client_left_stops_its_work_and_starves_no_one(patient):
    """A helper's audit: a client that sent 64 costly images and left did not stop their decoding, which ran on
    (7.6 s) holding the slot and the pool's threads, and the requests behind it waited. Its work now stops when
    the connection is lost."""
    heavy = base64.b64encode(costly_png()).decode()
    body = json.dumps({"model": "digits-cnn", "images": [heavy] * 40}).encode()
    head = f"POST /v1/classify HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
    with httpx.Client(base_url=patient.url, timeout=60) as c:
        with socket.create_connection(("127.0.0.1", patient.port), timeout=30) as gone:
            gone.sendall(head.encode() + b"\r\n\r\n" + body)
            time.sleep(0.5)  # its images are being decoded by the pool's one thread
        started = time.monotonic()
        r = c.post("/v1/classify", json={"model": "digits-cnn", "images": [jpeg_digit()]})
        waited = time.monotonic() - started
        assert r.status_code == 200, r.text
        # the 40 images take several seconds (the request timeout of 30 s would stop them): now one image at most
        assert waited < 3.0, f"the request behind the abandoned one waited {waited:.1f} s"


def test_the_door_reads_no_more_from_a_client_that_reads_none_of_its_429s(patient):
    """A helper's audit: with every slot taken, a client pipelining requests and reading none of the 429s shed
    at the door (service/transport.py) had each one buffered for it, about three times what it sent (a worker's
    memory 485 -> 646 MB in 8 s), until the write timeout dropped it. Now the door reads no more of its requests
    until it reads its answers: the 429s it gets stay within what the socket buffers hold."""
    heavy = base64.b64encode(costly_png()).decode()
    body = json.dumps({"model": "digits-cnn", "images": [heavy] * 40}).encode()
    head = f"POST /v1/classify HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
    holders = [socket.create_connection(("127.0.0.1", patient.port), timeout=30) for _ in range(2)]
    try:
        for h in holders:  # both slots taken for seconds (the pool's one thread decodes 80 costly images)
            h.sendall(head.encode() + b"\r\n\r\n" + body)
        time.sleep(0.5)
        before = patient.errors("too_many_requests")
        flood = b"POST /v1/classify HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n" * 1000  # 62 kB
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", patient.port))
            s.settimeout(0.2)
            sent, until = 0, time.monotonic() + 2.0
            while time.monotonic() < until:
                with contextlib.suppress(TimeoutError):  # its socket buffers are full: the server reads no more
                    sent += s.send(flood)
            answered = patient.errors("too_many_requests") - before
    finally:
        for h in holders:
            h.close()
    assert sent > 1_000_000, sent  # the client got megabytes of requests off (the kernel's buffers took them)
    # 429s of about 300 bytes: what the socket's buffers hold (12,290 here; before, 168,000 in the 2 s)
    assert answered < 50_000, (answered, sent)
