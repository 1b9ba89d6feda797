"""The peer benchmark's results: medians over rounds per server, route and concurrency, the failures beside
them, nnserve's ratios to the two references, as a text table, a markdown table and optionally a chart."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from bench.peers.servers import SPECS, V1, V2, V2_BINARY

# nnserve is compared on each route with the server a user would most likely write or pick instead
REFERENCES = {
    V1: ("fastapi", "the hand-written FastAPI + uvicorn app"),
    V2: ("kserve", "KServe's ModelServer"),
    V2_BINARY: ("kserve", "KServe's ModelServer"),
}
ROUTE_NAMES = {V1: "/v1/classify", V2: "/v2 infer", V2_BINARY: "/v2 binary"}
COLUMNS = ["server", "route", "c", "req/s", "p50 ms", "p99 ms", "CPU ms/req", "min worker share", "errors", "status"]


def _median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None and v == v]  # drop None and NaN
    return statistics.median(vals) if vals else None


def summarise(peers: list[str], conns: list[int], rounds: int, runs: list[dict], failures: list[dict]) -> list[dict]:
    """One row per server, route and concurrency: medians over the rounds that ran; a route that never ran gets
    one row with its failure."""
    rows = []
    for name in peers:
        for route in SPECS[name].routes:
            failed = [f for f in failures if f["server"] == name and f["route"] in (None, route)]
            reason = failed[0]["reason"] if failed else ""
            ran = [r for r in runs if r["server"] == name and r["route"] == route]
            if not ran:
                rows.append({"server": name, "route": route, "concurrency": None, "status": reason or "not run"})
                continue
            for c in conns:
                sub = [r for r in ran if r["concurrency"] == c]
                if not sub:
                    continue
                done = len({r["round"] for r in sub})
                status = (
                    "ok"
                    if done == rounds and not failed
                    else "; ".join(filter(None, [f"{done}/{rounds} rounds", reason]))
                )
                rows.append({
                    "server": name, "route": route, "concurrency": c, "rounds": done,
                    "ok_per_s": _median([r["ok_per_s"] for r in sub]),
                    "p50_ms": _median([r["p50_ms"] for r in sub]),
                    "p99_ms": _median([r["p99_ms"] for r in sub]),
                    "server_cpu_ms_per_req": _median([r["server_cpu_ms_per_req"] for r in sub]),
                    "min_worker_share": _median([r["min_worker_share"] for r in sub]),
                    "workers": min(r["workers"] for r in sub),
                    "errors": sum(r["errors"] for r in sub),
                    "status": status,
                })  # fmt: skip
    return rows


def ratios(conns: list[int], runs: list[dict]) -> list[dict]:
    """nnserve / reference per route and concurrency: the median over rounds of the paired ratio (both ran in
    the same round, minutes apart), so that the machine's drift cancels."""
    out = []
    for route, (ref, what) in REFERENCES.items():
        for c in conns:
            pairs = []
            for nn in (r for r in runs if r["server"] == "nnserve" and r["route"] == route and r["concurrency"] == c):
                other = [r for r in runs if r["server"] == ref and r["route"] == route and r["concurrency"] == c
                         and r["round"] == nn["round"]]  # fmt: skip
                if other and other[0]["ok_per_s"] > 0:
                    pairs.append((nn, other[0]))
            if not pairs:
                continue
            out.append({
                "route": route, "concurrency": c, "reference": ref, "reference_is": what, "rounds": len(pairs),
                "req_per_s": _median([n["ok_per_s"] / o["ok_per_s"] for n, o in pairs]),
                "cpu_per_req": _median([n["server_cpu_ms_per_req"] / o["server_cpu_ms_per_req"] for n, o in pairs
                                        if o["server_cpu_ms_per_req"] > 0]),
                "p50": _median([n["p50_ms"] / o["p50_ms"] for n, o in pairs if o["p50_ms"] > 0]),
            })  # fmt: skip
    return out


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def cells(row: dict) -> list[str]:
    if row["concurrency"] is None:
        return [row["server"], ROUTE_NAMES[row["route"]], "-", "-", "-", "-", "-", "-", "-", row["status"]]
    share = _fmt(row["min_worker_share"] and 100 * row["min_worker_share"], ".0f")
    share = share + "%" if share != "-" else share
    if row["workers"] != 2:
        share += f" ({row['workers']} workers)"
    return [
        row["server"], ROUTE_NAMES[row["route"]], str(row["concurrency"]), _fmt(row["ok_per_s"], ".0f"),
        _fmt(row["p50_ms"], ".1f"), _fmt(row["p99_ms"], ".1f"), _fmt(row["server_cpu_ms_per_req"], ".2f"),
        share, str(row["errors"]), row["status"],
    ]  # fmt: skip


