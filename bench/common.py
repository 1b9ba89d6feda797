"""Shared by bench/burst.py and bench/soak.py: a lean HTTP/1.1 keep-alive load client, closed- and open-loop
load, saturation search, per-response records and their summaries, and nnserve's process tree (CPU, RSS).

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
import base64
import contextlib
import json
import os
import resource
import sys
import tempfile
import time
from array import array
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "loadtest" / "samples"

RETRY_AFTER, ENVELOPE, BAD_200 = 1, 2, 4  # per-response flags
SHED = (429, 503)


# ---- requests -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """One kind of request: its route, prebuilt request bytes (cycled through) and a key every 200 body has."""

    name: str
    path: str
    requests: tuple[bytes, ...]
    expect: bytes


def _request_bytes(host: str, path: str, body: dict) -> bytes:
    data = json.dumps(body, separators=(",", ":")).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


def classify_kind(host: str, n: int = 64) -> Kind:
    """POST /v1/classify with one real PNG digit per request (loadtest/samples/digits)."""
    files = sorted((SAMPLES / "digits").glob("*.png"))[:n]
    if not files:
        raise SystemExit(f"no PNG digits in {SAMPLES / 'digits'}: run loadtest/make_samples.py")
    reqs = tuple(
        _request_bytes(
            host, "/v1/classify", {"model": "mnist-cnn", "images": [base64.b64encode(f.read_bytes()).decode()]}
        )
        for f in files
    )
    return Kind("classify", "/v1/classify", reqs, b'"predictions"')


def sentiment_kind(host: str) -> Kind:
    """POST /v1/sentiment with one real SST-2 sentence per request (loadtest/samples/sentences.txt)."""
    lines = [s for s in (SAMPLES / "sentences.txt").read_text(encoding="utf-8").splitlines() if s.strip()]
    if not lines:
        raise SystemExit(f"no sentences in {SAMPLES / 'sentences.txt'}: run loadtest/make_samples.py")
    reqs = tuple(_request_bytes(host, "/v1/sentiment", {"model": "sst2-lstm", "texts": [s]}) for s in lines)
    return Kind("sentiment", "/v1/sentiment", reqs, b'"predictions"')


def generate_kind(host: str, n: int = 4) -> Kind:
    """POST /v1/generate: ``n`` samples from mnist-gan (random seed, labels cycled by the server)."""
    return Kind("generate", "/v1/generate", (_request_bytes(host, "/v1/generate", {"model": "mnist-gan", "n": n}),),
                b'"samples"')  # fmt: skip


class Picker:
    """Chooses the next request: kinds by weight (seeded, so a schedule is reproducible), each kind's bodies in
    turn. ``pick()`` -> (kind index, request bytes)."""

    def __init__(self, kinds: list[Kind], weights: list[float] | None = None, seed: int = 0) -> None:
        self.kinds = kinds
        self._next = [0] * len(kinds)
        rng = np.random.default_rng(seed)
        w = np.asarray(weights or [1.0] * len(kinds), dtype=float)
        self._plan = rng.choice(len(kinds), size=65_536, p=w / w.sum()).tolist() if len(kinds) > 1 else [0]
        self._i = 0

    def pick(self) -> tuple[int, bytes]:
        k = self._plan[self._i % len(self._plan)]
        self._i += 1
        reqs = self.kinds[k].requests
        i = self._next[k]
        self._next[k] = i + 1
        return k, reqs[i % len(reqs)]


# ---- records --------------------------------------------------------------------------------------------------


def envelope_code(body: bytes) -> str | None:
    """The error code when ``body`` is nnserve's envelope ``{"error": {"code", "message", "details"}}``, else None."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    err = data.get("error") if isinstance(data, dict) else None
    if (
        isinstance(err, dict)
        and isinstance(err.get("code"), str)
        and isinstance(err.get("message"), str)
        and isinstance(err.get("details"), list)
    ):
        return err["code"]
    return None


