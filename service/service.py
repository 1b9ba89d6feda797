"""BentoML 1.4 services: ``ImageModels`` (onnxruntime, adaptive batching) behind ``NNServe`` (the /v1 API).

    client ─HTTP─► NNServe (API worker)                         ImageModels (model worker)
                   decode + preprocess (export.contract)  ──►   @bentoml.api(batchable=True) infer()
                   softmax, top-k, envelope, metrics      ◄──   one onnxruntime run per model per batch

Serve with ``bentoml serve service.service:NNServe``. Settings come from ``NNSERVE_*`` variables
(service/settings.py); they are read when this module is imported because BentoML takes its service
configuration (workers, batching, timeouts) at class definition.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, ParamSpec, TypeVar

import bentoml
import numpy as np
from bentoml.exceptions import BentoMLException
from bentoml.validators import TensorSchema
from fastapi import FastAPI, File, Form, UploadFile
from fastapi import Path as PathParam
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from export.contract import ModelMetadata, load_metadata
from service.errors import ApiError, ErrorResponse
from service.images import b64_to_bytes, to_input
from service.metrics import PREDICTIONS
from service.middleware import V1Middleware
from service.runtime import OnnxModel, discover, load_model, providers, warm_up
from service.schemas import (
    MODEL_NAME,
    BatchingInfo,
    ClassifyImagesRequest,
    ClassifyImagesResponse,
    LabelScore,
    ListModelsResponse,
    ModelCard,
    Prediction,
)
from service.settings import get_settings

log = logging.getLogger("bentoml.nnserve")  # under "bentoml" so BentoML's log setup shows it
S = get_settings()
_NO_ACCESS_LOG = {"access": {"enabled": False}}  # a log line per request costs ~16 % of CPU (PERF-NOTES)

Float32 = Annotated[np.ndarray, TensorSchema("numpy-array", dtype="float32")]


class InferItem(BaseModel):
    """One input row for the model service: which model, and its preprocessed tensor (C, H, W)."""

    model: str
    x: Float32


class InferResult(BaseModel):
    logits: Float32


class ModelState(BaseModel):
    name: str
    providers: list[str]


class ModelServiceState(BaseModel):
    models: list[ModelState]


@bentoml.service(
    name="nnserve-image-models",
    workers=S.model_workers,
    logging=_NO_ACCESS_LOG,
    traffic={"timeout": S.request_timeout_s},
    # BentoML's client to this service recycles its connection every 100 requests by default and fails
    # the calls in flight on it (sporadic 500s under load); keep one connection for the worker's life.
    runner_connection={"max_requests": 1_000_000_000, "max_age": 1e9},
)
class ImageModels:
    """Holds one onnxruntime session per image-classification artifact; batches across requests."""

    def __init__(self) -> None:
        self.models: dict[str, OnnxModel] = {}
        for path in discover(S):
            model = load_model(path, S)  # ArtifactError names the bad file and stops start-up
            if model.meta.task != "image-classification":
                continue
            warm_up(model)
            self.models[model.name] = model
            log.info("loaded %s (%s) from %s", model.name, model.meta.architecture, path)
        self.ready = True

    def __is_ready__(self) -> bool:
        return self.ready

    @bentoml.api(batchable=True, batch_dim=0, max_batch_size=S.max_batch_size, max_latency_ms=S.max_latency_ms)
    def infer(self, items: list[InferItem]) -> list[InferResult]:
        """A batch of rows, possibly for several models: one onnxruntime run per model, rows in order."""
        out: list[InferResult | None] = [None] * len(items)
        by_model: dict[str, list[int]] = {}
        for i, item in enumerate(items):
            by_model.setdefault(item.model, []).append(i)
        for name, rows in by_model.items():
            logits = self.models[name].run(np.stack([items[i].x for i in rows]))
            for i, row in zip(rows, logits, strict=True):
                out[i] = InferResult(logits=row)
        return [r for r in out if r is not None]

    @bentoml.api
    def state(self) -> ModelServiceState:
        return ModelServiceState(
            models=[ModelState(name=n, providers=m.session.get_providers()) for n, m in self.models.items()]
        )


P = ParamSpec("P")
R = TypeVar("R")


def enveloped(func: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R | Response]]:
    """Render an ``ApiError`` raised by an endpoint as the envelope (a Response passes BentoML untouched)."""

    @functools.wraps(func)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | Response:
        try:
            return await func(*args, **kwargs)
        except ApiError as e:
            return Response(e.body(), status_code=e.status, headers=e.headers())

    return wrapper


def _json(model: BaseModel) -> Response:
    return Response(model.model_dump_json(), media_type="application/json")


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


# ---- GET routes and the upload form live in a FastAPI app mounted at /v1 ----------------------------
# (@bentoml.api routes are POST-only with JSON or BentoML's multipart parsing; BentoML merges a mounted
# FastAPI app's routes into its OpenAPI document, so these are documented like the others.)

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 404, 413, 415, 429, 503, 504)
}


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return Response(exc.body(), status_code=exc.status, headers=exc.headers())


v1_app = FastAPI(
    title="nnserve /v1", docs_url=None, redoc_url=None, openapi_url=None, exception_handlers={ApiError: _api_error}
)


@v1_app.get("/models", response_model=ListModelsResponse, responses=_ERRORS)
async def list_models() -> Response:
    """Model cards of every served model: metadata plus runtime state."""
    svc: NNServe = bentoml.get_current_service()
    return _json(ListModelsResponse(models=await svc.model_cards()))


@v1_app.get("/models/{name}", response_model=ModelCard, responses=_ERRORS)
async def get_model(name: Annotated[str, PathParam(max_length=64)]) -> Response:
    """One model's card."""
    svc: NNServe = bentoml.get_current_service()
    svc.metadata(name)  # 404 envelope for an unknown name
    return _json(next(c for c in await svc.model_cards() if c.name == name))


