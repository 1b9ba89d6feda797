"""Overload: a burst of 5x nnserve's saturation load is shed fast (429/503, the JSON envelope, Retry-After),
never answered with a 500, and the server answers normally right after.

    python -m bench.burst [--model-dir artifacts] [--duration 10] [--mode both|open|closed] [--factor 5]
        [--max-concurrency 64] [--max-queue-rows 16] [--api-workers 2] [--json PATH]

1. Starts nnserve (tests/server.py: a real ``bentoml serve``) with explicit limits, printed: NNSERVE_MAX_CONCURRENCY
   (in-flight /v1 requests, split among the API workers, before 429) and NNSERVE_MAX_QUEUE_ROWS (rows waiting per
   model family in each worker before 503); 16 queued rows is below the 32 requests a worker admits, so both
   ways of shedding are exercised.
2. Saturation: closed-loop load on /v1/classify, one real PNG digit per request (loadtest/samples/digits), at
   --levels concurrencies (--step-seconds each, after a warm-up; those above NNSERVE_MAX_CONCURRENCY are left out),
   until two levels in a row raise the best 200s/s by less than 5 %: the saturation throughput S (the best level)
   and the saturating concurrency C (the lowest level within 5 % of S).
3. The burst, --duration seconds, in one or both ways (--mode):
     closed  --factor x C connections, each sending its next request as soon as the last is answered;
     open    --factor x S requests per second at a fixed schedule (evenly spaced), whatever the answers: each
             arrival takes an idle keep-alive connection or opens one (at most --max-connections; arrivals beyond
             are counted as skipped). The client's lag behind its schedule and the rate it actually sent say
             whether it sustained the target; when it did not, the offered load was lower than 5x.
   Per response it records status, latency (send -> whole response), Retry-After, and whether an error body is
   the envelope {"error": {"code", "message", "details"}}. Reported: 200s/s and their p50/p99, shed counts by
   status (429/503) and the shed responses' p50/p99, any other status, connection errors, and the CPU the client
   (this process, getrusage) and the server (its process tree, /proc) used while the burst was sent.
4. Recovery: as soon as the burst stops sending (its last requests still draining), --recovery-concurrency
   connections in a closed loop (no back-off) for --recovery-seconds: the time from the end of the burst to the
   first 200, whether every recovery request was a 200, and their p50/p99.

Load comes from bench/common.py's asyncio HTTP/1.1 keep-alive client (raw protocol on uvloop; wrk cannot tell
latencies apart by status). Exit status 1 when any response was neither 200, 429 nor 503, a 429/503 came
without Retry-After, an error body was not the envelope, a 200 body lacked its predictions, a connection failed
or a request got no answer within --timeout, or a recovery phase saw no 200.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import REPO, ServerTree, machine, parse_env, run_async, start_server
from bench.loadgen import Client, closed_loop, load_row, open_loop, saturation
from bench.payloads import Picker, classify_kind


def problems(row: dict[str, Any], shed_allowed: bool = True) -> list[str]:
    """What makes the run fail, from one phase's summary."""
    out = []
    if row["other_status"]:
        out.append(f"other statuses {row['other_status']}")
    if not shed_allowed and any(row["shed"].values()):
        out.append(f"shed {row['shed']}")
    if row["shed_without_retry_after"]:
        out.append(f"{row['shed_without_retry_after']} 429/503 without Retry-After")
    if row["errors_without_envelope"]:
        out.append(f"{row['errors_without_envelope']} error bodies not the envelope")
    if row["malformed_200"]:
        out.append(f"{row['malformed_200']} malformed 200s")
    if row["connection_errors"]:
        out.append(f"connection errors {row['connection_errors']}")
    return out