class Recorder:
    """One row per request: kind, status (0: no response), latency (send -> whole response), lag (schedule ->
    send; 0 in a closed loop), completion time, flags. Compact arrays, so a long soak stays small."""

    def __init__(self, kinds: list[Kind]) -> None:
        self.kinds = kinds
        self.kind = array("B")
        self.status = array("H")
        self.latency = array("d")
        self.lag = array("d")
        self.done = array("d")
        self.flags = array("B")
        self.codes: Counter[str] = Counter()  # "<status> <envelope code>" of every error response
        self.conn_errors: Counter[str] = Counter()
        self.skipped = 0  # open loop: arrivals dropped because --max-connections were all busy
        self.t0 = time.perf_counter()

    def response(self, k: int, head: bytes, body: bytes, t_sched: float, t_send: float, t_done: float) -> None:
        status = int(head[9:12])
        flags = RETRY_AFTER if b"\r\nretry-after:" in head else 0
        if status >= 400:
            code = envelope_code(body)
            if code is not None:
                flags |= ENVELOPE
            self.codes[f"{status} {code or '(not the envelope)'}"] += 1
        elif status == 200 and self.kinds[k].expect not in body:
            flags |= BAD_200
        self._row(k, status, t_sched, t_send, t_done, flags)

    def failure(self, k: int, reason: str, t_sched: float, t_send: float) -> None:
        self.conn_errors[reason] += 1
        self._row(k, 0, t_sched, t_send, time.perf_counter(), 0)

    def _row(self, k: int, status: int, t_sched: float, t_send: float, t_done: float, flags: int) -> None:
        self.kind.append(k)
        self.status.append(status)
        self.latency.append(t_done - t_send)
        self.lag.append(t_send - t_sched)
        self.done.append(t_done - self.t0)
        self.flags.append(flags)

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "kind": np.array(self.kind, dtype=np.uint8),
            "status": np.array(self.status, dtype=np.int32),
            "latency_ms": np.array(self.latency, dtype=float) * 1e3,
            "lag_ms": np.array(self.lag, dtype=float) * 1e3,
            "done": np.array(self.done, dtype=float),
            "flags": np.array(self.flags, dtype=np.uint8),
        }


def pct(values: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if len(values) else None


def latency(values: np.ndarray) -> dict[str, float | None]:
    return {"p50_ms": pct(values, 50), "p99_ms": pct(values, 99), "max_ms": pct(values, 100)}


def summarize(rec: Recorder, seconds: float) -> dict[str, Any]:
    """Counts by status, 200 throughput and latency, shed latency, envelope and Retry-After checks."""
    a = rec.arrays()
    st, lat, fl = a["status"], a["latency_ms"], a["flags"]
    ok = (st == 200) & ((fl & BAD_200) == 0)
    shed = np.isin(st, SHED)
    statuses = {str(s): int(n) for s, n in zip(*np.unique(st[st > 0], return_counts=True), strict=True)}
    return {
        "seconds": round(seconds, 2),
        "requests": len(st),
        "statuses": statuses,
        "ok": int(ok.sum()),
        "ok_per_s": round(float(ok.sum()) / seconds, 1) if seconds > 0 else None,
        "ok_latency": latency(lat[ok]),
        "shed": {str(s): int((st == s).sum()) for s in SHED},
        "shed_latency": latency(lat[shed]),
        "shed_without_retry_after": int((shed & ((fl & RETRY_AFTER) == 0)).sum()),
        "errors_without_envelope": int(((st >= 400) & ((fl & ENVELOPE) == 0)).sum()),
        "malformed_200": int(((st == 200) & ((fl & BAD_200) != 0)).sum()),
        "other_status": {s: n for s, n in statuses.items() if int(s) not in (200, *SHED)},
        "error_codes": dict(rec.codes),
        "connection_errors": dict(rec.conn_errors),
        "skipped_no_connection": rec.skipped,
        "lag": latency(a["lag_ms"]),
    }


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


# ---- the server under test ------------------------------------------------------------------------------------


class ServerTree:
    """nnserve's processes: the ``bentoml serve`` process and every descendant, found by parent pid each time
    (BentoML's workers may leave the process group)."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)

    def procs(self) -> list[psutil.Process]:
        try:
            return [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu(self) -> float:
        total = 0.0
        for p in self.procs():
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def rss(self) -> dict[int, int]:
        """pid -> resident bytes."""
        out = {}
        for p in self.procs():
            with contextlib.suppress(psutil.Error):
                out[p.pid] = p.memory_info().rss
        return out

    def describe(self) -> dict[int, str]:
        out = {}
        for p in self.procs():
            with contextlib.suppress(psutil.Error):
                out[p.pid] = " ".join(p.cmdline())[:160]
        return out


def start_server(model_dir: Path, env: dict[str, str], log: Callable[[str], None] = print) -> Any:
    """A real ``bentoml serve`` (tests/server.py) on a free loopback port; ``.stop()`` it when done."""
    from tests.server import Server

    logs = Path(tempfile.mkdtemp(prefix="nnserve-bench-"))
    log(f"starting nnserve (bentoml serve) with {' '.join(f'{k}={v}' for k, v in env.items()) or 'default settings'}")
    t0 = time.monotonic()
    server = Server(model_dir.resolve(), logs / "serve.log", **env).start(timeout=240)
    log(f"    ready in {time.monotonic() - t0:.1f} s at {server.url}; log {server.log_path}")
    return server


def parse_env(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--env takes KEY=VALUE, not {pair!r}")
        out[key] = value
    return out


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": sys.version.split()[0], "loadavg_at_start": os.getloadavg()}


def run_async(coro: Any) -> Any:
    """asyncio.run on uvloop's loop when it is installed (the client then costs less CPU per request)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)
