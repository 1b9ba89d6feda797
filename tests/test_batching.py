"""GreedyBatcher: concurrent requests share batches, each gets its own rows back in order, a lone request
runs at once, a full queue refuses, and a failing batch fails every request in it."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from service.batching import GreedyBatcher, QueueFull


class Recorder:
    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.delay, self.fail = delay, fail
        self.threads: set[str] = set()

    def __call__(self, rows: list[int]) -> list[int]:
        self.threads.add(threading.current_thread().name)
        self.batches.append(list(rows))
        time.sleep(self.delay)
        if self.fail:
            raise ValueError("boom")
        return [r * 10 for r in rows]


def test_concurrent_requests_share_batches_and_get_their_rows():
    rec = Recorder(delay=0.05)
    batcher = GreedyBatcher(rec, max_batch=64, max_queue=1000, name="t")

    async def main():
        first = asyncio.create_task(batcher.submit([0]))  # runs alone: nothing else is queued yet
        await asyncio.sleep(0.01)
        rest = [asyncio.create_task(batcher.submit([i, i + 100])) for i in range(1, 9)]
        return await first, await asyncio.gather(*rest)

    first, rest = asyncio.run(main())
    assert first == [0] and rest == [[i * 10, (i + 100) * 10] for i in range(1, 9)]
    assert rec.batches[0] == [0] and len(rec.batches) == 2 and len(rec.batches[1]) == 16  # queued while busy
    assert rec.threads == {"batch-t_0"}  # off the event loop, on the batcher's own thread


def test_max_batch_splits_whole_requests():
    rec = Recorder(delay=0.02)
    batcher = GreedyBatcher(rec, max_batch=4, max_queue=1000, name="t")

    async def main():
        blocker = asyncio.create_task(batcher.submit([99]))
        await asyncio.sleep(0.005)
        sizes = [3, 3, 1, 6]  # the 6-row request is larger than max_batch: it runs as a batch of its own
        tasks = [asyncio.create_task(batcher.submit(list(range(n)))) for n in sizes]
        await blocker
        return await asyncio.gather(*tasks)

    results = asyncio.run(main())
    assert [len(r) for r in results] == [3, 3, 1, 6]
    assert [len(b) for b in rec.batches] == [1, 3, 4, 6]  # never splits a request, never exceeds 4 otherwise


def test_full_queue_refuses():
    rec = Recorder(delay=0.05)
    batcher = GreedyBatcher(rec, max_batch=8, max_queue=10, name="t")

    async def main():
        running = asyncio.create_task(batcher.submit([1] * 8))
        await asyncio.sleep(0.01)  # the first batch is running; its rows have left the queue
        queued = asyncio.create_task(batcher.submit([1] * 8))
        await asyncio.sleep(0)
        with pytest.raises(QueueFull):
            await batcher.submit([1] * 3)  # 8 waiting + 3 > 10
        return await running, await queued

    a, b = asyncio.run(main())
    assert len(a) == len(b) == 8


def test_a_failing_batch_fails_its_requests_and_the_batcher_recovers():
    rec = Recorder(fail=True)
    batcher = GreedyBatcher(rec, max_batch=8, max_queue=100, name="t")

    async def main():
        results = await asyncio.gather(batcher.submit([1]), batcher.submit([2]), return_exceptions=True)
        rec.fail = False
        return results, await batcher.submit([3])

    results, after = asyncio.run(main())
    assert all(isinstance(r, ValueError) for r in results) and after == [30]


def test_a_wrong_result_count_fails_the_batch_instead_of_hanging():
    batcher = GreedyBatcher(lambda rows: rows[:-1], max_batch=8, max_queue=100, name="t")

    async def main():
        return await asyncio.wait_for(asyncio.gather(batcher.submit([1, 2]), return_exceptions=True), timeout=2)

    (result,) = asyncio.run(main())
    assert isinstance(result, RuntimeError) and "1 results for 2 rows" in str(result)


def test_an_empty_queue_admits_a_request_larger_than_the_queue():
    batcher = GreedyBatcher(Recorder(), max_batch=8, max_queue=4, name="t")
    assert asyncio.run(batcher.submit(list(range(6)))) == [i * 10 for i in range(6)]
    assert asyncio.run(asyncio.wait_for(batcher.submit([]), timeout=1)) == []  # nothing to run: no wait


def test_cheap_batches_run_on_the_event_loop_and_costly_ones_on_the_thread():
    cheap = Recorder()
    batcher = GreedyBatcher(cheap, max_batch=8, max_queue=100, name="c", inline_s=0.05)

    async def main(b: GreedyBatcher) -> list[str]:
        loop_thread = threading.current_thread().name
        for i in range(3):
            await b.submit([i])
        return [loop_thread]

    (loop_thread,) = asyncio.run(main(batcher))
    # the first batch runs on the thread (its cost is unknown); once timed, the cheap ones run on the loop
    assert cheap.threads == {"batch-c_0", loop_thread} and batcher.row_s < 0.05
    costly = Recorder(delay=0.03)
    batcher = GreedyBatcher(costly, max_batch=8, max_queue=100, name="x", inline_s=0.02)
    asyncio.run(main(batcher))
    assert costly.threads == {"batch-x_0"} and batcher.row_s >= 0.03


def test_without_an_inline_budget_every_batch_runs_on_the_thread():
    work = Recorder()
    batcher = GreedyBatcher(work, max_batch=8, max_queue=100, name="n", inline_s=0.0)

    async def main() -> None:
        for i in range(4):
            await batcher.submit([i])

    asyncio.run(main())
    assert work.threads == {"batch-n_0"} and batcher.row_s < 0.01  # cheap, yet never on the loop


def test_recall_batches_never_run_on_the_event_loop(artifact_root):
    """A recall row costs what its request's max_sweeps allows, so cheap past batches bound nothing: the engine
    (built for real over real artifacts, in a process of its own) gives recall no inline budget, the others one."""
    import json
    import os
    import subprocess
    import sys

    code = (
        "import json; from service.registry import load_tasks; from service.engine import Engine; "
        "load_tasks(); e = Engine(); "
        "print(json.dumps({f'{t}.{m}': b.inline_s for (t, m), b in e.batchers.items()}))"
    )
    env = {**os.environ, "NNSERVE_MODEL_DIR": str(artifact_root), "NNSERVE_BATCHING": "api"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True)
    budgets = json.loads(out.stdout.strip().splitlines()[-1])
    assert budgets["recall.recall"] == 0.0
    assert budgets["image-classification.infer"] > 0 and budgets["generator.gibbs"] > 0
