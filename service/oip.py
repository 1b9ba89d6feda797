"""The Open Inference Protocol v2 (KServe / Triton REST), mounted at /v2 beside the /v1 API.

    GET  /v2                                   server metadata (name, version, extensions)  (GETs take HEAD too)
    GET  /v2/health/live | /v2/health/ready    liveness; readiness = every served model ready (OIP)
    GET  /v2/models/{name}[/versions/{v}]      model metadata: platform, input and output tensors
    GET  /v2/models/{name}[/versions/{v}]/ready
    POST /v2/models/{name}[/versions/{v}]/infer
    GET  /v2/models/{name}[/versions/{v}]/config   Triton's model configuration
    GET  /v2/models/stats, /v2/models/{name}[/versions/{v}]/stats   Triton's statistics (service/stats.py)

Requests run through the same families, batchers and limits as /v1 (the Engine's public ``call``). A model's v2
tensors are its ONNX graph's, as its model.json records them, with one exception: a text classifier takes
its texts (``text``, BYTES) and nnserve tokenises them with the artifact's vocabulary, as /v1 does, because a
client has no way to obtain the vocabulary the ``ids`` would need. Each task's tensors and its run are its
Adapter, registered with the task (service/tasks/).

Supported extensions (Triton's, which ``tritonclient`` uses by default): binary tensor data (inputs and
outputs after the JSON header, its length in ``Inference-Header-Content-Length``) and classification
(``"parameters": {"classification": k}`` on a classifier's output: the top k as ``"value:index:label"``).
Errors are ``{"error": "<message>"}`` with 400, 401, 403 (the repository without a key), 404, 405, 413, 429, 503 or
504, and 500 only when an inference itself fails (the protocol's shape, not /v1's envelope); 429 and 503 carry
Retry-After.
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from typing import Annotated, Any, TypeVar, cast

from fastapi import FastAPI, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import Response

from contract.metadata import ModelMetadata
from service import __version__
from service.engine import Engine, current
from service.errors import ApiError, quoted, validation_details
from service.lane import Lane
from service.middleware import ERROR_CODE_HEADER, header_length
from service.oip_extensions import PLATFORM, model_config, statistics
from service.oip_schemas import (
    InferenceRequest,
    InferenceResponse,
    Live,
    ModelConfig,
    ModelControlRequest,
    ModelControlResponse,
    ModelMetadataResponse,
    ModelReady,
    ModelStatisticsResponse,
    OipError,
    Ready,
    RepositoryEntry,
    RepositoryIndexRequest,
    ServerMetadata,
)
from service.oip_tensors import decode_inputs, encode_response, split_body
from service.registry import TASKS, Tensors
from service.runtime import version_order
from service.settings import get_settings

T = TypeVar("T", bound=BaseModel)
READ = ["GET", "HEAD"]  # a HEAD gets the GET's status and headers (a client's cheap probe)
# Triton's names for the extensions served: tensors after the JSON header, top-k labels, /config, /stats, /repository
EXTENSIONS = ["binary_tensor_data", "classification", "model_configuration", "statistics", "model_repository"]


# ---- the app ----------------------------------------------------------------------------------------


def _error(status: int, message: str, code: str | None = None, retry_after: int | None = None) -> Response:
    """The protocol's error body; the error's code travels to AdmissionMiddleware (which counts it in
    nnserve_errors_total like /v1's) in a header it removes."""
    headers = {ERROR_CODE_HEADER: code} if code else {}
    if status in (429, 503):
        headers["retry-after"] = str(retry_after or 1)
    return Response(
        OipError(error=message).model_dump_json(), status_code=status, media_type="application/json", headers=headers
    )


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return _error_of(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    response = _error(exc.status_code, str(exc.detail))
    response.headers.update(exc.headers or {})  # a 405's Allow
    return response


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    message, _ = validation_details(list(exc.errors()))
    return _error(400, f"invalid request: {message}", "invalid_request")


v2_app = FastAPI(
    title="nnserve /v2 (Open Inference Protocol)",
    docs_url=None,
    redoc_url=None,
    openapi_url=None,
    exception_handlers={
        ApiError: _api_error,
        HTTPException: _http_error,
        RequestValidationError: _validation_error,  # a path parameter; bodies are validated where they are read
    },
)
_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": OipError} for code in (400, 404, 413, 429, 503)}
_REPOSITORY_ERRORS = {**_ERRORS, 403: {"model": OipError, "description": "no API key configured, and not opened"}}
Name = Annotated[str, PathParam(max_length=64)]
Version = Annotated[str, PathParam(max_length=64)]


def _json(model: BaseModel, status: int = 200) -> Response:
    return Response(model.model_dump_json(exclude_none=True), status_code=status, media_type="application/json")


def _model(name: str, version: str | None) -> ModelMetadata:
    return model_of(current(), name, version)


def model_of(svc: Engine, name: str, version: str | None) -> ModelMetadata:
    """The served model named in the URL (404 for an unknown name or version, 503 when not ready)."""
    if "@" in name:  # the URL's name is a name, never name@version
        raise ApiError("model_not_found", f"no model named {quoted(name, 64)!r} is served")
    return svc.metadata(name, version=version)  # 404 for an unknown name or version, 503 when it failed to load


@v2_app.api_route("/", methods=READ, response_model=ServerMetadata)
async def server_metadata() -> Response:
    """Server metadata (``GET /v2``)."""
    return _json(ServerMetadata(name="nnserve", version=__version__, extensions=EXTENSIONS))


@v2_app.api_route("/health/live", methods=READ, response_model=Live)
async def live() -> Response:
    """200 while the server can answer metadata and inference requests."""
    return _json(Live(live=True))


@v2_app.api_route("/health/ready", methods=READ, response_model=Ready, responses={503: {"model": Ready}})
async def ready() -> Response:
    """200 when every served model is ready; 503 while one is not, or while the server drains on SIGTERM
    (use /readyz as a load balancer's probe: it stays 200 while models left out by
    NNSERVE_SKIP_BAD_ARTIFACTS are reported not ready)."""
    svc = current()
    ok = not svc.failed and not svc.draining
    return _json(Ready(ready=ok), 200 if ok else 503)


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema with its ``$defs`` substituted in place (the OpenAPI document has no components
    for models that only a hand-written request body uses)."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return resolve(schema)


_INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _inline(InferenceRequest.model_json_schema())},
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary"},
                "description": "binary tensor data extension: the JSON request (its length in the "
                "Inference-Header-Content-Length header) followed by the inputs' raw bytes",
            },
        },
    }
}
_INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    200: {
        "description": "the outputs: JSON, or with binary outputs requested the JSON header (its length in "
        "Inference-Header-Content-Length) followed by the outputs' raw bytes",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    },
}


