"""Deadlines without a timer per request: one watchdog per event loop.

Every request used to start two or three timers of the event loop (``asyncio.timeout`` for its body and for its
answer, ``call_later`` for its next head), each a heap entry made and cancelled again: in process, about 10-15 µs
per ``asyncio.timeout`` (docs/BENCHMARKS.md). Here a deadline is an entry in a dict; one callback of the loop
looks at them every ``TICK_S`` while any is armed, and fires those that are due. A deadline therefore fires up
to ``TICK_S`` late, which the limits it serves (a second or more, see service/settings.py) do not notice.

``deadline(delay_s)`` behaves like ``asyncio.timeout(delay_s)``: when it fires, the task is cancelled, and the
``async with`` block ends in ``TimeoutError``; a cancellation from elsewhere stays a cancellation.
``arm``/``disarm`` call a plain function instead (the transport's head timer).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from types import TracebackType

TICK_S = 0.05


class Watchdog:
    """The deadlines armed on one event loop: key -> (when, what to call)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.due: dict[object, tuple[float, Callable[[], None]]] = {}
        self._ticking = False

    def arm(self, key: object, delay_s: float, fire: Callable[[], None]) -> None:
        self.due[key] = (self.loop.time() + delay_s, fire)
        if not self._ticking:
            self._ticking = True
            self.loop.call_later(TICK_S, self._tick)

    def disarm(self, key: object) -> None:
        self.due.pop(key, None)

    def _tick(self) -> None:
        now = self.loop.time()
        late = [key for key, (when, _) in self.due.items() if when <= now]
        for key in late:
            _, fire = self.due.pop(key)
            try:
                fire()
            except Exception:  # one failing callback must not stop the tick: every other deadline would go unkept
                logging.getLogger(__name__).exception("a deadline's callback failed")
        self._ticking = bool(self.due)
        if self._ticking:
            self.loop.call_later(TICK_S, self._tick)


_WATCHDOGS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Watchdog] = weakref.WeakKeyDictionary()


def watchdog(loop: asyncio.AbstractEventLoop | None = None) -> Watchdog:
    """The watchdog of ``loop`` (default: the running one)."""
    loop = loop or asyncio.get_running_loop()
    found = _WATCHDOGS.get(loop)
    if found is None:
        found = _WATCHDOGS[loop] = Watchdog(loop)
    return found


class deadline:
    """``async with deadline(s):`` -- the block must finish within ``s`` seconds (plus up to TICK_S)."""

    __slots__ = ("_cancelling", "_delay_s", "_task", "_watchdog", "expired")

    def __init__(self, delay_s: float) -> None:
        self._delay_s = delay_s
        self.expired = False

    async def __aenter__(self) -> deadline:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("deadline() must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        self._watchdog = watchdog()
        self._watchdog.arm(self, self._delay_s, self._expire)
        return self

    def _expire(self) -> None:
        self.expired = True
        self._task.cancel()

    def stop(self) -> None:
        """The rest of the block runs without the deadline (it has been met: an answer has started)."""
        self._watchdog.disarm(self)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._watchdog.disarm(self)
        if self.expired and self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc
