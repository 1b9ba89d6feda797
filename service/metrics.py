"""nnserve_* Prometheus series (module level, bounded labels: model, endpoint route, code)."""

from __future__ import annotations

import asyncio
import atexit
import functools
import os
import shutil
import time
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.routes import endpoint_label, one_host

# up to the request timeout: a 25-megapixel photo takes seconds to prepare, a gRPC call may wait for a batch
_FAST = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0, 30.0)

INFERENCE_SECONDS = Histogram("nnserve_inference_seconds", "onnxruntime run time per batch", ["model"], buckets=_FAST)
PREPROCESS_SECONDS = Histogram(
    "nnserve_preprocess_seconds", "decode + resize + normalise time per image", ["model"], buckets=_FAST
)
BATCH_SIZE = Histogram(
    "nnserve_batch_size",
    "items per onnxruntime run (after adaptive batching)",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
PREDICTIONS = Counter("nnserve_predictions_total", "top-1 predictions per label", ["model", "label"])
ERRORS = Counter(
    "nnserve_errors_total",
    "failures by endpoint and error code (a path outside /v1 and /v2: endpoint other)",
    ["endpoint", "code"],
)
TOKENS = Histogram(
    "nnserve_text_tokens",
    "tokens per text after tokenisation (before truncation)",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048),
)
ANOMALIES = Counter(  # reason: contract/reasons.py's vocabulary, a closed set
    "nnserve_anomalies_total", "autoencoder inputs flagged as anomalies, by why", ["model", "reason"]
)
OUT_OF_DISTRIBUTION = Counter(  # reason: contract/reasons.py's vocabulary, a closed set
    "nnserve_out_of_distribution_total", "classifier inputs flagged out of distribution, by why", ["model", "reason"]
)
TRANSPORT_ANSWERS = Counter(  # a closed set: 400, 408, 429, 431, 503
    "nnserve_transport_responses_total",
    "answers the HTTP transport writes itself, before any ASGI layer, so BentoML's request series never see them: "
    "429s shed at the door, 400s for requests the parser refuses, 408 head timeouts, 431s, 503s over the "
    "connection cap",
    ["http_response_code"],
)
GRPC_REQUESTS = Counter(
    "nnserve_grpc_requests_total", "gRPC calls (service/oip_grpc.py) by method and status code", ["method", "code"]
)
GRPC_SECONDS = Histogram("nnserve_grpc_request_seconds", "gRPC call duration", ["method"], buckets=_FAST)
# Triton's per-model statistics (service/stats.py reads them back, summed over the processes)
REQUESTS = Counter("nnserve_model_requests_total", "requests that reached a model, by outcome", ["model", "outcome"])
REQUEST_SECONDS = Counter(
    "nnserve_model_request_seconds_total",
    "cumulative seconds of the requests that reached a model, by phase (Triton's statistics)",
    ["model", "phase"],
)
EXECUTIONS = Counter("nnserve_model_executions_total", "onnxruntime runs, by rows per run", ["model", "batch_size"])
EXECUTION_SECONDS = Counter(
    "nnserve_model_execution_seconds_total",
    "cumulative onnxruntime run seconds, by rows per run",
    ["model", "batch_size"],
)
LAST_INFERENCE = Gauge(
    "nnserve_model_last_inference_ms",
    "when the model last answered a request (ms since the epoch)",
    ["model"],
    multiprocess_mode="max",
)
GENERATED = Counter("nnserve_generated_samples_total", "images produced by generators (samples and frames)", ["model"])


def own_metrics_dir() -> None:
    """Give this ``bentoml serve`` its own Prometheus multiprocess folder, removed when it exits.

    BentoML keeps every instance's metric files in one folder under BENTOML_HOME and empties it when an
    instance starts, so a second ``make serve`` on another port wiped the first one's metrics. Called when
    the service module is imported in the serving process (before BentoML prepares the folder and hands it
    to its workers in PROMETHEUS_MULTIPROC_DIR); in a worker, which has that variable, it does nothing.
    """
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        return
    from bentoml._internal.configuration.containers import BentoMLContainer

    mine = os.path.join(BentoMLContainer.prometheus_multiproc_dir.get(), f"instance-{os.getpid()}")
    BentoMLContainer.prometheus_multiproc_dir.set(mine)
    atexit.register(shutil.rmtree, mine, ignore_errors=True)


