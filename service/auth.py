"""Optional API key for /v1 (and /v2), off by default.

With ``NNSERVE_API_KEY`` set, requests to /v1 and /v2 (and to /metrics with
``NNSERVE_METRICS_REQUIRE_KEY=true``) must carry the key as ``Authorization: Bearer <key>`` or
``X-API-Key: <key>``; anything else gets 401 with the error envelope and ``WWW-Authenticate: Bearer``.
/livez and /readyz, and the protocol's own probes /v2/health/live and /v2/health/ready, never need it:
orchestrators probe them without credentials.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from starlette.datastructures import Headers

from service.errors import ApiError
from service.metrics import ERRORS
from service.middleware import ASGIApp, Receive, Scope, Send, render
from service.routes import endpoint_label, is_oip

OPEN_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/v2/health/live", "/v2/health/ready"})


def requires_key(path: str, protect_metrics: bool) -> bool:
    if path in OPEN_PATHS:
        return False
    if path == "/metrics":
        return protect_metrics
    return path.startswith(("/v1/", "/v2/")) or path in ("/v1", "/v2")


def presented_key(headers: Headers | Mapping[str, str]) -> str | None:
    """The key a request carries (HTTP headers, or a gRPC call's metadata with lower-case keys)."""
    auth = headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    key = headers.get("x-api-key")  # an HTTP parser strips a value's surrounding spaces; gRPC metadata keeps them
    return None if key is None else key.strip()


def key_matches(headers: Headers | Mapping[str, str], key: bytes) -> bool:
    """Whether the request presents ``key`` (compared in constant time)."""
    given = presented_key(headers)
    return given is not None and given != "" and hmac.compare_digest(given.encode(), key)


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, *, api_key: str, protect_metrics: bool) -> None:
        self.app = app
        self.key = api_key.encode()
        self.protect_metrics = protect_metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not requires_key(scope["path"], self.protect_metrics):
            await self.app(scope, receive, send)
            return
        if key_matches(Headers(scope=scope), self.key):
            await self.app(scope, receive, send)
            return
        err = ApiError("unauthorized", "missing or wrong API key: send Authorization: Bearer <key> or X-API-Key")
        ERRORS.labels(endpoint_label(scope["path"]), err.code).inc()
        body = render(err, is_oip(scope["path"]))
        headers = [(k.encode(), v.encode()) for k, v in err.headers().items()]
        headers += [(b"www-authenticate", b"Bearer"), (b"content-length", str(len(body)).encode())]  # not chunked
        await send({"type": "http.response.start", "status": err.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