def text_table(rows: list[dict]) -> str:
    table = [COLUMNS, *(cells(r) for r in rows)]
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS) - 1)]
    right = {2, 3, 4, 5, 6, 7, 8}
    lines = []
    for r in table:
        parts = [r[i].rjust(w) if i in right else r[i].ljust(w) for i, w in enumerate(widths)]
        lines.append("  ".join([*parts, r[-1]]))
    return "\n".join(lines)


def ratio_lines(rs: list[dict]) -> list[str]:
    out = []
    for route, (ref, what) in REFERENCES.items():
        mine = [r for r in rs if r["route"] == route]
        if not mine:
            out.append(f"nnserve vs {ref} on {ROUTE_NAMES[route]}: no paired runs (one of them did not run)")
            continue
        parts = [f"c={r['concurrency']} {_fmt(r['req_per_s'], '.2f')}x req/s, {_fmt(r['cpu_per_req'], '.2f')}x CPU/req"
                 for r in mine]  # fmt: skip
        out.append(f"nnserve vs {ref} ({what}) on {ROUTE_NAMES[route]}, median of paired rounds: " + "; ".join(parts))
    return out


def version_line(versions: dict[str, dict[str, str]]) -> str:
    """``server (package version, ...)`` for each server's own packages (not the shared runtime)."""
    shared = {"numpy", "pillow", "onnxruntime", "pydantic", "starlette", "httptools", "tritonclient"}
    own = {"nnserve": ("nnserve", "bentoml")}
    parts = []
    for name, found in versions.items():
        keep = own.get(name) or [k for k in found if k not in shared]
        parts.append(f"{name} ({', '.join(f'{k} {found[k]}' for k in keep if k in found)})")
    return "; ".join(parts)


def markdown(rows: list[dict], rs: list[dict], settings: dict[str, Any], versions: dict[str, dict[str, str]]) -> str:
    head = "| " + " | ".join(COLUMNS) + " |\n|" + "|".join("---:" if i in range(2, 9) else "---" for i in range(10))
    body = "\n".join("| " + " | ".join(c.replace("|", "\\|") for c in cells(r)) + " |" for r in rows)
    notes = "\n".join(f"- {line}" for line in ratio_lines(rs))
    rounds = f"{settings['rounds']} round" + "s" * (settings["rounds"] != 1)
    setup = (f"{rounds} of {settings['seconds']:g} s per concurrency, medians; wrk, one thread "
             f"pinned to the last core; one server up at a time; every server with 2 workers; min worker share: "
             f"the least busy worker's share of the workers' CPU time")  # fmt: skip
    return f"{head}|\n{body}\n\n{setup}. Versions: {version_line(versions)}.\n\n{notes}\n"


def chart(rows: list[dict], conns: list[int], out: Path) -> Path | None:
    """req/s per server at each concurrency, one panel per route; None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    for ax, route in zip(axes, (V1, V2, V2_BINARY), strict=True):
        names = [n for n in dict.fromkeys(r["server"] for r in rows if r["route"] == route)]
        width = 0.8 / max(len(names), 1)
        for i, name in enumerate(names):
            got = {r["concurrency"]: r["ok_per_s"] or 0 for r in rows
                   if r["server"] == name and r["route"] == route and r["concurrency"] is not None}  # fmt: skip
            xs = [j + i * width for j in range(len(conns))]
            ax.bar(xs, [got.get(c, 0) for c in conns], width, label=name + ("" if got else " (failed)"))
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(conns))], [f"c={c}" for c in conns])
        ax.set(ylabel="successful requests / s", title=f"{ROUTE_NAMES[route]}: one 28x28 PNG digit")
        ax.grid(axis="y", alpha=0.3)
        if names:
            ax.legend(fontsize=7)
    fig.suptitle("make bench-peers: same model, same payload, 2 workers each, medians over rounds")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
