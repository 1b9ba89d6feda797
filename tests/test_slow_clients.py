"""Slow, silent and oversized clients (issue 14, items 2, 4, 7 and 8): what a client can hold before its request
is admitted is bounded in time, bytes and connections, and holding it costs other clients nothing.

Fast versions against one server with small limits; `make probe` (bench/probe.py) sends the full-size ones."""

from __future__ import annotations

import base64
import json
import socket
import time

import httpx
import numpy as np
import pytest

from tests.conftest import png_bytes
from tests.raw_http import answer, head
from tests.server import Server

pytestmark = [pytest.mark.server, pytest.mark.slow]
LIMITS = {
    "NNSERVE_API_WORKERS": "1",
    "NNSERVE_MAX_CONCURRENCY": "2",
    "NNSERVE_BODY_TIMEOUT_S": "1.5",
    "NNSERVE_HEAD_TIMEOUT_S": "1.5",
    "NNSERVE_KEEP_ALIVE_S": "1",
    "NNSERVE_MAX_BODY_BYTES": "200000",
    "NNSERVE_MAX_BODY_IN_FLIGHT": "300000",
    "NNSERVE_MAX_JSON_ITEMS": "1000",
    "NNSERVE_MAX_CONNECTIONS": "40",
    "NNSERVE_WRITE_TIMEOUT_S": "1.5",
}


@pytest.fixture(scope="module")
def srv(artifact_root, tmp_path_factory):
    server = Server(artifact_root, tmp_path_factory.mktemp("slow") / "serve.log", **LIMITS).start()
    yield server
    server.stop()


def digit_body() -> bytes:
    img = base64.b64encode(png_bytes(np.random.default_rng(0).integers(0, 255, (28, 28), dtype=np.uint8))).decode()
    return json.dumps({"model": "digits-cnn", "images": [img]}).encode()


def connect(srv: Server, timeout: float = 10.0) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=timeout)
    return s


def closed(s: socket.socket, within: float) -> bool:
    s.settimeout(within)
    try:
        while s.recv(65536):
            pass
        return True
    except (TimeoutError, ConnectionResetError):
        return False


def test_trickling_bodies_hold_no_admission_slot(srv):
    tricklers = []
    for _ in range(6):  # three times the concurrency limit, each with a body half sent
        s = connect(srv)
        s.sendall(head("/v1/classify", 5000) + b'{"model": ')
        tricklers.append(s)
    time.sleep(0.3)
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        codes = [
            c.post("/v1/classify", content=digit_body(), headers={"content-type": "application/json"}).status_code
            for _ in range(5)
        ]
    assert codes == [200] * 5  # before: 429, every slot held by a client that had not sent its body
    for s in tricklers:
        s.close()


def test_a_body_that_does_not_arrive_in_time_is_a_408_and_the_connection_closed(srv):
    s = connect(srv)
    t0 = time.monotonic()
    s.sendall(head("/v1/classify", 1000) + b'{"model": "digits-cnn", ')
    status, headers, body = answer(s)
    assert status == 408 and headers.get("connection") == "close"
    assert json.loads(body)["error"]["code"] == "request_timeout" and "1.5 s" in json.loads(body)["error"]["message"]
    assert 1.4 < time.monotonic() - t0 < 5
    assert closed(s, 2)


@pytest.mark.parametrize("path", ["/nope", "/livez", "/metrics"])
def test_a_body_declared_over_the_limit_is_a_413_on_any_path_before_it_is_read(srv, path):
    s = connect(srv)
    s.sendall(head(path, 300_000_000, "text/plain") + b"x" * 1000)  # 300 MB declared, never sent
    status, headers, body = answer(s)
    assert status == 413 and headers.get("connection") == "close", (status, headers)
    assert json.loads(body)["error"]["code"] == "payload_too_large"
    assert closed(s, 2)


