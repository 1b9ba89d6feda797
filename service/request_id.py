"""X-Request-ID on every response, and in nnserve's log lines.

A client's own ``X-Request-ID`` is echoed when it is a plausible id (1-128 characters of letters, digits and
``._:-``); anything else, or none, gets a fresh one
(32 hex digits: 16 random to the worker process, then a counter). The id lives in a context variable for
the request's task, and ``RequestIdFilter`` prefixes it to the log records of the ``bentoml.nnserve``
logger, so a log line can be matched with the response a client saw.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from service.errors import ApiError, quoted
from service.metrics import ERRORS
from service.middleware import CLIENT_GONE, render
from service.routes import endpoint_label, is_oip, without_trailing_slashes

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

HEADER = b"x-request-id"
_VALID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
# a fresh id: this process's random 64 bits, then a counter (uuid4 took 2.4 us a request: os.urandom each time)
_PREFIX = os.urandom(8).hex()
_COUNTER = itertools.count(1)
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("nnserve_request_id", default=None)
# perf_counter() when the request arrived (service/stats.py's statistics start there); gRPC calls set it too
ARRIVED: contextvars.ContextVar[float | None] = contextvars.ContextVar("nnserve_arrived", default=None)
log = logging.getLogger("bentoml.nnserve")


def request_id_for(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's X-Request-ID when it is plausible, else a new one."""
    for name, value in headers:
        if name.lower() == HEADER:
            if _VALID.fullmatch(value):
                return value.decode("ascii")
            break
    return f"{_PREFIX}{next(_COUNTER):016x}"


class RequestIdMiddleware:
    """Outermost of nnserve's middleware: every response that passes through it, error or not, carries the
    id (BentoML's own outer middleware, e.g. its backstop timeout, answers without it).

    It is also the backstop for an exception that no inner layer answered: a 500 in the route's error shape
    (the /v1 envelope, /v2's ``{"error": ...}``), the connection closed. Without it the client would hear nothing
    until BentoML's own timeout: BentoML's TimeoutMiddleware waits for the first message sent or its timer, not
    for the app's failure (an Inference-Header-Content-Length of "²" once hung a request that way)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope = without_trailing_slashes(scope)  # first of all: every layer below reads the route's own path
        arrived = ARRIVED.set(time.perf_counter())
        rid = request_id_for(scope.get("headers", []))
        token = REQUEST_ID.set(rid)
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != HEADER]
                message["headers"] = [*headers, (HEADER, rid.encode("ascii"))]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
            if not started:  # the client went away before its answer: the one way nnserve's stack ends unanswered
                await _answer(CLIENT_GONE, str(scope.get("path", "")), send_with_id)
        except Exception:
            if started:  # half an answer is out: only closing the connection is left (the server does that)
                raise
            path = str(scope.get("path", ""))
            log.exception("unhandled error in %s %s", scope.get("method"), quoted(path))
            ERRORS.labels(endpoint_label(path), "internal_error").inc()  # what NnserveInternalErrors alerts on
            await _answer(ApiError("internal_error", "internal error", close=True), path, send_with_id)
        finally:
            REQUEST_ID.reset(token)
            ARRIVED.reset(arrived)


async def _answer(err: ApiError, path: str, send: Send) -> None:
    """``err`` in the route's envelope. Sent for a client that went away too: the server drops it, and BentoML's
    timeout layer above, which waits for a request's first message, lets its task go (it held each such request
    for request_timeout_s + 5 s, so a SIGTERM waited that long to end a worker)."""
    body = render(err, is_oip(path))
    headers = [(k.encode(), v.encode()) for k, v in err.headers().items()]
    await send(
        {
            "type": "http.response.start",
            "status": err.status,
            "headers": [*headers, (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


class RequestIdFilter(logging.Filter):
    """Prefix ``[request <id>]`` to records logged while a request is being handled."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = REQUEST_ID.get()
        if rid is not None and not getattr(record, "request_id", None):
            record.request_id = rid
            record.msg = f"[request {rid}] {record.msg}"
        return True
