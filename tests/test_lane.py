"""service/lane.py: a valid body goes straight to the endpoint, everything else to the full stack with the very
same body; an ApiError is answered in the lane's error shape, a bug with a 500 envelope (never a traceback)."""

from __future__ import annotations

import asyncio
import json
import re

from pydantic import BaseModel
from starlette.responses import Response

from service.errors import ApiError
from service.lane import Lane, LaneMiddleware, body_model_lanes


class Body(BaseModel):
    n: int


class FullStack:
    """What the request reaches when the lane leaves it: records the body it reads."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope, receive, send) -> None:
        self.bodies.append((await receive())["body"])
        await Response(b"full", status_code=418)(scope, receive, send)


def _post(app, path: str, body: bytes) -> tuple[int, bytes]:
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": body}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": [], "query_string": b""}
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def _app(endpoint) -> tuple[LaneMiddleware, FullStack]:
    from fastapi import APIRouter

    router = APIRouter()
    router.post("/double")(endpoint)
    full = FullStack()
    return LaneMiddleware(full, lanes=body_model_lanes("/v1", router.routes)), full


async def double(request: Body) -> Response:
    if request.n < 0:
        raise ApiError("invalid_request", "n must not be negative")
    if request.n == 13:
        raise RuntimeError("a bug")
    return Response(str(2 * request.n).encode())


def test_a_valid_body_takes_the_lane_and_anything_else_the_full_stack():
    app, full = _app(double)
    assert _post(app, "/v1/double", b'{"n": 21}') == (200, b"42") and full.bodies == []
    for body in (b"{", b'{"n": "x"}', b"[]"):  # FastAPI answers these, as it always did
        assert _post(app, "/v1/double", body) == (418, b"full")
    assert full.bodies == [b"{", b'{"n": "x"}', b"[]"]  # replayed as sent
    # a routes audit's (2026-12-07): FastAPI said "Field required" of an empty body, and "There was an error parsing
    # the body" of one that is not UTF-8; the lane says what is wrong
    for body, why in ((b"", "the request body is empty"), (b" \n", "empty"), (b'{"n": "\xe9"}', "unicode")):
        status, answer = _post(app, "/v1/double", body)
        assert status == 400 and why in json.loads(answer)["error"]["message"], answer
    assert len(full.bodies) == 3
    assert _post(app, "/v1/other", b'{"n": 1}')[0] == 418  # no lane for this path


def test_errors_in_the_lane_keep_the_envelope():
    app, full = _app(double)
    status, body = _post(app, "/v1/double", b'{"n": -1}')
    assert status == 400 and json.loads(body)["error"]["code"] == "invalid_request"
    status, body = _post(app, "/v1/double", b'{"n": 13}')
    assert status == 500 and json.loads(body)["error"] == {"code": "internal_error", "message": "internal error",
                                                           "details": []}  # fmt: skip
    assert full.bodies == []


def test_only_one_body_model_routes_returning_a_response_get_a_lane():
    async def two(a: Body, b: Body) -> Response:
        return Response(b"")

    async def model_out(request: Body) -> Body:
        return request

    for endpoint in (two, model_out):
        assert _app(endpoint)[0].lanes == []


def test_pattern_lanes_pass_the_captured_path_parts():
    seen = []

    async def handle(body, scope, groups):
        seen.append(groups)
        return Response(b"ok")

    app = LaneMiddleware(FullStack(), lanes=[Lane(re.compile(r"/m/([^/]{1,8})/x"), handle)])
    assert _post(app, "/m/abc/x", b"{}") == (200, b"ok") and seen == [("abc",)]
    assert _post(app, "/m/abcdefghij/x", b"{}")[0] == 418  # the name is over 8 characters: not this lane