def svc_versions(svc: Engine, meta: ModelMetadata) -> list[str]:
    """The versions of the model served, oldest first."""
    return sorted(svc.versions.get(meta.name, {meta.version: meta}), key=version_order)


async def _metadata(name: str, version: str | None) -> Response:
    meta = _model(name, version)
    adapter = TASKS[meta.task].v2
    return _json(
        ModelMetadataResponse(
            name=meta.name,
            versions=svc_versions(current(), meta),
            platform=PLATFORM,
            inputs=adapter.inputs(meta),
            outputs=adapter.outputs(meta),
        )
    )


async def _ready(name: str, version: str | None) -> Response:
    _model(name, version)
    return _json(ModelReady(name=name, ready=True))


async def _infer(request: Request, name: str, version: str | None) -> Response:
    return await infer_body(await request.body(), header_length(request.headers), name, version)


async def infer_body(body: bytes, length: str | None, name: str, version: str | None) -> Response:
    """An inference request's body (its JSON header and any binary tensor data) -> the answer."""
    svc = current()
    meta = model_of(svc, name, version)
    header, binary = split_body(body, length)
    try:
        req = InferenceRequest.model_validate_json(header)
    except ValidationError as e:
        message, _ = validation_details(list(e.errors()))
        raise ApiError("invalid_request", f"invalid inference request: {message}") from None
    adapter = TASKS[meta.task].v2
    return encode_response(req, meta, adapter, await run_request(svc, meta, req, binary))


async def run_request(svc: Engine, meta: ModelMetadata, req: InferenceRequest, binary: bytes) -> Tensors:
    """A parsed inference request (and its binary tensor data) -> every output the model's adapter gives;
    HTTP and gRPC (service/oip_grpc.py) alike."""
    adapter = TASKS[meta.task].v2
    tensors = decode_inputs(req, adapter.inputs(meta), binary, svc.max_rows(meta.task))
    return await adapter.run(svc, meta, tensors)


async def _infer_lane(body: bytes, scope: MutableMapping[str, Any], groups: tuple[str, ...]) -> Response:
    name, version = groups if len(groups) == 2 else (groups[0], None)
    return await infer_body(body, header_length(Headers(scope=scope)), name, version)


def lanes() -> list[Lane]:
    """The infer routes for service/lane.py: the same handler without the layers of the mounted app (whose path
    parameters allow 1-64 characters but '/')."""
    return [
        Lane(re.compile(r"/v2/models/([^/]{1,64})/infer/?"), _infer_lane, _error_of),
        Lane(re.compile(r"/v2/models/([^/]{1,64})/versions/([^/]{1,64})/infer/?"), _infer_lane, _error_of),
    ]


def _error_of(exc: ApiError) -> Response:
    return _error(exc.status, exc.message, exc.code, exc.retry_after)


@v2_app.api_route("/models/stats", methods=READ, response_model=ModelStatisticsResponse, responses=_ERRORS)
async def all_statistics() -> Response:
    """Every served model's statistics (Triton's statistics extension; service/stats.py says what is counted)."""
    svc = current()
    names = sorted(svc.working())
    return _json(ModelStatisticsResponse(model_stats=statistics(svc.catalog, names)))


async def _statistics(name: str, version: str | None) -> Response:
    meta = _model(name, version)
    return _json(ModelStatisticsResponse(model_stats=statistics(current().catalog, [meta.name])))


