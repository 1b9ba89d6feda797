"""The servers under test: how each starts (2 workers), which routes it serves, which of its processes are its
workers, whether it answers right, and the CPU time each worker takes during a run.

Worker balance: the share of the work each worker process did in a run is measured as its share of the CPU
time that the server's worker processes consumed during the run (psutil, user + system, read just before and
just after wrk). CPU time is the proxy for requests served: the processes are alike, so a worker that took
half the CPU served about half the requests. The worker processes are the known ones per server (a pattern on
the command line, below): nnserve's and BentoML's API workers, the uvicorn/KServe REST workers, LitServe's and
MLServer's inference workers, PyTriton's two python-backend stubs (one per model instance; the inference
itself runs in threads of the PyTriton process, which the stubs feed). What the other processes of the tree
took (supervisors, LitServe's API servers, MLServer's HTTP process, tritonserver) is reported beside it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

from bench.common import REPO, ServerTree, start_server
from bench.peers.venvs import PeerError, python, short_error

V1 = "/v1/classify"
V2 = "/v2/models/mnist-cnn/infer"
# the same path and tensor, sent with the binary tensor data extension (the fragment names the route here only;
# it never reaches a server)
V2_BINARY = V2 + "#binary"


def path(route: str) -> str:
    return route.partition("#")[0]


def binary_request(v2_json: bytes) -> tuple[bytes, dict[str, str]]:
    """A /v2 JSON request -> the same tensors as raw little-endian FP32 after a JSON header, and its headers."""
    request = json.loads(v2_json)
    raw = b""
    for tensor in request["inputs"]:
        data = np.asarray(tensor.pop("data"), dtype="<f4").tobytes()
        tensor["parameters"] = {"binary_data_size": len(data)}
        raw += data
    head = json.dumps(request, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(head))}
    return head + raw, headers


HERE = Path(__file__).resolve().parent
MODEL_DIR = REPO / "artifacts"
START_TIMEOUT_S = 240
SPAWNED = r"multiprocessing\.spawn import spawn_main"  # a multiprocessing worker (never the resource tracker)


@dataclass(frozen=True)
class Spec:
    name: str
    what: str  # one line: the server and how it is configured
    routes: tuple[str, ...]
    workers: str  # regex on a worker process's command line
    ready: str = ""  # polled until it answers 200
    ports: int = 1  # HTTP first, then the others it needs (gRPC, metrics)
    argv: Callable[[Path, list[int]], list[str]] | None = None  # (venv python, ports) -> command
    cwd: Path = REPO


def _ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _script(name: str) -> Callable[[Path, list[int]], list[str]]:
    return lambda py, ports: [str(py), str(HERE / name), *map(str, ports)]


SPECS: dict[str, Spec] = {
    s.name: s
    for s in (
        Spec("nnserve", "bentoml serve service.service:NNServe, NNSERVE_API_WORKERS=2, default settings",
             (V1, V2, V2_BINARY), r"_bentoml_impl\.worker\.service"),
        Spec("fastapi", "hand-written FastAPI + uvicorn --workers 2, async handler, onnxruntime inline",
             (V1,), SPAWNED, "/healthz", 1,
             lambda py, p: [str(py.with_name("uvicorn")), "--app-dir", str(HERE), "peer_fastapi:app", "--host",
                            "127.0.0.1", "--port", str(p[0]), "--workers", "2", "--log-level", "warning",
                            "--no-access-log"]),
        Spec("bentoml-docs", "BentoML as its docs write it: @bentoml.service(workers=2), @bentoml.api(batchable=True)",
             (V1,), r"_bentoml_impl\.worker\.service", "/readyz", 1,
             lambda py, p: [str(py.with_name("bentoml")), "serve", "peer_bentoml:DigitsService", "--host",
                            "127.0.0.1", "--port", str(p[0])], HERE),
        Spec("litserve", "LitServe LitAPI, workers_per_device=2 on cpu (and 2 API servers, its default)",
             (V1,), SPAWNED, "/health", 1, _script("peer_litserve.py")),
        Spec("kserve", "KServe kserve.Model + ModelServer(workers=2), OIP v2 REST",
             (V2, V2_BINARY), SPAWNED, "/v2/models/mnist-cnn/ready", 1,
             lambda py, p: [str(py), str(HERE / "peer_kserve.py"), "--http_port", str(p[0])]),
        Spec("mlserver", "MLServer custom runtime, parallel_workers=2, OIP v2 REST",
             (V2,), SPAWNED, "/v2/models/mnist-cnn/ready", 3, _script("peer_mlserver.py")),
        Spec("pytriton", "PyTriton (Triton CPU) with 2 model instances, default dynamic batching, OIP v2 REST",
             (V2, V2_BINARY), r"triton_python_backend_stub", "/v2/models/mnist-cnn/ready", 3,
             _script("peer_pytriton.py")),
    )
}  # fmt: skip
ORDER = list(SPECS)


# ---- starting and stopping ----------------------------------------------------------------------------------


class Running:
    """A started server: its URL, its root process and ``stop()``, which also ends any process of its tree
    that outlived the root (by pid: only processes this run started)."""

    def __init__(self, spec: Spec, url: str, pid: int, stop: Callable[[], None], log: Path) -> None:
        self.spec, self.url, self.pid, self._stop, self.log = spec, url, pid, stop, log
        self.tree = ServerTree(pid)

    def stop(self) -> list[int]:
        procs = self.tree.procs()
        with contextlib.suppress(Exception):
            self._stop()
        _, alive = psutil.wait_procs(procs, timeout=10)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
        return [p.pid for p in alive]


def start(name: str, log_dir: Path) -> Running:
    spec = SPECS[name]
    log = log_dir / f"{name}.log"
    if name == "nnserve":
        try:
            server = start_server(MODEL_DIR, {"NNSERVE_API_WORKERS": "2"}, log=lambda m: None)
        except RuntimeError as e:
            raise PeerError(f"start: {short_error(str(e))}") from None
        assert server.proc is not None
        return Running(spec, server.url, server.proc.pid, server.stop, server.log_path)
    assert spec.argv is not None
    ports = _ports(spec.ports)
    url = f"http://127.0.0.1:{ports[0]}"
    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "True", "BENTOML_HOME": str(log_dir / "bentoml-home"),
           "PEER_MODEL_DIR": str(MODEL_DIR / "mnist-cnn"), "PYTHONUNBUFFERED": "1"}  # fmt: skip
    with open(log, "wb") as out:
        proc = psutil.Popen(spec.argv(python(name), ports), cwd=spec.cwd, env=env, stdout=out,
                            stderr=out, start_new_session=True)  # fmt: skip

    def stop() -> None:  # SIGTERM to the root, which shuts its workers down in order; then the whole group
        with contextlib.suppress(psutil.Error):
            proc.terminate()
        with contextlib.suppress(psutil.TimeoutExpired):
            proc.wait(20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    running = Running(spec, url, proc.pid, stop, log)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            running.stop()
            raise PeerError(f"exited with {proc.returncode}: {short_error(log.read_text(errors='replace'))}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + spec.ready, timeout=2).status_code == 200:
                return running
        time.sleep(0.5)
    running.stop()
    raise PeerError(f"not ready in {START_TIMEOUT_S} s: {short_error(log.read_text(errors='replace'))}")


# ---- the right answer ---------------------------------------------------------------------------------------


def expected_answer(png: bytes) -> tuple[str, list[str]]:
    """The label nnserve's own preprocessing and the ONNX graph give the PNG (in process), and the labels."""
    import onnxruntime as ort

    from contract.images import decode_image, normalize, prepare_image
    from contract.metadata import load_metadata

    meta = load_metadata(MODEL_DIR / "mnist-cnn")
    pre = meta.image_preprocessing()
    x = normalize(prepare_image(decode_image(png, max_pixels=25_000_000), pre), pre)[None]
    sess = ort.InferenceSession(str(MODEL_DIR / "mnist-cnn" / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = sess.run([meta.outputs[0].name], {meta.inputs[0].name: x})[0]
    return meta.labels[int(np.argmax(logits[0]))], list(meta.labels)


def answer_label(route: str, answer: Any, labels: list[str]) -> str:
    """The predicted label in a server's answer: /v1's ``predictions[0].label`` (or a bare list of predictions,
    BentoML's batchable shape); /v2's argmax of the ``probabilities`` (peers) or ``logits`` (nnserve) output."""
    if route == V1:
        preds = answer["predictions"] if isinstance(answer, dict) else answer
        return str(preds[0]["label"])
    outputs = {o["name"]: o for o in answer["outputs"]}
    out = outputs.get("probabilities") or outputs["logits"]
    return labels[int(np.argmax(out["data"][: len(labels)]))]


def check(
    server: Running, route: str, body: bytes, expected: str, labels: list[str], headers: dict[str, str] | None = None
) -> str | None:
    """None when the server answers ``body`` with 200 and the expected label, else why not."""
    headers = {"Content-Type": "application/json", **(headers or {})}
    try:
        r = httpx.post(server.url + path(route), content=body, headers=headers, timeout=30)
    except httpx.HTTPError as e:
        return f"no answer: {type(e).__name__}"
    if r.status_code != 200:
        return f"HTTP {r.status_code}: {r.text[:100]}"
    try:
        label = answer_label(route, r.json(), labels)
    except (ValueError, KeyError, IndexError, TypeError) as e:
        return f"unreadable answer ({type(e).__name__}): {r.text[:100]}"
    return None if label == expected else f"wrong answer: label {label!r}, expected {expected!r}"


# ---- CPU per process ----------------------------------------------------------------------------------------


def cpu_snapshot(server: Running) -> dict[int, tuple[str, float]]:
    """pid -> (command line, CPU seconds so far) for every process of the server's tree."""
    out = {}
    for p in server.tree.procs():
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            out[p.pid] = (" ".join(p.cmdline()), t.user + t.system)
    return out


def balance(spec: Spec, before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict:
    """Each worker's share of the workers' CPU time between two snapshots (see the module's docstring)."""
    delta = {pid: cpu - before.get(pid, ("", 0.0))[1] for pid, (_, cpu) in after.items()}
    workers = sorted((pid for pid, (cmd, _) in after.items() if re.search(spec.workers, cmd)), key=lambda p: delta[p])
    total, busy = sum(delta.values()), sum(delta[p] for p in workers)
    shares = [delta[p] / busy for p in workers] if busy > 0 else []
    return {
        "workers": len(workers),
        "worker_cpu_s": [round(delta[p], 3) for p in workers],
        "worker_shares": [round(s, 3) for s in shares],
        "min_worker_share": round(min(shares), 3) if len(shares) > 1 else (0.0 if len(workers) > 1 else None),
        "other_processes_cpu_share": round((total - busy) / total, 3) if total > 0 else None,
    }


def idle_cpu_percent(server: Running, seconds: float = 2.0) -> float:
    """The server's CPU use while nothing is sent (percent of one core)."""
    time.sleep(1.0)  # let the last run's requests drain
    cpu0 = server.tree.cpu()
    time.sleep(seconds)
    return round(100 * (server.tree.cpu() - cpu0) / seconds, 1)
