"""Hostile and careless clients at full size (issue 14) against a real nnserve on its default settings.

    .venv/bin/python -m bench.probe [--json docs/probe.json]      # `make probe`; about two minutes

Starts ``bentoml serve`` over artifacts/ on a free loopback port and sends each probe in turn while a bystander
process (its own interpreter, so the probe's own work does not delay it) sends a GET /livez and a small
/v1/classify every 50 ms. Prints one table: the probe, what was sent, the status codes seen (``closed``: the
server closed the connection without an answer, as it does to idle connections past the cap), the bystander's
success rate and worst latency, the largest resident memory of one API worker, and the size of /metrics.
The fast versions of every probe are tests (tests/test_hostile.py, tests/test_slow_clients.py).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import json
import multiprocessing as mp
import resource
import socket
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from bench.common import REPO, ServerTree, machine, start_server

BROKEN_EXIF_PNG = (  # issue 14, item 6: a broken eXIf chunk
    "iVBORw0KGgoAAAANSUhEUgAAABwAAAAcCAAAAABXZoBIAAAACGVYSWZYWAAqAAAACFfcxWYAAAAQSURBVHicY2AYBa"
    "NgFBADAAMsAAE/CkbzAAAAAElFTkSuQmCC"
)


def _digit_b64() -> str:
    buf = io.BytesIO()
    Image.new("L", (28, 28), 0).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _bystander(url: str, stop: Any, out: Any) -> None:
    """GET /livez and a one-image /v1/classify every 50 ms until ``stop``; (ok, latency s) per request."""
    body = {"model": "mnist-cnn", "images": [_digit_b64()]}
    results = []
    with httpx.Client(base_url=url, timeout=10) as c:
        while not stop.is_set():
            for call in (lambda: c.get("/livez"), lambda: c.post("/v1/classify", json=body)):
                t0 = time.perf_counter()
                try:
                    ok = call().status_code == 200
                except httpx.HTTPError:
                    ok = False
                results.append((ok, time.perf_counter() - t0))
            time.sleep(0.05)
    out.put(results)


class Watch:
    """During one probe: the bystander process, and the largest RSS of any one nnserve process (every 100 ms)."""

    def __init__(self, url: str, tree: ServerTree) -> None:
        self.url, self.tree = url, tree

    def __enter__(self) -> Watch:
        ctx = mp.get_context("spawn")
        self.stop, self.queue = ctx.Event(), ctx.Queue()
        self.proc = ctx.Process(target=_bystander, args=(self.url, self.stop, self.queue), daemon=True)
        self.proc.start()
        self.peak = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        time.sleep(1.0)  # the bystander's interpreter starts
        return self

    def _sample(self) -> None:
        while not self._done.is_set():
            self.peak = max([self.peak, *self.tree.rss().values()])
            time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.results = self.queue.get(timeout=60)
        self.proc.join()
        self._done.set()
        self._thread.join()


async def _exchange(port: int, data: bytes, *, pace: float = 0.0, chunk: int = 1 << 16, wait: float = 30.0) -> str:
    """Send ``data`` on a fresh connection (``chunk`` bytes every ``pace`` s), read the answer: its status code,
    'closed' (closed without one) or 'timeout' (none within ``wait`` s of the last byte sent)."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return "refused"
    status = "closed"

    async def feed() -> None:
        for i in range(0, len(data), chunk):
            writer.write(data[i : i + chunk])
            await writer.drain()
            if pace:
                await asyncio.sleep(pace)

    sender = asyncio.ensure_future(feed())
    try:
        line = await asyncio.wait_for(reader.readline(), timeout=wait + len(data) / chunk * pace)
        status = line.split()[1].decode() if line.startswith(b"HTTP/") else "closed"
    except TimeoutError:
        status = "timeout"
    except (ConnectionError, OSError):
        status = "closed"
    finally:
        sender.cancel()
        writer.close()
    return status