async def _config(name: str, version: str | None) -> Response:
    return _json(model_config(_model(name, version), get_settings()))


def _read_routes(suffix: str, handler: Any, model: type[BaseModel], name: str, docs: tuple[str, str]) -> None:
    """A GET (and HEAD) route for a model and the same for one of its versions: ``/models/{name}<suffix>`` and
    ``/models/{name}/versions/{version}<suffix>``, both answered by ``handler(name, version or None)``."""

    async def latest(name: Name) -> Response:
        return cast(Response, await handler(name, None))

    async def versioned(name: Name, version: Version) -> Response:
        return cast(Response, await handler(name, version))

    for endpoint, path, doc, label in ((latest, f"/models/{{name}}{suffix}", docs[0], f"model_{name}"),
                                       (versioned, f"/models/{{name}}/versions/{{version}}{suffix}", docs[1],
                                        f"model_version_{name}")):  # fmt: skip
        endpoint.__doc__ = doc
        v2_app.add_api_route(path, endpoint, methods=READ, response_model=model, responses=_ERRORS, name=label)


_read_routes("", _metadata, ModelMetadataResponse, "metadata", (
    "A model's metadata: versions, platform, and its input and output tensors.",
    "A model version's metadata (404 for a version not served).",
))  # fmt: skip
_read_routes("/ready", _ready, ModelReady, "ready", (
    "200 when the model is ready for inference; 503 when its artifact failed to load.",
    "200 when this version of the model is ready for inference.",
))  # fmt: skip
_read_routes("/config", _config, ModelConfig, "config", (
    "The model's configuration in Triton's shape: tensors, batch limits, batching and instances.",
    "A model version's configuration.",
))  # fmt: skip
_read_routes("/stats", _statistics, ModelStatisticsResponse, "stats", (
    "The model's statistics: requests, their phases' cumulative time, and onnxruntime runs per batch size.",
    "The model's statistics (summed over its versions: the counters are per model name).",
))  # fmt: skip


@v2_app.post(
    "/models/{name}/infer", response_model=InferenceResponse, responses=_INFER_RESPONSES, openapi_extra=_INFER_BODY
)
async def infer(request: Request, name: Name) -> Response:
    """Inference on JSON tensors (or binary tensor data), batched with /v1 requests for the same model."""
    return await _infer(request, name, None)


@v2_app.post(
    "/models/{name}/versions/{version}/infer",
    response_model=InferenceResponse,
    responses=_INFER_RESPONSES,
    openapi_extra=_INFER_BODY,
)
async def infer_version(request: Request, name: Name, version: Version) -> Response:
    """Inference on a given version of the model."""
    return await _infer(request, name, version)


@v2_app.post("/repository/index", response_model=list[RepositoryEntry], responses=_REPOSITORY_ERRORS)
async def repository_index(request: Request) -> Response:
    """Every model version on disk or served, with its state (Triton's repository extension; needs the API key,
    or NNSERVE_REPOSITORY_OPEN)."""
    body = await _optional_body(request, RepositoryIndexRequest)
    entries = [RepositoryEntry(**e) for e in current().repository.listing(bool(body.ready))]
    return Response(
        b"[" + b",".join(e.model_dump_json().encode() for e in entries) + b"]", media_type="application/json"
    )


@v2_app.post("/repository/models/{name}/load", response_model=ModelControlResponse, responses=_REPOSITORY_ERRORS)
async def repository_load(request: Request, name: Name) -> Response:
    """Load the model's versions from disk (its version policy), or reload them: every API worker loads and
    warms up the new ones, then all switch; in-flight requests finish on the old ones. Answers when every worker
    serves the new versions; a version that fails to load changes nothing. NNSERVE_MODEL_CONTROL=explicit."""
    body = await _optional_body(request, ModelControlRequest)
    await current().repository.call("load", name, body.parameters or {})
    return _json(ModelControlResponse())


@v2_app.post("/repository/models/{name}/unload", response_model=ModelControlResponse, responses=_REPOSITORY_ERRORS)
async def repository_unload(request: Request, name: Name) -> Response:
    """Stop serving the model in every API worker (in-flight requests finish)."""
    body = await _optional_body(request, ModelControlRequest)
    await current().repository.call("unload", name, body.parameters or {})
    return _json(ModelControlResponse())


async def _optional_body(request: Request, model: type[T]) -> T:
    """A repository call's JSON body; tritonclient sends none for a plain load or index."""
    raw = await request.body()
    if not raw.strip():
        return model()
    try:
        return model.model_validate_json(raw)
    except ValidationError as e:
        message, _ = validation_details(list(e.errors()))
        raise ApiError("invalid_request", f"invalid request: {message}") from None


# A path with one trailing slash is the same route (Starlette would answer 307 with an absolute Location built from
# the Host header: a POST client that does not follow it fails, and behind a TLS proxy it points at http://)
v2_app.router.redirect_slashes = False
for _route in list(v2_app.routes):
    if isinstance(_route, APIRoute) and _route.path != "/":
        v2_app.add_api_route(
            _route.path + "/", _route.endpoint, methods=sorted(_route.methods or ()), include_in_schema=False
        )
