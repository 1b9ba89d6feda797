"""ASGI middleware for /v1 and /v2: admission (concurrency, timeout, body size, media type) and one error shape
per protocol.

BentoML and FastAPI answer some failures (request validation, unknown routes) in their own shapes; this layer
rewrites every /v1 error response that is not already an envelope into ``{"error": {...}}`` and every /v2
error into the Open Inference Protocol's ``{"error": "<message>"}``, adds ``Retry-After`` to 429/503, and
counts each failure in ``nnserve_errors_total``.

The concurrency limit and the request timeout live here rather than in BentoML's ``traffic`` settings
because BentoML's own limiter and timeout sit outside every user middleware (its ``middlewares`` list puts
them first), so their bare ``{"error": "Too many requests"}`` could never carry the envelope or Retry-After.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.datastructures import Headers, MutableHeaders

from service.deadlines import deadline
from service.errors import DEFAULT_CODE, ELSEWHERE, ApiError, envelope_from, quoted
from service.metrics import ERRORS
from service.routes import endpoint_label, form_routes, image_routes, is_oip, json_routes, one_host

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_RETRY_AFTER_S = "1"
ERROR_CODE_HEADER = "x-nnserve-error-code"  # /v2's error code, for the errors metric; never sent to clients


ADMISSION: AdmissionMiddleware | None = None  # this worker's, once BentoML has built its middleware stack


def sheddable(path: str) -> bool:
    """Whether a request to ``path`` waits for a concurrency slot (every /v1 and /v2 route but the health probes)."""
    return (path.startswith("/v1") or is_oip(path)) and not path.startswith("/v2/health/")


def render(err: ApiError, oip: bool) -> bytes:
    """An error's body: the /v1 envelope, or the Open Inference Protocol's ``{"error": "<message>"}``."""
    return json.dumps({"error": err.message}).encode() if oip else err.body()


SCOPE_CLIENT = "nnserve.client"  # the ASGI scope's key of a request's Client (service/transport.py sets it)


class Client:
    """A request's client as the transport sees it, shared with the app through the ASGI scope: when the
    connection is lost before the answer has started, the task working on the request (admission names it)
    is cancelled, so that work for no one (a decode job, an inference) stops, frees its slot and holds no
    SIGTERM up (a helper's audit: 64 costly images ran 7.6 s on for a client that had gone)."""

    __slots__ = ("gone", "task")

    def __init__(self) -> None:
        self.gone = False
        self.task: asyncio.Task[Any] | None = None

    def left(self) -> None:
        self.gone = True
        if self.task is not None:
            self.task.cancel()


# the answer to a request whose client went away (nginx's 499): no one reads it, the server drops it
CLIENT_GONE = ApiError("client_closed", "the client went away", status=499)


def replay(first: Message, receive: Receive) -> Receive:
    """A message already received (the whole body, for one), then the client's own: later calls wait on it (for
    a disconnect)."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return first

    return again


_NO_HOST = ApiError("invalid_request", "a request carries one Host header, and HTTP/1.1 at least one (RFC 9112, 3.2)")


def allowed(start: Message) -> tuple[tuple[bytes, bytes], ...]:
    """The Allow header of a response's start, which an envelope written in its place keeps (RFC 9110, 15.5.6)."""
    return tuple((k, v) for k, v in start["headers"] if k.lower() == b"allow")


def media_type(headers: Headers) -> str:
    """The request's media type, without its parameters ("application/json; charset=utf-8" -> "application/json")."""
    return headers.get("content-type", "").split(";")[0].strip().lower()


def named(ctype: str) -> str:
    """A client's media type as a 415 names it: at most 64 characters (15 KB of one came back whole: an audit's)."""
    return quoted(ctype, 64) if ctype else "nothing"


class AdmissionMiddleware:
    """Admission in the order that keeps slow and large uploads from hurting anyone else:

    1. the head: declared size (413), media type (415), and room for the declared body beside the bytes of
       bodies this worker holds (503 + Retry-After before a byte is read); only bytes received are held, so a
       client declaring large bodies and sending nothing takes no room from anyone;
    2. the body, read here in full within ``body_timeout_s`` (408, connection closed) and under ``max_body``
       (413); a body (but a form's) with more than ``max_json_items`` commas (an upper bound on its JSON array
       items and object members) is refused (400) before anything parses it;
    3. only then a concurrency slot (429 + Retry-After), so a client trickling its body holds a connection
       and its bytes, never a slot; the app gets the body as one message (not copied again) and must answer
       within ``timeout_s`` (504).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        max_concurrency: int,
        timeout_s: float,
        body_timeout_s: float = 10.0,
        max_body_in_flight: int = 64 << 20,
        max_json_items: int = 1_000_000,
    ) -> None:
        self.app = app
        self.max_body = max_body_bytes
        self.max_concurrency = max_concurrency
        self.timeout_s = timeout_s
        self.body_timeout_s = body_timeout_s
        self.max_body_in_flight = max_body_in_flight
        self.max_json_items = max_json_items
        self.in_flight = 0  # one event loop per worker: plain counters are enough
        global ADMISSION
        ADMISSION = self  # the transport sheds what this would refuse before the request reaches the app
        self.body_bytes = 0  # bytes of request bodies received and held by requests in this worker

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"] if scope["type"] == "http" else ""  # without trailing slashes: request_id.py
        oip = is_oip(path)
        if path and not one_host(scope):
            await self._send_error(send, _NO_HOST, endpoint_label(path), oip)
            return
        if not (oip or path.startswith("/v1")):
            if scope["type"] != "http":
                await self.app(scope, receive, send)
            elif self._declared_too_large(Headers(scope=scope)):  # any path: never read
                await self._send_error(send, self._too_large(), endpoint_label(path))
            else:
                await self.app(scope, receive, self._outside(send))
            return
        if path == "/v2":  # the protocol's server-metadata URL; a mounted app's root is "/v2/"
            scope = {**scope, "path": "/v2/", "raw_path": b"/v2/"}
        endpoint = endpoint_label(path)
        headers = Headers(scope=scope)
        early = self._gate(scope["method"], path, headers)
        if not sheddable(path):  # the health probes: under load an orchestrator must see the truth
            if early is not None:
                await self._send_error(send, early, endpoint, oip)
            else:
                await self._admitted(scope, receive, send, endpoint, oip)
            return
        if early is not None:
            await self._send_error(send, early, endpoint, oip)
            return
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self._slot(scope, receive, send, endpoint, oip)
            return
        length = headers.get("content-length")
        declared = int(length) if length is not None and length.isdigit() else 0
        if not self._room(declared, declared):  # it would not fit beside the bytes held now: refused unread
            await self._send_error(send, self._uploads_full(), endpoint, oip)
            return
        chunks: list[bytes] = []  # the body's bytes held in the budget: counted as they arrive, given back here
        try:
            body, err = await self._read_body(receive, declared, chunks)
            if err is CLIENT_GONE:
                return  # answered by RequestIdMiddleware, above BentoML's own layers' wait for an answer
            if err is None and not (
                path in form_routes() and media_type(headers) == "multipart/form-data"
            ):  # a /v1 form's: bytes
                err = self._json_items(body, header_length(headers) if oip else None)
            if err is not None:
                await self._send_error(send, err, endpoint, oip)
            else:
                await self._slot(scope, replay({"type": "http.request", "body": body}, receive), send, endpoint, oip)
        finally:
            self.body_bytes -= sum(len(c) for c in chunks)

    async def _read_body(self, receive: Receive, declared: int, chunks: list[bytes]) -> tuple[bytes, ApiError | None]:
        """The whole body within body_timeout_s and the size limits -> (body, None), or (b"", the error to answer);
        a client that went away gives the error CLIENT_GONE. Each chunk is counted in the budget as it arrives (as part
        of a body of the ``declared`` size, or of what has come when more has) and kept in ``chunks``, so a size
        declared and never sent holds nothing, and the caller gives back what the chunks hold."""
        size = 0
        try:
            async with deadline(self.body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return b"", CLIENT_GONE
                    chunk = message.get("body", b"")
                    if chunk:
                        size += len(chunk)
                        if size > self.max_body:
                            return b"", self._too_large()
                        if not self._room(len(chunk), max(size, declared)):
                            return b"", self._uploads_full(close=True)
                        self.body_bytes += len(chunk)
                        chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks), None
        except TimeoutError:
            late = f"the request body did not arrive within {self.body_timeout_s:g} s"
            return b"", ApiError("request_timeout", late, close=True)

    def _room(self, more: int, body_size: int) -> bool:
        """Whether `more` bytes of a body now `body_size` long fit this worker's budget. Small bodies (at most
        1/64 of the budget) may also use a reserve of a quarter of it, so that a few large uploads filling the
        budget do not turn away every small request behind them."""
        budget = self.max_body_in_flight
        if body_size <= budget // 64:
            budget += self.max_body_in_flight // 4
        return self.body_bytes + more <= budget

    def _json_items(self, body: bytes, json_length: str | None) -> ApiError | None:
        """Any body but a /v1 form's may be parsed as JSON (/v2 reads JSON whatever its media type says); of a
        /v2 binary request only the JSON header before the tensors' raw bytes is counted (``json_length``)."""
        end = len(body)  # a malformed length is /v2's to refuse, and the whole body is counted
        if json_length is not None and json_length.isascii() and json_length.isdigit() and len(json_length) < 19:
            end = int(json_length)
        if body.count(b",", 0, end) >= self.max_json_items:
            return ApiError(
                "invalid_request", f"the JSON body holds more than {self.max_json_items} array items or members"
            )
        return None

    def _uploads_full(self, close: bool = False) -> ApiError:
        """503 for a body that does not fit the budget; ``close``: refused part-way through (its rest unread)."""
        message = "this worker holds as many request bodies as it may; retry later"
        return ApiError("overloaded", message, retry_after=1, close=close)

    def full(self) -> bool:
        return self.in_flight >= self.max_concurrency

    def too_many(self) -> ApiError:
        message = f"more than {self.max_concurrency} requests in flight; retry later"
        return ApiError("too_many_requests", message, retry_after=int(_RETRY_AFTER_S))

    async def _slot(self, scope: Scope, receive: Receive, send: Send, endpoint: str, oip: bool) -> None:
        if self.full():
            await self._send_error(send, self.too_many(), endpoint, oip)
            return
        self.in_flight += 1
        try:
            await self._admitted(scope, receive, send, endpoint, oip)
        finally:
            self.in_flight -= 1

    async def _admitted(self, scope: Scope, receive: Receive, send: Send, endpoint: str, oip: bool) -> None:
        """The app must start its answer within timeout_s; how long a client then takes to read it is the
        transport's write timeout's to judge (a slow reader's answer was cut and uvicorn's plain 500 sent)."""
        start: Message | None = None
        chunks: list[bytes] = []
        started = False
        answering = deadline(self.timeout_s)
        client: Client | None = scope.get(SCOPE_CLIENT)
        if client is not None:
            client.task = asyncio.current_task()

        async def wrapped_send(message: Message) -> None:
            nonlocal start, started
            if message["type"] == "http.response.start":
                if message["status"] < 400:
                    started = True
                    answering.stop()
                    await send(message)
                else:
                    start = message  # hold error responses until the body is complete
                return
            if message["type"] == "http.response.body" and start is not None:
                chunks.append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                started = True
                answering.stop()
                await self._finish_error(send, start, b"".join(chunks), endpoint, oip)
                return
            await send(message)

        try:
            async with answering:
                await self.app(scope, receive, wrapped_send)
        except TimeoutError:
            if not started:
                timeout = ApiError("timeout", f"no answer within {self.timeout_s:g} s")
                await self._send_error(send, timeout, endpoint, oip)
        except asyncio.CancelledError:
            if client is None or not client.gone or not (task := asyncio.current_task()):
                raise
            task.uncancel()  # the client left: there is no one to answer (RequestIdMiddleware ends the request)
        finally:
            if client is not None:
                client.task = None

    def _outside(self, send: Send) -> Send:
        """``send`` for a path outside /v1 and /v2 (BentoML's own routes, its UI, or none): Starlette's plain-text 404
        and 405 go out as the envelope, with their Allow header, so a client that mistyped a path reads the shape of
        every other error and its request id beside the message (they were "Not Found" alone)."""
        held: Message | None = None

        async def wrapped_send(message: Message) -> None:
            nonlocal held
            start = message["type"] == "http.response.start" and message["status"] in ELSEWHERE
            if start and Headers(raw=message["headers"]).get("content-type", "").startswith("text/plain"):
                held = message
                return
            if held is None or message["type"] != "http.response.body":
                await send(message)
            elif not message.get("more_body", False):
                await self._send_error(send, ELSEWHERE[held["status"]], "other", extra=allowed(held))

        return wrapped_send

    def _too_large(self) -> ApiError:
        return ApiError("payload_too_large", f"request body is over {self.max_body} bytes", close=True)

    def _declared_too_large(self, headers: Headers) -> bool:
        length = headers.get("content-length")
        return length is not None and length.isdigit() and int(length) > self.max_body

    def _gate(self, method: str, path: str, headers: Headers) -> ApiError | None:
        if self._declared_too_large(headers):
            return self._too_large()
        if method != "POST":
            return None
        # read as sent, never inflated (a 194 KB gzip body is 200 MB of JSON); every Content-Encoding header counts
        values = headers.getlist("content-encoding")
        if {c.strip().lower() for v in values for c in v.split(",")} - {"", "identity"}:
            encoding = ", ".join(v.strip() for v in values if v.strip()).lower()
            return ApiError(
                "unsupported_media_type",
                f"bodies are read as sent: Content-Encoding {quoted(encoding, 32)!r} is not accepted; send it "
                "uncompressed",
            )
        ctype = media_type(headers)
        if path in json_routes() and ctype != "application/json":
            message = f"{path} takes application/json, not {named(ctype)}"
            raw_upload = ctype.startswith(("image/", "multipart/")) or ctype.endswith("octet-stream")
            if path in image_routes() and raw_upload:
                message += ": images go base64 in the JSON body's 'images'"
                if path == "/v1/classify":
                    message += "; to send an image file, POST it as multipart/form-data (field 'image') to "
                    message += "/v1/classify/upload"
            return ApiError("unsupported_media_type", message)
        if path in form_routes() and ctype != "multipart/form-data":
            return ApiError("unsupported_media_type", f"{path} takes multipart/form-data, not {named(ctype)}")
        return None

    async def _finish_error(self, send: Send, start: Message, raw: bytes, endpoint: str, oip: bool) -> None:
        status = start["status"]
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        hdrs = MutableHeaders(raw=list(start["headers"]))
        if oip:  # service/oip.py's own answers ({"error": "<message>"}, {"ready": false}) pass; FastAPI's do not
            is_ours = isinstance(data, dict) and "detail" not in data
            code = hdrs.get(ERROR_CODE_HEADER) or DEFAULT_CODE.get(status, "internal_error")
            if ERROR_CODE_HEADER in hdrs:
                del hdrs[ERROR_CODE_HEADER]
        else:
            is_ours = isinstance(data, dict) and isinstance(data.get("error"), dict) and "code" in data["error"]
            code = str(data["error"]["code"]) if is_ours else ""
        if not is_ours:  # a 405 keeps the Allow header its route gave (RFC 9110, 15.5.6)
            await self._send_error(send, envelope_from(status, raw), endpoint, oip, allowed(start))
            return
        if not oip or "error" in data:  # a /v2 readiness answer of false is not a failure
            ERRORS.labels(endpoint, code).inc()
        if status in (429, 503) and "retry-after" not in hdrs:
            hdrs["retry-after"] = _RETRY_AFTER_S
        await send({"type": "http.response.start", "status": status, "headers": hdrs.raw})
        await send({"type": "http.response.body", "body": raw, "more_body": False})

    async def _send_error(
        self, send: Send, err: ApiError, endpoint: str, oip: bool = False, extra: tuple[tuple[bytes, bytes], ...] = ()
    ) -> None:
        status = err.status
        if status in (429, 503) and err.retry_after is None:
            err.retry_after = int(_RETRY_AFTER_S)
        ERRORS.labels(endpoint, err.code).inc()
        body = render(err, oip)
        headers = [(k.encode(), v.encode()) for k, v in err.headers().items()] + list(extra)
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})


HEADER_LENGTH = "inference-header-content-length"  # Triton's binary tensor data extension: the JSON's length


def header_length(headers: Headers) -> str | None:
    """A /v2 request's Inference-Header-Content-Length: its value, or where it is sent more than once with
    different values, all of them (which service/oip_tensors.py's split_body refuses, not the first one)."""
    values = headers.getlist(HEADER_LENGTH)
    return (values[0] if len(set(values)) == 1 else ", ".join(values)) if values else None
