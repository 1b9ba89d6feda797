"""Graceful shutdown: on SIGTERM readiness turns false first, requests keep being served for the drain
period, and a request in flight when the listener closes still completes; then the server exits."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import time

import httpx
import numpy as np
import pytest

from tests.conftest import png_bytes
from tests.server import Server

pytestmark = [pytest.mark.server, pytest.mark.slow]
DRAIN_S = 2.0


def test_sigterm_drains_then_finishes_requests_in_flight(artifact_root, digits, tmp_path):
    srv = Server(
        artifact_root, tmp_path / "serve.log", NNSERVE_DRAIN_S=str(DRAIN_S), NNSERVE_MODELS='["digits-cnn"]'
    ).start()
    assert srv.proc is not None
    # /readyz answers from whichever worker is up first: wait until both have started, since both must drain
    deadline = time.monotonic() + 30
    while srv.log().count("Service nnserve initialized") < 2:
        assert time.monotonic() < deadline, srv.log()
        time.sleep(0.1)
    image = base64.b64encode(png_bytes(np.asarray(digits.images[0][0]))).decode()
    body = json.dumps({"model": "digits-cnn", "images": [image]}).encode()
    try:
        # a request in flight: headers and half of the body sent, the rest held back
        held = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
        head = f"POST /v1/classify HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
        held.sendall(head.encode() + b"\r\n\r\n" + body[:40])
        # and clients that went away halfway through their bodies: nothing of theirs may hold up the exit (their
        # requests ended unanswered, and BentoML's timeout layer kept each task for request_timeout_s + 5 s, 35 s)
        for _ in range(4):
            with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as gone:
                gone.sendall(head.encode() + b"\r\n\r\n" + body[:40])
        time.sleep(0.3)

        signalled = time.monotonic()
        os.kill(srv.proc.pid, signal.SIGTERM)  # what `docker stop` does: SIGTERM to bentoml serve only
        with httpx.Client(base_url=srv.url, timeout=5) as c:
            while c.get("/readyz").status_code == 200:  # every worker turns not ready at once
                assert time.monotonic() - signalled < 1.0, "readiness still true 1 s after SIGTERM"
                time.sleep(0.05)
            assert c.get("/v2/health/ready").json() == {"ready": False}
            assert time.monotonic() - signalled < DRAIN_S / 2
            # while draining, new requests are still served
            r = c.post("/v1/classify", content=body, headers={"content-type": "application/json"})
            assert r.status_code == 200, r.text

        # after the drain period uvicorn's shutdown starts in every worker (bentoml serve's arbiter keeps its
        # copy of the listening socket until the workers exit, so the log is the signal to wait for) ...
        deadline = time.monotonic() + DRAIN_S + 10
        while srv.log().count("closing the listener") < 2:
            assert time.monotonic() < deadline, srv.log()
            time.sleep(0.1)
        assert time.monotonic() - signalled >= DRAIN_S - 0.1
        time.sleep(0.5)
        # ... and the request in flight still completes, then the server exits
        held.sendall(body[40:])
        response = b""
        while chunk := held.recv(65536):  # the server closes the connection after answering (it is stopping)
            response += chunk
        held.close()
        head, _, payload = response.decode().partition("\r\n\r\n")
        assert head.startswith("HTTP/1.1 200 "), response[:300]
        assert json.loads(payload)["predictions"][0]["label"]
        srv.proc.wait(timeout=10)
    finally:
        srv.stop()
    log = srv.log()
    assert "SIGTERM: not ready" in log and "closing the listener" in log


def test_services_mode_model_services_outlive_the_drain(artifact_root, digits, tmp_path):
    """With NNSERVE_BATCHING=services the model services get SIGTERM with the API workers; they keep serving a
    second longer than the drain, so requests during it still get answers."""
    srv = Server(
        artifact_root,
        tmp_path / "serve.log",
        NNSERVE_DRAIN_S=str(DRAIN_S),
        NNSERVE_MODELS='["digits-cnn"]',
        NNSERVE_BATCHING="services",
        NNSERVE_API_WORKERS="1",
    ).start()
    assert srv.proc is not None
    image = base64.b64encode(png_bytes(np.asarray(digits.images[0][0]))).decode()
    body = {"model": "digits-cnn", "images": [image]}
    try:
        with httpx.Client(base_url=srv.url, timeout=10) as c:
            assert c.post("/v1/classify", json=body).status_code == 200
            signalled = time.monotonic()
            os.kill(srv.proc.pid, signal.SIGTERM)
            while c.get("/readyz").status_code == 200:
                assert time.monotonic() - signalled < 1.0, "readiness still true 1 s after SIGTERM"
                time.sleep(0.05)
            answered = 0
            while time.monotonic() - signalled < DRAIN_S - 0.3:  # the whole drain: every request is served
                r = c.post("/v1/classify", json=body)
                assert r.status_code == 200, (round(time.monotonic() - signalled, 2), r.text)
                answered += 1
                time.sleep(0.1)
            assert answered >= 5
        srv.proc.wait(timeout=30)
    finally:
        srv.stop()
    assert "model service serving for" in srv.log()
