"""The connection layer's limits, below the ASGI app: what a client can hold before it has sent a request.

BentoML runs each API worker on uvicorn with its httptools protocol, which keeps a connection that sends
nothing open for ever, reads a request head of any size (a 64 MB header costs seconds of CPU) and accepts
connections until the process runs out of file descriptors. ``GuardedHttpTools`` is that protocol with:

- a request-head timeout: the head (request line and headers) must arrive within ``head_timeout_s`` of the
  connection opening or of the request's first byte (408, connection closed);
- a head size limit: more than ``max_head_bytes`` before the blank line ends it is a 431, connection closed,
  decided on the raw bytes before the parser sees them;
- an idle keep-alive timeout of ``keep_alive_s`` (uvicorn's own timer, given nnserve's setting);
- a write timeout: an answer that has waited ``write_timeout_s`` for a client reading none of it (the socket's
  buffers full, uvicorn's writes paused, nothing read since: neither the transport's buffer nor the kernel's send
  queue shrank) drops the connection, so the request ends and frees
  its admission slot (a client pipelining requests and reading nothing held one for the whole request timeout,
  30 s, and then got uvicorn's plain-text 500);
- a cap of ``max_connections`` per worker: a new connection past it closes the connection that has been idle
  longest (no request in progress: silent, sending its head, or kept alive), so a new client is served
  while idle ones are shed; when every connection is busy the newcomer gets a 503 and is closed;
- even shares of the connections among the API workers (service/balance.py);
- shedding at the door: when every concurrency slot of the worker's AdmissionMiddleware is taken, a request to
  a route that would wait for one gets its 429 (the same envelope, Retry-After and request id) as soon as its
  head is parsed, written straight to the socket; its body is read and dropped and the connection stays open.
  Through the ASGI stack a 429 cost 0.25 ms of CPU, mostly in the layers before admission (docs/BENCHMARKS.md),
  which under a flood left little CPU for the requests admitted.

``install_transport`` registers it as uvicorn's "auto" HTTP protocol (uvicorn's own registry, HTTP_PROTOCOLS), which
BentoML's worker uses, and raises this process's open-file limit to its hard limit.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import resource
import struct
import termios
import time
from dataclasses import dataclass
from typing import Any

import httptools
import uvicorn.config
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service import middleware
from service.balance import BALANCE, attach_worker
from service.deadlines import watchdog
from service.errors import ApiError
from service.metrics import ERRORS, TRANSPORT_ANSWERS
from service.request_id import request_id_for
from service.routes import endpoint_label

log = logging.getLogger("nnserve.transport")
HEAD_END = b"\r\n\r\n"


@dataclass
class Limits:
    head_timeout_s: float = 10.0
    max_head_bytes: int = 16 * 1024
    keep_alive_s: float = 5.0
    max_connections: int = 2048
    workers: int = 1  # API workers sharing the listening socket (service/balance.py)
    write_timeout_s: float = 10.0


LIMITS = Limits()
_REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


def _answer(transport: Any, err: ApiError, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """A whole HTTP/1.1 answer, ``err`` in the /v1 envelope with its headers and the request's id (from
    ``headers``, those of the request parsed so far, or a new one), written straight to the socket (there is no
    ASGI app yet to answer through); the caller closes."""
    ids = {"x-request-id": request_id_for(headers or [])}
    transport.write(_response(err, err.body(), {"connection": "close", **ids}))


def _response(err: ApiError, body: bytes, extra: dict[str, str]) -> bytes:
    head = [b"HTTP/1.1 %d %s" % (err.status, _REASONS[err.status]), b"content-length: %d" % len(body)]
    head += [f"{k}: {v}".encode() for k, v in {**err.headers(), **extra}.items()]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class _Answered:
    """The request cycle of a request answered by the transport: complete, so uvicorn drops its body."""

    response_complete = True
    keep_alive = True
    disconnected = False

    def __init__(self) -> None:
        self.message_event = asyncio.Event()


_ANSWERED = _Answered()


class Door:
    """Shedding at the door. A slot frees, and every request whose head is parsed in the same turn of the event
    loop would see it free and go on, only to be refused by AdmissionMiddleware after the whole ASGI stack; so
    the requests let through in one turn count as taken slots until the next turn, when they have reached
    admission. The answers are built once per route label (only the request id differs)."""

    def __init__(self) -> None:
        self.passed = 0  # let through in this turn of the loop
        self._answers: dict[tuple[str, int], tuple[bytes, Any]] = {}

    def full(self, admission: middleware.AdmissionMiddleware, loop: asyncio.AbstractEventLoop) -> bool:
        if admission.in_flight + self.passed >= admission.max_concurrency:
            return True
        if not self.passed:
            loop.call_soon(self._next_turn)
        self.passed += 1
        return False

    def _next_turn(self) -> None:
        self.passed = 0

    def answer(self, admission: middleware.AdmissionMiddleware, path: str, request_id: str) -> bytes:
        endpoint = endpoint_label(path)
        key = (endpoint, admission.max_concurrency)
        if key not in self._answers:
            err = admission.too_many()
            body = middleware.render(err, middleware.is_oip(path))
            counters = (ERRORS.labels(endpoint, err.code), TRANSPORT_ANSWERS.labels(str(err.status)))
            self._answers[key] = (_response(err, body, {"x-request-id": "%s"}), counters)
        head, counters = self._answers[key]
        for counter in counters:
            counter.inc()
        return head.replace(b"%s", request_id.encode(), 1)


DOOR = Door()


class GuardedHttpTools(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if isinstance(self.app, ProxyHeadersMiddleware):  # nnserve reads no client address: 4 % of a request's CPU
            self.app = self.app.app
        self.timeout_keep_alive = LIMITS.keep_alive_s  # type: ignore[assignment]
        self._in_head = True  # between a request's first byte (or the connection's start) and its blank line
        self._head_bytes = 0
        self._tail = b""  # the last bytes of the previous chunk: a blank line may straddle two chunks
        self._watchdog = watchdog(self.loop)  # the head's deadline: an entry there, not a timer of the loop
        self._last_active = 0.0
        self._discarding = False  # answered and closing: what the client still sends is read and dropped
        self._buffered = 0  # bytes the client had not read when its writes paused (or when it last read)
        self._answering: Any = None  # the request cycle whose answer is being written (uvicorn keeps no handle)
        self._reading_held = False  # the door stopped reading: the client reads none of its 429s

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        BALANCE.publish(len(self.connections))
        self._last_active = self.loop.time()
        self._start_head_timer()
        if len(self.connections) > LIMITS.max_connections:
            self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        self._watchdog.disarm((self, "write"))
        super().connection_lost(exc)
        self._client_gone()
        BALANCE.publish(len(self.connections))

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if self.cycle is not None and not self.cycle.response_complete and not self.pipeline:
            # uvicorn reads on only when the app asks for more, so a large body's last chunk left reading paused
            # and a client leaving went unseen until its answer was written: read on, to see it leave
            self.flow.resume_reading()

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        self._answering = cycle
        super()._start_asgi_task(cycle, app)

    def _client_gone(self) -> None:
        """The request being answered learns that its client is gone, as the newest does, and the work for one
        not yet answered stops (``middleware.Client``). uvicorn tells only the newest request on the connection
        (``self.cycle``), which, with requests pipelined behind it, is not the one being answered; that one's next
        write to the closed socket raised RuntimeError ("Exception in ASGI application", a traceback in the log
        for every connection dropped so)."""
        for cycle in (self._answering, self.cycle):
            if cycle is not None and not cycle.response_complete:
                cycle.disconnected = True
                cycle.message_event.set()
                client: middleware.Client | None = cycle.scope.get(middleware.SCOPE_CLIENT)  # type: ignore[assignment]
                if client is not None and not cycle.response_started:
                    client.left()

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
                _answer(
                    self.transport,
                    self._counted(ApiError("header_too_large", message, status=431)),
                    getattr(self, "headers", []),
                )
                self._linger()
                return
            self._head_bytes = size
            self._tail = (self._tail + data)[-3:]
        super().data_received(data)

    def send_400_response(self, msg: str) -> None:
        """A request the parser refuses (a bad method or header, two lengths, a raw UTF-8 path): the envelope,
        counted, with a request id, where uvicorn wrote plain text that no metric or id saw."""
        self._discarding = True  # the parser is in error: nothing more of this connection is read
        if not self._idle():  # a pipelined request's answer is still being written: this one would land inside it
            self.cycle.keep_alive = False  # so the connection closes once that answer is out
            return
        message = "not a valid HTTP/1.1 request: its request line or a header is malformed"
        _answer(self.transport, self._counted(ApiError("invalid_request", message)), getattr(self, "headers", []))
        self._linger()  # closing at once, with the client's bytes unread, could reset the connection before it reads

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._in_head:  # a next request on a kept-alive connection: its head is timed and sized anew
            self._in_head, self._head_bytes, self._tail = True, 0, b""
            self._start_head_timer()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._stop_head_timer()
        admission = middleware.ADMISSION
        if admission is not None and self._idle() and self.parser.should_keep_alive():
            path = self._path()
            if middleware.sheddable(path) and DOOR.full(admission, self.loop):
                self._shed(admission, path)
                return
        super().on_headers_complete()
        if self.cycle is None:
            return
        self.cycle.scope[middleware.SCOPE_CLIENT] = middleware.Client()  # type: ignore[literal-required]
        if BALANCE.over_share(len(self.connections)):
            self.cycle.keep_alive = False  # answered with Connection: close, the client reconnects (service/balance.py)

    def _shed(self, admission: middleware.AdmissionMiddleware, path: str) -> None:
        """Answer 429 before the app sees the request; its body (still arriving) is dropped by on_body and
        on_message_complete, which skip a request whose response is complete."""
        self.transport.write(DOOR.answer(admission, path, request_id_for(self.headers)))
        self.cycle = _ANSWERED  # type: ignore[assignment]
        self.on_response_complete()  # keep-alive as after any answer
        if self.flow.write_paused:  # its 429s wait unread: no more of its requests until it reads (they cost
            self.flow.pause_reading()  # memory, three times what it sent, until the write timeout dropped it)
            self._reading_held = True

    def pause_writing(self) -> None:
        super().pause_writing()
        self._buffered = self._unread()
        self._watchdog.arm((self, "write"), LIMITS.write_timeout_s, self._write_stalled)

    def resume_writing(self) -> None:
        self._watchdog.disarm((self, "write"))
        super().resume_writing()
        if self._reading_held:
            self._reading_held = False
            self.flow.resume_reading()

    def _write_stalled(self) -> None:
        """write_timeout_s since the writes paused (or since the client last read): a client still reading, however
        slowly, is timed again; one that read nothing is dropped, closing or not (a close waits for the buffer to
        drain, which it never would)."""
        size = self._unread()
        if size < self._buffered:
            self._buffered = size
            self._watchdog.arm((self, "write"), LIMITS.write_timeout_s, self._write_stalled)
            return
        if not self.transport.is_closing():
            ERRORS.labels(self._endpoint(), "client_stalled").inc()  # counted; no answer can reach it
        self.transport.abort()
        self._client_gone()  # now: connection_lost comes a turn of the loop later

    def _unread(self) -> int:
        """Bytes written for the client and not yet taken by it: the transport's buffer and the kernel's send queue
        (Linux's SIOCOUTQ, the same number as TIOCOUTQ). The transport's buffer alone stays still while the kernel's
        queue (autotuned up to 4 MB) drains, so a client reading 1 MB/s was dropped with a 1 s timeout."""
        size = self.transport.get_write_buffer_size()
        sock = self.transport.get_extra_info("socket")  # asked each time: a closed socket's number is reused
        try:
            queued = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
        except (AttributeError, OSError, ValueError):  # no socket, no such query here (not Linux), or closed
            return size
        return size + int(struct.unpack("i", queued)[0])

    def _start_head_timer(self) -> None:
        self._watchdog.arm(self, LIMITS.head_timeout_s, self._head_late)

    def _stop_head_timer(self) -> None:
        self._watchdog.disarm(self)

    def _head_late(self) -> None:
        if self._in_head and not self.transport.is_closing():
            message = f"the request head did not arrive within {LIMITS.head_timeout_s:g} s"
            err = ApiError("request_timeout", message)
            # counted once a byte of it came: a connection opened and never used (a browser's preconnect) is no request
            _answer(
                self.transport,
                self._counted(err) if self._head_bytes or self._tail else err,
                getattr(self, "headers", []),
            )
            self.transport.close()

    def _counted(self, err: ApiError) -> ApiError:
        """An answer the transport writes itself, counted in nnserve_errors_total as the app's are."""
        ERRORS.labels(self._endpoint(), err.code).inc()
        TRANSPORT_ANSWERS.labels(str(err.status)).inc()
        return err

    def _endpoint(self) -> str:
        """The bounded endpoint label of the request on this connection, as far as its request line came."""
        return endpoint_label(self._path())

    def _path(self) -> str:
        """The path of the request on this connection ('' before uvicorn has its URL, for an absolute URL without
        a path, "http://x", and for one httptools cannot parse)."""
        url = getattr(self, "url", b"")  # uvicorn sets it when a request begins: none yet on a first chunk
        try:
            return (httptools.parse_url(url).path or b"").decode("latin-1") if url else ""
        except httptools.HttpParserInvalidURLError:
            return ""

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
        _answer(self.transport, self._counted(ApiError("overloaded", message, retry_after=1)))
        self.transport.close()


class Throttled(logging.Filter):
    """A message a client can make the server log at will (uvicorn's "Invalid HTTP request received." for each
    malformed request: 2,000 a second from one client, 630 KB of log a second) is let through once every
    ``every_s`` seconds, with the count of those left out in between (a message: its start)."""

    def __init__(self, message: str, every_s: float = 10.0, warning: bool = False) -> None:
        super().__init__()
        self.message, self.every_s, self.warning = message, every_s, warning
        self.last = -float("inf")
        self.left_out = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.message):
            return True
        now = time.monotonic()
        if now - self.last < self.every_s:
            self.left_out += 1
            return False
        if self.left_out:
            more = f"({self.left_out} more since the last such line, left out of the log)"
            record.msg, record.args = f"{record.getMessage()} {more}", None
        if self.warning:  # no fault of the server's: a warning, without the traceback
            record.levelno, record.levelname, record.exc_info, record.exc_text = logging.WARNING, "WARNING", None, None
        self.last, self.left_out = now, 0
        return True


INVALID_REQUEST = "Invalid HTTP request received."


def install_transport(limits: Limits) -> None:
    """Make uvicorn's "auto" HTTP protocol this one, with ``limits``; raise the open-file limit; throttle the
    log line a malformed request writes."""
    global LIMITS
    LIMITS = limits
    errors = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, Throttled) for f in errors.filters):
        errors.addFilter(Throttled(INVALID_REQUEST))
    if errors.handlers and set(errors.handlers) <= set(logging.getLogger().handlers):
        errors.propagate = False  # BentoML gives it the root's handler too: each of its lines was written twice
    parts = logging.getLogger("python_multipart.multipart")  # each of its lines is about a client's malformed body
    if not any(isinstance(f, Throttled) for f in parts.filters):
        parts.addFilter(Throttled(""))
    attach_worker("nnserve", limits.workers)
    uvicorn.config.HTTP_PROTOCOLS["auto"] = f"{__name__}:GuardedHttpTools"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):  # a container may forbid it; the connection cap still holds
            log.warning("could not raise the open-file limit from %d", soft)