async def burst_and_recovery(
    url_host: str, port: int, mode: str, sat: dict[str, Any], args: argparse.Namespace, tree: ServerTree
) -> dict[str, Any]:
    kind = classify_kind(f"{url_host}:{port}")
    client, sent = Client(url_host, port), asyncio.Event()
    if mode == "closed":
        target = max(1, round(args.factor * sat["concurrency"]))
        label = f"closed loop, {target} connections = {args.factor:g} x the saturating concurrency {sat['concurrency']}"
        task = asyncio.create_task(
            closed_loop(client, Picker([kind]), target, args.duration, server=tree, timeout=args.timeout, sent=sent)
        )
    else:
        target = args.factor * sat["ok_per_s"]
        label = f"open loop, {target:,.0f} req/s = {args.factor:g} x the saturation throughput {sat['ok_per_s']:,.0f}/s"
        await client.prefill(min(args.max_connections, 2 * args.max_concurrency))
        task = asyncio.create_task(
            open_loop(client, Picker([kind]), target, args.duration, server=tree, max_connections=args.max_connections,
                      timeout=args.timeout, sent=sent)
        )  # fmt: skip
    print(f"burst: {label}, {args.duration:g} s", flush=True)
    waiter = asyncio.create_task(sent.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if task.done() and not sent.is_set():
        task.result()  # raises what went wrong
    recovery_client = Client(url_host, port)
    recovery_load = await closed_loop(
        recovery_client, Picker([kind]), args.recovery_concurrency, args.recovery_seconds, server=tree,
        timeout=args.timeout,
    )  # fmt: skip
    load = await task
    client.close_all()
    burst = {"mode": mode, "label": label, "target": target, **load_row(load)}
    if mode == "open":
        burst["sustained"] = round(burst["sent_per_s"] / target, 3)
    recovery = load_row(recovery_load)
    a = recovery_load.rec.arrays()
    ok = a["status"] == 200
    recovery["first_200_ms"] = round(float(a["done"][ok].min()) * 1e3, 2) if ok.any() else None
    recovery["all_200"] = bool(ok.all()) and bool(ok.any())
    recovery["concurrency"] = args.recovery_concurrency
    return {"burst": burst, "recovery": recovery}


def ms(lat: dict[str, float | None]) -> str:
    return f"{lat['p50_ms']}/{lat['p99_ms']}" if lat["p50_ms"] is not None else "-"


def print_burst(b: dict[str, Any]) -> None:
    lat, shed_lat = b["ok_latency"], b["shed_latency"]
    print(f"    sent            {b['requests']:>8,d}  {b['sent_per_s']:>8,.0f}/s", end="")
    if b["mode"] == "open":
        print(
            f"  ({b['sustained']:.0%} of the target; client lag p50 {b['lag']['p50_ms']} / p99 {b['lag']['p99_ms']} ms"
            f", {b['skipped_no_connection']} skipped, {b['peak_connections']} connections at most)",
            end="",
        )
    print(f"; {b['in_flight_at_end']} in flight when it stopped")
    print(
        f"    accepted 200    {b['ok']:>8,d}  {b['ok_per_s']:>8,.0f}/s  p50 {lat['p50_ms']} ms  p99 {lat['p99_ms']} ms"
    )
    for status, n in b["shed"].items():
        print(f"    shed {status}        {n:>8,d}  {n / b['seconds']:>8,.0f}/s")
    shed = (
        f"p50 {shed_lat['p50_ms']} ms  p99 {shed_lat['p99_ms']} ms  max {shed_lat['max_ms']} ms"
        if shed_lat["p50_ms"] is not None
        else "(nothing shed)"
    )
    print(
        f"    shed latency    {shed}; without Retry-After {b['shed_without_retry_after']}, error bodies not the "
        f"envelope {b['errors_without_envelope']}; codes {b['error_codes']}"
    )
    print(
        f"    other status    {sum(b['other_status'].values()):>8,d}  {b['other_status'] or ''}   connection errors "
        f"{sum(b['connection_errors'].values())} {b['connection_errors'] or ''}   malformed 200 {b['malformed_200']}"
    )
    print(
        f"    CPU while sending: client {b['client_cpu_s']:.1f} s ({b['client_cpu_s'] / b['seconds']:.0%} of a core), "
        f"server {b['server_cpu_s']:.1f} s ({b['server_cpu_s'] / b['seconds']:.2f} cores)"
    )


def print_recovery(r: dict[str, Any]) -> None:
    lat = r["ok_latency"]
    verdict = "all 200" if r["all_200"] else f"NOT all 200: {r['statuses']} {r['connection_errors'] or ''}"
    print(
        f"recovery: closed loop c={r['concurrency']}, {r['seconds']:.1f} s from the moment the burst stopped sending\n"
        f"    first 200 after {r['first_200_ms']} ms; {r['requests']:,d} requests, {verdict}; "
        f"{r['ok_per_s']:,.0f} ok/s  p50 {lat['p50_ms']} ms  p99 {lat['p99_ms']} ms",
        flush=True,
    )


def table(results: dict[str, Any]) -> None:
    sat = results["saturation"]
    print(f"\nsummary (saturation {sat['ok_per_s']:,.0f} ok/s at c={sat['concurrency']}):")
    head = ("phase", "offered", "ok/s", "ok p50/p99 ms", "429", "503", "shed p50/p99 ms", "other", "conn err",
            "client CPU")  # fmt: skip
    fmt = "  {:<16} {:>14} {:>7} {:>15} {:>8} {:>8} {:>15} {:>6} {:>8} {:>10}"
    print(fmt.format(*head))
    for run in results["bursts"]:
        for phase in ("burst", "recovery"):
            r = run[phase]
            offered = (
                (f"{r['target']:,.0f}/s" if r["mode"] == "open" else f"c={r['target']}")
                if phase == "burst"
                else f"c={r['concurrency']}"
            )
            ok, shed = r["ok_latency"], r["shed_latency"]
            print(
                fmt.format(
                    f"{phase} ({run['burst']['mode']})",
                    offered,
                    f"{r['ok_per_s']:,.0f}",
                    ms(ok),
                    r["shed"]["429"],
                    r["shed"]["503"],
                    ms(shed),
                    sum(r["other_status"].values()),
                    sum(r["connection_errors"].values()),
                    f"{r['client_cpu_s']:.1f} s",
                )
            )


async def run(args: argparse.Namespace, server: Any) -> dict[str, Any]:
    host, port = "127.0.0.1", server.port
    tree = ServerTree(server.proc.pid)
    levels = [c for c in args.levels if c <= args.max_concurrency]
    print(
        f"saturation: closed loop on /v1/classify, one PNG per request, {args.step_seconds:g} s per level", flush=True
    )
    sat = await saturation(Client(host, port), classify_kind(f"{host}:{port}"), levels, args.step_seconds, server=tree)
    print(f"    -> saturation {sat['ok_per_s']:,.0f} ok/s, reached at c={sat['concurrency']}", flush=True)
    results: dict[str, Any] = {"saturation": sat, "bursts": []}
    modes = ["closed", "open"] if args.mode == "both" else [args.mode]
    for i, mode in enumerate(modes):
        if i:
            await asyncio.sleep(args.pause)
        out = await burst_and_recovery(host, port, mode, sat, args, tree)
        print_burst(out["burst"])
        b = out["burst"]
        if mode == "open" and b["sustained"] < 0.95:
            why = (
                f"{b['skipped_no_connection']} arrivals found all {args.max_connections} connections waiting for an "
                "answer (--max-connections)"
                if b["skipped_no_connection"]
                else f"the client fell behind its schedule (lag p99 {b['lag']['p99_ms']} ms)"
            )
            print(f"    NOTE: {b['sustained']:.0%} of the target rate was sent, as {why}", flush=True)
        print_recovery(out["recovery"])
        results["bursts"].append(out)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.burst", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--model-dir", type=Path, default=REPO / "artifacts")
    p.add_argument("--duration", type=float, default=10, help="seconds of burst (each, with --mode both)")
    p.add_argument("--mode", choices=["both", "open", "closed"], default="both")
    p.add_argument("--factor", type=float, default=5, help="the burst, as a multiple of saturation")
    p.add_argument("--max-concurrency", type=int, default=64, help="NNSERVE_MAX_CONCURRENCY")
    p.add_argument("--max-queue-rows", type=int, default=16, help="NNSERVE_MAX_QUEUE_ROWS")
    p.add_argument("--api-workers", type=int, default=2, help="NNSERVE_API_WORKERS")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="more server settings")
    p.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64], help="saturation search")
    p.add_argument("--step-seconds", type=float, default=3, help="seconds per saturation level")
    p.add_argument("--recovery-seconds", type=float, default=3)
    p.add_argument("--recovery-concurrency", type=int, default=4)
    p.add_argument("--pause", type=float, default=2, help="seconds between the two bursts of --mode both")
    p.add_argument("--max-connections", type=int, default=1024, help="open loop: connections at most")
    p.add_argument("--timeout", type=float, default=35, help="seconds a request may wait for its answer")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    env = {
        "NNSERVE_MAX_CONCURRENCY": str(args.max_concurrency),
        "NNSERVE_MAX_QUEUE_ROWS": str(args.max_queue_rows),
        "NNSERVE_API_WORKERS": str(args.api_workers),
        **parse_env(args.env),
    }
    print(
        f"settings: NNSERVE_MAX_CONCURRENCY={args.max_concurrency} ({args.max_concurrency // args.api_workers} per API "
        f"worker), NNSERVE_MAX_QUEUE_ROWS={args.max_queue_rows} (per model family, per worker), "
        f"NNSERVE_API_WORKERS={args.api_workers}; the rest: {parse_env(args.env) or 'defaults'}"
    )
    info = machine()
    server = start_server(args.model_dir, env)
    t0 = time.monotonic()
    try:
        results = run_async(run(args, server))
    finally:
        server.stop()
    results = {"machine": info, "settings": env, "args": {k: str(v) for k, v in vars(args).items()}, **results}
    results["wall_s"] = round(time.monotonic() - t0, 1)
    table(results)
    failures = [f"saturation c={r['concurrency']}: {x}" for r in results["saturation"]["levels"] for x in problems(r)]
    for run_ in results["bursts"]:
        mode = run_["burst"]["mode"]
        failures += [f"{mode} burst: {x}" for x in problems(run_["burst"])]
        failures += [f"{mode} recovery: {x}" for x in problems(run_["recovery"])]
        if not run_["recovery"]["ok"]:
            failures.append(f"{mode} recovery: no 200 at all")
    results["failures"] = failures
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if failures:
        print("FAIL:\n  " + "\n  ".join(failures))
    else:
        print("PASS: only 200/429/503, each 429/503 an envelope with Retry-After, no connection errors, 200s after")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
