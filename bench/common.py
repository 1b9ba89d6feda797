"""Shared by the benchmarks (bench/burst.py, soak.py, run.py, probe.py): paths, per-response flags, nnserve's
process tree (CPU, RSS) and starting a server under test. The load client is bench/loadgen.py, the requests
bench/payloads.py, the records bench/records.py."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "loadtest" / "samples"


def file_at(rev: str, path: str | Path) -> bytes:
    """A repository file's bytes at commit ``rev`` (``path`` relative to the repository root)."""
    return subprocess.run(["git", "show", f"{rev}:{path}"], cwd=REPO, check=True, capture_output=True).stdout


RETRY_AFTER, ENVELOPE, BAD_200 = 1, 2, 4  # per-response flags
SHED = (429, 503)


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


def start_server(model_dir: Path, env: dict[str, str], log: Callable[[str], None] = print, root: Path = REPO) -> Any:
    """A real ``bentoml serve`` (tests/server.py) of the source tree ``root`` on a free loopback port; ``.stop()``
    it when done."""
    from tests.server import Server

    logs = Path(tempfile.mkdtemp(prefix="nnserve-bench-"))
    log(f"starting nnserve (bentoml serve) with {' '.join(f'{k}={v}' for k, v in env.items()) or 'default settings'}")
    t0 = time.monotonic()
    server = Server(model_dir.resolve(), logs / "serve.log", root=root, **env).start(timeout=240)
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
