"""Start and stop a real ``bentoml serve`` on a free loopback port for tests and benchmarks."""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
BENTOML = Path(sys.executable).with_name("bentoml")


@contextlib.contextmanager
def client_per_thread(base_url: str, timeout: float = 30) -> Iterator[Callable[[], httpx.Client]]:
    """A fleet of callers for a test's thread pool: the function yields the calling thread's own httpx.Client
    (one client shared by 24 and 48 threads has failed twice on the client's side, with a closed file
    descriptor, which is not what such a test is about); all of them are closed at the end."""
    own, opened = threading.local(), []

    def mine() -> httpx.Client:
        if not hasattr(own, "http"):
            own.http = httpx.Client(base_url=base_url, timeout=timeout)
            opened.append(own.http)
        return own.http

    try:
        yield mine
    finally:
        for http in opened:
            http.close()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range.

    Port 0 would hand out an ephemeral port, and between closing this probe and ``bentoml serve`` binding it
    any outgoing connection on the host (a test's client, a server's own) may take it as its local port:
    CI saw "Could not bind" that way. Below the range only another server can take it, and ``start`` retries.
    """
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randrange(max(1024, low - 20000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


class _PortTaken(RuntimeError):
    """Another process bound the chosen port first; ``Server.start`` tries fresh ones."""


class Server:
    def __init__(self, model_dir: Path, log_path: Path, root: Path = REPO, **env: str) -> None:
        self.root = root  # the source tree served (tests/test_add_a_family.py serves a copy with a new family)
        self._choose_ports()
        self.log_path = log_path
        self.env = {
            **os.environ,
            "BENTOML_DO_NOT_TRACK": "True",
            "NNSERVE_MODEL_DIR": str(model_dir),
            "BENTOML_HOME": str(log_path.parent / "bentoml-home"),
            "NNSERVE_DRAIN_S": "0",  # stop at once; tests/test_shutdown.py sets a drain period
            "NNSERVE_GRPC_PORT": str(self.grpc_port),
            "NNSERVE_METRICS_MAX_AGE_S": "0",  # tests read counters right after the requests that move them
            **env,
        }
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90.0, probe: str = "/readyz") -> Server:
        """Start, and wait until ``probe`` answers 200 (``/livez`` for a server that is meant not to be ready)."""
        for _attempt in range(3):
            try:
                return self._start(timeout, probe)
            except _PortTaken:
                self._choose_ports()
                self.env["NNSERVE_GRPC_PORT"] = str(self.grpc_port)
        return self._start(timeout, probe)

    def _choose_ports(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.grpc_port = free_port()  # every server its own: the default 8001 would be shared (SO_REUSEPORT)
        while self.grpc_port == self.port:  # two draws from one range: a fresh clone's run drew the same port twice
            self.grpc_port = free_port()
        self.grpc_url = f"127.0.0.1:{self.grpc_port}"

    def _start(self, timeout: float, probe: str) -> Server:
        log = open(self.log_path, "wb")  # noqa: SIM115  (closed with the process)
        self.proc = subprocess.Popen(
            [str(BENTOML), "serve", "service.service:NNServe", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=self.root,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if "Could not bind" in self.log():
                    raise _PortTaken(self.log())
                raise RuntimeError(f"bentoml serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + probe, timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"server not ready in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def errors(self, code: str) -> float:
        """nnserve_errors_total for ``code``, summed over endpoints (tests start servers that render /metrics on
        every scrape: NNSERVE_METRICS_MAX_AGE_S=0)."""
        text = httpx.get(self.url + "/metrics", timeout=10).text
        pattern = rf'^nnserve_errors_total{{[^}}]*code="{code}"[^}}]*}} (\S+)$'
        return sum(float(v) for v in re.findall(pattern, text, re.M))

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
