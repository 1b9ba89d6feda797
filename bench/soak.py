"""Soak: nnserve under a steady, realistic load below saturation for a long time: no failed request, and its
resident memory does not grow.

    python -m bench.soak [--duration 600] [--fraction 0.7] [--mix classify=0.85,sentiment=0.13,generate=0.02]
        [--warmup S] [--sample-every S] [--rate R] [--json PATH]

1. Starts nnserve (tests/server.py: a real ``bentoml serve``, default settings unless --env says otherwise).
2. Saturation, as bench/burst.py measures it: closed-loop /v1/classify with one PNG per request at increasing
   concurrency until two levels in a row raise the best 200s/s by less than 5 % (--step-seconds per level);
   skipped when --rate is given.
3. Load: an open loop at a fixed schedule, --fraction x the saturation throughput requests per second, evenly
   spaced, for --duration seconds, each request sent on time whatever the earlier answers (an idle keep-alive
   connection, or a new one). The kind of each request is drawn from --mix with a fixed seed, so the schedule is
   the same from run to run: POST /v1/classify with one real PNG digit (loadtest/samples/digits), POST
   /v1/sentiment with one real SST-2 sentence (loadtest/samples/sentences.txt), POST /v1/generate with n=4 from
   mnist-gan. The rate is a fraction of classify's saturation; sentiment costs less per request and generate
   more, so the mix is roughly as heavy. (An open loop rather than Locust's constant_throughput: Locust's users
   are closed loops, so a slow answer delays that user's next request and hides the slowness, and Locust costs
   far more CPU per request on the machine the server runs on.)
4. Memory: every --sample-every seconds, the resident set size (RSS) summed over nnserve's whole process tree
   (the ``bentoml serve`` process and every descendant, found by parent pid), with the per-process figures.
   RSS at start = the median of the first 3 samples after the warm-up (--warmup, default 10 % of the run, at
   most 60 s); at end = the median of the last 3 (the last taken right after the load ends); growth = end vs
   start. Also: the maximum, and the RSS of the idle server before the load.

Reported: requests sent and the achieved rate (and the client's lag behind its schedule), failures (any
non-200, by status and error code, and connection errors), p50/p99 of the 200s per route and overall, 200s/s and
p99 per tenth of the run, the CPU used by the client and the server, and the memory figures. Exit status 1 when
any request failed or RSS grew by 5 % or more.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import BAD_200, REPO, ServerTree, machine, parse_env, run_async, start_server
from bench.loadgen import Client, load_row, open_loop, saturation
from bench.payloads import Picker, classify_kind, generate_kind, sentiment_kind
from bench.records import Recorder, latency

MiB = 1 << 20


def parse_mix(text: str) -> dict[str, float]:
    mix = {}
    for pair in text.split(","):
        name, _, weight = pair.partition("=")
        if name not in ("classify", "sentiment", "generate") or not weight:
            raise SystemExit(f"--mix takes classify=W,sentiment=W,generate=W, not {text!r}")
        mix[name] = float(weight)
    return mix


class Sampler:
    """RSS of the server's process tree every ``every`` seconds, and a progress line every ``report`` seconds."""

    def __init__(self, tree: ServerTree, rec: Recorder, every: float, report: float, t0: float) -> None:
        self.tree, self.rec, self.every, self.report, self.t0 = tree, rec, every, report, t0
        self.samples: list[dict[str, Any]] = []

    async def sample(self) -> dict[str, Any]:
        rss = await asyncio.to_thread(self.tree.rss)
        t = round(time.perf_counter() - self.t0, 2)
        row = {"t": t, "rss": sum(rss.values()), "procs": {str(pid): v for pid, v in rss.items()}}
        self.samples.append(row)
        return row

    async def run(self) -> None:
        next_report = self.report
        while True:
            row = await self.sample()
            if row["t"] >= next_report:
                next_report += self.report
                st = np.array(self.rec.status, dtype=np.int32)
                print(
                    f"    t={row['t']:6.0f} s  {len(st):>9,d} answered  {len(st) / row['t']:7.1f}/s  "
                    f"failed {int((st != 200).sum())}  RSS {row['rss'] / MiB:8.1f} MiB ({len(row['procs'])} processes)",
                    flush=True,
                )
            await asyncio.sleep(max(0.0, self.every - (time.perf_counter() - self.t0 - row["t"])))


