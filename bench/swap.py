"""Hot swap under load: a new version of a model loaded every second while clients of every kind (typed /v1, /v2
JSON over HTTP with tritonclient, /v2 over gRPC with tritonclient) send requests without pause; the same clients
first run as long without swaps. Prints requests sent, failed and p50/p99 per client and phase.

    python -m bench.swap [--seconds 30] [--swap-every 1.0] [--threads 2] [--out docs/swap.json]

Each swap is a real one: a version folder new on disk (a copy of the shipped mnist-cnn under the next version
number), loaded by ``POST /v2/repository/models/mnist-cnn/load`` on a server with NNSERVE_MODEL_CONTROL=explicit
and the default version policy (the newest version only), so every worker loads and warms up a new session,
switches, and drops the old one later (service/repository.py). tests/test_repository.py runs a short version.
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.common import REPO, SAMPLES, start_server

MODEL = "mnist-cnn"


def new_version(model_dir: Path, version: int, source: Path = REPO / "artifacts" / MODEL) -> None:
    """The model's folder for ``version``: a copy of an exported artifact (the shipped one) with that version,
    written in a hidden sibling folder and renamed into place, so that a server never reads it half-written (a
    worker still starting up read the copy's model.json before its version was set, and refused to start)."""
    folder = model_dir / source.name / str(version)
    partial = folder.with_name(f".{version}.partial")
    shutil.copytree(source, partial)
    meta = json.loads((partial / "model.json").read_text())
    meta["version"] = str(version)
    (partial / "model.json").write_text(json.dumps(meta, indent=2))
    partial.rename(folder)


def clients(
    server: Any, png: bytes, model: str = MODEL, headers: dict[str, str] | None = None
) -> dict[str, Callable[[], Callable[[], None]]]:
    """Per client kind, a factory of one thread's request function (its own connection), which raises on failure."""
    import tritonclient.grpc as tg
    import tritonclient.http as th

    body = {"model": model, "images": [base64.b64encode(png).decode()]}
    x = np.zeros((1, 1, 28, 28), np.float32)

    def typed() -> Callable[[], None]:
        c = httpx.Client(base_url=server.url, timeout=30, headers=headers)

        def one() -> None:
            r = c.post("/v1/classify", json=body)
            if r.status_code != 200:
                raise RuntimeError(f"{r.status_code}: {r.text[:200]}")

        return one

    def v2(mod: Any, url: str) -> Callable[[], Callable[[], None]]:
        def make() -> Callable[[], None]:
            c = mod.InferenceServerClient(url)
            t = mod.InferInput("input", list(x.shape), "FP32")
            t.set_data_from_numpy(x)

            def one() -> None:
                if c.infer(model, [t], headers=dict(headers or {})).as_numpy("logits").shape != (1, 10):
                    raise RuntimeError("wrong answer")

            return one

        return make

    return {
        "typed HTTP": typed,
        "/v2 HTTP": v2(th, server.url.removeprefix("http://")),
        "/v2 gRPC": v2(tg, server.grpc_url),
    }


def drive(kinds: dict[str, Callable[[], Callable[[], None]]], threads: int, seconds: float,
          during: Callable[[threading.Event], None] | None = None) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Every kind's threads send requests back to back for ``seconds`` (while ``during`` runs beside them)."""
    stop = threading.Event()
    lat: dict[str, list[float]] = {k: [] for k in kinds}
    errors: dict[str, list[str]] = {k: [] for k in kinds}

    def loop(kind: str, one: Callable[[], None]) -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                one()
                lat[kind].append(time.perf_counter() - t0)
            except Exception as e:  # a failed request: counted, and its reason kept
                errors[kind].append(f"{type(e).__name__}: {e}"[:300])

    workers = [threading.Thread(target=loop, args=(k, make())) for k, make in kinds.items() for _ in range(threads)]
    for w in workers:
        w.start()
    side = threading.Thread(target=during, args=(stop,)) if during else None
    if side:
        side.start()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join()
    if side:
        side.join()
    out = {}
    for k in kinds:
        ms = np.asarray(lat[k]) * 1e3
        out[k] = {
            "sent": len(lat[k]) + len(errors[k]),
            "failed": len(errors[k]),
            "p50_ms": round(float(np.percentile(ms, 50)), 2) if len(ms) else None,
            "p99_ms": round(float(np.percentile(ms, 99)), 2) if len(ms) else None,
            "errors": errors[k][:5],
        }
    return out


def swapper(admin: httpx.Client, folder: Path, source: Path, every: float, swaps: list[dict[str, Any]],
            keep: int = 1) -> Callable[[threading.Event], None]:  # fmt: skip
    """What runs beside the clients: every ``every`` seconds a new version on disk (the next number after the
    newest in ``folder``), loaded; the versions older than the ``keep`` newest leave the disk."""

    def swapping(stop: threading.Event) -> None:
        version = max(int(p.name) for p in folder.iterdir() if p.name.isdigit())
        while not stop.wait(every):
            version += 1
            new_version(folder.parent, version, source)
            t0 = time.perf_counter()
            r = admin.post(f"/v2/repository/models/{folder.name}/load")
            served = admin.get(f"/v2/models/{folder.name}").json().get("versions")
            swaps.append({"version": version, "status": r.status_code, "ms": (time.perf_counter() - t0) * 1e3,
                          "served": served, "error": r.text[:200] if r.status_code != 200 else None})  # fmt: skip
            shutil.rmtree(folder / str(version - keep), ignore_errors=True)

    return swapping


def swap_run(seconds: float, swap_every: float, threads: int, log: Callable[[str], None] = print) -> dict[str, Any]:
    model_dir = Path(tempfile.mkdtemp(prefix="nnserve-swap-"))
    new_version(model_dir, 1)
    env = {"NNSERVE_MODEL_CONTROL": "explicit", "NNSERVE_REPOSITORY_OPEN": "true", "NNSERVE_MODELS": f'["{MODEL}"]'}
    server = start_server(model_dir, env, log)
    swaps: list[dict[str, Any]] = []
    try:
        png = next(iter(sorted((SAMPLES / "digits").glob("*_7.png")))).read_bytes()
        kinds = clients(server, png)
        with httpx.Client(base_url=server.url, timeout=120) as admin:
            swapping = swapper(admin, model_dir / MODEL, REPO / "artifacts" / MODEL, swap_every, swaps)
            log(f"{seconds:g} s without swaps, {threads} threads per client kind")
            calm = drive(kinds, threads, seconds)
            log(f"{seconds:g} s with a new version loaded every {swap_every:g} s")
            busy = drive(kinds, threads, seconds, swapping)
    finally:
        server.stop()
        shutil.rmtree(model_dir, ignore_errors=True)
    return {"seconds": seconds, "swap_every_s": swap_every, "threads_per_kind": threads,
            "without_swaps": calm, "with_swaps": busy, "swaps": swaps}  # fmt: skip


def table(result: dict[str, Any]) -> str:
    rows = ["| client | phase | requests | failed | p50 ms | p99 ms |", "|---|---|---|---|---|---|"]
    for kind in result["without_swaps"]:
        for phase in ("without_swaps", "with_swaps"):
            r = result[phase][kind]
            rows.append(
                f"| {kind} | {phase.replace('_', ' ')} | {r['sent']} | {r['failed']} | {r['p50_ms']} | {r['p99_ms']} |"
            )
    ok = [s for s in result["swaps"] if s["status"] == 200 and s["served"] == [str(s["version"])]]
    ms = sorted(s["ms"] for s in result["swaps"])
    rows.append("")
    summary = f"swaps: {len(result['swaps'])}, {len(ok)} answered 200 with only the new version served after"
    rows.append(f"{summary}; load call median {ms[len(ms) // 2]:.0f} ms, max {ms[-1]:.0f} ms" if ms else "swaps: none")
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--swap-every", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=2, help="threads per client kind")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    result = swap_run(args.seconds, args.swap_every, args.threads)
    print(table(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
