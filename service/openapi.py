"""nnserve's own pages (``/``, the Swagger page at ``/docs`` and the playground at ``/ui``) and corrections to
the OpenAPI document BentoML serves at /docs.json, so it describes what the server answers.

BentoML's page at ``/`` is its generic "Prediction Service" Swagger page, which also loads Google Tag Manager;
``DocsMiddleware`` answers ``/`` with nnserve's landing page and ``/docs`` with a Swagger UI page that loads
only the Swagger assets BentoML serves itself (``/static_content``), nothing from elsewhere. ``/ui`` is the
playground (``static/ui.html`` and its scripts and style sheet): plain files, no build step, that talk to /v1
with the requests a client sends. Its assets are served under names that carry their content's hash, so they
are cached for a year and a new release can never meet a stale one; the page itself is revalidated every time
and its Content-Security-Policy lets it load and call nothing but this server.

BentoML builds the OpenAPI document on every request from the mounted FastAPI app and its own infrastructure
routes; ``DocsMiddleware`` rewrites that JSON on the way out with ``patch_openapi``. Each correction is one
function, for what the generated document gets wrong:

* ``_describe``: BentoML's ``info`` has version "None", its own contact and a description of BentoML; the
  document says what this server is and carries the package's version.
* ``_document_api_key``: with ``NNSERVE_API_KEY`` set, ApiKeyMiddleware answers 401 (the path's error shape,
  with ``WWW-Authenticate: Bearer``) on every path ``requires_key`` protects (/v1, /v2, and /metrics with
  ``NNSERVE_METRICS_REQUIRE_KEY``), before any route runs, so no route's ``responses=`` documents it.
* ``_drop_unsent_422``: FastAPI documents a 422 ``HTTPValidationError`` for every route with parameters or a
  body, but AdmissionMiddleware (and /v2's handler) turns each of those into a 400; no client sees a 422.
* ``_document_internal_error``: a failed inference is a 500 (``internal_error``), documented nowhere.
* ``_document_infra_bodies``: BentoML documents /livez, /readyz, /healthz and /metrics as bodiless 200s; they
  answer text/plain bodies, and /readyz answers 503 (text/plain) while model services are not ready, or while
  no model is served that model control could not load later.
* ``_unique_operation_ids``: a route that answers GET and HEAD is one FastAPI route, and FastAPI gives both
  operations its one id (OpenAPI requires ids to be unique; FastAPI warns each time it builds the document).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

from starlette.datastructures import MutableHeaders

from service import __version__
from service.auth import requires_key
from service.middleware import ASGIApp, Message, Receive, Scope, Send

# FastAPI warns of the ids its GET-and-HEAD routes share each time BentoML builds the document: mended below
warnings.filterwarnings("ignore", message="Duplicate Operation ID", category=UserWarning)

API_PREFIXES = ("/v1/", "/v2/")  # paths whose errors AdmissionMiddleware shapes: /v1's envelope, /v2's OIP error
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
SECURITY_SCHEMES = {
    "bearerAuth": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <NNSERVE_API_KEY>"},
    "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}


def _operations(doc: dict[str, Any]):
    """(path, method, operation) for every operation of the document."""
    for path, item in doc.get("paths", {}).items():
        for method, op in item.items():
            if method in METHODS and isinstance(op, dict):
                yield path, method, op


def _envelope(description: str, path: str) -> dict[str, Any]:
    """An error response in the path's shape: /v2's ``{"error": "..."}`` (OipError), else /v1's envelope."""
    ref = "#/components/schemas/" + ("OipError" if path.startswith("/v2/") else "ErrorResponse")
    return {"description": description, "content": {"application/json": {"schema": {"$ref": ref}}}}


def _document_api_key(doc: dict[str, Any], protect_metrics: bool) -> None:
    doc.setdefault("components", {}).setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)
    for path, _, op in _operations(doc):
        if requires_key(path, protect_metrics):
            op["security"] = [{name: []} for name in SECURITY_SCHEMES]
            op.setdefault("responses", {})["401"] = {
                **_envelope("Missing or wrong API key (code unauthorized)", path),
                "headers": {"WWW-Authenticate": {"schema": {"type": "string", "enum": ["Bearer"]}}},
            }


def _drop_unsent_422(doc: dict[str, Any]) -> None:
    for path, _, op in _operations(doc):
        if path.startswith(API_PREFIXES):
            op.get("responses", {}).pop("422", None)


def _document_internal_error(doc: dict[str, Any]) -> None:
    for path, _, op in _operations(doc):
        if path.startswith(API_PREFIXES):
            op.setdefault("responses", {}).setdefault("500", _envelope("Internal Server Error (internal_error)", path))


