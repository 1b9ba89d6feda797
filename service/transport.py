"""The connection layer's limits, below the ASGI app: what a client can hold before it has sent a request.

BentoML runs each API worker on uvicorn with its httptools protocol, which keeps a connection that sends
nothing open for ever, reads a request head of any size (a 64 MB header costs seconds of CPU) and accepts
connections until the process runs out of file descriptors. ``GuardedHttpTools`` is that protocol with:

- a request-head timeout: the head (request line and headers) must arrive within ``head_timeout_s`` of the
  connection opening or of the request's first byte (408, connection closed);
- a head size limit: more than ``max_head_bytes`` before the blank line ends it is a 431, connection closed,
  decided on the raw bytes before the parser sees them;
- an idle keep-alive timeout of ``keep_alive_s`` (uvicorn's own timer, given nnserve's setting);
- a cap of ``max_connections`` per worker: a new connection past it closes the connection that has been idle
  longest (no request in progress: silent, sending its head, or kept alive), so a new client is served
  while idle ones are shed; when every connection is busy the newcomer gets a 503 and is closed.

``install_transport`` registers it as uvicorn's "auto" HTTP protocol (uvicorn's own registry, HTTP_PROTOCOLS), which
BentoML's worker uses, and raises this process's open-file limit to its hard limit.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from dataclasses import dataclass
from typing import Any

import uvicorn.config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.errors import ApiError

log = logging.getLogger("nnserve.transport")
HEAD_END = b"\r\n\r\n"


@dataclass
class Limits:
    head_timeout_s: float = 10.0
    max_head_bytes: int = 16 * 1024
    keep_alive_s: float = 5.0
    max_connections: int = 2048


LIMITS = Limits()
_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large", 503: b"Service Unavailable"}


def _answer(transport: Any, err: ApiError) -> None:
    """A whole HTTP/1.1 answer, ``err`` in the /v1 envelope with its headers, written straight to the socket
    (there is no ASGI app yet to answer through); the caller closes."""
    body = err.body()
    head = [b"HTTP/1.1 %d %s" % (err.status, _REASONS[err.status]), b"content-length: %d" % len(body)]
    head += [f"{k}: {v}".encode() for k, v in {**err.headers(), "connection": "close"}.items()]
    transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)


class GuardedHttpTools(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeout_keep_alive = LIMITS.keep_alive_s  # type: ignore[assignment]
        self._in_head = True  # between a request's first byte (or the connection's start) and its blank line
        self._head_bytes = 0
        self._tail = b""  # the last bytes of the previous chunk: a blank line may straddle two chunks
        self._head_timer: asyncio.TimerHandle | None = None
        self._last_active = 0.0
        self._discarding = False  # answered and closing: what the client still sends is read and dropped

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._last_active = self.loop.time()
        self._start_head_timer()
        if len(self.connections) > LIMITS.max_connections:
            self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._last_active = self.loop.time()
        if self._discarding:
            return
        if self._in_head:
            end = (self._tail + data).find(HEAD_END)
            size = self._head_bytes + (len(data) if end < 0 else end - len(self._tail) + len(HEAD_END))
            if size > LIMITS.max_head_bytes:
                self._stop_head_timer()
                message = f"the request head (request line and headers) is over {LIMITS.max_head_bytes} bytes"
                _answer(self.transport, ApiError("header_too_large", message, status=431))
                self._linger()
                return
            self._head_bytes = size
            self._tail = (self._tail + data)[-3:]
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._in_head:  # a next request on a kept-alive connection: its head is timed and sized anew
            self._in_head, self._head_bytes, self._tail = True, 0, b""
            self._start_head_timer()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._stop_head_timer()
        super().on_headers_complete()

    def _start_head_timer(self) -> None:
        self._stop_head_timer()
        self._head_timer = self.loop.call_later(LIMITS.head_timeout_s, self._head_late)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            message = f"the request head did not arrive within {LIMITS.head_timeout_s:g} s"
            _answer(self.transport, ApiError("request_timeout", message))
            self.transport.close()

    def _linger(self) -> None:
        """Close a second after answering, dropping what arrives meanwhile: closing at once, with the client's
        unread bytes in the socket, would reset the connection and could lose the answer before it is read."""
        self._discarding = True
        self.loop.call_later(1.0, self.transport.close)

    def _idle(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _make_room(self) -> None:
        """Over the cap: close the connection idle longest, or refuse this one if every other is busy."""
        idle = [c for c in self.connections if c is not self and isinstance(c, GuardedHttpTools) and c._idle()]
        if idle:
            oldest = min(idle, key=lambda c: c._last_active)
            oldest._stop_head_timer()
            oldest.transport.close()
            return
        self._stop_head_timer()
        message = f"this worker has {LIMITS.max_connections} connections busy; retry later"
        _answer(self.transport, ApiError("overloaded", message, retry_after=1))
        self.transport.close()


def install_transport(limits: Limits) -> None:
    """Make uvicorn's "auto" HTTP protocol this one, with ``limits``; raise the open-file limit."""
    global LIMITS
    LIMITS = limits
    uvicorn.config.HTTP_PROTOCOLS["auto"] = f"{__name__}:GuardedHttpTools"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):  # a container may forbid it; the connection cap still holds
            log.warning("could not raise the open-file limit from %d", soft)
