"""docs/bench.png from ``make bench``'s JSON: /v1/classify throughput and latency against concurrency.

python -m bench.chart docs/bench.json docs/bench.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main(argv: list[str] | None = None) -> int:
    src, out = (Path(a) for a in (argv or sys.argv[1:]))
    r = json.loads(src.read_text())
    fig, (ax_rps, ax_lat) = plt.subplots(1, 2, figsize=(11, 4))
    series = {f"nnserve ({label})": v["classify"] for label, v in r["variants"].items()}
    series["reference (uvicorn + onnxruntime)"] = r["reference"]["classify"]
    for name, rows in series.items():
        c = [row["concurrency"] for row in rows]
        (line,) = ax_rps.plot(c, [row["ok_per_s"] for row in rows], "o-", label=name)
        color = line.get_color()
        ax_lat.plot(c, [row["p50_ms"] for row in rows], "o-", color=color, label=f"{name} p50")
        ax_lat.plot(c, [row["p99_ms"] for row in rows], "x--", color=color, label=f"{name} p99")
    limit = r["in_process"]["mnist-cnn"]["decode_infer_b1"]
    ax_rps.axhline(limit, color="grey", ls=":", label=f"in-process decode + inference, 1 thread ({limit:,.0f}/s)")
    ax_rps.set(xscale="log", xlabel="concurrent connections (wrk)", ylabel="successful requests / s",
               title="/v1/classify, one 28x28 PNG per request")  # fmt: skip
    ax_lat.set(xscale="log", yscale="log", xlabel="concurrent connections (wrk)", ylabel="latency, ms",
               title="latency p50 / p99")  # fmt: skip
    for ax in (ax_rps, ax_lat):
        ax.set_xticks([1, 8, 32, 64], ["1", "8", "32", "64"])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"make bench on {r['machine']['cpus']} cores: nnserve vs a plain server vs the in-process limit")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    return 0


if __name__ == "__main__":
    sys.exit(main())
