"""Per-response records of a load run (status, latency, Retry-After, envelope, a 200 with what was asked for)
and their summaries (percentiles, shares of each outcome)."""

from __future__ import annotations

import json
import time
from array import array
from collections import Counter
from typing import Any

import numpy as np

from bench.common import BAD_200, ENVELOPE, RETRY_AFTER, SHED
from bench.payloads import Kind

# ---- records --------------------------------------------------------------------------------------------------


def envelope_code(body: bytes) -> str | None:
    """The error code when ``body`` is nnserve's envelope ``{"error": {"code", "message", "details"}}``, else None."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    err = data.get("error") if isinstance(data, dict) else None
    if (
        isinstance(err, dict)
        and isinstance(err.get("code"), str)
        and isinstance(err.get("message"), str)
        and isinstance(err.get("details"), list)
    ):
        return err["code"]
    return None


class Recorder:
    """One row per request: kind, status (0: no response), latency (send -> whole response), lag (schedule ->
    send; 0 in a closed loop), completion time, flags. Compact arrays, so a long soak stays small."""

    def __init__(self, kinds: list[Kind]) -> None:
        self.kinds = kinds
        self.kind = array("B")
        self.status = array("H")
        self.latency = array("d")
        self.lag = array("d")
        self.done = array("d")
        self.flags = array("B")
        self.codes: Counter[str] = Counter()  # "<status> <envelope code>" of every error response
        self.conn_errors: Counter[str] = Counter()
        self.skipped = 0  # open loop: arrivals dropped because --max-connections were all busy
        self.t0 = time.perf_counter()

    def response(self, k: int, head: bytes, body: bytes, t_sched: float, t_send: float, t_done: float) -> None:
        status = int(head[9:12])
        flags = RETRY_AFTER if b"\r\nretry-after:" in head else 0
        if status >= 400:
            code = envelope_code(body)
            if code is not None:
                flags |= ENVELOPE
            self.codes[f"{status} {code or '(not the envelope)'}"] += 1
        elif status == 200 and self.kinds[k].expect not in body:
            flags |= BAD_200
        self._row(k, status, t_sched, t_send, t_done, flags)

    def failure(self, k: int, reason: str, t_sched: float, t_send: float) -> None:
        self.conn_errors[reason] += 1
        self._row(k, 0, t_sched, t_send, time.perf_counter(), 0)

    def _row(self, k: int, status: int, t_sched: float, t_send: float, t_done: float, flags: int) -> None:
        self.kind.append(k)
        self.status.append(status)
        self.latency.append(t_done - t_send)
        self.lag.append(t_send - t_sched)
        self.done.append(t_done - self.t0)
        self.flags.append(flags)

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "kind": np.array(self.kind, dtype=np.uint8),
            "status": np.array(self.status, dtype=np.int32),
            "latency_ms": np.array(self.latency, dtype=float) * 1e3,
            "lag_ms": np.array(self.lag, dtype=float) * 1e3,
            "done": np.array(self.done, dtype=float),
            "flags": np.array(self.flags, dtype=np.uint8),
        }


def pct(values: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if len(values) else None


def latency(values: np.ndarray) -> dict[str, float | None]:
    return {"p50_ms": pct(values, 50), "p99_ms": pct(values, 99), "max_ms": pct(values, 100)}


def summarize(rec: Recorder, seconds: float) -> dict[str, Any]:
    """Counts by status, 200 throughput and latency, shed latency, envelope and Retry-After checks."""
    a = rec.arrays()
    st, lat, fl = a["status"], a["latency_ms"], a["flags"]
    ok = (st == 200) & ((fl & BAD_200) == 0)
    shed = np.isin(st, SHED)
    statuses = {str(s): int(n) for s, n in zip(*np.unique(st[st > 0], return_counts=True), strict=True)}
    return {
        "seconds": round(seconds, 2),
        "requests": len(st),
        "statuses": statuses,
        "ok": int(ok.sum()),
        "ok_per_s": round(float(ok.sum()) / seconds, 1) if seconds > 0 else None,
        "ok_latency": latency(lat[ok]),
        "shed": {str(s): int((st == s).sum()) for s in SHED},
        "shed_latency": latency(lat[shed]),
        "shed_without_retry_after": int((shed & ((fl & RETRY_AFTER) == 0)).sum()),
        "errors_without_envelope": int(((st >= 400) & ((fl & ENVELOPE) == 0)).sum()),
        "malformed_200": int(((st == 200) & ((fl & BAD_200) != 0)).sum()),
        "other_status": {s: n for s, n in statuses.items() if int(s) not in (200, *SHED)},
        "error_codes": dict(rec.codes),
        "connection_errors": dict(rec.conn_errors),
        "skipped_no_connection": rec.skipped,
        "lag": latency(a["lag_ms"]),
    }
