"""A/B of two revisions of nnserve on this machine: throughput and server CPU per request, measured in short
alternating slices so that the machine's drift (large here: whole runs vary by 30 %) hits both sides alike.

    python -m bench.ab --old REV [--rounds 20] [--seconds 3] [--workers 1]

The old side is REV checked out in a temporary git worktree, the new side the working tree; both servers run at
once (an idle one costs nothing), each over this tree's artifacts/ with default settings but --workers API
workers. For POST /v1/classify (one PNG digit) and then POST /v2/models/mnist-cnn/infer (the same digit as a JSON
FP32 tensor), each side is warmed up for 3 s, then --rounds times each side gets a --seconds slice of wrk (pinned
to core 1, 16 connections), the order flipping every round; the server's CPU time (its whole process tree) is
read around each slice. Printed: the median of the paired new/old req/s ratios, the ratio of all requests
served, and CPU per request.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from bench.common import REPO, SAMPLES, ServerTree

ROUTES = {"v1": "/v1/classify", "v2": "/v2/models/mnist-cnn/infer"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_bodies(work: Path) -> None:
    png = sorted((SAMPLES / "digits").glob("*.png"))[0].read_bytes()
    (work / "v1.json").write_text(json.dumps({"model": "mnist-cnn", "images": [base64.b64encode(png).decode()]}))
    meta = json.loads((REPO / "artifacts" / "mnist-cnn" / "model.json").read_text())
    pre = meta["preprocessing"]
    x = np.asarray(Image.open(io.BytesIO(png)).convert("L").resize((28, 28)), np.float32) / 255
    x = (x - pre["mean"][0]) / pre["std"][0]
    tensor = {
        "name": meta["inputs"][0]["name"],
        "shape": [1, 1, 28, 28],
        "datatype": "FP32",
        "data": x.ravel().tolist(),
    }
    (work / "v2.json").write_text(json.dumps({"inputs": [tensor]}))
    for name in ROUTES:
        (work / f"{name}.lua").write_text(
            f'local f = io.open("{work}/{name}.json", "rb") wrk.method = "POST" wrk.body = f:read("*a") '
            'wrk.headers["Content-Type"] = "application/json"'
        )


def wrk(work: Path, name: str, port: int, seconds: float) -> tuple[int, float, int]:
    """-> (requests, req/s, non-2xx responses)."""
    cmd = ["taskset", "-c", "1", "wrk", "-t1", "-c16", f"-d{seconds:g}s", "-s", str(work / f"{name}.lua")]
    out = subprocess.run([*cmd, f"http://127.0.0.1:{port}{ROUTES[name]}"], capture_output=True, text=True).stdout
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return requests, rps, int(bad.group(1)) if bad else 0


def start(tree: Path, work: Path, workers: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {
        **os.environ,
        "NNSERVE_MODEL_DIR": str(REPO / "artifacts"),
        "NNSERVE_API_WORKERS": str(workers),
        "BENTOML_DO_NOT_TRACK": "True",
        "BENTOML_HOME": str(work / f"home-{port}"),
    }
    cmd = [str(REPO / ".venv" / "bin" / "bentoml"), "serve", "service.service:NNServe", "--port", str(port)]
    proc = subprocess.Popen(
        [*cmd, "--host", "127.0.0.1"], cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    for _ in range(240):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the server in {tree} did not turn ready")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", required=True, help="the revision to compare the working tree with")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="nnserve-ab-") as tmp:
        work = Path(tmp)
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(work / "old"), args.old], check=True)
        procs = []
        try:
            write_bodies(work)
            servers = {}
            for side, tree in (("old", work / "old"), ("new", REPO)):
                proc, port = start(tree, work, args.workers)
                procs.append(proc)
                servers[side] = (port, ServerTree(proc.pid))
            for name in ROUTES:
                for port, _ in servers.values():
                    wrk(work, name, port, 3)  # warm-up
                runs: dict[str, list[tuple[int, float, float]]] = {"old": [], "new": []}
                for r in range(args.rounds):
                    for side in ("old", "new") if r % 2 == 0 else ("new", "old"):
                        port, tree_ = servers[side]
                        cpu0 = tree_.cpu()
                        requests, rps, bad = wrk(work, name, port, args.seconds)
                        assert bad == 0, f"{side}: {bad} non-2xx answers on {ROUTES[name]}"
                        runs[side].append((requests, rps, tree_.cpu() - cpu0))
                rps = [n[1] / o[1] for o, n in zip(runs["old"], runs["new"], strict=True)]
                cpu = [(n[2] / n[0]) / (o[2] / o[0]) for o, n in zip(runs["old"], runs["new"], strict=True)]
                total = {k: sum(x[0] for x in v) for k, v in runs.items()}
                us = {k: sum(x[2] for x in v) / total[k] * 1e6 for k, v in runs.items()}
                print(
                    f"{ROUTES[name]}: {args.rounds} paired {args.seconds:g} s slices; new/old req/s median "
                    f"{statistics.median(rps):.3f} (range {min(rps):.2f}-{max(rps):.2f}), all requests "
                    f"{total['new'] / total['old']:.3f}; CPU per request {us['old']:.0f} -> {us['new']:.0f} us "
                    f"(paired median {statistics.median(cpu):.3f})",
                    flush=True,
                )
        finally:
            for proc in procs:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=60)
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(work / "old")], check=False)


if __name__ == "__main__":
    main()
