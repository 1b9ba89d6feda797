"""The load generator of bench/burst.py and bench/soak.py: a lean HTTP/1.1 keep-alive client, closed- and
open-loop load and the saturation search.

The client is an ``asyncio.Protocol`` on raw TCP (uvloop's loop when installed): each request is prebuilt bytes
(request line, headers, JSON body), each response is framed by its Content-Length (chunked bodies are read too),
one request at a time per connection (no pipelining). It records, per response: status, latency, whether
Retry-After was sent, whether an error body is nnserve's envelope ``{"error": {"code", "message", "details"}}``,
and whether a 200 body carries the field the request asked for. Against a trivial local server it used ~14 us
of CPU per request in a closed loop and ~30-40 us in an open loop at 3,000-5,000 req/s (80-130 us at 200-1,000
req/s, where each request costs the event loop its own wake-ups); this matters, as the load generator shares the
machine's cores with the server, so each phase reports the client's CPU (getrusage) next to the server's.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.common import ServerTree
from bench.payloads import Kind, Picker
from bench.records import Recorder, summarize

# ---- the client -----------------------------------------------------------------------------------------------


class Conn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[tuple[bytes, bytes]] | None = None
        self.head = b""
        self.body_start = -1
        self.need = -1  # total bytes of the response once Content-Length is known
        self.chunked = False
        self.closed = False
        self.keep = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"closed by peer{f': {exc}' if exc else ''}"))

    def request(self, data: bytes) -> asyncio.Future[tuple[bytes, bytes]]:
        assert self.transport is not None and self.waiter is None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.waiter

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.waiter is None:
            return
        if self.body_start < 0:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            self.head = bytes(self.buf[:end]).lower()
            self.body_start = end + 4
            self.keep = b"\r\nconnection: close" not in self.head
            i = self.head.find(b"\r\ncontent-length:")
            if i >= 0:
                j = self.head.find(b"\r\n", i + 2)
                self.need = self.body_start + int(self.head[i + 17 : j if j >= 0 else None])
            elif b"\r\ntransfer-encoding: chunked" in self.head:
                self.chunked = True
            else:
                self._fail(ConnectionError("response without Content-Length"))
                return
        if self.chunked:
            body = self._dechunk()
            if body is None:
                return
        else:
            if len(self.buf) < self.need:
                return
            body = bytes(self.buf[self.body_start : self.need])
            del self.buf[: self.need]
        head, waiter = self.head, self.waiter
        self.waiter, self.body_start, self.need, self.chunked = None, -1, -1, False
        if not waiter.done():
            waiter.set_result((head, body))

    def _dechunk(self) -> bytes | None:
        pos, parts = self.body_start, []
        while True:
            eol = self.buf.find(b"\r\n", pos)
            if eol < 0:
                return None
            size = int(bytes(self.buf[pos:eol]).split(b";")[0], 16)
            if size == 0:
                end = self.buf.find(b"\r\n\r\n", eol)  # trailers, then the blank line
                if end < 0:
                    return None
                del self.buf[: end + 4]
                return b"".join(parts)
            if len(self.buf) < eol + 2 + size + 2:
                return None
            parts.append(bytes(self.buf[eol + 2 : eol + 2 + size]))
            pos = eol + 2 + size + 2

    def _fail(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Client:
    """Keep-alive connections to one server; idle ones are reused oldest first, which spreads the requests over
    every connection (and so over every API worker that accepted one)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: deque[Conn] = deque()
        self.open = 0  # connections open now
        self.peak = 0

    async def connect(self, reserved: bool = False) -> Conn:
        """A new connection; ``reserved``: its slot in ``open`` was already counted (by ``reserve``)."""
        if not reserved:
            self.reserve()
        try:
            _, conn = await asyncio.get_running_loop().create_connection(Conn, self.host, self.port)
        except BaseException:
            self.open -= 1
            raise
        return conn

    def reserve(self) -> None:
        self.open += 1
        self.peak = max(self.peak, self.open)

    async def prefill(self, n: int) -> None:
        """Open connections until ``n`` are idle (the open loop then starts without connecting)."""
        missing = max(0, n - len(self.idle))
        self.idle.extend(await asyncio.gather(*(self.connect() for _ in range(missing))))

    def release(self, conn: Conn) -> None:
        if conn.closed or not conn.keep:
            self.discard(conn)
        else:
            self.idle.append(conn)

    def discard(self, conn: Conn) -> None:
        conn.close()
        self.open -= 1

    def close_all(self) -> None:
        while self.idle:
            self.discard(self.idle.popleft())