def _post(path: str, body: bytes, ctype: str = "application/json", length: int | None = None) -> bytes:
    n = len(body) if length is None else length
    return f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\nContent-Length: {n}\r\n\r\n".encode() + body


def _b64_json(blob: bytes) -> bytes:
    return json.dumps({"model": "mnist-cnn", "images": [base64.b64encode(blob).decode()]}).encode()


def _strip_png() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (1, 25_000_000), 255).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _scan_bomb(scans: int = 5000) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (512, 512, 3), dtype=np.uint8)).save(
        buf, format="JPEG", progressive=True
    )
    jpeg = buf.getvalue()
    last = jpeg[jpeg.rfind(b"\xff\xda") : -2]
    return jpeg[:-2] + last * (scans - jpeg.count(b"\xff\xda")) + jpeg[-2:]


async def unknown_paths(port: int) -> list[str]:
    async def worker(k: int) -> list[str]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        codes = []
        for i in range(k, 20_000, 8):
            writer.write(f"GET /probe-{i}-{'x' * 40} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            codes.append(head.split()[1].decode())
            length = next(
                (int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")), 0
            )
            await reader.readexactly(length)
            if b"connection: close" in head.lower():  # the server moves the connection (service/balance.py)
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        return codes

    return [c for part in await asyncio.gather(*(worker(k) for k in range(8))) for c in part]


async def slow_uploads(port: int) -> list[str]:
    """400 connections each declaring a 1,000-byte body and sending it at 1 byte a second."""
    data = _post("/v1/classify", b"x" * 1000)
    head_len = data.index(b"\r\n\r\n") + 4

    async def one() -> str:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(data[:head_len])
        status = "timeout"
        try:
            async with asyncio.timeout(20):
                for b in data[head_len:]:
                    writer.write(bytes([b]))
                    try:
                        line = await asyncio.wait_for(reader.readline(), 1.0)
                    except TimeoutError:
                        continue
                    status = line.split()[1].decode() if line.startswith(b"HTTP/") else "closed"
                    break
        except TimeoutError:
            pass
        except (ConnectionError, OSError):
            status = "closed"
        writer.close()
        return status

    return list(await asyncio.gather(*(one() for _ in range(400))))


async def heavy_inputs(port: int) -> list[str]:
    ints = b'{"model": "mnist-cnn", "images": [' + b",".join([b"1"] * 20_000_000) + b"]}"
    bodies = [_b64_json(_strip_png()), _b64_json(_scan_bomb()), ints]
    return list(await asyncio.gather(*(_exchange(port, _post("/v1/classify", b)) for b in bodies)))


async def large_bodies(port: int) -> list[str]:
    big = b'{"model": "mnist-cnn", "images": ["' + b"A" * ((64 << 20) - 64) + b'"]}'
    return list(await asyncio.gather(*(_exchange(port, _post("/v1/classify", big)) for _ in range(16))))


async def odd_json(port: int) -> list[str]:
    img = _digit_b64()
    bodies = [f'{{"model": "mnist-cnn", "images": ["{img}"], "top_k": {v}}}' for v in ("NaN", "Infinity", "1e400")]
    bodies += ['{"model": "mnist-cnn", "images": ["\\ud800"]}', '{"model": "mnist-gan", "n": true}']
    bodies += [f'{{"model": "mnist-cnn", "images": ["{BROKEN_EXIF_PNG}"]}}']
    return [await _exchange(port, _post("/v1/classify", b.encode())) for b in bodies]


async def silent_connections(port: int) -> list[str]:
    """10,000 connections that send nothing; a new client meanwhile; how many are closed 12 s later."""
    conns = []
    for _ in range(10_000):
        try:
            conns.append(await asyncio.open_connection("127.0.0.1", port))
        except OSError:
            break
    fresh = await _exchange(port, b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.sleep(12)
    statuses = [fresh]
    for reader, writer in conns:
        try:
            line = await asyncio.wait_for(reader.readline(), 0.01)
            statuses.append(line.split()[1].decode() if line.startswith(b"HTTP/") else "closed")
        except TimeoutError:
            statuses.append("still open")
        except (ConnectionError, OSError):
            statuses.append("closed")
        writer.close()
    return statuses


async def huge_header(port: int) -> list[str]:
    """A 64 MB header, sent as fast as the server reads it; timed from the first byte sent to the status line
    read, on a plain socket with the sending in another thread (asyncio's own writes added 20 ms here)."""
    return [await asyncio.to_thread(_huge_header, port)]


def _huge_header(port: int) -> str:
    data = memoryview(b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (64 << 20) + b"\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:

        def feed() -> None:
            with contextlib.suppress(OSError):
                for i in range(0, len(data), 1 << 16):
                    s.sendall(data[i : i + (1 << 16)])

        t0 = time.perf_counter()
        threading.Thread(target=feed, daemon=True).start()
        head = b""
        with contextlib.suppress(OSError):
            while b"\r\n" not in head and (chunk := s.recv(4096)):
                head += chunk
        ms = 1000 * (time.perf_counter() - t0)
    status = head.split()[1].decode() if head.startswith(b"HTTP/") else "closed"
    return f"{status} in {ms:.0f} ms"


PROBES: list[tuple[str, str, Callable[[int], Awaitable[list[str]]]]] = [
    ("unknown paths", "20,000 GETs to unique unknown paths", unknown_paths),
    ("slow uploads", "400 connections sending a 1,000-byte body at 1 byte/s", slow_uploads),
    ("CPU-heavy inputs", "1x25,000,000 PNG, 5,000-scan JPEG, 20 M-integer JSON, at once", heavy_inputs),
    ("large bodies", "16 concurrent 64 MiB bodies", large_bodies),
    ("odd JSON and metadata", "NaN, Infinity, 1e400, a lone surrogate, true, broken EXIF", odd_json),
    ("silent connections", "10,000 connections sending nothing, then a new client", silent_connections),
    ("huge header", "a 64 MB request header", huge_header),
]


def _row(name: str, sent: str, statuses: list[str], watch: Watch, seconds: float, metrics: bytes) -> dict[str, Any]:
    lat = np.array([t for _, t in watch.results]) * 1000
    return {
        "probe": name,
        "sent": sent,
        "statuses": dict(Counter(statuses).most_common()),
        "bystander_ok": float(np.mean([ok for ok, _ in watch.results])) if watch.results else None,
        "bystander_p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
        "bystander_max_ms": float(lat.max()) if len(lat) else None,
        "worker_rss_mb_max": watch.peak / 2**20,
        "metrics_kb": len(metrics) / 1024,
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=Path, default=REPO / "artifacts")
    ap.add_argument("--json", type=Path, default=None, help="write the rows here")
    ap.add_argument("--only", nargs="*", default=None, help="probe names to run (default: all)")
    args = ap.parse_args(argv)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    server = start_server(args.models, {})
    tree = ServerTree(server.proc.pid)
    rows = []
    try:
        for name, sent, probe in PROBES:
            if args.only and name not in args.only:
                continue
            with Watch(server.url, tree) as watch:
                t0 = time.perf_counter()
                statuses = asyncio.run(probe(server.port))
                seconds = time.perf_counter() - t0
            t1 = time.perf_counter()
            metrics = httpx.get(f"{server.url}/metrics", timeout=60).content
            scrape_ms = 1000 * (time.perf_counter() - t1)
            row = _row(name, sent, statuses, watch, seconds, metrics)
            row["scrape_ms"] = scrape_ms
            rows.append(row)
            print(
                f"{name:22s} {json.dumps(row['statuses'])[:70]:70s} bystander ok {row['bystander_ok']:.1%} "
                f"p99 {row['bystander_p99_ms']:.0f} ms max {row['bystander_max_ms']:.0f} ms  "
                f"worker RSS {row['worker_rss_mb_max']:.0f} MB  /metrics {row['metrics_kb']:.0f} KB "
                f"({scrape_ms:.0f} ms)",
                flush=True,
            )
    finally:
        server.stop()
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
