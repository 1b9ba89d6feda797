"""Shedding at the door (service/transport.py): with every concurrency slot taken, a request to a model route
is answered 429 from its head alone (the envelope or the protocol's error, Retry-After, a request id, counted
in nnserve_errors_total), its body is read and dropped, and the kept-alive connection serves the next request
normally once a slot is free; health probes are never shed."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time

import httpx
import numpy as np
import pytest

from tests.conftest import png_bytes
from tests.raw_http import answer, head
from tests.server import Server

pytestmark = [pytest.mark.server]


@pytest.fixture(scope="module")
def one_slot(artifact_root, tmp_path_factory):
    srv = Server(
        artifact_root,
        tmp_path_factory.mktemp("door") / "serve.log",
        NNSERVE_API_WORKERS="1",
        NNSERVE_MAX_CONCURRENCY="1",
    )
    srv.start()
    yield srv
    srv.stop()


def _request(path: str, body: bytes) -> bytes:
    return head(path, len(body)) + body


def test_a_full_worker_sheds_at_the_door_and_the_connection_lives_on(one_slot, digits):
    # the slot holder: PNGs of 5000 x 5000 black pixels, a few kB each, whose decoding takes a while
    big = base64.b64encode(png_bytes(np.zeros((5000, 5000), np.uint8))).decode()
    holder = threading.Thread(
        target=lambda: httpx.post(
            one_slot.url + "/v1/classify", json={"model": "digits-cnn", "images": [big] * 12}, timeout=120
        )
    )
    small = json.dumps(
        {"model": "digits-cnn", "images": [base64.b64encode(png_bytes(np.asarray(digits.images[0][0]))).decode()]}
    )
    v2 = json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [0.0] * 784}]})
    with socket.create_connection(("127.0.0.1", one_slot.port), timeout=30) as sock:
        holder.start()
        time.sleep(0.5)  # the holder's body is in and its images are decoding
        for i in range(3):  # each body is dropped whole: the next request on the connection parses cleanly
            request = _request("/v1/classify", small.encode())
            if i == 0:  # the answer comes from the head alone, before a byte of the body is sent
                head_end = request.index(b"\r\n\r\n") + 4
                sock.sendall(request[:head_end])
                status, headers, body = answer(sock)
                sock.sendall(request[head_end:])
            else:
                sock.sendall(request)
                status, headers, body = answer(sock)
            assert status == 429, (status, body)
            assert json.loads(body)["error"]["code"] == "too_many_requests"
            assert headers["retry-after"] == "1" and len(headers["x-request-id"]) == 32
            assert headers["content-type"] == "application/json"
        sock.sendall(_request("/v2/models/digits-cnn/infer", v2.encode()))
        status, _, body = answer(sock)
        assert status == 429 and set(json.loads(body)) == {"error"}  # the protocol's own error shape
        assert httpx.get(one_slot.url + "/v2/health/ready", timeout=10).status_code == 200  # never shed
        assert holder.is_alive(), "the slot holder finished too early: the test proved nothing"
        holder.join(120)
        sock.sendall(_request("/v1/classify", small.encode()))  # the same connection, a slot free again
        status, _, body = answer(sock)
        assert status == 200, body
        assert json.loads(body)["predictions"][0]["label"]
    metrics = httpx.get(one_slot.url + "/metrics", timeout=10).text
    assert 'nnserve_errors_total{code="too_many_requests",endpoint="/v1/classify"} 3.0' in metrics
