"""The lean lane: a valid JSON request to a model route goes straight from admission to its handler.

Between AdmissionMiddleware and a route's own code a request used to cross nnserve's docs middleware, BentoML's
context middleware, Starlette's router and mount, the mounted FastAPI app's own middleware stack (server error,
telemetry, body limit, exception handling, exit stack), its router and FastAPI's dependency solver, then a
second parse of the body: in a py-spy profile of POST /v1/classify that was a third of the worker's Python time
(docs/BENCHMARKS.md). This middleware sits right inside AdmissionMiddleware (so the API key, the limits, the
timeout, the error envelope and the metrics still apply) and hands the body admission has already read to the
route's handler: one pydantic parse straight from the bytes, then the same endpoint function FastAPI would call.

Only the happy path is lean. A body that does not validate, and every route without a lane, goes on to the full
stack with the body replayed, so every error a client can cause gets exactly the answer it got before.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any, get_type_hints

from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.responses import Response

from service.errors import ApiError, quoted, validation_details
from service.middleware import replay

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
# (body, scope, the path's captured groups) -> the answer, or None to leave the request to the full stack
Handler = Callable[[bytes, Scope, tuple[str, ...]], Awaitable[Response | None]]

# JSON the parser refuses where Python's json module raises no JSONDecodeError (its 4,300-digit integer limit, its
# recursion limit, bytes that are not UTF-8), which FastAPI answers "There was an error parsing the body": the lane
# says where and why
UNPARSED = ("recursion limit exceeded", "number out of range", "invalid unicode code point")

log = logging.getLogger("bentoml.nnserve")


@dataclass(frozen=True)
class Lane:
    """POST requests whose path matches ``path`` (a full match) go to ``handle``; an ApiError it raises is
    answered with ``error`` (the protocol's error shape)."""

    path: re.Pattern[str]
    handle: Handler
    error: Callable[[ApiError], Response] = ApiError.response


def body_model_lanes(prefix: str, routes: Iterable[Any]) -> list[Lane]:
    """A lane for every POST route whose endpoint takes one pydantic body and returns a Response (the typed JSON
    routes of the tasks): the body is validated from its bytes and the endpoint called with it. A body that
    does not validate returns None, so FastAPI answers it as before."""
    lanes = []
    for route in routes:
        if not isinstance(route, APIRoute) or "POST" not in (route.methods or ()):
            continue
        hints = get_type_hints(route.endpoint)
        params = list(inspect.signature(route.endpoint).parameters)
        model = hints.get(params[0]) if len(params) == 1 else None
        if hints.get("return") is not Response or not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        lanes.append(Lane(re.compile(re.escape(prefix + route.path)), _validated(model, route.endpoint)))
    return lanes


def _validated(model: type[BaseModel], endpoint: Callable[[Any], Awaitable[Response]]) -> Handler:
    async def handle(body: bytes, scope: Scope, groups: tuple[str, ...]) -> Response | None:
        if not body or body.isspace():  # FastAPI said "Field required" of no field (a routes audit's)
            raise ApiError("invalid_request", "the request body is empty: this route takes a JSON object")
        try:
            request = model.model_validate_json(body)
        except ValidationError as e:
            if any(err["type"] == "json_invalid" and any(p in err["msg"] for p in UNPARSED) for err in e.errors()):
                # FastAPI's parser would say only "There was an error parsing the body"
                raise ApiError("invalid_request", validation_details(e.errors())[0]) from None
            return None  # FastAPI's route answers it as it would without the lane
        return await endpoint(request)

    return handle


class LaneMiddleware:
    """Inside AdmissionMiddleware, which has read the whole body and replays it as one message."""

    def __init__(self, app: ASGIApp, *, lanes: list[Lane]) -> None:
        self.app = app
        self.lanes = lanes

    def _lane(self, path: str) -> tuple[Lane, tuple[str, ...]] | None:
        for lane in self.lanes:
            if m := lane.path.fullmatch(path):
                return lane, m.groups()
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self._lane(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if found is None:
            await self.app(scope, receive, send)
            return
        message = await receive()
        if message["type"] != "http.request" or message.get("more_body", False):  # not admission's one message
            await self.app(scope, replay(message, receive), send)
            return
        lane, groups = found
        body = message.get("body", b"")
        try:
            response = await lane.handle(body, scope, groups)
        except ApiError as e:
            response = lane.error(e)
        except Exception:
            log.exception("unhandled error in %s", quoted(scope["path"]))
            response = lane.error(ApiError("internal_error", "internal error"))
        if response is None:
            await self.app(scope, replay(message, receive), send)
            return
        await response(scope, receive, send)