def _send(client: Client, conn: Conn, rec: Recorder, k: int, data: bytes, t_sched: float, inflight: set) -> None:
    """One open-loop request on a connection: a callback on the response future, no task per request."""
    t_send = time.perf_counter()
    fut = conn.request(data)
    inflight.add(fut)

    def done(f: asyncio.Future[tuple[bytes, bytes]]) -> None:
        inflight.discard(f)
        if f.cancelled():
            rec.failure(k, "timeout", t_sched, t_send)
            client.discard(conn)
        elif (exc := f.exception()) is not None:
            rec.failure(k, type(exc).__name__, t_sched, t_send)
            client.discard(conn)
        else:
            head, body = f.result()
            rec.response(k, head, body, t_sched, t_send, time.perf_counter())
            client.release(conn)

    fut.add_done_callback(done)


async def _connect_and_send(client: Client, rec: Recorder, k: int, data: bytes, t_sched: float, inflight: set) -> None:
    """One open-loop request when no connection is idle: open one (its slot was reserved), then send."""
    try:
        conn = await client.connect(reserved=True)
    except asyncio.CancelledError:
        rec.failure(k, "timeout", t_sched, time.perf_counter())
        raise
    except OSError as e:
        rec.failure(k, type(e).__name__, t_sched, time.perf_counter())
        return
    _send(client, conn, rec, k, data, t_sched, inflight)


@dataclass
class Load:
    """What a load phase did: its records, how long it sent, and the CPU the client and server used meanwhile."""

    rec: Recorder
    seconds: float  # the sending window
    client_cpu_s: float  # this process, over the sending window
    server_cpu_s: float  # nnserve's process tree, over the sending window
    in_flight_at_end: int
    peak_connections: int


def client_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def open_loop(
    client: Client,
    picker: Picker,
    rate: float,
    seconds: float,
    *,
    server: ServerTree,
    max_connections: int = 1024,
    timeout: float = 35.0,
    sent: asyncio.Event | None = None,
    rec: Recorder | None = None,
) -> Load:
    """Requests at a fixed schedule, ``rate`` per second (evenly spaced) for ``seconds``, whatever the answers:
    each arrival takes the oldest idle connection or opens one (arrivals beyond ``max_connections`` in flight are
    counted as skipped). Latency is measured from the send; ``lag`` (schedule -> send) says whether the client
    kept up. After the window, ``sent`` is set and in-flight requests get ``timeout`` seconds to finish. ``rec``:
    record into this one (so that a caller can watch progress)."""
    loop = asyncio.get_running_loop()
    rec = rec or Recorder(picker.kinds)
    inflight: set[asyncio.Future[Any]] = set()  # response futures, and tasks still connecting
    total, interval = int(rate * seconds), 1.0 / rate
    cpu0, scpu0 = client_cpu(), server.cpu()
    t0 = rec.t0 = time.perf_counter()
    i = 0
    while i < total:
        now = time.perf_counter()
        due = t0 + i * interval
        if due > now:
            await asyncio.sleep(max(due - now, 0.001))  # uvloop rounds timers to 1 ms: never busy-wait
            continue
        while i < total and t0 + i * interval <= now:
            k, data = picker.pick()
            if client.idle:
                _send(client, client.idle.popleft(), rec, k, data, t0 + i * interval, inflight)
            elif client.open >= max_connections:
                rec.skipped += 1
            else:
                client.reserve()
                task = loop.create_task(_connect_and_send(client, rec, k, data, t0 + i * interval, inflight))
                inflight.add(task)
                task.add_done_callback(inflight.discard)
            i += 1
    elapsed = max(time.perf_counter() - t0, seconds)
    load = Load(rec, elapsed, client_cpu() - cpu0, server.cpu() - scpu0, len(inflight), client.peak)
    if sent is not None:
        sent.set()
    deadline = time.perf_counter() + timeout
    while inflight:  # a task still connecting adds its response future when it sends: wait again for those
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            left = list(inflight)
            for fut in left:
                fut.cancel()
            await asyncio.gather(*left, return_exceptions=True)
            break
        await asyncio.wait(set(inflight), timeout=remaining)
    return load


