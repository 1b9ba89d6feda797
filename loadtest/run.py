"""Run the load test headless and collect its results (`make loadtest` calls this).

    .venv/bin/python loadtest/run.py [--host URL] [--users N] [--duration 60s] [--steps 4] [-- LOCUST ARGS...]

Settings also come from the environment: HOST (http://127.0.0.1:3000; a bare host gets http:// and PORT),
USERS (8), DURATION (60s), STEP_COUNT (4), LOADTEST_RESULTS (loadtest/results), and the thresholds
LOCUST_MAX_FAIL_RATIO / LOCUST_MAX_P95_MS / LOCUST_MAX_P99_MS that locustfile.py checks at the end.

Writes loadtest/results/<timestamp>/:
    locust_stats.csv, locust_stats_history.csv, locust_failures.csv, locust_exceptions.csv   Locust's CSVs
    report.html       Locust's HTML report
    locust.log        Locust's console output
    detail.json       from locustfile.py: catalog, threshold verdict, exact latencies per step of users
    summary.json      requests, failures by status class, req/s, p50/p95/p99 per endpoint and per step
    chart.png         throughput and p50/p95 latency against the number of users

The exit code is Locust's: 0 when the thresholds pass, 1 when they do not (see locustfile.py).
Only loopback hosts are load-tested unless --allow-remote (or LOADTEST_ALLOW_REMOTE=1) says otherwise.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import importlib.util
import ipaddress
import json
import os
import re
import subprocess
import sys
import threading
from collections import defaultdict
from pathlib import Path
from statistics import median
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))  # its siblings, run as a script or as a module
from payloads import parse_duration

HERE = Path(__file__).resolve().parent
LOCUSTFILE = HERE / "locustfile.py"
PREFIX = "locust"  # --csv prefix inside the run folder

# the failure labels locustfile.http_failure / check write, by status class
FAILURE_CLASSES = [
    ("429", re.compile(r"HTTP 429\b")),
    ("503", re.compile(r"HTTP 503\b")),
    ("504", re.compile(r"HTTP 504\b")),
    ("4xx", re.compile(r"HTTP (4xx|4\d\d)\b")),
    ("5xx", re.compile(r"HTTP (5xx|5\d\d)\b")),
    ("malformed", re.compile(r"malformed 200")),
    ("connection", re.compile(r"connection error|ConnectionError|ConnectTimeout|RemoteDisconnected|Timeout")),
]


def failure_class(error: str) -> str:
    for name, pattern in FAILURE_CLASSES:
        if pattern.search(error):
            return name
    return "other"


def normalize_host(raw: str, port: str) -> str:
    raw = raw.strip().rstrip("/")
    if "://" not in raw:
        raw = f"http://{raw}" if ":" in raw.split("]")[-1] else f"http://{raw}:{port}"
    return raw


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def num(row: dict[str, str], key: str) -> float:
    try:
        return float(row.get(key) or 0)
    except ValueError:  # "N/A"
        return 0.0


def endpoint_stats(row: dict[str, str]) -> dict[str, Any]:
    n = int(num(row, "Request Count"))
    fails = int(num(row, "Failure Count"))
    return {
        "requests": n,
        "failures": fails,
        "fail_ratio": fails / n if n else 0.0,
        "rps": round(num(row, "Requests/s"), 2),
        "p50_ms": num(row, "50%"),
        "p95_ms": num(row, "95%"),
        "p99_ms": num(row, "99%"),
        "avg_ms": round(num(row, "Average Response Time"), 1),
        "max_ms": round(num(row, "Max Response Time"), 1),
    }


def steps_from_history(history: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Per user count from the history CSV: exact req/s from the cumulative counts, p50/p95 approximate
    (Locust's history percentiles are over a rolling window that can reach into the previous step)."""
    rows = [r for r in history if r.get("Name") == "Aggregated" and int(num(r, "User Count")) > 0]
    groups: dict[int, list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        groups[int(num(r, "User Count"))].append(r)
    prev_count, prev_time = 0.0, None
    out = []
    for users in sorted(groups, key=lambda u: num(groups[u][0], "Timestamp")):
        g = groups[users]
        t0 = prev_time if prev_time is not None else num(g[0], "Timestamp")
        t1 = num(g[-1], "Timestamp")
        n1, f1 = num(g[-1], "Total Request Count"), num(g[-1], "Total Failure Count")
        seconds = max(t1 - t0, 1.0)
        out.append(
            {
                "users": users,
                "seconds": seconds,
                "requests": int(n1 - prev_count),
                "rps": round((n1 - prev_count) / seconds, 2),
                "failures_total_so_far": int(f1),
                "p50_ms": median(num(r, "50%") for r in g),
                "p95_ms": median(num(r, "95%") for r in g),
                "source": "stats_history (percentiles approximate)",
            }
        )
        prev_count, prev_time = n1, t1
    return sorted(out, key=lambda s: s["users"])


def build_summary(out: Path, meta: dict[str, Any]) -> dict[str, Any]:
    stats = read_csv(out / f"{PREFIX}_stats.csv")
    failures = read_csv(out / f"{PREFIX}_failures.csv")
    history = read_csv(out / f"{PREFIX}_stats_history.csv")
    exceptions = read_csv(out / f"{PREFIX}_exceptions.csv")
    detail: dict[str, Any] = {}
    if (out / "detail.json").exists():
        detail = json.loads((out / "detail.json").read_text())

    final = detail.get("final")  # Locust's numbers at the end; its CSVs can lag by up to a second
    if final:
        total, endpoints, failure_list = final["total"], final["endpoints"], final["failures"]
    else:
        total_row = next((r for r in stats if r.get("Name") == "Aggregated"), {})
        total = endpoint_stats(total_row) if total_row else {"requests": 0, "failures": 0, "fail_ratio": 0.0}
        endpoints = {r["Name"]: endpoint_stats(r) for r in stats if r.get("Name") != "Aggregated"}
        failure_list = [
            {"endpoint": r.get("Name"), "error": r.get("Error", ""), "count": int(num(r, "Occurrences"))}
            for r in failures
        ]
    by_class: dict[str, int] = defaultdict(int)
    failure_rows = []
    for f in failure_list:
        cls = failure_class(f["error"])
        by_class[cls] += f["count"]
        failure_rows.append({**f, "class": cls})

    steps = detail.get("steps") or steps_from_history(history)
    history_steps = {s["users"]: s for s in steps_from_history(history)} if detail.get("steps") else {}
    for s in steps:
        if s["users"] in history_steps:
            s["history_rps"] = history_steps[s["users"]]["rps"]

    return {
        **meta,
        "total": total,
        "failures_by_class": {k: by_class.get(k, 0) for k in [c for c, _ in FAILURE_CLASSES] + ["other"]},
        "failures": failure_rows,
        "exceptions": [{"count": int(num(r, "Count")), "message": r.get("Message")} for r in exceptions],
        "endpoints": endpoints,
        "steps": steps,
        "thresholds": detail.get("thresholds"),
        "catalog": detail.get("catalog"),
        "user_classes": detail.get("user_classes"),
        "files": sorted({*(p.name for p in out.iterdir() if p.is_file()), "summary.json"}),
    }


def draw_chart(summary: dict[str, Any], path: Path) -> bool:
    steps = summary.get("steps") or []
    if not steps:
        print("loadtest: no per-step data, no chart", file=sys.stderr)
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("loadtest: matplotlib is not installed, no chart", file=sys.stderr)
        return False
    users = [s["users"] for s in steps]
    colors = ["C2", "C4", "C1", "C6", "C8", "C9", "C5", "C7"]  # endpoints; C0 and C3 are the totals
    fig, (ax_t, ax_l) = plt.subplots(1, 2, figsize=(12, 4.8))
    ax_t.plot(users, [s["rps"] for s in steps], "o-", color="C0", lw=2, label="all endpoints")
    endpoints = sorted({n for s in steps for n in s.get("endpoints", {})})
    for i, name in enumerate(endpoints):
        ys = [s.get("endpoints", {}).get(name, {}).get("rps", float("nan")) for s in steps]
        ax_t.plot(users, ys, ".--", color=colors[i % len(colors)], lw=1, label=name)
    ax_t.set(xlabel="concurrent users", ylabel="requests / s", title="Throughput", ylim=(0, None))
    ax_l.plot(users, [s["p50_ms"] for s in steps], "o-", color="C0", lw=2, label="p50, all")
    ax_l.plot(users, [s["p95_ms"] for s in steps], "s-", color="C3", lw=2, label="p95, all")
    for i, name in enumerate(endpoints):
        ys = [s.get("endpoints", {}).get(name, {}).get("p95_ms", float("nan")) for s in steps]
        ax_l.plot(users, ys, ".--", color=colors[i % len(colors)], lw=1, label=f"p95 {name}")
    limit = (summary.get("thresholds") or {}).get("limits", {}).get("p95_ms")
    highest = max(
        [s["p95_ms"] for s in steps] + [e.get("p95_ms", 0) for s in steps for e in s.get("endpoints", {}).values()]
    )
    if limit and highest >= 0.4 * limit:  # drawn when it is in view; otherwise named in the title
        ax_l.axhline(limit, color="C3", ls=":", lw=1, label=f"p95 limit {limit:g} ms")
    title = "Latency" + (f" (p95 limit {limit:g} ms)" if limit else "")
    ax_l.set(xlabel="concurrent users", ylabel="latency (ms)", title=title, ylim=(0, None))
    for ax in (ax_t, ax_l):
        ax.set_xticks(users)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"nnserve load test: {summary['host']}, {summary['started']}, {summary['duration']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def run_locust(cmd: list[str], env: dict[str, str], log_path: Path, timeout_s: float) -> int:
    """Run Locust, its output both on the console and in locust.log; a run past timeout_s is ended (rc 124)."""
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        assert proc.stdout is not None

        def stop() -> None:
            print(f"loadtest: Locust still running after {timeout_s:.0f} s: ending it", file=sys.stderr)
            proc.terminate()

        timer = threading.Timer(timeout_s, stop)
        timer.start()
        try:
            for line in proc.stdout:
                sys.stdout.write(line)
                log.write(line)
            rc = proc.wait()
        finally:
            timer.cancel()
        return 124 if rc < 0 else rc


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default=os.environ.get("HOST") or "http://127.0.0.1:3000")
    p.add_argument("--users", type=int, default=int(os.environ.get("USERS") or 8), help="peak concurrent users")
    p.add_argument("--duration", default=os.environ.get("DURATION") or "60s", help="e.g. 20s, 2m")
    p.add_argument("--steps", type=int, default=int(os.environ.get("STEP_COUNT") or 4), help="steps of users")
    p.add_argument("--results", type=Path, default=Path(os.environ.get("LOADTEST_RESULTS") or HERE / "results"))
    p.add_argument(
        "--allow-remote",
        action="store_true",
        default=os.environ.get("LOADTEST_ALLOW_REMOTE", "") not in ("", "0", "false"),
        help="allow a host that is not loopback",
    )
    a = p.parse_args(argv)

    host = normalize_host(a.host, os.environ.get("PORT") or "3000")
    if not is_loopback(host) and not a.allow_remote:
        print(f"loadtest: {host} is not a loopback address; pass --allow-remote to load-test it", file=sys.stderr)
        return 2
    try:
        seconds = parse_duration(a.duration, 60.0)
    except ValueError as e:
        raise SystemExit(f"loadtest: {e}") from None
    if importlib.util.find_spec("locust") is None:  # else a results folder for a run that never started
        raise SystemExit(f"loadtest: Locust is not installed for {sys.executable}: `make loadtest` installs it")
    started = dt.datetime.now().astimezone()
    out = a.results / started.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)

    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        host,
        "--csv",
        str(out / PREFIX),
        "--csv-full-history",
        "--html",
        str(out / "report.html"),
        "--only-summary",
        *extra,
    ]
    env = {
        **os.environ,
        "STEP_USERS": str(a.users),
        "STEP_COUNT": str(a.steps),
        "DURATION": f"{seconds:g}s",
        "LOADTEST_DETAIL_JSON": str(out / "detail.json"),
        "PYTHONUNBUFFERED": "1",
    }
    print(f"loadtest: {host}, up to {a.users} users in {a.steps} steps over {seconds:g} s -> {out}", flush=True)
    rc = run_locust(cmd, env, out / "locust.log", timeout_s=seconds + 120)

    meta = {
        "host": host,
        "started": started.isoformat(timespec="seconds"),
        "duration": f"{seconds:g}s",
        "users": a.users,
        "steps_planned": a.steps,
        "exit_code": rc,
        "locust_command": cmd[2:],
    }
    summary = build_summary(out, meta)
    if draw_chart(summary, out / "chart.png"):
        summary["files"] = sorted({*summary["files"], "chart.png"})
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    t = summary["total"]
    print(f"\nloadtest: results in {out}")
    classes = ", ".join(f"{k}: {v}" for k, v in summary["failures_by_class"].items() if v)
    print(
        f"loadtest: {t['requests']} requests, {t['failures']} failures{f' ({classes})' if classes else ''}, "
        f"{t.get('rps', 0.0):.1f} req/s, p50 {t.get('p50_ms', 0):.0f} / p95 {t.get('p95_ms', 0):.0f} / "
        f"p99 {t.get('p99_ms', 0):.0f} ms"
    )
    for name, e in summary["endpoints"].items():
        print(
            f"  {name:<24} {e['requests']:>6} req {e['failures']:>4} fail {e['rps']:>7.1f} req/s"
            f"  p50 {e['p50_ms']:>5.0f}  p95 {e['p95_ms']:>5.0f}  p99 {e['p99_ms']:>5.0f} ms"
        )
    for s in summary["steps"]:
        print(f"  {s['users']:>3} users: {s['rps']:>7.1f} req/s  p50 {s['p50_ms']:>6.0f}  p95 {s['p95_ms']:>6.0f} ms")
    print(f"loadtest: exit code {rc}")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
