"""service/metrics.py: MetricsCacheMiddleware renders /metrics at most once per max age and worker, one render at
a time, and passes every other request through (in process, over an ASGI app that counts its renders; the
served stack is tested in tests/test_limits.py)."""

from __future__ import annotations

import asyncio

from service.metrics import MetricsCacheMiddleware


def _app(renders: list[bytes], status: int = 200, pause: float = 0.0):
    async def app(scope, receive, send) -> None:
        renders.append(scope["query_string"])
        await asyncio.sleep(pause)
        body = f"render {len(renders)}".encode()
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": body})

    return app


async def _get(
    mw, path: str = "/metrics", method: str = "GET", query: bytes = b"", hosts: tuple[bytes, ...] = (b"a",)
) -> tuple[int, bytes]:
    sent: list[dict] = []

    async def send(message) -> None:
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    headers = [(b"host", h) for h in hosts]
    scope = {"type": "http", "http_version": "1.1", "path": path, "method": method, "query_string": query}
    scope["headers"] = headers
    await mw(scope, receive, send)
    return sent[0]["status"], sent[1]["body"]


def test_one_render_per_max_age_one_at_a_time_without_the_query():
    async def run() -> None:
        renders: list[bytes] = []
        mw = MetricsCacheMiddleware(_app(renders, pause=0.05), max_age_s=0.3)
        answers = await asyncio.gather(*(_get(mw, query=b"name[]=x%d" % i) for i in range(8)))
        assert renders == [b""] and {a for a in answers} == {(200, b"render 1")}  # one render, for all eight
        await asyncio.sleep(0.35)
        assert await _get(mw) == (200, b"render 2") and len(renders) == 2  # past the max age: rendered again
        assert await _get(mw, method="HEAD") == (200, b"")  # its head, from the same render
        assert len(renders) == 2
        assert await _get(mw, path="/livez") == (200, b"render 3")  # any other path: through
        assert await _get(mw, method="POST") == (200, b"render 4")

    asyncio.run(run())


def test_an_error_is_not_kept_and_a_zero_age_keeps_nothing():
    async def run() -> None:
        renders: list[bytes] = []
        failing = MetricsCacheMiddleware(_app(renders, status=500), max_age_s=30)
        assert [await _get(failing) for _ in range(2)] == [(500, b"render 1"), (500, b"render 2")]
        off = MetricsCacheMiddleware(_app(renders), max_age_s=0)
        assert [await _get(off) for _ in range(2)] == [(200, b"render 3"), (200, b"render 4")]

    asyncio.run(run())


def test_a_request_without_one_host_header_is_never_answered_from_the_kept_page():
    """The admission middleware answers it 400 on every path (RFC 9112, 3.2); a page kept for the last second was
    served to it whatever its headers (a README audit, 2026-12-06)."""

    async def run() -> None:
        renders: list[bytes] = []
        mw = MetricsCacheMiddleware(_app(renders), max_age_s=30)
        assert await _get(mw) == (200, b"render 1")
        assert await _get(mw, hosts=()) == (200, b"render 2")  # passed on to the app, which refuses it when served
        assert await _get(mw, hosts=(b"a", b"b")) == (200, b"render 3")
        assert await _get(mw) == (200, b"render 1") and len(renders) == 3  # the kept page, as before

    asyncio.run(run())
