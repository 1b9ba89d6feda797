"""The one error envelope of /v1: ``{"error": {"code", "message", "details"}}`` with its HTTP status."""

from __future__ import annotations

import json
import re
from http import HTTPStatus
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from starlette.responses import Response

# code -> HTTP status; every /v1 failure is one of these
STATUS = {
    "invalid_request": 400,
    "invalid_image": 400,
    "invalid_label": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "model_not_found": 404,
    "method_not_allowed": 405,
    "request_timeout": 408,
    "payload_too_large": 413,
    "image_too_large": 413,
    "unsupported_media_type": 415,
    "too_many_requests": 429,
    "internal_error": 500,
    "overloaded": 503,
    "not_ready": 503,
    "timeout": 504,
}


# line breaks and other control characters: a client's "%0a" in a path, logged as it is, would forge a log line
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def quoted(text: object, limit: int = 120) -> str:
    """Client-supplied text as it may appear in a message or a log line: lone surrogates and other
    unencodable characters, line breaks and control characters escaped, at most ``limit`` characters (only
    those are read: 60 MB of text costs what 120 characters do)."""
    raw = str(text)
    s = raw[:limit].encode("utf-8", "backslashreplace").decode("utf-8")
    s = _CONTROLS.sub(lambda m: ascii(m.group())[1:-1], s)
    return s if len(raw) <= limit and len(s) <= limit else s[: limit - 1] + "…"


def inside(text: str, folder: Path) -> str:
    """A message for a client: the model folder's own path (the server's business) left out of ``text``."""
    return text.replace(f"{folder.resolve()}/", "").replace(f"{folder}/", "")


def validation_details(errors: list) -> tuple[str, list[dict]]:
    """pydantic's errors -> (a short message naming the first field, details without the client's input)."""
    details = [
        {
            "loc": quoted(".".join(str(p) for p in e.get("loc", ()) if p != "body")),
            "msg": quoted(e.get("msg", "")),
            "type": quoted(e.get("type", ""), 40),
        }
        for e in errors[:10]
    ]
    if bad := next((d for d in details if d["type"] == "json_invalid"), None):  # where and why, as the parser says
        return quoted(f"invalid JSON body: {bad['msg'].removeprefix('Invalid JSON: ')}", 200), details
    first = details[0] if details else {"loc": "", "msg": "invalid request"}
    return quoted(f"{first['loc']}: {first['msg']}" if first["loc"] else first["msg"], 200), details


class ErrorDetail(BaseModel):
    code: str = Field(description="machine-readable error code")
    message: str
    details: list[dict[str, str | int | float | list[str | int]]] = Field(default_factory=list)


class ErrorResponse(BaseModel):
    error: ErrorDetail


class ApiError(Exception):
    """Raised anywhere in request handling; rendered as the envelope with ``STATUS[code]``."""

    def __init__(
        self,
        code: str,
        message: str,
        details: list[dict] | None = None,
        retry_after: int | None = None,
        status: int | None = None,
        close: bool = False,
    ) -> None:
        super().__init__(message)
        self.code, self.message, self.details, self.retry_after = code, message, details or [], retry_after
        self.status = status or STATUS[code]
        self.close = close  # the connection is closed after the answer (its state is unknown: a body half read)

    def body(self) -> bytes:
        return (
            ErrorResponse(error=ErrorDetail(code=self.code, message=self.message, details=self.details))
            .model_dump_json()
            .encode()
        )

    def response(self) -> Response:
        return Response(self.body(), status_code=self.status, headers=self.headers())

    def headers(self) -> dict[str, str]:
        h = {"content-type": "application/json"}
        if self.retry_after is not None:
            h["retry-after"] = str(self.retry_after)
        if self.close:
            h["connection"] = "close"
        return h


# an HTTP status -> the code of an error answered by BentoML, FastAPI or Starlette rather than by nnserve
DEFAULT_CODE = {
    400: "invalid_request",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    500: "internal_error",
    503: "overloaded",
    504: "timeout",
}


# the answers to a path no route or mount takes: outside /v1 and /v2 for Starlette's plain-text ones
# (service/middleware.py), and under them for FastAPI's bare "Not Found" and "Method Not Allowed" (envelope_from)
ELSEWHERE = {
    404: ApiError("not_found", "no such path: the API's routes are under /v1 and /v2 (listed at /docs.json)"),
    405: ApiError("method_not_allowed", "this path does not take that method (its Allow header names those it takes)"),
}


def envelope_from(status: int, raw: bytes) -> ApiError:
    """BentoML's error bodies -> ApiError (validation details kept, internals not leaked)."""
    try:
        data: Any = json.loads(raw) if raw else None
    except ValueError:
        data = raw.decode("utf-8", "replace")
    code = DEFAULT_CODE.get(status, "internal_error" if status >= 500 else "invalid_request")
    details: list[dict] = []
    if isinstance(data, dict) and isinstance(data.get("detail"), list):  # pydantic ValidationError
        details = [
            {
                "loc": ".".join(str(p) for p in d.get("loc", ())),
                "msg": str(d.get("msg", "")),
                "type": str(d.get("type", "")),
            }
            for d in data["detail"]
            if isinstance(d, dict)
        ]
        message = (
            "invalid JSON body" if any(d["type"] == "json_invalid" for d in details) else "request validation failed"
        )
    elif isinstance(data, list) and data and isinstance(data[0], dict) and "error" in data[0]:
        message = str(data[0]["error"])
    elif isinstance(data, dict) and isinstance(data.get("error"), str):
        message = data["error"]
    elif isinstance(data, dict) and isinstance(data.get("detail"), str):
        message = data["detail"]
    else:
        message = str(data) if data else code
    if status in ELSEWHERE and message == HTTPStatus(status).phrase:  # Starlette's "Not Found": no route takes it
        message = ELSEWHERE[status].message
    if status >= 500:  # never leak tracebacks or internals
        message = {503: "service overloaded, retry later", 504: "request timed out"}.get(status, "internal error")
    return ApiError(code, message, details, status=400 if status == 422 else status)  # FastAPI says 422