def memory(samples: list[dict[str, Any]], warmup: float, idle: dict[str, Any], names: dict[int, str]) -> dict:
    after = [s for s in samples if s["t"] >= warmup]
    if len(after) < 2:
        raise SystemExit(
            f"only {len(after)} RSS samples after the {warmup:g} s warm-up: run longer or sample more often"
        )
    first, last = after[:3], after[-3:]
    start = statistics.median(s["rss"] for s in first)
    end = statistics.median(s["rss"] for s in last)
    return {
        "warmup_s": warmup,
        "samples": len(samples),
        "idle_before_load_mib": round(idle["rss"] / MiB, 1),
        "start_mib": round(start / MiB, 1),
        "start_at_s": [s["t"] for s in first],
        "end_mib": round(end / MiB, 1),
        "end_at_s": [s["t"] for s in last],
        "max_mib": round(max(s["rss"] for s in samples) / MiB, 1),
        "growth_pct": round(100 * (end - start) / start, 2),
        "per_process_mib": {  # first sample after the warm-up -> last sample
            pid: {
                "cmd": names.get(int(pid), "?"),
                "start": round(first[0]["procs"].get(pid, 0) / MiB, 1),
                "end": round(last[-1]["procs"].get(pid, 0) / MiB, 1),
            }
            for pid in sorted(set(first[0]["procs"]) | set(last[-1]["procs"]), key=int)
        },
        "process_set_changed": set(first[0]["procs"]) != set(last[-1]["procs"]),
        "series": [{"t": s["t"], "rss_mib": round(s["rss"] / MiB, 1)} for s in samples],
    }


def timeline(rec: Recorder, seconds: float, parts: int = 10) -> list[dict[str, Any]]:
    """200s/s and latency per tenth of the run (by completion time)."""
    a = rec.arrays()
    ok = (a["status"] == 200) & ((a["flags"] & BAD_200) == 0)
    width = seconds / parts
    out = []
    for i in range(parts):
        lo, hi = i * width, (i + 1) * width if i < parts - 1 else np.inf
        sel = (a["done"] >= lo) & (a["done"] < hi)
        out.append(
            {
                "from_s": round(lo, 1),
                "ok_per_s": round(float((sel & ok).sum()) / width, 1),
                "failed": int((sel & ~ok).sum()),
                **latency(a["latency_ms"][sel & ok]),
            }
        )
    return out


def per_kind(rec: Recorder) -> dict[str, dict[str, Any]]:
    a = rec.arrays()
    ok = (a["status"] == 200) & ((a["flags"] & BAD_200) == 0)
    out = {}
    for k, kind in enumerate(rec.kinds):
        sel = a["kind"] == k
        statuses = {str(s): int(n) for s, n in zip(*np.unique(a["status"][sel], return_counts=True), strict=True)}
        out[kind.name] = {
            "requests": int(sel.sum()),
            "ok": int((sel & ok).sum()),
            "statuses": statuses,
            **latency(a["latency_ms"][sel & ok]),
        }
    return out


async def run(args: argparse.Namespace, server: Any) -> dict[str, Any]:
    host, port = "127.0.0.1", server.port
    tree = ServerTree(server.proc.pid)
    out: dict[str, Any] = {}
    if args.rate:
        rate = args.rate
        print(f"rate: {rate:,.1f} req/s (--rate; no saturation measurement)", flush=True)
    else:
        print(f"saturation: closed loop on /v1/classify, one PNG per request, {args.step_seconds:g} s per level")
        sat = await saturation(
            Client(host, port), classify_kind(f"{host}:{port}"), args.levels, args.step_seconds, server=tree
        )
        out["saturation"] = sat
        rate = args.fraction * sat["ok_per_s"]
        print(
            f"    -> saturation {sat['ok_per_s']:,.0f} ok/s at c={sat['concurrency']}; soak rate "
            f"{args.fraction:g} x that = {rate:,.1f} req/s",
            flush=True,
        )
    await asyncio.sleep(1)  # let the saturation runs' last answers settle before the idle sample
    makers = {"classify": classify_kind, "sentiment": sentiment_kind, "generate": generate_kind}
    kinds = [makers[name](f"{host}:{port}") for name in args.mix]
    picker = Picker(kinds, list(args.mix.values()), seed=args.seed)
    rec = Recorder(kinds)
    client = Client(host, port)
    await client.prefill(32)
    print(
        f"soak: open loop, {rate:,.1f} req/s for {args.duration:g} s, mix {args.mix}; "
        f"RSS every {args.sample_every:g} s, warm-up {args.warmup:g} s",
        flush=True,
    )
    t0 = time.perf_counter()
    sampler = Sampler(tree, rec, args.sample_every, args.report_every, t0)
    idle = await sampler.sample()
    sampler.samples.clear()
    names = tree.describe()
    sampling = asyncio.create_task(sampler.run())
    load = await open_loop(
        client,
        picker,
        rate,
        args.duration,
        server=tree,
        max_connections=args.max_connections,
        timeout=args.timeout,
        rec=rec,
    )
    sampling.cancel()
    await asyncio.gather(sampling, return_exceptions=True)
    await sampler.sample()  # right after the load (and its last answers)
    client.close_all()
    row = load_row(load)
    failures = {s: n for s, n in row["statuses"].items() if s != "200"}
    return {
        **out,
        "rate": {"target_per_s": round(rate, 1), "fraction": args.fraction, "mix": args.mix},
        "load": row,
        "failed": {
            "statuses": failures,
            "error_codes": row["error_codes"],
            "malformed_200": row["malformed_200"],
            "connection_errors": row["connection_errors"],
            "skipped_no_connection": row["skipped_no_connection"],
            "total": int(row["requests"] - row["ok"]) + row["skipped_no_connection"],
        },
        "per_route": per_kind(rec),
        "timeline": timeline(rec, args.duration),
        "memory": memory(sampler.samples, args.warmup, idle, names),
    }


