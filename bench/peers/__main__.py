"""The peer benchmark's command line and its rounds (the design is bench/peers/__init__.py's docstring)."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import bench.peers
from bench.ab import bodies
from bench.common import REPO, machine
from bench.peers import report, servers
from bench.peers.servers import (
    ORDER,
    SPECS,
    V2,
    V2_BINARY,
    Running,
    balance,
    binary_request,
    check,
    cpu_snapshot,
    expected_answer,
    path,
    start,
)
from bench.peers.venvs import PINS, PeerError, ensure, short_error, versions
from bench.run import sample_pngs, wrk


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in SPECS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown server(s) {', '.join(unknown)}; known: {', '.join(ORDER)}")
    return [n for n in ORDER if n in names]


def _ints(text: str) -> list[int]:
    return [int(c) for c in text.split(",") if c.strip()]


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.peers", description=bench.peers.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--json", type=Path, help="write the results here (and a chart beside it, .png)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds; the table shows medians (default 3)")
    p.add_argument("--seconds", type=float, default=10, help="each run's length (default 10)")
    p.add_argument("--warmup", type=float, default=3, help="warm-up per server and route (default 3 s)")
    p.add_argument("--conns", type=_ints, default=[1, 8, 32], help="concurrencies (default 1,8,32)")
    p.add_argument("--only", type=_names, default=ORDER, help=f"servers to run (default all: {','.join(ORDER)})")
    return p.parse_args(argv)


def rotation(peers: list[str], r: int) -> list[str]:
    """Round r's order: rotated by r, and reversed in odd rounds (so neighbours swap who goes first)."""
    k = r % max(len(peers), 1)
    order = peers[k:] + peers[:k]
    return order[::-1] if r % 2 else order


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.machine = machine()
        self.bodies = bodies()
        self.headers: dict[str, dict[str, str]] = {}
        self.bodies[V2_BINARY], self.headers[V2_BINARY] = binary_request(self.bodies[V2])
        self.expected, self.labels = expected_answer(sample_pngs(1)[0])
        self.logs = Path(tempfile.mkdtemp(prefix="nnserve-peers-"))
        self.runs: list[dict[str, Any]] = []
        self.failures: list[dict[str, Any]] = []
        self.idle: list[dict[str, Any]] = []
        self.leftovers: list[dict[str, Any]] = []

    def fail(self, r: int | None, name: str, route: str | None, stage: str, reason: str) -> None:
        self.failures.append({"round": r, "server": name, "route": route, "stage": stage, "reason": reason})
        print(f"    {name} {route or ''} {stage} FAILED: {reason}", flush=True)

    def install(self, peers: list[str]) -> list[str]:
        ok = []
        for name in peers:
            if name == "nnserve":
                ok.append(name)
                continue
            try:
                ensure(name, log=lambda m: print(m, flush=True))
                ok.append(name)
            except PeerError as e:
                self.fail(None, name, None, "install", f"install: {e}")
        return ok

    def measure(self, r: int, server: Running, route: str) -> None:
        a = self.args
        body, headers, url = self.bodies[route], self.headers.get(route), server.url + path(route)
        reason = check(server, route, body, self.expected, self.labels, headers)
        if reason:
            self.fail(r, server.spec.name, route, "answer", reason)
            return
        try:
            wrk(url, body, max(a.conns), a.warmup, server.pid, headers)
            for c in a.conns:
                before = cpu_snapshot(server)
                row = wrk(url, body, c, a.seconds, server.pid, headers)
                row.update(balance(server.spec, before, cpu_snapshot(server)))
                row.update(round=r, server=server.spec.name, route=route)
                self.runs.append(row)
                print(f"    {server.spec.name:12s} {report.ROUTE_NAMES[route]:12s} c={c:<3d} {row['ok_per_s']:7.0f} "
                      f"req/s  p50 {row['p50_ms']:6.1f} ms  p99 {row['p99_ms']:6.1f} ms  "
                      f"{row['server_cpu_ms_per_req']:5.2f} ms CPU/req  errors {row['errors']:<4d} "
                      f"workers {row['worker_shares']}", flush=True)  # fmt: skip
        except Exception as e:  # wrk failed, or printed nothing to parse: reported, never dropped
            self.fail(r, server.spec.name, route, "load", f"{type(e).__name__}: {short_error(str(e))}")

    def round(self, r: int, peers: list[str]) -> None:
        print(f"round {r + 1}/{self.args.rounds}: {' -> '.join(peers)}", flush=True)
        for name in peers:
            t0 = time.monotonic()
            try:
                server = start(name, self.logs)
            except PeerError as e:
                self.fail(r, name, None, "start", f"start: {e}")
                continue
            print(f"  {name} up in {time.monotonic() - t0:.1f} s at {server.url} ({SPECS[name].what})", flush=True)
            try:
                for route in SPECS[name].routes:
                    self.measure(r, server, route)
                self.idle.append({"round": r, "server": name, "idle_cpu_percent": servers.idle_cpu_percent(server)})
            finally:
                left = server.stop()
                if left:
                    self.leftovers.append({"round": r, "server": name, "killed_pids": left})
                    print(f"    {name}: {len(left)} process(es) outlived the server and were killed", flush=True)


def revision() -> str:
    git = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True, text=True)
    return git.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    bench = Bench(args)
    print(f"expected answer: label {bench.expected!r}; logs in {bench.logs}", flush=True)
    peers = bench.install(args.only)
    for r in range(args.rounds):
        bench.round(r, rotation(peers, r))
    rows = report.summarise(args.only, args.conns, args.rounds, bench.runs, bench.failures)
    ratios = report.ratios(args.conns, bench.runs)
    settings = {"rounds": args.rounds, "seconds": args.seconds, "warmup": args.warmup, "conns": args.conns}
    print()
    print(report.text_table(rows))
    print()
    for line in report.ratio_lines(ratios):
        print(line)
    idle = {n: max(i["idle_cpu_percent"] for i in bench.idle if i["server"] == n) for n in args.only
            if any(i["server"] == n for i in bench.idle)}  # fmt: skip
    if idle:
        print(
            "idle CPU after the runs, % of one core (worst round): " + ", ".join(f"{n} {v:g}" for n, v in idle.items())
        )
    if args.json:
        results: dict[str, Any] = {
            "command": " ".join(["python -m bench.peers", *(sys.argv[1:] if argv is None else argv)]),
            "machine": bench.machine,
            "revision": revision(),
            "settings": settings,
            "expected_label": bench.expected,
            "servers": {n: {"what": SPECS[n].what, "routes": list(SPECS[n].routes), "workers_pattern": SPECS[n].workers,
                            "pins": PINS.get(n), "versions": versions(n)} for n in args.only},
            "rows": rows,
            "ratios": ratios,
            "runs": bench.runs,
            "failures": bench.failures,
            "idle_cpu": bench.idle,
            "leftover_processes": bench.leftovers,
            "markdown": report.markdown(rows, ratios, settings, {n: versions(n) for n in args.only}),
        }  # fmt: skip
        png = report.chart(rows, args.conns, args.json.with_suffix(".png"))
        results["chart"] = str(png) if png else None
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {args.json}" + (f" and {png}" if png else ""))
    return 1 if any(f["server"] == "nnserve" for f in bench.failures) else 0  # nnserve itself must run


if __name__ == "__main__":
    sys.exit(main())
