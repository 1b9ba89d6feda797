"""``make bench``: nnserve against the physical limit and a plain reference server, in one run, as ratios.

    python -m bench.run [--duration 20] [--warmup 5] [--concurrency 1 8 32 64] [--json docs/bench.json]

(a) in-process onnxruntime: decode + preprocess + inference (and inference alone) per model at batch 1 and
    at the service's max batch size: the physical limit of this machine;
(b) the reference server (bench/reference.py: uvicorn + FastAPI + onnxruntime inline, no batching);
(c) nnserve (``bentoml serve``, default settings: batching, validation and metrics on) over HTTP.

Load comes from wrk (one thread, pinned to the last core when there are several), one request = one PNG
digit or one real sentence from loadtest/samples; a 64-image request measures bulk throughput. The report
prints req/s, p50/p99, errors, the CPU time wrk itself used (it competes with the server on 2 cores), the
server's CPU per request, and the batch-size distribution nnserve's ``/metrics`` observed during each run.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from bench.common import ServerTree

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "loadtest" / "samples"
LUA = """
local f = assert(io.open(os.getenv("WRK_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
"""


# ---- inputs -----------------------------------------------------------------------------------------


def sample_pngs(n: int) -> list[bytes]:
    files = sorted((SAMPLES / "digits").glob("*.png"))[:n]
    if not files:
        raise SystemExit(f"no PNG digits in {SAMPLES / 'digits'}: run loadtest/make_samples.py")
    return [f.read_bytes() for f in files]


def sample_sentences(n: int) -> list[str]:
    lines = [s for s in (SAMPLES / "sentences.txt").read_text(encoding="utf-8").splitlines() if s.strip()]
    return lines[:n]


# ---- (a) in process ---------------------------------------------------------------------------------


def _rate(fn, items_per_call: int, seconds: float) -> float:
    fn()  # warm
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n * items_per_call / (time.perf_counter() - t0)


def in_process(model_dir: Path, seconds: float, image_batch: int, text_batch: int, sentence: str) -> dict:
    """Rows per second of one thread: the physical limit for the HTTP runs' inputs (the texts are the HTTP runs'
    sentence repeated, as one length bucket of the service would hold them)."""
    import onnxruntime as ort

    from contract.images import decode_image, normalize, prepare_image
    from contract.metadata import load_metadata
    from contract.text import Vocab, encode_text, pad_right

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    out: dict = {}
    meta = load_metadata(model_dir / "mnist-cnn")
    pre = meta.image_preprocessing()
    sess = ort.InferenceSession(str(model_dir / "mnist-cnn" / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    pngs = sample_pngs(image_batch)

    def prep(blobs: list[bytes]) -> np.ndarray:
        return np.stack([normalize(prepare_image(decode_image(b, max_pixels=25_000_000), pre), pre) for b in blobs])

    x1, xb = prep(pngs[:1]), prep(pngs)
    out["mnist-cnn"] = {
        "infer_b1": _rate(lambda: sess.run(None, {"input": x1}), 1, seconds),
        f"infer_b{len(xb)}": _rate(lambda: sess.run(None, {"input": xb}), len(xb), seconds),
        "decode_infer_b1": _rate(lambda: sess.run(None, {"input": prep(pngs[:1])}), 1, seconds),
        f"decode_infer_b{len(pngs)}": _rate(lambda: sess.run(None, {"input": prep(pngs)}), len(pngs), seconds),
    }
    tmeta = load_metadata(model_dir / "sst2-lstm")
    tpre = tmeta.text_preprocessing()
    vocab = Vocab.load(model_dir / "sst2-lstm" / tpre.vocab_file)
    tsess = ort.InferenceSession(str(model_dir / "sst2-lstm" / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    texts = [sentence] * text_batch
    seqs = [encode_text(t, tpre.tokenizer, vocab)[0] or [tpre.unk_id] for t in texts]

    def run_texts(batch: list[list[int]]) -> None:
        ids, lengths = pad_right([np.asarray(s, dtype=np.int64) for s in batch])
        tsess.run(None, {"ids": ids, "lengths": lengths})

    out["sst2-lstm"] = {
        "infer_b1": _rate(lambda: run_texts(seqs[:1]), 1, seconds),
        f"infer_b{len(seqs)}": _rate(lambda: run_texts(seqs), len(seqs), seconds),
    }
    return out


# ---- HTTP load with wrk -----------------------------------------------------------------------------

_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    assert m, text
    return float(m.group(1)) * _UNIT[m.group(2)]


def wrk(
    url: str, body: bytes, conns: int, seconds: float, server_pid: int, headers: dict[str, str] | None = None
) -> dict:
    """``headers`` are set after the JSON Content-Type, so they may replace it."""
    with tempfile.TemporaryDirectory() as tmp:
        lua, data = Path(tmp, "post.lua"), Path(tmp, "body.json")
        extra = "".join(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}\n" for k, v in (headers or {}).items())
        lua.write_text(LUA + extra)
        data.write_bytes(body)
        pin = ["taskset", "-c", str(os.cpu_count() - 1)] if (os.cpu_count() or 1) > 1 else []
        duration = f"-d{max(1, round(seconds))}s"
        cmd = [*pin, "wrk", "-t1", f"-c{conns}", duration, "--latency", "--timeout", "10s", "-s", str(lua), url]
        server = ServerTree(server_pid)
        cpu0 = server.cpu()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "WRK_BODY": str(data)})
        assert proc.stdout is not None
        text = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        server_cpu = server.cpu() - cpu0
    if status != 0:
        raise RuntimeError(f"wrk failed: {text}")
    requests = int(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", text)) else 0
    sock = sum(int(v) for v in m.groups()) if (m := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)) else 0  # fmt: skip
    lat = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", text, re.M))
    ok = max(requests - non2xx, 0)
    return {
        "concurrency": conns,
        "seconds": seconds,
        "requests": requests,
        "ok_per_s": ok / seconds,
        "errors": non2xx + sock,
        "p50_ms": _ms(lat["50"]) if "50" in lat else float("nan"),  # absent when nothing completed
        "p99_ms": _ms(lat["99"]) if "99" in lat else float("nan"),
        "wrk_cpu_s": usage.ru_utime + usage.ru_stime,
        "server_cpu_ms_per_req": 1e3 * server_cpu / max(requests, 1),
    }


# ---- servers ----------------------------------------------------------------------------------------


class Proc:
    def __init__(self, cmd: list[str], env: dict[str, str], ready_url: str, log: Path) -> None:
        self.log = open(log, "wb")  # noqa: SIM115  (closed in stop)
        self.proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, **env}, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{cmd[0]} exited; see {log}")
            try:
                if httpx.get(ready_url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"not ready in time; see {log}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()


def batch_histogram(base: str, model: str) -> dict[str, float]:
    """Cumulative nnserve_batch_size buckets for one model, from /metrics."""
    text = httpx.get(f"{base}/metrics", timeout=10).text
    pat = rf'^nnserve_batch_size_bucket{{[^}}]*le="([^"]+)"[^}}]*model="{re.escape(model)}"[^}}]*}} (\S+)$'
    out = {le: float(v) for le, v in re.findall(pat, text, re.M)}
    if not out:  # label order differs between client versions
        pat = rf'^nnserve_batch_size_bucket{{[^}}]*model="{re.escape(model)}"[^}}]*le="([^"]+)"[^}}]*}} (\S+)$'
        out = {le: float(v) for le, v in re.findall(pat, text, re.M)}
    return out


def batch_distribution(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Share of onnxruntime runs per batch-size bucket (upper bound) between two scrapes."""
    les = [*sorted((k for k in after if k != "+Inf"), key=float), "+Inf"]
    cum = [after.get(k, 0) - before.get(k, 0) for k in les]
    runs = cum[-1]
    if runs <= 0:
        return {}
    counts = [cum[0], *(b - a for a, b in itertools.pairwise(cum))]
    return {f"<={le}": round(c / runs, 3) for le, c in zip(les, counts, strict=True) if c > 0}


# ---- the run ----------------------------------------------------------------------------------------


def classify_body(pngs: list[bytes]) -> bytes:
    images = [base64.b64encode(p).decode() for p in pngs]
    return json.dumps({"model": "mnist-cnn", "images": images, "top_k": 3}).encode()


def sentiment_body(text: str) -> bytes:
    return json.dumps({"model": "sst2-lstm", "texts": [text]}).encode()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--model-dir", type=Path, default=REPO / "artifacts")
    p.add_argument("--duration", type=float, default=20)
    p.add_argument("--warmup", type=float, default=5)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    p.add_argument("--inprocess-seconds", type=float, default=3)
    p.add_argument(
        "--variant",
        type=_variant,
        action="append",
        metavar="LABEL[:KEY=VALUE,...]",
        help="an nnserve configuration to measure (repeatable; default: the default settings); the goals are "
        "judged on the first, e.g. --variant api2:NNSERVE_API_WORKERS=2 --variant services:NNSERVE_BATCHING=services",
    )
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    logs = Path(tempfile.mkdtemp(prefix="nnserve-bench-"))
    pngs = sample_pngs(64)
    one_png, bulk = classify_body(pngs[:1]), classify_body(pngs)
    sentence = sorted(sample_sentences(200), key=len)[100]  # a median-length real sentence
    results: dict = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}}
    print(f"(a) in-process onnxruntime, 1 thread, {args.inprocess_seconds:g} s each", flush=True)
    results["in_process"] = in_process(args.model_dir, args.inprocess_seconds, 64, 128, sentence)
    for model, rates in results["in_process"].items():
        print(f"    {model:10s} " + "  ".join(f"{k} {v:,.0f}/s" for k, v in rates.items()), flush=True)

    def load(base: str, pid: int, route: str, body: bytes, conns: list[int], model: str | None) -> list[dict]:
        rows = []
        for c in conns:
            wrk(f"{base}{route}", body, c, args.warmup, pid)
            before = batch_histogram(base, model) if model else {}
            row = wrk(f"{base}{route}", body, c, args.duration, pid)
            if model:
                row["batch_sizes"] = batch_distribution(before, batch_histogram(base, model))
            rows.append(row)
            print(
                f"    {route:14s} c={c:<3d} {row['ok_per_s']:8.0f} ok/s  p50 {row['p50_ms']:7.1f} ms  "
                f"p99 {row['p99_ms']:7.1f} ms  errors {row['errors']:<5d} "
                f"server {row['server_cpu_ms_per_req']:.2f} ms CPU/req  wrk {row['wrk_cpu_s']:.1f} s CPU  "
                f"{row.get('batch_sizes', '')}",
                flush=True,
            )
        return rows

    port = 3900
    print("(b) reference: uvicorn + FastAPI + onnxruntime inline, async, 1 worker, no batching", flush=True)
    ref = Proc([sys.executable, "-m", "bench.reference", "--model-dir", str(args.model_dir), "--port", str(port)],
               {}, f"http://127.0.0.1:{port}/docs", logs / "reference.log")  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        results["reference"] = {
            "classify": load(base, ref.pid, "/v1/classify", one_png, [1, 32], None),
            "sentiment": load(base, ref.pid, "/v1/sentiment", sentiment_body(sentence), [1, 32], None),
            "classify_64": load(base, ref.pid, "/v1/classify", bulk, [8], None),
        }
    finally:
        ref.stop()
    for i, (label, env) in enumerate(args.variant or [("default", {})]):
        port = 3901 + i
        print(f"(c) nnserve: bentoml serve, {label} {env or ''}", flush=True)
        bento = Proc([str(Path(sys.executable).with_name("bentoml")), "serve", "service.service:NNServe", "--host",
                      "127.0.0.1", "--port", str(port)], {"NNSERVE_MODEL_DIR": str(args.model_dir),
                      "BENTOML_DO_NOT_TRACK": "True", "NNSERVE_GRPC_PORT": "0", **env}, f"http://127.0.0.1:{port}/readyz",
                     logs / f"nnserve-{label}.log")  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}"
            results.setdefault("variants", {})[label] = {
                "env": env,
                "classify": load(base, bento.pid, "/v1/classify", one_png, args.concurrency, "mnist-cnn"),
                "sentiment": load(base, bento.pid, "/v1/sentiment", sentiment_body(sentence), [1, 32], "sst2-lstm"),
                "classify_64": load(base, bento.pid, "/v1/classify", bulk, [8], "mnist-cnn"),
            }
        finally:
            bento.stop()
    results["nnserve"] = next(iter(results["variants"].values()))  # the goals are judged on the first variant
    results["ratios"] = ratios(results)
    print("ratios: nnserve / reference at the same concurrency, nnserve / in-process limit (1 thread)")
    for label, rows in results["ratios"].items():
        for r in rows:
            ref = f"{r['vs_reference']:.2f}x reference" if r["vs_reference"] is not None else "(no reference point)"
            print(f"    {label:12s} {r['run']:11s} c={r['concurrency']:<3d} {ref:22s} {r['vs_limit']:.2f}x limit")
    results["goals"] = goals(results)
    print("goals (ratios within this run):")
    for name, g in results["goals"].items():
        print(f"    {'MET ' if g['met'] else 'MISS'} {name}: {g['value']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"logs in {logs}")
    return 0


def _variant(text: str) -> tuple[str, dict[str, str]]:
    label, _, pairs = text.partition(":")
    env = dict(pair.split("=", 1) for pair in pairs.split(",") if pair)
    return label, env


LIMITS = {  # the in-process figure each HTTP run is compared with, and rows per request
    "classify": ("mnist-cnn", "decode_infer_b1", 1),
    "sentiment": ("sst2-lstm", "infer_b1", 1),
    "classify_64": ("mnist-cnn", "decode_infer_b64", 64),
}


def ratios(r: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for label, variant in r["variants"].items():
        for run, (model, key, rows_per_request) in LIMITS.items():
            limit = r["in_process"][model][key]
            for row in variant[run]:
                ref = next((x for x in r["reference"][run] if x["concurrency"] == row["concurrency"]), None)
                out.setdefault(label, []).append(
                    {
                        "run": run,
                        "concurrency": row["concurrency"],
                        "vs_reference": row["ok_per_s"] / ref["ok_per_s"] if ref and ref["ok_per_s"] else None,
                        "vs_limit": row["ok_per_s"] * rows_per_request / limit,
                    }
                )
    return out


def _point(rows: list[dict], c: int) -> dict | None:
    return next((r for r in rows if r["concurrency"] == c), None)


def goals(r: dict) -> dict:
    """The issue's performance goals, each judged only when this run measured its points."""
    nn, ref, inproc = r["nnserve"], r["reference"], r["in_process"]
    out: dict[str, dict] = {}
    c32, ref32 = _point(nn["classify"], 32), _point(ref["classify"], 32)
    if c32 and ref32:
        out["classify c=32 >= 1.0x reference, 0 errors, p99 <= 100 ms"] = {
            "value": f"{c32['ok_per_s'] / ref32['ok_per_s']:.2f}x, {c32['errors']} errors, p99 {c32['p99_ms']:.1f} ms",
            "met": c32["ok_per_s"] >= ref32["ok_per_s"] and c32["errors"] == 0 and c32["p99_ms"] <= 100,
        }
    s32, sref = _point(nn["sentiment"], 32), _point(ref["sentiment"], 32)
    if s32 and sref:
        out["sentiment c=32 >= 3x reference"] = {
            "value": f"{s32['ok_per_s'] / sref['ok_per_s']:.2f}x ({s32['errors']} errors)",
            "met": s32["ok_per_s"] >= 3 * sref["ok_per_s"] and s32["errors"] == 0,
        }
    bulk, limit64 = _point(nn["classify_64"], 8), inproc["mnist-cnn"]["decode_infer_b64"]
    if bulk:
        out["64-image requests >= 50% of in-process decode + inference"] = {
            "value": f"{64 * bulk['ok_per_s']:,.0f} images/s = {64 * bulk['ok_per_s'] / limit64:.0%} of {limit64:,.0f}",
            "met": 64 * bulk["ok_per_s"] >= 0.5 * limit64,
        }
    c1, ref1 = _point(nn["classify"], 1), _point(ref["classify"], 1)
    if c1 and ref1:
        out["latency at c=1 within 2 ms of the reference"] = {
            "value": f"p50 {c1['p50_ms']:.2f} vs {ref1['p50_ms']:.2f} ms (+{c1['p50_ms'] - ref1['p50_ms']:.2f} ms)",
            "met": c1["p50_ms"] - ref1["p50_ms"] <= 2.0,
        }
    return out


if __name__ == "__main__":
    sys.exit(main())
