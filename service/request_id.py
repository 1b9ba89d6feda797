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
    id (BentoML's own outer middleware, e.g. its backstop timeout, answers without it)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        arrived = ARRIVED.set(time.perf_counter())
        rid = request_id_for(scope.get("headers", []))
        token = REQUEST_ID.set(rid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != HEADER]
                message["headers"] = [*headers, (HEADER, rid.encode("ascii"))]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)
            ARRIVED.reset(arrived)


class RequestIdFilter(logging.Filter):
    """Prefix ``[request <id>]`` to records logged while a request is being handled."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = REQUEST_ID.get()
        if rid is not None and not getattr(record, "request_id", None):
            record.request_id = rid
            record.msg = f"[request {rid}] {record.msg}"
        return True
