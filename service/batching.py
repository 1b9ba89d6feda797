"""Adaptive batching inside the API worker: no hop to another process.

``GreedyBatcher`` runs one model family's batch function on its own thread. Rows that arrive while a batch
is running queue up, and the next batch takes everything queued (up to ``max_batch`` rows), so a lone
request runs at once, with no batching window to wait out, and batches grow with the load by themselves.
onnxruntime releases the GIL while it computes, so the event loop keeps parsing and preprocessing the next
requests meanwhile.

Used when ``NNSERVE_BATCHING=api`` (the default; docs/BENCHMARKS.md has the measurements behind the choice).
With ``NNSERVE_BATCHING=services`` the same batch functions run in BentoML model services instead.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from service.stats import BatchTiming


class QueueFull(RuntimeError):
    """More rows are waiting than the batcher accepts: the caller answers 503 with Retry-After."""


class GreedyBatcher:
    def __init__(
        self,
        fn: Callable[[list[Any]], list[Any]],
        *,
        max_batch: int,
        max_queue: int,
        name: str,
        inline_s: float = 0.0,
    ) -> None:
        self.fn = fn
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.name = name
        self.inline_s = inline_s
        self.row_s = float("inf")  # moving average of seconds per row; unknown until a batch has run on the thread
        self._pending: deque[tuple[list[Any], asyncio.Future[tuple[list[Any], BatchTiming]]]] = deque()
        self._queued = 0
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"batch-{name}")

    async def submit(self, rows: list[Any], timing: BatchTiming | None = None) -> list[Any]:
        """Queue one request's rows; -> one result per row, in order, once their batch has run (when it started and
        ended go to ``timing``)."""
        if not rows:
            return []
        if self._queued and self._queued + len(rows) > self.max_queue:  # an empty queue admits any request
            raise QueueFull(f"{self.name}: {self._queued} rows already waiting")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[list[Any], BatchTiming]] = loop.create_future()
        self._pending.append((rows, future))
        self._queued += len(rows)
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._drain())
        results, ran = await future
        if timing is not None:
            timing.start, timing.end = ran.start, ran.end
        return results

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            batch: list[Any] = []
            owners: list[tuple[asyncio.Future[tuple[list[Any], BatchTiming]], int]] = []
            # whole requests only; a request larger than max_batch runs as its own batch
            while self._pending and (not batch or len(batch) + len(self._pending[0][0]) <= self.max_batch):
                rows, future = self._pending.popleft()
                self._queued -= len(rows)
                if future.cancelled():  # its client went away (timeout): skip the work
                    continue
                owners.append((future, len(rows)))
                batch.extend(rows)
            if not batch:
                continue
            try:
                ran = BatchTiming(start=time.perf_counter())
                results = await self._run(loop, batch)
                ran.end = time.perf_counter()
                if len(results) != len(batch):
                    raise RuntimeError(f"{self.name}: {len(results)} results for {len(batch)} rows")
                start = 0
                for future, n in owners:
                    if not future.done():
                        future.set_result((results[start : start + n], ran))
                    start += n
            except Exception as e:  # the batch failed: every request in it still waiting fails the same way
                for future, _ in owners:
                    if not future.done():
                        future.set_exception(e)

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[Any]) -> list[Any]:
        """One batch, on the loop when it is expected to be cheap, else on the batcher's thread; either way the
        batch function's own time per row updates the estimate. Batches run on the thread until one is timed."""
        if self.row_s * len(batch) <= self.inline_s:
            results, seconds = self._timed(batch)
        else:
            results, seconds = await loop.run_in_executor(self._executor, self._timed, batch)
        per_row = seconds / len(batch)
        self.row_s = per_row if self.row_s == float("inf") else 0.8 * self.row_s + 0.2 * per_row
        return results

    def _timed(self, batch: list[Any]) -> tuple[list[Any], float]:
        t0 = time.perf_counter()
        return self.fn(batch), time.perf_counter() - t0
