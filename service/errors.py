"""The one error envelope of /v1: ``{"error": {"code", "message", "details"}}`` with its HTTP status."""

from __future__ import annotations

import re
from pathlib import Path

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
