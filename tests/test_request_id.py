"""X-Request-ID: on every response (success, error, health, metrics), echoed when the client sent a plausible
one, replaced otherwise; and prefixed to nnserve's log lines while a request is handled."""

from __future__ import annotations

import logging
import re

import pytest

from service.request_id import REQUEST_ID, RequestIdFilter, request_id_for

HEX32 = re.compile(r"[0-9a-f]{32}")


def test_ids_are_echoed_only_when_plausible():
    assert request_id_for([(b"x-request-id", b"client-42.a:b_c")]) == "client-42.a:b_c"
    assert request_id_for([(b"X-Request-ID", b"abc")]) == "abc"
    for bad in (b"", b"x" * 129, b"has space", b"new\nline", "é".encode()):
        assert HEX32.fullmatch(request_id_for([(b"x-request-id", bad)])), bad
    a, b = request_id_for([]), request_id_for([])
    assert HEX32.fullmatch(a) and a != b


def test_log_records_carry_the_id_inside_a_request():
    record = logging.LogRecord("bentoml.nnserve", logging.ERROR, __file__, 1, "inference failed for %s", ("m",), None)
    RequestIdFilter().filter(record)
    assert record.getMessage() == "inference failed for m"  # outside a request: unchanged
    token = REQUEST_ID.set("abc123")
    try:
        record = logging.LogRecord("bentoml.nnserve", logging.ERROR, __file__, 1, "failed for %s", ("m",), None)
        RequestIdFilter().filter(record)
        assert record.getMessage() == "[request abc123] failed for m" and record.request_id == "abc123"
    finally:
        REQUEST_ID.reset(token)


@pytest.mark.server
@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/v1/sentiment", {"model": "synthetic-lstm", "texts": ["great"]}, 200),
        ("POST", "/v1/sentiment", {"model": "nope", "texts": ["great"]}, 404),
        ("POST", "/v1/sentiment", {"texts": []}, 400),
        ("GET", "/v1/models", None, 200),
        ("GET", "/livez", None, 200),
        ("GET", "/readyz", None, 200),
        ("GET", "/metrics", None, 200),
    ],
)
def test_every_response_carries_an_id(client, method, path, body, status):
    r = client.request(method, path, json=body)
    assert r.status_code == status, r.text
    assert HEX32.fullmatch(r.headers["x-request-id"])
    mine = client.request(method, path, json=body, headers={"X-Request-ID": "trace-7f3a"})
    assert mine.headers["x-request-id"] == "trace-7f3a"
    assert len(mine.headers.get_list("x-request-id")) == 1


def _call(app, path: str) -> list[dict]:
    """One ASGI request through RequestIdMiddleware around ``app`` -> the messages it sent."""
    import asyncio

    from service.request_id import RequestIdMiddleware

    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": [(b"x-request-id", b"abc-1")]}
    asyncio.run(RequestIdMiddleware(app)(scope, receive, send))
    return sent


@pytest.mark.parametrize("path", ["/v1/classify", "/v2/models/m/infer"])
def test_an_exception_no_layer_answered_is_a_500_in_the_routes_shape(path):
    """BentoML's TimeoutMiddleware waits for the first message sent, not for the app's failure: without this
    backstop a client heard nothing until BentoML's timeout."""
    import json

    async def broken(scope, receive, send) -> None:
        raise ValueError("a bug")

    start, body = _call(broken, path)
    headers = dict(start["headers"])
    assert start["status"] == 500 and headers[b"x-request-id"] == b"abc-1" and headers[b"connection"] == b"close"
    expected = (
        {"error": "internal error"}
        if path.startswith("/v2")
        else {"error": {"code": "internal_error", "message": "internal error", "details": []}}
    )
    assert json.loads(body["body"]) == expected and "a bug" not in body["body"].decode()


def test_the_backstops_500_is_counted_and_its_path_logged_on_one_line(caplog):
    """An observability audit's (2026-12-07): the backstop's 500 moved no counter, so NnserveInternalErrors stayed
    silent, and a path holding a decoded "%0a" was logged as it is: a client could write log lines of its own."""
    from service.metrics import ERRORS
    from service.routes import endpoint_label

    async def broken(scope, receive, send) -> None:
        raise ValueError("a bug")

    paths = ["/v1/classify", "/v1/classify\n2026-12-07 INFO forged line"]
    counted = [ERRORS.labels(endpoint_label(p), "internal_error")._value for p in paths]  # this process's own
    before = sum(c.get() for c in set(counted))
    with caplog.at_level("ERROR"):
        for path in paths:
            _call(broken, path)
    assert sum(c.get() for c in set(counted)) == before + 2
    logged = [r.getMessage() for r in caplog.records if "unhandled error" in r.getMessage()]
    assert logged == [
        "unhandled error in POST /v1/classify",
        "unhandled error in POST /v1/classify\\n2026-12-07 INFO forged line",
    ]


def test_an_exception_after_the_answer_started_is_left_to_the_server():
    async def half(scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise ValueError("a bug")

    with pytest.raises(ValueError):
        _call(half, "/v1/classify")