def _document_infra_bodies(doc: dict[str, Any]) -> None:
    text = {"text/plain": {"schema": {"type": "string"}}}
    for path in ("/livez", "/readyz", "/healthz", "/metrics"):
        op = doc.get("paths", {}).get(path, {}).get("get")
        if op is not None:
            op.setdefault("responses", {}).setdefault("200", {"description": "OK"})["content"] = text
    readyz = doc.get("paths", {}).get("/readyz", {}).get("get")
    if readyz is not None:
        readyz["responses"]["503"] = {
            "description": "Not ready: draining, a model service is not, or no model is served",
            "content": text,
        }


DESCRIPTION = (
    "Classic deep-learning models trained with PyTorch, exported to ONNX and served with BentoML: typed REST "
    "routes under /v1 and the Open Inference Protocol under /v2. Every /v1 failure is the envelope "
    '{"error": {"code", "message", "details"}}; every /v2 failure is {"error": "<message>"}.'
)


def _unique_operation_ids(doc: dict[str, Any]) -> None:
    ops = [(method, op) for _, method, op in _operations(doc) if "operationId" in op]
    seen = Counter(op["operationId"] for _, op in ops)
    for method, op in ops:
        if seen[op["operationId"]] > 1:
            op["operationId"] = f"{op['operationId']}_{method}"


def _describe(doc: dict[str, Any]) -> None:
    doc["info"] = {"title": "nnserve", "version": __version__, "description": DESCRIPTION}


def patch_openapi(doc: dict[str, Any], *, api_key: bool, metrics_require_key: bool) -> dict[str, Any]:
    """BentoML's generated document -> the document of what this server answers (in place; returned)."""
    _describe(doc)
    if api_key:
        _document_api_key(doc, metrics_require_key)
    _drop_unsent_422(doc)
    _document_internal_error(doc)
    _document_infra_bodies(doc)
    _unique_operation_ids(doc)
    return doc


STATIC = Path(__file__).with_name("static")
HTML = b"text/html; charset=utf-8"
JS = b"text/javascript; charset=utf-8"
UI_ASSETS = {
    "ui.css": b"text/css; charset=utf-8",
    **dict.fromkeys(("ui-core.js", "ui-pad.js", "ui-panels.js", "ui-more.js"), JS),
}
IMMUTABLE = [(b"cache-control", b"public, max-age=31536000, immutable")]
# the playground may load and call this server only: no CDN, no fonts, no inline script (data: and blob: URLs
# are the images the API returns and the photos a user picks)
UI_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
Page = tuple[bytes, list[tuple[bytes, bytes]]]  # body, headers


def _ui_pages() -> dict[str, Page]:
    """/ui and its assets, each asset at ``/ui/<stem>.<sha256[:12]>.<ext>``; ui.html names them ``{<file>}``."""
    pages: dict[str, Page] = {}
    html = (STATIC / "ui.html").read_bytes().replace(b"{version}", __version__.encode())
    for name, media in UI_ASSETS.items():
        body = (STATIC / name).read_bytes()
        stem, ext = name.rsplit(".", 1)
        path = f"/ui/{stem}.{hashlib.sha256(body).hexdigest()[:12]}.{ext}"
        pages[path] = (body, [(b"content-type", media), *IMMUTABLE])
        html = html.replace(b"{%s}" % name.encode(), path.lstrip("/").encode())  # relative: works under a prefix
    security = [(b"content-security-policy", UI_POLICY.encode()), (b"x-content-type-options", b"nosniff")]
    pages["/ui"] = (html, [(b"content-type", HTML), (b"cache-control", b"no-cache"), *security])
    return pages


PAGES: dict[str, Page] = {
    "/": ((STATIC / "index.html").read_bytes().replace(b"{version}", __version__.encode()), [(b"content-type", HTML)]),
    "/docs": ((STATIC / "docs.html").read_bytes(), [(b"content-type", HTML)]),
    **_ui_pages(),
}


class DocsMiddleware:
    """Answers GET /, /docs, /ui and the playground's assets with nnserve's pages and rewrites BentoML's GET
    /docs.json with ``patch_openapi``."""

    def __init__(self, app: ASGIApp, *, api_key: bool, metrics_require_key: bool) -> None:
        self.app = app
        self.options = {"api_key": api_key, "metrics_require_key": metrics_require_key}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        page = PAGES.get(scope["path"])
        if page is not None:
            body, headers = page
            headers = [*headers, (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body if scope["method"] == "GET" else b""})
            return
        if scope["path"] != "/docs.json" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def patched_send(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] != "http.response.body" or start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(chunks)
            if start["status"] == 200:
                body = json.dumps(patch_openapi(json.loads(body), **self.options)).encode()
            headers = MutableHeaders(raw=list(start["headers"]))
            headers["content-length"] = str(len(body))
            await send({**start, "headers": headers.raw})
            await send({"type": "http.response.body", "body": body, "more_body": False})

        await self.app(scope, receive, patched_send)
