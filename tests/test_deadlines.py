"""service/deadlines.py: deadlines kept by one watchdog per loop behave like asyncio.timeout."""

from __future__ import annotations

import asyncio
import time

import pytest

from service.deadlines import TICK_S, deadline, watchdog


def test_a_late_block_ends_in_timeout_error_within_a_tick():
    async def main():
        t0 = time.perf_counter()
        with pytest.raises(TimeoutError):
            async with deadline(0.1) as d:
                await asyncio.sleep(5)
        waited = time.perf_counter() - t0
        assert d.expired and 0.1 <= waited < 0.1 + TICK_S + 0.1, waited
        assert asyncio.current_task().cancelling() == 0  # the cancellation it made is taken back
        await asyncio.sleep(0.01)  # and not delivered later
        assert not watchdog().due

    asyncio.run(main())


def test_a_block_in_time_leaves_nothing_armed_and_no_cancellation_behind():
    async def main():
        async with deadline(0.05) as d:
            await asyncio.sleep(0.01)
        assert not d.expired and not watchdog().due
        await asyncio.sleep(0.2)  # past the deadline: nothing fires
        return "done"

    assert asyncio.run(main()) == "done"


def test_a_cancellation_from_elsewhere_stays_a_cancellation():
    async def guarded():
        async with deadline(10):
            await asyncio.sleep(5)

    async def main():
        task = asyncio.create_task(guarded())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not watchdog().due

    asyncio.run(main())


def test_nested_deadlines_fire_the_inner_one_first():
    async def main():
        async with deadline(5) as outer:
            with pytest.raises(TimeoutError):
                async with deadline(0.05):
                    await asyncio.sleep(5)
            await asyncio.sleep(0.01)  # the outer block goes on
        assert not outer.expired

    asyncio.run(main())


def test_arm_calls_once_and_disarm_stops_it_and_ticking_stops_when_idle():
    async def main():
        dog, fired = watchdog(), []
        dog.arm("a", 0.02, lambda: fired.append("a"))
        dog.arm("b", 0.02, lambda: fired.append("b"))
        dog.disarm("b")
        await asyncio.sleep(3 * TICK_S)
        assert fired == ["a"] and not dog.due and not dog._ticking
        dog.arm("c", 0.0, lambda: fired.append("c"))  # armed again after going idle: ticks again
        await asyncio.sleep(2 * TICK_S)
        assert fired == ["a", "c"]

    asyncio.run(main())


def test_each_event_loop_has_its_own_watchdog():
    async def mine():
        return watchdog()

    assert asyncio.run(mine()) is not asyncio.run(mine())


def _call(app, body_chunks, delay_between=0.0):
    """One POST /v1/classify through an ASGI app, in process -> (status, body, seconds)."""
    sent: list[dict] = []
    chunks = list(body_chunks)

    async def receive():
        if chunks:
            if delay_between:
                await asyncio.sleep(delay_between)
            chunk = chunks.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}
        await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/classify",
        "headers": [(b"content-type", b"application/json")],
    }

    async def main():
        t0 = time.perf_counter()
        await app(scope, receive, send)
        return time.perf_counter() - t0

    took = asyncio.run(main())
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body, took


def _admission(app, **kw):
    from service.middleware import AdmissionMiddleware

    limits = {"max_body_bytes": 1 << 20, "max_concurrency": 4, "timeout_s": 0.3, "body_timeout_s": 0.3}
    return AdmissionMiddleware(app, **(limits | kw))


def test_admission_answers_504_when_the_app_is_late_and_408_when_the_body_is():
    import json

    async def slow_app(scope, receive, send):
        await receive()
        await asyncio.sleep(5)

    status, body, took = _call(_admission(slow_app), [b"{}"])
    assert status == 504 and json.loads(body)["error"]["code"] == "timeout", body
    assert 0.3 <= took < 0.3 + TICK_S + 0.2, took
    status, body, took = _call(_admission(slow_app), [b"{", b"}"], delay_between=0.5)
    assert status == 408 and json.loads(body)["error"]["code"] == "request_timeout", body
    assert took < 0.3 + TICK_S + 0.2, took


def test_admission_lets_a_prompt_answer_through():
    async def app(scope, receive, send):
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    assert _call(_admission(app), [b"{}"])[:2] == (200, b"ok")


def test_a_callback_that_fails_stops_no_other_deadline():
    """A failing callback ended the tick, which was then never scheduled again: no later head, body, request or
    write deadline of that worker fired (a review found one: a 408 for an absolute URL without a path)."""

    def boom() -> None:
        raise AttributeError("'NoneType' object has no attribute 'decode'")

    async def main():
        dog, fired = watchdog(), []
        dog.arm("bad", 0.01, boom)
        dog.arm("good", 0.01, lambda: fired.append("good"))
        dog.arm("later", 0.2, lambda: fired.append("later"))
        await asyncio.sleep(0.2 + 3 * TICK_S)
        return fired

    assert asyncio.run(main()) == ["good", "later"]