@v1_app.post("/classify/upload", response_model=ClassifyImagesResponse, responses=_ERRORS)
async def classify_upload(
    image: Annotated[UploadFile, File(description="a PNG or JPEG file part")],
    model: Annotated[str, Form(pattern=MODEL_NAME)] = "mnist-cnn",
    top_k: Annotated[int, Form(ge=1, le=100)] = 3,
) -> Response:
    """Classify one uploaded image (multipart/form-data).

    Only real file parts are accepted: this route is parsed by FastAPI, not by BentoML's multipart input,
    which would download a URL given as the value of a file field.
    """
    svc: NNServe = bentoml.get_current_service()
    data = await image.read(S.max_image_bytes + 1)
    return _json(await svc.classify_blobs(model, [data], top_k))


@bentoml.asgi_app(v1_app, path="/v1")
@bentoml.service(
    name="nnserve",
    workers=S.api_workers,
    logging=_NO_ACCESS_LOG,
    # a backstop only: V1Middleware enforces the real timeout and concurrency limit with the envelope
    traffic={"timeout": S.request_timeout_s + 5},
)
class NNServe:
    """The public API: typed /v1 endpoints, model cards, BentoML's /livez, /readyz and /metrics."""

    image_models = bentoml.depends(ImageModels)

    def __init__(self) -> None:
        self.catalog: dict[str, ModelMetadata] = {}
        for path in discover(S):
            meta = load_metadata(path)
            if meta.task == "image-classification":
                self.catalog[meta.name] = meta
        log.info("serving %s", ", ".join(sorted(self.catalog)) or "no models")

    def metadata(self, name: str) -> ModelMetadata:
        try:
            return self.catalog[name]
        except KeyError:
            raise ApiError(
                "model_not_found", f"model {name!r} is not served", [{"available": sorted(self.catalog)}]
            ) from None

    async def model_cards(self) -> list[ModelCard]:
        try:
            state = await self.image_models.to_async.state()
            runtime = {m.name: m.providers for m in state.models}
        except BentoMLException:
            runtime = {}
        batching = BatchingInfo(max_batch_size=S.max_batch_size, max_latency_ms=S.max_latency_ms)
        return [
            ModelCard(
                name=m.name,
                version=m.version,
                task=m.task,
                architecture=m.architecture,
                labels=m.labels,
                preprocessing=m.preprocessing,
                inputs=m.inputs,
                outputs=m.outputs,
                opset=m.opset,
                metrics=m.metrics,
                class_metrics=m.class_metrics,
                dataset=m.dataset.name,
                created=m.created,
                onnx_sha256=m.onnx_sha256,
                source_commit=m.source_commit,
                ready=m.name in runtime,
                providers=runtime.get(m.name, providers()),
                batching=batching,
            )
            for m in self.catalog.values()
        ]

    async def classify_blobs(self, model: str, blobs: list[bytes], top_k: int) -> ClassifyImagesResponse:
        meta = self.metadata(model)
        if len(blobs) > S.max_images:
            raise ApiError("invalid_request", f"at most {S.max_images} images per request")
        items = [
            InferItem(
                model=model, x=to_input(b, meta, index=i, max_bytes=S.max_image_bytes, max_pixels=S.max_image_pixels)
            )
            for i, b in enumerate(blobs)
        ]
        try:
            results = await self.image_models.to_async.infer(items)
        except BentoMLException as e:
            status = int(getattr(e, "error_code", 500))
            if status in (429, 503):
                raise ApiError("overloaded", "the model service is overloaded; retry later", retry_after=1) from None
            log.exception("inference failed for %s", model)
            raise ApiError("internal_error", "inference failed") from None
        probs = _softmax(np.stack([r.logits for r in results]))
        k = min(top_k, len(meta.labels))
        predictions = []
        for p in probs:
            order = np.argsort(-p, kind="stable")[:k]
            best = int(order[0])
            PREDICTIONS.labels(model, meta.labels[best]).inc()
            predictions.append(
                Prediction(
                    label=meta.labels[best],
                    index=best,
                    score=float(p[best]),
                    top_k=[LabelScore(label=meta.labels[j], score=float(p[j])) for j in order],
                )
            )
        return ClassifyImagesResponse(model=model, version=meta.version, predictions=predictions)

    @bentoml.api(route="/v1/classify", input_spec=ClassifyImagesRequest, output_spec=ClassifyImagesResponse)
    @enveloped
    async def classify(self, model: str, images: list[str], top_k: int) -> Response:
        """Classify base64 PNG/JPEG images; predictions come back in input order."""
        if len(images) > S.max_images:
            raise ApiError("invalid_request", f"at most {S.max_images} images per request")
        blobs = [b64_to_bytes(s, i, S.max_image_bytes) for i, s in enumerate(images)]
        return _json(await self.classify_blobs(model, blobs, top_k))


NNServe.add_asgi_middleware(  # type: ignore[attr-defined]
    V1Middleware,
    max_body_bytes=S.max_body_bytes,
    max_concurrency=max(1, S.max_concurrency // S.api_workers),
    timeout_s=S.request_timeout_s,
)
