"""Per-step recording and the pass/fail verdict of a load-test run: exact latencies per step of users and per
endpoint, the thresholds (LOCUST_MAX_FAIL_RATIO, LOCUST_MAX_P95_MS, LOCUST_MAX_P99_MS) and Locust's own final
figures. Imported by locustfile.py as a sibling module."""

from __future__ import annotations

import time
from array import array
from collections import defaultdict
from typing import Any

import numpy as np
from payloads import env_float


class StepRecorder:
    """Every request's latency keyed by (the step's user count, endpoint), and how long each step lasted:
    exact per-step percentiles and req/s (Locust's history CSV only has percentiles over a rolling window)."""

    def __init__(self) -> None:
        self.times: dict[tuple[int, str], array] = defaultdict(lambda: array("f"))
        self.failures: dict[tuple[int, str], int] = defaultdict(int)
        self.seconds: dict[int, float] = defaultdict(float)  # time spent at each user count
        self.current: tuple[int, float] | None = None  # (user count, since)
        self.seen: dict[int, list[float]] = {}  # first and last request time per user count

    def step_to(self, users: int) -> None:
        """The target user count changed (0: the test stopped)."""
        if self.current is not None and self.current[0] == users:
            return
        now = time.monotonic()
        if self.current is not None:
            self.seconds[self.current[0]] += now - self.current[1]
        self.current = (users, now) if users > 0 else None

    def add(self, users: int, name: str, ms: float, failed: bool) -> None:
        self.times[(users, name)].append(ms)
        if failed:
            self.failures[(users, name)] += 1
        now = time.monotonic()
        self.seen.setdefault(users, [now, now])[1] = now

    @staticmethod
    def _stats(times: np.ndarray, failures: int, seconds: float) -> dict[str, Any]:
        p50, p95, p99 = (float(v) for v in np.percentile(times, [50, 95, 99])) if len(times) else (0.0, 0.0, 0.0)
        return {
            "requests": len(times),
            "failures": failures,
            "rps": round(len(times) / seconds, 2) if seconds > 0 else 0.0,
            "p50_ms": round(p50, 1),
            "p95_ms": round(p95, 1),
            "p99_ms": round(p99, 1),
            "avg_ms": round(float(times.mean()), 1) if len(times) else 0.0,
        }

    def steps(self) -> list[dict[str, Any]]:
        self.step_to(0)
        out = []
        for users in sorted(u for u in self.seen if u > 0):
            first, last = self.seen[users]
            seconds = self.seconds.get(users) or max(last - first, 1e-9)
            names = sorted(n for u, n in self.times if u == users)
            all_times = np.concatenate([np.asarray(self.times[(users, n)], dtype=np.float64) for n in names])
            step = {
                "users": users,
                "seconds": round(seconds, 2),
                **self._stats(all_times, sum(self.failures[(users, n)] for n in names), seconds),
            }
            step["endpoints"] = {
                n: self._stats(np.asarray(self.times[(users, n)], dtype=np.float64), self.failures[(users, n)], seconds)
                for n in names
            }
            out.append(step)
        return out


def thresholds(environment: Any, catalog_ok: bool) -> dict[str, Any]:
    total = environment.stats.total
    limits = {
        "fail_ratio": env_float("LOCUST_MAX_FAIL_RATIO", 0.01),
        "p95_ms": env_float("LOCUST_MAX_P95_MS", 1000.0),
        "p99_ms": env_float("LOCUST_MAX_P99_MS", 2000.0),
    }
    measured = {
        "fail_ratio": total.fail_ratio,
        "p95_ms": float(total.get_response_time_percentile(0.95) or 0.0),
        "p99_ms": float(total.get_response_time_percentile(0.99) or 0.0),
    }
    env_names = {"fail_ratio": "LOCUST_MAX_FAIL_RATIO", "p95_ms": "LOCUST_MAX_P95_MS", "p99_ms": "LOCUST_MAX_P99_MS"}
    failed = [f"{k} {measured[k]:.4g} > {limits[k]:.4g} ({env_names[k]})" for k in limits if measured[k] > limits[k]]
    if total.num_requests == 0:
        failed.append("no request was made")
    if not catalog_ok:
        failed.append("the served models could not be read (GET /v1/models)")
    exceptions = len(environment.runner.exceptions) if environment.runner is not None else 0
    if exceptions:
        failed.append(f"{exceptions} distinct exception(s) in the locustfile's users")
    return {"limits": limits, "measured": measured, "failed": failed, "passed": not failed}


def final_stats(environment: Any) -> dict[str, Any]:
    """Locust's own final numbers (its CSVs are rewritten once a second, so they can miss the last second)."""
    from locust.stats import StatsError

    def entry(e: Any) -> dict[str, Any]:
        return {
            "requests": e.num_requests,
            "failures": e.num_failures,
            "fail_ratio": round(e.fail_ratio, 6),
            "rps": round(e.total_rps, 2),
            "p50_ms": e.get_response_time_percentile(0.5),
            "p95_ms": e.get_response_time_percentile(0.95),
            "p99_ms": e.get_response_time_percentile(0.99),
            "avg_ms": round(e.avg_response_time, 1),
            "max_ms": round(e.max_response_time or 0.0, 1),
        }

    stats = environment.stats
    return {
        "total": entry(stats.total),
        "endpoints": {e.name: entry(e) for e in sorted(stats.entries.values(), key=lambda e: e.name)},
        "failures": [
            {"endpoint": err.name, "error": StatsError.parse_error(err.error), "count": err.occurrences}
            for err in stats.errors.values()
        ],
    }