def test_declared_sizes_alone_turn_no_one_away(srv):
    """A helper's audit: sizes were reserved as declared, so a few connections declaring large bodies and sending
    nothing (and sixteen declaring small ones, for the small bodies' reserve) turned every request away with 503
    for as long as the body timeout, and again each time they were sent. Only bytes received count now."""
    sizes = [200_000, 100_000] + [300_000 // 64] * 16  # the budget, then the small bodies' reserve, declared full
    idle = [connect(srv) for _ in sizes]
    for size, s in zip(sizes, idle, strict=True):  # one byte of each sent
        s.sendall(head("/v1/classify", size) + b"{")
    time.sleep(0.3)
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        r = c.post("/v1/classify", content=digit_body(), headers={"content-type": "application/json"})
        assert r.status_code == 200, r.text  # before: 503 overloaded
    for s in idle:
        s.close()


def test_uploads_past_the_body_budget_get_503_before_being_read_and_small_ones_use_the_reserve(srv):
    holders = [connect(srv), connect(srv)]
    holders[0].sendall(head("/v1/classify", 200_000) + b"{" * 199_999)  # 200 kB + 100 kB declared, all but a
    holders[1].sendall(head("/v1/classify", 100_000) + b"{" * 99_999)  # byte sent: the 300 kB budget is full
    time.sleep(0.5)
    for size in (150_000, 5_000):  # the 5 kB body is over 1/64 of the budget: no reserve for it
        refused = connect(srv)
        refused.sendall(head("/v1/classify", size))  # nothing of the body sent: refused from the head alone
        status, headers, body = answer(refused)
        assert status == 503 and headers.get("retry-after") == "1", size
        assert json.loads(body)["error"]["code"] == "overloaded"
        refused.close()
    small = digit_body()
    assert len(small) <= 300_000 // 64
    with httpx.Client(base_url=srv.url, timeout=10) as c:  # a small request fits the reserve
        r = c.post("/v1/classify", content=small, headers={"content-type": "application/json"})
        assert r.status_code == 200, r.text
    for h in holders:
        h.close()


def test_a_client_that_reads_none_of_its_answers_loses_the_connection_not_a_slot(srv):
    """A helper's audit: a client that pipelined requests and read nothing held an admission slot for the whole
    request timeout (30 s) once the socket's buffers were full, then got uvicorn's plain-text 500; as many such
    clients as slots turned everyone away. Now the connection is dropped after the write timeout."""
    logged = srv.log_path.stat().st_size
    stalled = []
    for _ in range(2):  # as many as the concurrency limit
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", srv.port))
        s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n" * 400)  # megabytes of answers, none read
        stalled.append(s)
    time.sleep(4)  # the write timeout (1.5 s) and the watchdog's tick
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        assert c.get("/v1/models").status_code == 200  # before: 429, both slots held
        metrics = c.get("/metrics").text
    assert 'nnserve_errors_total{code="client_stalled",endpoint="/v1/models"}' in metrics
    for s in stalled:  # what the kernel had buffered, then the end of the connection
        assert closed(s, 5)
        s.close()
    # the answer being written when the connection was dropped learns it at once: it wrote to the closed socket
    # and raised ("Exception in ASGI application", a RuntimeError's traceback per connection in the log)
    assert b"Exception in ASGI application" not in srv.log_path.read_bytes()[logged:]


def test_a_json_body_with_too_many_items_is_refused_before_parsing(srv):
    raw = b'{"model": "digits-cnn", "images": [' + b",".join([b"1"] * 5000) + b"]}"
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        r = c.post("/v1/classify", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 400 and "more than 1000 array items" in r.json()["error"]["message"]
        r = c.post("/v2/models/digits-cnn/infer", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 400 and "more than 1000 array items" in r.json()["error"]
        # the media type's spelling does not let a body past the count (FastAPI and /v2 parse it all the same)
        r = c.post("/v1/classify", content=raw, headers={"content-type": "Application/JSON"})
        assert r.status_code == 400 and "more than 1000 array items" in r.json()["error"]["message"]
        for ctype in ("application/octet-stream", "text/plain", "multipart/form-data; boundary=x", "Multipart/x"):
            r = c.post("/v2/models/digits-cnn/infer", content=raw, headers={"content-type": ctype})
            assert r.status_code == 400 and "more than 1000 array items" in r.json()["error"], ctype
        # /v1 reads the whole body as JSON: a binary request's header length does not shorten what is counted
        r = c.post(
            "/v1/classify",
            content=raw,
            headers={"content-type": "application/json", "inference-header-content-length": "0"},
        )
        assert r.status_code == 400 and "more than 1000 array items" in r.json()["error"]["message"]


def test_a_binary_tensor_full_of_commas_is_not_counted_as_json(srv):
    """Of a /v2 binary request only the JSON header is counted: tensor bytes that happen to be ',' (44) are data."""
    header = json.dumps(
        {
            "inputs": [
                {"name": "input", "shape": [2, 1, 28, 28], "datatype": "FP32", "parameters": {"binary_data_size": 6272}}
            ]
        }
    ).encode()
    tensor = b"," * 6272  # 1,568 floats of bytes 0x2c2c2c2c: 2.4e-12, a dark image, over the limit of 1000 commas
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        r = c.post(
            "/v2/models/digits-cnn/infer",
            content=header + tensor,
            headers={"content-type": "application/octet-stream", "inference-header-content-length": str(len(header))},
        )
    assert r.status_code == 200, r.text


def test_a_silent_connection_is_answered_408_and_closed_within_the_head_timeout(srv):
    before = srv.errors("request_timeout")
    s = connect(srv)
    t0 = time.monotonic()
    status, headers, _ = answer(s)
    assert status == 408 and headers.get("connection") == "close"
    assert 1.4 < time.monotonic() - t0 < 4
    assert closed(s, 2)
    slow = connect(srv)  # a head sent a few bytes at a time is timed from its first byte
    t0 = time.monotonic()
    for part in (b"GET /livez HT", b"TP/1.1\r\nHost: x\r\n", b"X-A: b\r\n"):
        slow.sendall(part)
        time.sleep(0.4)
    assert answer(slow)[0] == 408 and time.monotonic() - t0 < 4
    # counted: the slow head (the silent connection, no request at all, is not)
    assert srv.errors("request_timeout") == before + 1


def test_a_stalled_head_with_an_absolute_url_without_a_path_is_a_408_and_the_timers_go_on(srv):
    """Its path is None to httptools: counting the 408 raised, which stopped the worker's watchdog for good (no
    later timeout fired); now it is answered, and so is the next stalled head."""
    for part in (b"GET http://x HTTP/1.1\r\nHost: x\r\n", b"GET /livez HTTP/1.1\r\nHost: x\r\n"):
        s = connect(srv)
        s.sendall(part)
        t0 = time.monotonic()
        assert answer(s)[0] == 408 and time.monotonic() - t0 < 4


def test_a_request_head_over_the_limit_is_a_431_at_once(srv):
    before = srv.errors("header_too_large")
    s = connect(srv)
    t0 = time.monotonic()
    s.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
    status, headers, body = answer(s)
    assert status == 431 and headers.get("connection") == "close" and time.monotonic() - t0 < 1
    assert "16384 bytes" in json.loads(body)["error"]["message"]
    assert srv.errors("header_too_large") == before + 1
    ok = connect(srv)  # just under the limit is served
    ok.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 15_000 + b"\r\n\r\n")
    assert answer(ok)[0] == 200


def test_idle_connections_past_the_cap_make_room_for_a_new_client(srv):
    silent = [connect(srv) for _ in range(60)]  # over the cap of 40
    time.sleep(0.2)
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        assert c.get("/livez").status_code == 200
        r = c.post("/v1/classify", content=digit_body(), headers={"content-type": "application/json"})
        assert r.status_code == 200
    state = [closed_now(s) for s in silent]  # well before the 1.5 s head timeout
    assert sum(state) >= 20  # room was made: at most 40 open, the new client's among them
    assert not any(state[-10:])  # the newest stay: the ones idle longest were closed
    for s in silent:
        s.close()


def closed_now(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def test_a_connection_past_the_cap_while_every_other_is_busy_is_a_counted_503(srv):
    time.sleep(2)  # earlier tests' idle connections closed (keep-alive 1 s, head timeout 1.5 s): none to make room of
    before = srv.errors("overloaded")
    body = digit_body()
    busy = []
    for _ in range(40):  # the cap: each with a request in flight (its body not all sent), read before the next comes
        s = connect(srv)
        s.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
        s.sendall(b"Content-Length: %d\r\n\r\n" % len(body) + body[:10])
        busy.append(s)
        time.sleep(0.01)
    time.sleep(0.2)
    late = connect(srv)
    status, headers, reply = answer(late)
    assert status == 503 and headers.get("retry-after") == "1", reply
    assert "connections busy" in json.loads(reply)["error"]["message"]
    for s in busy:
        s.close()
    assert srv.errors("overloaded") == before + 1


def test_a_kept_alive_connection_is_closed_after_the_idle_timeout(srv):
    s = connect(srv)
    s.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer(s)[0] == 200
    assert closed(s, 3)  # NNSERVE_KEEP_ALIVE_S=1