INFRA_PATHS = frozenset({"/", "/docs", "/docs.json", "/schema.json", "/livez", "/readyz", "/healthz", "/metrics"})


def metrics_endpoint(path: str) -> str:
    """The ``endpoint`` label of BentoML's request series: a route template, one of the infrastructure paths,
    "/static_content", "/ui" (the playground and all its assets, whose names carry hashes), or "other" for
    anything else (unknown paths must not each become a series)."""
    label = endpoint_label(path)
    if label != "other":
        return label
    if path in INFRA_PATHS:
        return path
    if path == "/ui" or path.startswith("/ui/"):
        return "/ui"
    return "/static_content" if path.startswith("/static_content/") else "other"


def bound_bentoml_endpoint_labels() -> None:
    """BentoML labels its ``bentoml_service_request_*`` series with the raw request path, so every unknown
    path a client sends becomes new series (20,000 of them made /metrics 57 MB). Its middleware reads the path
    from the ASGI scope, so the worker's copy of the class is replaced by one that shows it a scope whose path
    is ``metrics_endpoint``'s label and hands the real scope on to the app. Called when the service module is
    imported, before BentoML builds the worker's middleware stack (it imports the class there)."""
    from bentoml._internal.server.http import instruments

    base = instruments.RunnerTrafficMetricsMiddleware
    if getattr(base, "nnserve_bounded", False):
        return

    class BoundedTrafficMetrics(base):  # type: ignore[misc, valid-type]
        nnserve_bounded = True

        def __init__(self, app, **kwargs) -> None:
            async def real_scope(scope, receive, send) -> None:
                await app(scope.get("nnserve_scope", scope), receive, send)

            super().__init__(real_scope, **kwargs)

        async def __call__(self, scope, receive, send) -> None:
            if scope["type"] == "websocket":  # no route takes one (Starlette closes it): no series of its raw path
                await self.app(scope, receive, send)  # (a -1 websocket gauge per path, before)
                return
            if scope["type"] == "http":
                scope = {**scope, "path": metrics_endpoint(scope["path"]), "nnserve_scope": scope}
            await super().__call__(scope, receive, send)

    setattr(instruments, "RunnerTrafficMetricsMiddleware", BoundedTrafficMetrics)  # noqa: B010  (a class attribute mypy would refuse)


@functools.lru_cache(maxsize=4096)
def child(metric: MetricWrapperBase, *labels: str) -> Any:
    """``metric.labels(*labels)``, looked up once: the hot paths' label values (model names, class labels) come
    from the artifacts, a closed set, and prometheus_client's own lookup cost 2 % of a request's Python time."""
    return metric.labels(*labels)


class MetricsCacheMiddleware:
    """GET /metrics rendered at most once every ``max_age_s`` per worker and served from that render: collecting
    every process's series costs ~64 ms of CPU for a 237 KB page, so eight clients looping on it made /v1 ten
    times slower (a review, 2026-12-05). A render runs alone; requests that arrive during it get its result; a
    HEAD gets its head. The query string is not passed on (each filter would be a render of its own), so the page
    is always whole. Each worker keeps its own render, so two scrapes less than ``max_age_s`` apart that reach
    different workers may see the older counts second: keep it well under the scrape interval (1 s against
    Prometheus's usual 15 s)."""

    def __init__(self, app: ASGIApp, max_age_s: float) -> None:
        self.app = app
        self.max_age_s = max_age_s
        self._page: tuple[float, list[Message]] | None = None
        self._lock = asyncio.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope.get("method")
        if (
            scope["type"] != "http"
            or scope["path"] != "/metrics"
            or method not in ("GET", "HEAD")
            or self.max_age_s <= 0
            or not one_host(scope)  # the admission middleware's 400, as on every path, never the kept page
        ):
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        async with self._lock:
            if self._page is None or time.monotonic() - self._page[0] > self.max_age_s:

                async def keep(message: Message) -> None:
                    messages.append(message)

                await self.app({**scope, "method": "GET", "query_string": b""}, receive, keep)
                if messages and messages[0].get("status") == 200:  # an error is answered once, not kept
                    self._page = (time.monotonic(), messages)
            else:
                messages = self._page[1]
        for message in messages:
            if method == "HEAD" and message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)
