"""The public API service ``NNServe``: typed /v1 endpoints over the per-family model code.

    client ─HTTP─► middleware (request id, key, admission) ─► /v1 router or /v2 adapter of the model's task
                   (service/tasks/<task>.py) ─► Engine (service/engine.py: metadata, image rows, call)
                   ─► batcher ─► the task's family: one onnxruntime run per model per batch

Where the batch functions run is a setting (``NNSERVE_BATCHING``): ``api`` (default) runs them in each API
worker behind service/batching.py's greedy batcher, with no hop between processes; ``services`` runs them
in BentoML model services, batched by BentoML's adaptive batcher, one internal HTTP hop per request.
docs/BENCHMARKS.md has the measurements behind the default.

Every task is a module of service/tasks/ that registers itself (service/registry.py); this module builds the
service from the registry: one /v1 router per task, its family as a dependency in 'services' batching, its /v2
adapter. The /v1 routes live in a FastAPI app that BentoML mounts (and documents in its OpenAPI document) rather
than in ``@bentoml.api`` methods: BentoML's own request/response handling per call cost more than the
whole inference of the small models (docs/BENCHMARKS.md).

Serve with ``bentoml serve service.service:NNServe``. Settings come from ``NNSERVE_*`` variables
(service/settings.py); they are read when this module is imported because BentoML takes its service
configuration (workers, batching, timeouts) at class definition.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated, Any

import bentoml
from fastapi import FastAPI, Header, Query
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from starlette.requests import Request
from starlette.responses import Response

from service import oip
from service.auth import ApiKeyMiddleware
from service.engine import Engine, current
from service.errors import ApiError, inside, validation_details
from service.figures import FIGURE_NAME, matches, pick
from service.grpc_port import check_port
from service.lane import LaneMiddleware, body_model_lanes
from service.metrics import MetricsCacheMiddleware, bound_bentoml_endpoint_labels, own_metrics_dir
from service.middleware import AdmissionMiddleware
from service.oip import v2_app
from service.oip_grpc import serve_grpc
from service.openapi import DocsMiddleware
from service.registry import load_tasks
from service.request_id import RequestIdFilter, RequestIdMiddleware
from service.runtime import preflight, served_key, settle_heap
from service.schemas import (
    ERROR_RESPONSES,
    MODEL_NAME,
    VERSION_CHOICE,
    VERSION_PATTERN,
    ListModelsResponse,
    ModelCard,
    json_response,
)
from service.settings import get_settings, unknown_variables
from service.shutdown import delay_sigterm
from service.transport import Limits, install_transport

log = logging.getLogger("bentoml.nnserve")  # under "bentoml" so BentoML's log setup shows it
log.addFilter(RequestIdFilter())
S = get_settings()
preflight(S)  # a missing or empty model folder, or an unreadable artifact: one line and exit, not a restart loop
if sys.argv[1:2] == ["serve"]:  # the serving process, once: what an operator may have meant but did not get
    for line in unknown_variables(os.environ):
        log.warning("nnserve: %s", line)
    if os.environ.get("NNSERVE_API_KEY") is not None and S.api_key is None:
        log.warning("nnserve: NNSERVE_API_KEY is set but blank: /v1 and /v2 are served without a key")
TASKS = load_tasks()  # every module of service/tasks/ registers its task
own_metrics_dir()  # one Prometheus folder per instance (service/metrics.py)
check_port(S)  # in the serving process: no other process on the gRPC port (service/grpc_port.py)
bound_bentoml_endpoint_labels()  # BentoML's request series labelled by route, not by raw path
install_transport(  # head timeout and size, keep-alive, connection cap, write stalls, balance (service/transport.py)
    Limits(S.head_timeout_s, S.max_head_bytes, S.keep_alive_s, S.max_connections, S.api_workers, S.write_timeout_s)
)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _validation_error(request: Request, exc: Exception) -> Response:
    """The envelope for a body or form that fails its schema, without echoing the client's input (FastAPI's
    own answer quotes it, and a NaN or a lone surrogate in it made that answer a 500)."""
    assert isinstance(exc, RequestValidationError)
    message, details = validation_details(list(exc.errors()))
    return ApiError("invalid_request", message, details).response()


# /v1 is a FastAPI app mounted by BentoML (@bentoml.api routes are POST-only with JSON or BentoML's multipart
# parsing; BentoML merges a mounted app's routes into its OpenAPI document, so these are documented like the
# others): the model cards here, then each task's router.
v1_app = FastAPI(
    title="nnserve /v1",
    docs_url=None,
    redoc_url=None,
    openapi_url=None,
    exception_handlers={ApiError: _api_error, RequestValidationError: _validation_error},
)


@v1_app.api_route("/models", methods=oip.READ, response_model=ListModelsResponse, responses=ERROR_RESPONSES)
async def list_models() -> Response:
    """Model cards of every served model: metadata plus runtime state."""
    engine = current()
    unavailable = {folder: inside(why, S.model_dir) for folder, why in engine.failed.items()}
    return json_response(ListModelsResponse(models=await engine.model_cards(), unavailable=unavailable))


@v1_app.api_route("/models/{name}", methods=oip.READ, response_model=ModelCard, responses=ERROR_RESPONSES)
async def get_model(
    name: Annotated[str, PathParam(pattern=MODEL_NAME)],
    version: Annotated[str | None, Query(pattern=VERSION_PATTERN, description=VERSION_CHOICE)] = None,
) -> Response:
    """One model's card: its default version's, or the served ``version`` asked for."""
    engine = current()
    if name in engine.catalog and version is None:  # a failed artifact too: its card says why it is not ready
        meta = engine.catalog[name]
    else:  # 404 for an unknown name or version, 503 for a failed artifact
        meta = engine.metadata(name, version=version)
    return json_response((await engine.model_cards(only=meta))[0])


FIGURE_HEADERS = {
    header: {"description": description, "schema": {"type": "string"}}
    for header, description in (
        ("ETag", "the sha256 of the PNG's bytes, quoted"),
        ("Cache-Control", "no-cache: a copy may be kept, and is revalidated with If-None-Match"),
        ("X-Model-Version", "the version whose figure this is"),
    )
}
FIGURE_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    200: {
        "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
        "description": "the PNG file as the artifact folder held it when the version was loaded",
        "headers": FIGURE_HEADERS,
    },
    304: {"description": "Not Modified: If-None-Match names this figure's ETag", "headers": FIGURE_HEADERS},
}


@v1_app.api_route(
    "/models/{name}/figures/{figure}", methods=oip.READ, response_class=Response, responses=FIGURE_RESPONSES
)
async def get_figure(
    name: Annotated[str, PathParam(pattern=MODEL_NAME)],
    figure: Annotated[str, PathParam(pattern=FIGURE_NAME, description="one of the card's 'figures', e.g. curves.png")],
    version: Annotated[str | None, Query(pattern=VERSION_PATTERN, description=VERSION_CHOICE)] = None,
    if_none_match: Annotated[str | None, Header(description="ETags of copies the client holds")] = None,
) -> Response:
    """One of a model's figures (its card's ``figures``: ``curves.png``, its training curves, for every model), as
    image/png with an ETag; a conditional GET whose If-None-Match names it is a 304. The figures are the PNG files
    its artifact folder held when the version was loaded, at most NNSERVE_MAX_FIGURE_BYTES each; an unknown one is
    a 404 naming those the version has."""
    engine = current()
    meta = engine.metadata(name, version=version)  # 404 for an unknown name or version, 503 for a failed artifact
    found = pick(engine.figures.get(served_key(meta), {}), figure, meta.name, meta.version)
    headers = {"ETag": found.etag, "Cache-Control": "no-cache", "X-Model-Version": meta.version}
    if matches(if_none_match, found.etag):
        return Response(status_code=304, headers=headers)
    return Response(found.body, media_type="image/png", headers=headers)


for _task in TASKS.values():  # the task's routes themselves, in registry order: FastAPI's include_router would
    v1_app.router.routes.extend(_task.router.routes)  # wrap them in a lazy router that BentoML's schema and
    # service.apidoc do not walk


def _with_model_services(cls: type) -> type:
    """'services' batching: each task's family is a dependency of the API service (a BentoML model service,
    reached over one internal HTTP hop); otherwise the families run in each API worker (service/batching.py)."""
    if S.batching == "services":
        for task in TASKS.values():
            setattr(cls, task.attr, bentoml.depends(task.family))
    return cls


@bentoml.asgi_app(v1_app, path="/v1")
@bentoml.asgi_app(v2_app, path="/v2")  # the Open Inference Protocol (service/oip.py)
@bentoml.service(
    name="nnserve",
    workers=S.api_workers,
    logging={"access": {"enabled": False}},  # a log line per request costs ~16 % of CPU (PERF-NOTES)
    # BentoML wraps every request in an OpenTelemetry span; on /v1 that cost ~20 % of the worker's CPU in a
    # py-spy profile (docs/BENCHMARKS.md), so /v1 is excluded unless NNSERVE_TRACE_V1 is set
    tracing={"excluded_urls": [] if S.trace_v1 else ["/v1/", "/v2/"]},
    # a backstop only: AdmissionMiddleware enforces the real timeout and concurrency limit with the envelope
    traffic={"timeout": S.request_timeout_s + 5},
)
@_with_model_services
class NNServe(Engine):
    """The public API: typed /v1 endpoints, the OIP v2 endpoints, model cards, BentoML's /livez, /readyz and
    /metrics."""

    def __init__(self) -> None:
        super().__init__()
        # Graceful shutdown: on SIGTERM readiness turns false at once (/readyz, /v2/health/ready) and the worker
        # serves for drain_s more seconds before uvicorn closes the listener and finishes what is in flight.
        self.repository.start()  # model control: versions loaded and unloaded while serving (service/repository.py)
        self.grpc = serve_grpc(self)  # the protocol over gRPC on NNSERVE_GRPC_PORT (service/oip_grpc.py)
        delay_sigterm(S.drain_s, "not ready;", self._on_sigterm)
        settle_heap(S)

    def _on_sigterm(self) -> None:
        """In the signal handler: flag and schedule only."""
        self.draining = True
        if self.grpc is not None:
            self.grpc.stop_later()

    async def __is_ready__(self) -> bool:
        """BentoML's /readyz: false from SIGTERM on (the families loaded in __init__ or start-up failed), and
        while no model is served unless model control may load one (every artifact left out by
        NNSERVE_SKIP_BAD_ARTIFACTS: a load balancer should not send this replica traffic it can only 404)."""
        may_load = S.model_control != "none" and S.batching == "api"  # model control runs in 'api' batching only
        return not self.draining and (may_load or bool(self.working()))


NNServe.add_asgi_middleware(RequestIdMiddleware)  # type: ignore[attr-defined]  # first: outermost of ours
if S.api_key is not None:  # off by default
    NNServe.add_asgi_middleware(  # type: ignore[attr-defined]
        ApiKeyMiddleware, api_key=S.api_key.get_secret_value(), protect_metrics=S.metrics_require_key
    )
NNServe.add_asgi_middleware(MetricsCacheMiddleware, max_age_s=S.metrics_max_age_s)  # type: ignore[attr-defined]
NNServe.add_asgi_middleware(  # type: ignore[attr-defined]
    AdmissionMiddleware,
    max_body_bytes=S.max_body_bytes,
    max_concurrency=max(1, S.max_concurrency // S.api_workers),
    timeout_s=S.request_timeout_s,
    body_timeout_s=S.body_timeout_s,
    max_body_in_flight=max(S.max_body_in_flight, S.max_body_bytes),  # room for one body of the largest size
    max_json_items=S.max_json_items,
)
NNServe.add_asgi_middleware(  # type: ignore[attr-defined]  # right inside admission: the typed routes' happy path
    LaneMiddleware, lanes=[*body_model_lanes("/v1", v1_app.router.routes), *oip.lanes()]
)
NNServe.add_asgi_middleware(  # type: ignore[attr-defined]  # /, /docs and /docs.json: nnserve's own
    DocsMiddleware, api_key=S.api_key is not None, metrics_require_key=S.metrics_require_key
)
