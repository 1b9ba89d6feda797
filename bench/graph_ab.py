"""An artifact's model.onnx side by side with its version at another commit, in one process: onnxruntime on
one thread, the same random input at batch 1 and 32, alternating rounds, medians. For what a change to the
graph (a calibration's extra output) costs per run.

    .venv/bin/python -m bench.graph_ab artifacts/mnist-cnn --base REV [--rounds 7]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bench.common import REPO, file_at
from contract.metadata import ONNX_FILE, load_metadata


def _session(model: bytes) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("artifact", type=Path)
    p.add_argument("--base", required=True, help="the commit whose model.onnx is the reference")
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args(argv)
    rel = (args.artifact.resolve() / ONNX_FILE).relative_to(REPO)
    sessions = {"base": _session(file_at(args.base, rel)), "now": _session((REPO / rel).read_bytes())}
    spec = load_metadata(args.artifact).inputs[0]
    shape = [d if d > 0 else 1 for d in spec.shape[1:]]
    for batch, reps in ((1, 300), (32, 30)):
        x = np.random.default_rng(0).random((batch, *shape), dtype=np.float32)
        ms: dict[str, list[float]] = {k: [] for k in sessions}
        for r in range(args.rounds):
            for name in sorted(sessions, reverse=bool(r % 2)):
                t = time.perf_counter()
                for _ in range(reps):
                    sessions[name].run(None, {spec.name: x})
                ms[name].append((time.perf_counter() - t) / reps * 1e3)
        base, now = float(np.median(ms["base"])), float(np.median(ms["now"]))
        print(f"batch {batch:2d}: base {base:.4f} ms, now {now:.4f} ms per run, now/base {now / base:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