def report(r: dict[str, Any]) -> None:
    load, mem, failed = r["load"], r["memory"], r["failed"]
    print(f"\nsoak: {load['seconds']:.0f} s at {r['rate']['target_per_s']:,.1f} req/s target")
    print(
        f"    sent {load['requests']:,d} ({load['sent_per_s']:,.1f}/s; client lag p50 {load['lag']['p50_ms']} / p99 "
        f"{load['lag']['p99_ms']} ms, {load['skipped_no_connection']} skipped, {load['peak_connections']} connections)"
    )
    ok = load["ok_latency"]
    print(f"    200s {load['ok']:,d} ({load['ok_per_s']:,.1f}/s)  p50 {ok['p50_ms']} ms  p99 {ok['p99_ms']} ms")
    for name, k in r["per_route"].items():
        print(
            f"      {name:10s} {k['requests']:>8,d} requests  {k['ok']:>8,d} ok  p50 {k['p50_ms']} ms  "
            f"p99 {k['p99_ms']} ms  {k['statuses']}"
        )
    print(
        f"    failed {failed['total']}: statuses {failed['statuses'] or '{}'}, codes {failed['error_codes'] or '{}'}, "
        f"connection errors {failed['connection_errors'] or '{}'}, malformed 200 {failed['malformed_200']}"
    )
    print(
        f"    CPU: client {load['client_cpu_s']:.1f} s ({load['client_cpu_s'] / load['seconds']:.0%} of a core), "
        f"server {load['server_cpu_s']:.1f} s ({load['server_cpu_s'] / load['seconds']:.2f} cores, "
        f"{load['server_cpu_ms_per_req']:.2f} ms per request)"
    )
    print("    per tenth of the run: " + "  ".join(f"{t['ok_per_s']:.0f}/s p99 {t['p99_ms']}" for t in r["timeline"]))
    print(
        f"    RSS (sum over {len(mem['per_process_mib'])} processes): idle {mem['idle_before_load_mib']} MiB, "
        f"start {mem['start_mib']} MiB (after the {mem['warmup_s']:g} s warm-up), end {mem['end_mib']} MiB, "
        f"max {mem['max_mib']} MiB, growth {mem['growth_pct']:+.2f} %"
        + ("  (the set of processes changed)" if mem["process_set_changed"] else "")
    )
    for pid, p in mem["per_process_mib"].items():
        print(f"      {pid:>8s} {p['start']:8.1f} -> {p['end']:8.1f} MiB  {p['cmd'][:90]}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model-dir", type=Path, default=REPO / "artifacts")
    p.add_argument("--duration", type=float, default=600, help="seconds of load")
    p.add_argument("--fraction", type=float, default=0.7, help="the rate, as a fraction of saturation")
    p.add_argument("--rate", type=float, help="requests per second (skips the saturation measurement)")
    p.add_argument("--mix", type=parse_mix, default=parse_mix("classify=0.85,sentiment=0.13,generate=0.02"),
                   help="request kinds and weights (default: classify=0.85,sentiment=0.13,generate=0.02)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="of the request-kind draw")
    p.add_argument("--warmup", type=float, help="seconds before the start RSS (default: 10 %% of --duration, <= 60)")
    p.add_argument("--sample-every", type=float, help="seconds between RSS samples (default: 5, less in short runs)")
    p.add_argument("--report-every", type=float, help="seconds between progress lines (default: --duration / 10)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="server settings")
    p.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64], help="saturation search")
    p.add_argument("--step-seconds", type=float, default=3, help="seconds per saturation level")
    p.add_argument("--max-connections", type=int, default=1024)
    p.add_argument("--timeout", type=float, default=35, help="seconds a request may wait for its answer")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    if args.warmup is None:
        args.warmup = min(60.0, 0.1 * args.duration)
    if args.sample_every is None:
        args.sample_every = min(5.0, max(0.5, args.duration / 30))
    if args.report_every is None:
        args.report_every = max(args.sample_every, args.duration / 10)
    env = parse_env(args.env)
    info = machine()
    server = start_server(args.model_dir, env)
    try:
        results = run_async(run(args, server))
    finally:
        server.stop()
    results = {
        "machine": info,
        "settings": env or "defaults",
        "args": {k: str(v) for k, v in vars(args).items()},
        **results,
    }
    report(results)
    verdict = []
    if results["failed"]["total"]:
        verdict.append(f"{results['failed']['total']} requests failed")
    if results["memory"]["growth_pct"] >= 5:
        verdict.append(f"RSS grew {results['memory']['growth_pct']:.1f} % (limit 5 %)")
    results["failures"] = verdict
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    print("FAIL: " + "; ".join(verdict) if verdict else "PASS: no failed request, RSS growth under 5 %")
    return 1 if verdict else 0


if __name__ == "__main__":
    sys.exit(main())