async def closed_loop(
    client: Client,
    picker: Picker,
    concurrency: int,
    seconds: float,
    *,
    server: ServerTree,
    timeout: float = 35.0,
    sent: asyncio.Event | None = None,
) -> Load:
    """``concurrency`` connections, each sending its next request as soon as the last is answered, for
    ``seconds``; then ``sent`` is set and the last requests get ``timeout`` seconds to finish."""
    rec = Recorder(picker.kinds)
    busy = 0

    async def worker(stop_at: float) -> None:
        nonlocal busy
        conn: Conn | None = None
        while time.perf_counter() < stop_at:
            if conn is not None and conn.closed:
                client.discard(conn)
                conn = None
            k, data = picker.pick()
            t_send = time.perf_counter()
            busy += 1
            try:
                if conn is None:
                    conn = await client.connect()
                head, body = await conn.request(data)
            except asyncio.CancelledError:
                rec.failure(k, "timeout", t_send, t_send)
                raise
            except OSError as e:
                rec.failure(k, type(e).__name__, t_send, t_send)
                if conn is not None:
                    client.discard(conn)
                conn = None
                await asyncio.sleep(0.01)  # a refused connect must not spin
                continue
            finally:
                busy -= 1
            rec.response(k, head, body, t_send, t_send, time.perf_counter())
            if not conn.keep:
                client.discard(conn)
                conn = None
        if conn is not None:
            client.discard(conn)

    cpu0, scpu0 = client_cpu(), server.cpu()
    t0 = rec.t0 = time.perf_counter()
    tasks = [asyncio.create_task(worker(t0 + seconds)) for _ in range(concurrency)]
    await asyncio.sleep(seconds)
    load = Load(rec, time.perf_counter() - t0, client_cpu() - cpu0, server.cpu() - scpu0, busy, client.peak)
    if sent is not None:
        sent.set()
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return load


def load_row(load: Load) -> dict[str, Any]:
    s = summarize(load.rec, load.seconds)
    s["sent_per_s"] = round(s["requests"] / load.seconds, 1)
    s["client_cpu_s"] = round(load.client_cpu_s, 2)
    s["server_cpu_s"] = round(load.server_cpu_s, 2)
    s["server_cpu_ms_per_req"] = round(1e3 * load.server_cpu_s / max(s["requests"], 1), 3)
    s["in_flight_at_end"] = load.in_flight_at_end
    s["peak_connections"] = load.peak_connections
    return s


async def saturation(
    client: Client,
    kind: Kind,
    levels: list[int],
    seconds: float,
    *,
    server: ServerTree,
    warmup: float = 2.0,
    gain: float = 0.05,
    patience: int = 2,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Closed-loop 200s/s at increasing concurrency (after a warm-up), stopping after ``patience`` levels in a row
    that do not raise the best so far by ``gain``: -> the best throughput and the lowest concurrency within
    ``gain`` of it."""
    picker = Picker([kind])
    await closed_loop(client, picker, levels[min(3, len(levels) - 1)], warmup, server=server)
    rows: list[dict[str, Any]] = []
    flat = 0
    for c in levels:
        row = {"concurrency": c, **load_row(await closed_loop(client, picker, c, seconds, server=server))}
        rows.append(row)
        log(
            f"    c={c:<4d} {row['ok_per_s']:8.1f} ok/s  p50 {row['ok_latency']['p50_ms']} ms  "
            f"p99 {row['ok_latency']['p99_ms']} ms  non-200 {row['requests'] - row['ok']}  "
            f"client {row['client_cpu_s']:.2f} s CPU  server {row['server_cpu_ms_per_req']:.2f} ms CPU/req"
        )
        flat = flat + 1 if len(rows) > 1 and row["ok_per_s"] < max(r["ok_per_s"] for r in rows[:-1]) * (1 + gain) else 0
        if flat >= patience:
            break
    top = max(r["ok_per_s"] for r in rows)
    reached = min(r["concurrency"] for r in rows if r["ok_per_s"] * (1 + gain) >= top)  # the first within gain
    return {"ok_per_s": top, "concurrency": reached, "levels": rows, "step_s": seconds, "gain": gain,
            "patience": patience}  # fmt: skip
