"""Per-model inference statistics in Triton's shape (``GET /v2/models/stats``, gRPC ModelStatistics), counted
where the work happens and summed over every process of one ``bentoml serve``.

What is counted, per model:

- a *request* is one call of the Engine (service/engine.py) with one request's rows for the model: /v1 and /v2,
  HTTP and gRPC alike. ``success``/``fail``: its count and the time from the request's arrival (the request id
  middleware, or the gRPC call's start) to its rows' results; a request refused before its rows reach the model
  (a bad image, an unknown input) is not counted, as Triton does not count requests it cannot schedule;
- ``compute_input``: arrival to the rows handed to the batcher (parsing, decoding, preprocessing);
- ``queue``: rows handed over to the start of their batch; ``compute_infer``: that batch's run (the family's batch
  function: every model in the batch, stacking included); ``compute_output``: the batch's end to the request
  resuming with its rows. With ``NNSERVE_BATCHING=services`` the batcher is in another process: the whole call
  counts as ``compute_infer`` and ``queue`` stays empty;
- ``batch_stats``: one entry per batch size actually run through the model's graph (onnxruntime runs, the VAE's
  encoder included), with the run time as ``compute_infer``; ``execution_count`` is their number and
  ``inference_count`` the rows they carried.

The numbers are Prometheus counters (also on /metrics as ``nnserve_model_*``): prometheus_client's multiprocess
files already sum them over the API workers and the model services, so any worker answers for all of them.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.metrics_core import Metric

from service.metrics import EXECUTION_SECONDS, EXECUTIONS, LAST_INFERENCE, REQUEST_SECONDS, REQUESTS, child
from service.request_id import ARRIVED


@dataclass
class BatchTiming:
    """When the batch that carried a request's rows started and ended (perf_counter), filled by the batcher."""

    start: float = 0.0
    end: float = 0.0


def request_done(model: str, ok: bool, handed_over: float, timing: BatchTiming) -> None:
    """Count one request's call of the model: ``handed_over`` is when its rows went to the batcher."""
    now = time.perf_counter()
    arrived = ARRIVED.get()
    arrived = handed_over if arrived is None or arrived > handed_over else arrived
    outcome = "success" if ok else "fail"
    child(REQUESTS, model, outcome).inc()
    child(REQUEST_SECONDS, model, outcome).inc(now - arrived)
    if not ok:
        return
    start, end = (timing.start, timing.end) if timing.end else (handed_over, now)
    child(REQUEST_SECONDS, model, "compute_input").inc(handed_over - arrived)
    child(REQUEST_SECONDS, model, "queue").inc(max(0.0, start - handed_over))
    child(REQUEST_SECONDS, model, "compute_infer").inc(end - start)
    child(REQUEST_SECONDS, model, "compute_output").inc(max(0.0, now - end))
    child(LAST_INFERENCE, model).set(time.time() * 1e3)


def executed(model: str, rows: int, seconds: float) -> None:
    """One onnxruntime run of ``rows`` rows through one of the model's graphs."""
    child(EXECUTIONS, model, str(rows)).inc()
    child(EXECUTION_SECONDS, model, str(rows)).inc(seconds)


# ---- reading them back -------------------------------------------------------------------------------


def _collect() -> Iterable[Metric]:
    """Every sample of this server: summed over its processes' files when there are several, else this one's."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder and os.path.isdir(folder):
        from prometheus_client.multiprocess import MultiProcessCollector

        return MultiProcessCollector(None, folder).collect()  # no registry: read only
    return REGISTRY.collect()


def _ns(seconds: float) -> int:
    return round(seconds * 1e9)


def snapshot() -> dict[str, dict[str, Any]]:
    """model -> {"requests": {outcome: n}, "seconds": {phase: s}, "executions": {rows: (n, s)}, "last": ms}."""
    out: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"requests": {}, "seconds": {}, "executions": defaultdict(lambda: [0, 0.0]), "last": 0.0}
    )
    for metric in _collect():
        for s in metric.samples:
            model = s.labels.get("model")
            if model is None:
                continue
            if s.name == "nnserve_model_requests_total":
                out[model]["requests"][s.labels["outcome"]] = int(s.value)
            elif s.name == "nnserve_model_request_seconds_total":
                out[model]["seconds"][s.labels["phase"]] = s.value
            elif s.name == "nnserve_model_executions_total":
                out[model]["executions"][int(s.labels["batch_size"])][0] = int(s.value)
            elif s.name == "nnserve_model_execution_seconds_total":
                out[model]["executions"][int(s.labels["batch_size"])][1] = s.value
            elif s.name == "nnserve_model_last_inference_ms":
                out[model]["last"] = max(out[model]["last"], s.value)
    return out


def model_statistics(names: list[str], version: str | dict[str, str]) -> list[dict[str, Any]]:
    """Triton's ``model_stats`` entries for the models named (JSON-ready; int64 fields as ints)."""
    snap = snapshot()
    stats = []
    for name in names:
        s = snap.get(name) or {"requests": {}, "seconds": {}, "executions": {}, "last": 0.0}
        req, sec = s["requests"], s["seconds"]
        ok = req.get("success", 0)

        def duration(phase: str, count: int, sec: dict[str, float] = sec) -> dict[str, int]:
            return {"count": count, "ns": _ns(sec.get(phase, 0.0))}

        batches = sorted(s["executions"].items())
        stats.append(
            {
                "name": name,
                "version": version if isinstance(version, str) else version[name],
                "last_inference": int(s["last"]),
                "inference_count": sum(rows * n for rows, (n, _) in batches),
                "execution_count": sum(n for _, (n, _) in batches),
                "inference_stats": {
                    "success": duration("success", ok),
                    "fail": duration("fail", req.get("fail", 0)),
                    "queue": duration("queue", ok),
                    "compute_input": duration("compute_input", ok),
                    "compute_infer": duration("compute_infer", ok),
                    "compute_output": duration("compute_output", ok),
                    "cache_hit": {"count": 0, "ns": 0},
                    "cache_miss": {"count": 0, "ns": 0},
                },
                "batch_stats": [
                    {
                        "batch_size": rows,
                        "compute_input": {"count": 0, "ns": 0},
                        "compute_infer": {"count": n, "ns": _ns(seconds)},
                        "compute_output": {"count": 0, "ns": 0},
                    }
                    for rows, (n, seconds) in batches
                ],
            }
        )
    return stats
