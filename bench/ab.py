"""A/B of two revisions of nnserve on this machine: throughput and server CPU per request, measured in short
alternating slices so that the machine's drift (large here: whole runs vary by 30 %) hits both sides alike.

    python -m bench.ab --old REV [--rounds 20] [--seconds 3] [--workers 1] [--conns 16]

The old side is REV checked out in a temporary git worktree, the new side the working tree; both servers run at
once (an idle one costs nothing), each over this tree's artifacts/ (with --own-artifacts, each over its own
revision's) with default settings but --workers API workers. --routes picks the bodies: classify and v2 (below),
sentiment (one short review to sst2-lstm, one long to imdb-lstm: the same texts on both sides, per text).
For POST /v1/classify (one PNG digit, bench/run.py's body) and then POST /v2/models/mnist-cnn/infer
(the same digit as a JSON FP32 tensor), each side is warmed up for 3 s, then --rounds times each side gets a
--seconds slice of bench/run.py's wrk (--conns connections, pinned to the last core, with the server's CPU time
read around it), the order flipping every round. Printed: the median of the paired new/old req/s ratios, the ratio of
all requests served, and CPU per request.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.common import REPO, start_server
from bench.run import classify_body, sample_pngs, wrk

SHORT = "A gorgeous, witty, seductive movie that never once talks down to its audience."
LONG = (REPO / "examples" / "reviews.txt").read_text(encoding="utf-8").splitlines()[4]  # 86 tokens


def sentiment_bodies() -> dict[str, bytes]:
    """One text per request: a sentence (16 tokens) to the SST-2 model, a long review twice (172) to the IMDB one."""
    return {
        f"/v1/sentiment {model}": json.dumps({"model": model, "texts": [text]}).encode()
        for model, text in (("sst2-lstm", SHORT), ("imdb-lstm", f"{LONG} {LONG}"))
    }


def bodies() -> dict[str, bytes]:
    """Route -> request body: one PNG digit for /v1, the same digit as mnist-cnn's input tensor for /v2."""
    png = sample_pngs(1)[0]
    meta = json.loads((REPO / "artifacts" / "mnist-cnn" / "model.json").read_text())
    pre = meta["preprocessing"]
    x = np.asarray(Image.open(io.BytesIO(png)).convert("L").resize((28, 28)), np.float32) / 255
    x = (x - pre["mean"][0]) / pre["std"][0]
    tensor = {"name": meta["inputs"][0]["name"], "shape": [1, 1, 28, 28], "datatype": "FP32"}
    v2 = json.dumps({"inputs": [{**tensor, "data": x.ravel().tolist()}]}).encode()
    return {"/v1/classify": classify_body([png]), "/v2/models/mnist-cnn/infer": v2}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", required=True, help="the revision to compare the working tree with")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--conns", type=int, default=16, help="wrk's connections")
    ap.add_argument("--routes", choices=["images", "sentiment"], default="images")
    ap.add_argument("--own-artifacts", action="store_true", help="each side serves its revision's artifacts/")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="nnserve-ab-") as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(old), args.old], check=True)
        servers: dict[str, Any] = {}
        try:
            env = {"NNSERVE_API_WORKERS": str(args.workers)}
            for side, tree in (("old", old), ("new", REPO)):
                servers[side] = start_server((tree if args.own_artifacts else REPO) / "artifacts", env, root=tree)
            for label, body in (bodies() if args.routes == "images" else sentiment_bodies()).items():
                route = label.split()[0]
                for server in servers.values():
                    wrk(server.url + route, body, args.conns, 3, server.proc.pid)  # warm-up
                runs: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
                for r in range(args.rounds):
                    for side in ("old", "new") if r % 2 == 0 else ("new", "old"):
                        row = wrk(servers[side].url + route, body, args.conns, args.seconds, servers[side].proc.pid)
                        assert row["errors"] == 0, f"{side}: {row['errors']} errors on {route}"
                        runs[side].append(row)
                pairs = list(zip(runs["old"], runs["new"], strict=True))
                rps = [n["ok_per_s"] / o["ok_per_s"] for o, n in pairs]
                cpu = [n["server_cpu_ms_per_req"] / o["server_cpu_ms_per_req"] for o, n in pairs]
                total = {k: sum(row["requests"] for row in v) for k, v in runs.items()}
                us = {k: 1e3 * sum(row["server_cpu_ms_per_req"] * row["requests"] for row in v) / total[k]
                      for k, v in runs.items()}  # fmt: skip
                print(
                    f"{label}: {args.rounds} paired {args.seconds:g} s slices; new/old req/s median "
                    f"{statistics.median(rps):.3f} (range {min(rps):.2f}-{max(rps):.2f}), all requests "
                    f"{total['new'] / total['old']:.3f}; CPU per request {us['old']:.0f} -> {us['new']:.0f} us "
                    f"(paired median {statistics.median(cpu):.3f})",
                    flush=True,
                )
        finally:
            for server in servers.values():
                server.stop()
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old)], check=False)


if __name__ == "__main__":
    main()
