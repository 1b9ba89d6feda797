"""NVIDIA's perf_analyzer against nnserve, over HTTP and gRPC (issue 18): throughput and latency percentiles of
``mnist-cnn`` at a range of concurrencies, measured by the tool Triton's users already run.

    python -m bench.perf_analyzer [--concurrency 1 4 16 32] [--json docs/perf_analyzer.json]

The perf_analyzer that runs on this machine's glibc is the one inside the ``tritonclient==2.51.0`` wheel (newer
standalone wheels need a newer glibc). It links ``libb64.so.0d`` (Debian: ``apt-get install libb64-0d``) and the
CUDA runtime ``libcudart.so.12`` even on CPU (the ``nvidia-cuda-runtime-cu12`` wheel). This script installs both
wheels, pinned, into their own virtual environment ``.peers/perf_analyzer/`` on first use (the peers' folder of
bench/peers/), never into nnserve's; the Debian library must be there already.

perf_analyzer reads the model's metadata and configuration (``/v2/models/mnist-cnn/config``, gRPC ModelConfig)
and sends one real digit per request (``-b 1``; a sample PNG as the model takes it: its preprocessing from
model.json, done here with contract/images.py; perf_analyzer's random bytes include NaN, which nnserve refuses)
from ``concurrency`` outstanding requests, measuring until three 5-second windows agree within 25 % on throughput
and mean latency (the tool's 10 % is often missed on a 2-core machine whose cores the client shares), at most 10
windows (a concurrency that never settles is reported as unstable); the percentiles are the client's, over the
windows measured; the server's queue and compute times are from its statistics extension (/v2/models/stats), which
perf_analyzer reads around each window once the server lists "statistics" among its extensions. Over gRPC
perf_analyzer multiplexes every request on one connection, which the kernel hands to one API worker; over HTTP each
concurrent request has its own connection.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.common import REPO, SAMPLES, machine, start_server

VENV = REPO / ".peers" / "perf_analyzer"
PINS = ["tritonclient==2.51.0", "nvidia-cuda-runtime-cu12==12.6.77"]
CUDART = VENV / "lib" / "python3.11" / "site-packages" / "nvidia" / "cuda_runtime" / "lib"
MODEL = "mnist-cnn"


def ensure_tool() -> Path:
    """The perf_analyzer binary, installed into its own venv on first use."""
    binary = VENV / "bin" / "perf_analyzer"
    if not binary.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", *PINS], check=True)
    probe = subprocess.run([str(binary), "--version"], capture_output=True, text=True, env=_env())
    if probe.returncode != 0:
        raise SystemExit(f"perf_analyzer does not start ({probe.stderr.strip()}); on Debian: apt-get install libb64-0d")
    return binary


def _env() -> dict[str, str]:
    return {**os.environ, "LD_LIBRARY_PATH": f"{CUDART}:{os.environ.get('LD_LIBRARY_PATH', '')}"}


def input_data(folder: Path) -> Path:
    """perf_analyzer's --input-data file: one sample digit, preprocessed as mnist-cnn takes it."""
    from contract.images import decode_image, normalize, prepare_image
    from contract.metadata import load_metadata

    meta = load_metadata(REPO / "artifacts" / MODEL)
    png = sorted((SAMPLES / "digits").glob("*_7.png"))[0].read_bytes()
    pre = meta.image_preprocessing()
    x = normalize(prepare_image(decode_image(png, max_pixels=1 << 20), pre), pre)
    path = folder / "nnserve-pa-input.json"
    path.write_text(json.dumps({"data": [{"input": {"content": x.ravel().tolist(), "shape": list(x.shape)}}]}))
    return path


def measure(binary: Path, url: str, protocol: str, concurrency: int, data: Path) -> dict[str, Any]:
    """One perf_analyzer run at one concurrency -> throughput and client-side latency percentiles (ms)."""
    report = Path(os.environ.get("TMPDIR", "/tmp")) / f"nnserve-pa-{protocol}-{concurrency}.csv"
    cmd = [str(binary), "-m", MODEL, "-u", url, "-i", protocol, "-b", "1", "--concurrency-range", str(concurrency),
           "--measurement-interval", "5000", "--stability-percentage", "25", "--max-trials", "10",
           "--input-data", str(data),
           "-f", str(report)]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    if "Failed to obtain stable measurement" in run.stdout + run.stderr:
        return {"concurrency": concurrency, "unstable": True}
    if run.returncode != 0:
        raise RuntimeError(
            f"perf_analyzer failed ({protocol}, c={concurrency}):\n{run.stdout[-2000:]}{run.stderr[-2000:]}"
        )
    row = next(csv.DictReader(io.StringIO(report.read_text())))
    report.unlink()
    return {
        "concurrency": concurrency,
        "infer_per_s": round(float(row["Inferences/Second"]), 1),
        "p50_ms": round(float(row["p50 latency"]) / 1e3, 2),
        "p90_ms": round(float(row["p90 latency"]) / 1e3, 2),
        "p99_ms": round(float(row["p99 latency"]) / 1e3, 2),
        # the server's own breakdown, from its statistics (/v2/models/stats) before and after each window
        "server_queue_ms": round(float(row["Server Queue"]) / 1e3, 3),
        "server_compute_ms": round(
            sum(float(row[f"Server Compute {part}"]) for part in ("Input", "Infer", "Output")) / 1e3, 3
        ),
    }


def table(result: dict[str, Any]) -> str:
    head = "| protocol | concurrency | inferences/s | p50 ms | p90 ms | p99 ms | server queue ms | server compute ms |"
    rows = [head, "|---|---|---|---|---|---|---|---|"]
    for protocol, runs in result["runs"].items():
        for r in runs:
            if r.get("unstable"):
                rows.append(f"| {protocol} | {r['concurrency']} | did not settle within 10 windows | | | | | |")
                continue
            rows.append(f"| {protocol} | {r['concurrency']} | {r['infer_per_s']:,} | {r['p50_ms']} | {r['p90_ms']} | "
                        f"{r['p99_ms']} | {r['server_queue_ms']} | {r['server_compute_ms']} |")  # fmt: skip
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 32])
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    binary = ensure_tool()
    data = input_data(Path(os.environ.get("TMPDIR", "/tmp")))
    server = start_server(REPO / "artifacts", {"NNSERVE_MODELS": f'["{MODEL}"]'})
    result: dict[str, Any] = {"machine": machine(), "tool": PINS[0], "model": MODEL, "runs": {}}
    try:
        for protocol, url in (("http", server.url.removeprefix("http://")), ("grpc", server.grpc_url)):
            result["runs"][protocol] = []
            for c in args.concurrency:
                r = measure(binary, url, protocol, c, data)
                print(f"{protocol} c={c}: {r}", flush=True)
                result["runs"][protocol].append(r)
    finally:
        server.stop()
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
