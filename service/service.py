"""The public API service ``NNServe``: typed /v1 endpoints over the per-family model code.

    client ─HTTP─► NNServe (API worker, async)                    the family's batch function
                   /v1 routes (FastAPI app mounted by BentoML)    ImageModels / TextModels /
                   decode, tokenize, validate (export/)    ──►    AutoencoderModels / GeneratorModels
                   softmax, top-k, envelope, metrics       ◄──    one onnxruntime run per model per batch

Where the batch functions run is a setting (``NNSERVE_BATCHING``): ``api`` (default) runs them in each API
worker behind service/batching.py's greedy batcher, with no hop between processes; ``services`` runs them
in BentoML model services, batched by BentoML's adaptive batcher, one internal HTTP hop per request.
docs/BENCHMARKS.md has the measurements behind the default.

The /v1 routes live in a FastAPI app that BentoML mounts (and documents in its OpenAPI document) rather
than in ``@bentoml.api`` methods: BentoML's own request/response handling per call cost more than the
whole inference of the small models (docs/BENCHMARKS.md).

Serve with ``bentoml serve service.service:NNServe``. Settings come from ``NNSERVE_*`` variables
(service/settings.py); they are read when this module is imported because BentoML takes its service
configuration (workers, batching, timeouts) at class definition.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import functools
import io
import logging
import math
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any, TypeVar, cast

import bentoml
import numpy as np
from bentoml.exceptions import BentoMLException
from fastapi import FastAPI, File, Form, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from PIL import Image
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from contract.images import image_grid, to_pil
from contract.metadata import ModelMetadata
from contract.text import Vocab, encode_text
from service.auth import ApiKeyMiddleware
from service.batching import GreedyBatcher, QueueFull
from service.errors import ApiError, ErrorResponse, quoted, validation_details
from service.images import b64_to_bytes, to_input
from service.metrics import (
    ANOMALIES,
    GENERATED,
    OUT_OF_DISTRIBUTION,
    PREDICTIONS,
    TOKENS,
    bound_bentoml_endpoint_labels,
    own_metrics_dir,
)
from service.middleware import AdmissionMiddleware
from service.model_services import (
    AutoencoderModels,
    GeneratorModels,
    ImageItem,
    ImageModels,
    LabeledImageItem,
    LatentItem,
    TextItem,
    TextModels,
    family_state,
)
from service.oip import v2_app
from service.openapi import DocsMiddleware
from service.request_id import RequestIdFilter, RequestIdMiddleware
from service.runtime import (
    ArtifactError,
    discover,
    load_model,
    load_vocab,
    providers,
    read_metadata,
    settle_heap,
    warm_up,
)
from service.schemas import (
    MODEL_NAME,
    AnalyzeSentimentRequest,
    AnalyzeSentimentResponse,
    BatchingInfo,
    ClassifyImagesRequest,
    ClassifyImagesResponse,
    EncodeImagesRequest,
    EncodeImagesResponse,
    GenerateRequest,
    GenerateResponse,
    InterpolateRequest,
    InterpolateResponse,
    LabelScore,
    ListModelsResponse,
    ModelCard,
    Prediction,
    ReconstructImagesRequest,
    ReconstructImagesResponse,
    Reconstruction,
    SentimentPrediction,
)
from service.settings import get_settings
from service.shutdown import delay_sigterm
from service.transport import Limits, install_transport

log = logging.getLogger("bentoml.nnserve")  # under "bentoml" so BentoML's log setup shows it
log.addFilter(RequestIdFilter())
S = get_settings()
own_metrics_dir()  # one Prometheus folder per instance (service/metrics.py)
bound_bentoml_endpoint_labels()  # BentoML's request series labelled by route, not by raw path
install_transport(  # head timeout and size, keep-alive, connection cap (service/transport.py)
    Limits(S.head_timeout_s, S.max_head_bytes, S.keep_alive_s, S.max_connections)
)


def _json(model: BaseModel) -> Response:
    return Response(model.model_dump_json(), media_type="application/json")


def _softmax(logits: np.ndarray, meta: ModelMetadata) -> np.ndarray:
    """Calibrated probabilities: softmax(logits / T), T the artifact's temperature (1 without calibration)."""
    z = logits.astype(np.float64) / (meta.calibration.temperature if meta.calibration else 1.0)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _flag(meta: ModelMetadata, score: float | None) -> bool:
    """Out of distribution: the score is above the artifact's threshold (counted in the metric)."""
    flagged = meta.ood is not None and score is not None and score > meta.ood.threshold
    if flagged:
        OUT_OF_DISTRIBUTION.labels(meta.name).inc()
    return flagged


# ---- GET routes and the upload form live in a FastAPI app mounted at /v1 ----------------------------
# (@bentoml.api routes are POST-only with JSON or BentoML's multipart parsing; BentoML merges a mounted
# FastAPI app's routes into its OpenAPI document, so these are documented like the others.)

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 404, 413, 415, 429, 503, 504)
}


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _validation_error(request: Request, exc: Exception) -> Response:
    """The envelope for a body or form that fails its schema, without echoing the client's input (FastAPI's
    own answer quotes it, and a NaN or a lone surrogate in it made that answer a 500)."""
    assert isinstance(exc, RequestValidationError)
    message, details = validation_details(list(exc.errors()))
    return ApiError("invalid_request", message, details).response()


v1_app = FastAPI(
    title="nnserve /v1",
    docs_url=None,
    redoc_url=None,
    openapi_url=None,
    exception_handlers={ApiError: _api_error, RequestValidationError: _validation_error},
)


@v1_app.get("/models", response_model=ListModelsResponse, responses=_ERRORS)
async def list_models() -> Response:
    """Model cards of every served model: metadata plus runtime state."""
    svc: NNServe = bentoml.get_current_service()
    return _json(ListModelsResponse(models=await svc.model_cards(), unavailable=svc.failed))


@v1_app.get("/models/{name}", response_model=ModelCard, responses=_ERRORS)
async def get_model(name: Annotated[str, PathParam(max_length=64)]) -> Response:
    """One model's card."""
    svc: NNServe = bentoml.get_current_service()
    if name not in svc.catalog:
        svc.metadata(name)  # 404 envelope for an unknown name (503 for an artifact that failed to load)
    return _json(next(c for c in await svc.model_cards() if c.name == name))


@v1_app.post("/classify/upload", response_model=ClassifyImagesResponse, responses=_ERRORS)
async def classify_upload(
    image: Annotated[UploadFile, File(description="a PNG or JPEG file part")],
    model: Annotated[str, Form(pattern=MODEL_NAME, description="a served image-classification model")] = "mnist-cnn",
    top_k: Annotated[int, Form(ge=1, le=100, description="alternatives, capped at the number of labels")] = 3,
) -> Response:
    """Classify one uploaded image (multipart/form-data).

    Only real file parts are accepted: this route is parsed by FastAPI, not by BentoML's multipart input,
    which would download a URL given as the value of a file field.
    """
    svc: NNServe = bentoml.get_current_service()
    data = await image.read(S.max_image_bytes + 1)
    return _json(await svc.classify_blobs(model, [data], top_k, include_input=False))


@v1_app.post(
    "/generate/png",
    response_class=Response,
    responses={**_ERRORS, 200: {"content": {"image/png": {}}, "description": "a PNG grid of the samples"}},
)
async def generate_png(request: GenerateRequest) -> Response:
    """Samples as one PNG grid (image/png), for a browser or ``curl -o``; the seed is in ``X-Seed``."""
    svc: NNServe = bentoml.get_current_service()
    meta, seed, _, images = await svc.sample(request.model, request.n, request.seed, request.label)
    headers = {"X-Seed": str(seed), "X-Model-Version": meta.version}
    return Response(_png(image_grid(images, cols=_grid_cols(len(images)))), media_type="image/png", headers=headers)


def _svc() -> NNServe:
    return bentoml.get_current_service()


@v1_app.post("/classify", response_model=ClassifyImagesResponse, responses=_ERRORS)
async def classify(request: ClassifyImagesRequest) -> Response:
    """Classify base64 PNG/JPEG images; predictions come back in input order."""
    r = request
    return _json(await _svc().classify_blobs(r.model, r.images, r.top_k, r.include_input))


@v1_app.post("/sentiment", response_model=AnalyzeSentimentResponse, responses=_ERRORS)
async def sentiment(request: AnalyzeSentimentRequest) -> Response:
    """Sentiment of 1 to NNSERVE_MAX_TEXTS texts (64 by default); texts over the model's max_len tokens
    are truncated and say so."""
    return await _svc().sentiment(request.model, request.texts)


@v1_app.post("/reconstruct", response_model=ReconstructImagesResponse, responses=_ERRORS)
async def reconstruct(request: ReconstructImagesRequest) -> Response:
    """Reconstruct images through an autoencoder (with a denoising one, this denoises) and flag anomalies."""
    return await _svc().reconstruct(request.model, request.images)


@v1_app.post("/encode", response_model=EncodeImagesResponse, responses=_ERRORS)
async def encode(request: EncodeImagesRequest) -> Response:
    """An autoencoder's code for each image (its compressed representation)."""
    return await _svc().encode(request.model, request.images)


@v1_app.post("/generate", response_model=GenerateResponse, responses=_ERRORS)
async def generate(request: GenerateRequest) -> Response:
    """Draw n samples from a generator (GAN or VAE decoder); the same seed gives the same images."""
    return await _svc().generate(request.model, request.n, request.seed, request.label, request.format)


@v1_app.post("/interpolate", response_model=InterpolateResponse, responses=_ERRORS)
async def interpolate(request: InterpolateRequest) -> Response:
    """Frames walking the latent space from end a to end b: two seeds, or (VAE) two encoded images."""
    r = request
    return await _svc().interpolate(r.model, r.steps, r.seed_a, r.seed_b, r.images, r.label, r.method, r.format)


# task -> (its model service, the service's batchable methods, rows per batch)
FAMILIES: dict[str, tuple[Any, tuple[str, ...], int]] = {
    "image-classification": (ImageModels, ("infer",), S.max_batch_size),
    "text-classification": (TextModels, ("infer",), S.text_max_batch_size),
    "autoencoder": (AutoencoderModels, ("infer",), S.max_batch_size),
    "generator": (GeneratorModels, ("generate", "encode"), S.max_batch_size),
}
SERVICE_ATTR = {
    "image-classification": "image_models",
    "text-classification": "text_models",
    "autoencoder": "autoencoders",
    "generator": "generators",
}


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
class NNServe:
    """The public API: typed /v1 endpoints, the OIP v2 endpoints, model cards, BentoML's /livez, /readyz and
    /metrics."""

    if S.batching == "services":  # otherwise the families run in this worker (service/batching.py)
        image_models = bentoml.depends(ImageModels)
        text_models = bentoml.depends(TextModels)
        autoencoders = bentoml.depends(AutoencoderModels)
        generators = bentoml.depends(GeneratorModels)

    def __init__(self) -> None:
        # Graceful shutdown: on SIGTERM readiness turns false at once (/readyz, /v2/health/ready) and the worker
        # serves for drain_s more seconds before uvicorn closes the listener and finishes what is in flight.
        self.draining = False
        delay_sigterm(S.drain_s, "not ready;", lambda: setattr(self, "draining", True))
        self.local: dict[str, Any] = {}
        self.batchers: dict[tuple[str, str], GreedyBatcher] = {}
        if S.batching == "api":
            for task, (service, methods, max_batch) in FAMILIES.items():
                family = service.inner()  # the model service's class, loaded in this process
                self.local[task] = family
                for method in methods:
                    fn = functools.partial(getattr(service.inner, method).func, family)
                    self.batchers[task, method] = GreedyBatcher(
                        fn, max_batch=max_batch, max_queue=S.max_queue_rows, name=f"{task}.{method}"
                    )
        self.catalog: dict[str, ModelMetadata] = {}
        self.vocabs: dict[str, Vocab] = {}
        self.failed: dict[str, str] = {}  # skip_bad_artifacts: folder name -> why it is not served
        for family in self.local.values():
            self.failed.update(family.failed)
        for path in discover(S):
            try:
                meta = read_metadata(path)
                if meta.task == "text-classification":
                    self.vocabs[meta.name] = load_vocab(path, meta)
                if S.batching == "services" and S.skip_bad_artifacts:
                    warm_up(load_model(path, S))  # learn here what the model services will leave out
            except ArtifactError as e:
                if not S.skip_bad_artifacts:
                    raise
                self.failed[path.name] = str(e)
                continue
            self.catalog[meta.name] = meta
            if S.batching == "api" and not any(meta.name in f.models for f in self.local.values()):
                # readable metadata, but its family left the graph out (the reason is logged under the folder)
                self.failed.setdefault(meta.name, self.failed.get(path.name, f"{path}: failed to load"))
        for name, why in self.failed.items():
            log.error("not serving %s: %s", name, why)
        log.info("serving %s", ", ".join(sorted(set(self.catalog) - set(self.failed))) or "no models")
        settle_heap(S)

    async def __is_ready__(self) -> bool:
        """BentoML's /readyz: false from SIGTERM on (the families loaded in __init__ or start-up failed)."""
        return not self.draining

    def max_rows(self, task: str) -> int:
        """The rows one request may carry for a task (images, texts, or samples)."""
        return {"text-classification": S.max_texts, "generator": S.max_samples}.get(task, S.max_images)

    def metadata(self, name: str, task: str | None = None) -> ModelMetadata:
        if name in self.failed:
            raise ApiError("not_ready", f"model {name!r} is not ready: its artifact failed to load", retry_after=30)
        meta = self.catalog.get(name)
        if meta is None or (task is not None and meta.task != task):
            available = sorted(n for n, m in self.catalog.items() if task is None or m.task == task)
            kind = f"{task} model" if task else "model"
            raise ApiError("model_not_found", f"no {kind} named {name!r} is served", [{"available": available}])
        return meta

    async def model_cards(self) -> list[ModelCard]:
        runtime: dict[str, list[str]] = {}
        for task in FAMILIES:
            if S.batching == "api":
                state = family_state(self.local[task].models)
            else:
                try:
                    state = await getattr(self, SERVICE_ATTR[task]).to_async.state()
                except BentoMLException:
                    continue
            runtime.update({m.name: m.providers for m in state.models})
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
                ready=m.name in runtime and m.name not in self.failed,
                error=self.failed.get(m.name),
                providers=runtime.get(m.name, providers()),
                batching=BatchingInfo(
                    mode=S.batching,
                    max_batch_size=FAMILIES[m.task][2],
                    max_latency_ms=S.max_latency_ms if S.batching == "services" else None,
                ),
                anomaly=m.anomaly,
                generator=m.generator,
                calibration=m.calibration,
                ood=m.ood,
            )
            for m in self.catalog.values()
        ]

    async def _call(self, task: str, items: list[Any], model: str, method: str = "infer") -> list[Any]:
        """Rows to the task's family, batched with other requests' rows (in this worker, or in the model
        service); one result per row."""
        try:
            if S.batching == "api":
                return await self.batchers[task, method].submit(items)
            return await getattr(getattr(self, SERVICE_ATTR[task]).to_async, method)(items)
        except QueueFull:
            raise ApiError("overloaded", "the model queue is full; retry later", retry_after=1) from None
        except BentoMLException as e:
            if int(getattr(e, "error_code", 500)) in (429, 503):
                raise ApiError("overloaded", "the model service is overloaded; retry later", retry_after=1) from None
            log.exception("inference failed for %s", model)
            raise ApiError("internal_error", "inference failed") from None
        except Exception:  # in-worker batching: the batch function itself failed
            log.exception("inference failed for %s", model)
            raise ApiError("internal_error", "inference failed") from None

    async def _image_rows(
        self, model: str, task: str, blobs: list[bytes] | list[str], label: int | None = None
    ) -> tuple[ModelMetadata, list[ImageItem]]:
        """Encoded images (bytes, or a JSON request's base64 strings) -> the model's input rows, preprocessed
        exactly as in training (with a class label for a conditional VAE's encoder), in the decode pool: never
        on the event loop."""
        return await _off_loop(self._image_rows_now, model, task, blobs, label)

    def _image_rows_now(
        self, model: str, task: str, blobs: list[bytes] | list[str], label: int | None
    ) -> tuple[ModelMetadata, list[ImageItem]]:
        b64 = bool(blobs) and isinstance(blobs[0], str)
        data = _decode_images(cast(list[str], blobs)) if b64 else cast(list[bytes], blobs)
        meta = self.metadata(model, task)
        limits = {
            "max_bytes": S.max_image_bytes,
            "max_pixels": S.max_image_pixels,
            "max_side": S.max_image_side,
            "max_scans": S.max_jpeg_scans,
        }
        rows = [to_input(b, meta, index=i, **limits) for i, b in enumerate(data)]
        if label is None:
            return meta, [ImageItem(model=model, x=x) for x in rows]
        return meta, [LabeledImageItem(model=model, x=x, label=label) for x in rows]

    async def classify_blobs(
        self, model: str, blobs: list[bytes] | list[str], top_k: int, include_input: bool
    ) -> ClassifyImagesResponse:
        meta, items = await self._image_rows(model, "image-classification", blobs)
        results = await self._call("image-classification", items, model)
        probs = _softmax(np.stack([r.logits for r in results]), meta)
        k = min(top_k, len(meta.labels))
        predictions = []
        for p, r, item in zip(probs, results, items, strict=True):
            order = np.argsort(-p, kind="stable")[:k]
            best = int(order[0])
            PREDICTIONS.labels(model, meta.labels[best]).inc()
            predictions.append(
                Prediction(
                    label=meta.labels[best],
                    index=best,
                    score=float(p[best]),
                    top_k=[LabelScore(label=meta.labels[j], score=float(p[j])) for j in order],
                    ood_score=r.ood_score,
                    out_of_distribution=_flag(meta, r.ood_score),
                    input=_png_b64(_pixels(item.x, meta)) if include_input else None,
                )
            )
        return ClassifyImagesResponse(model=model, version=meta.version, predictions=predictions)

    def text_rows(self, model: str, texts: list[str]) -> tuple[list[TextItem], list[tuple[int, int, float]]]:
        """Texts -> the model's token-id rows (tokenised exactly as in training), with each text's token count,
        how many of them the row keeps, and the share of those outside the vocabulary; the limits on texts and
        characters are checked here."""
        meta = self.metadata(model, "text-classification")
        pre = meta.text_preprocessing()
        if len(texts) > S.max_texts:
            raise ApiError("invalid_request", f"at most {S.max_texts} texts per request")
        items, encoded = [], []
        for i, text in enumerate(texts):
            if len(text) > S.max_text_chars:
                raise ApiError("invalid_request", f"texts[{i}] is over {S.max_text_chars} characters", [{"index": i}])
            if not text.strip():
                raise ApiError("invalid_request", f"texts[{i}] is empty", [{"index": i}])
            ids, n_tokens, _ = encode_text(text, pre.tokenizer, self.vocabs[model])
            if not ids:
                raise ApiError("invalid_request", f"texts[{i}] has no words or symbols", [{"index": i}])
            TOKENS.labels(model).observe(n_tokens)
            items.append(TextItem(model=model, ids=np.asarray(ids, dtype=np.int64)))
            encoded.append((n_tokens, len(ids), sum(i == pre.unk_id for i in ids) / len(ids)))
        return items, encoded

    async def sentiment(self, model: str, texts: list[str]) -> Response:
        """Sentiment of 1 to NNSERVE_MAX_TEXTS texts (64 by default); texts over the model's max_len tokens
        are truncated and say so."""
        meta = self.metadata(model, "text-classification")
        items, encoded = self.text_rows(model, texts)
        probs = _softmax(np.stack([r.logits for r in await self._call("text-classification", items, model)]), meta)
        predictions = []
        for p, (n_tokens, n_read, unknown) in zip(probs, encoded, strict=True):
            score = unknown if meta.ood is not None else None
            best = int(p.argmax())
            PREDICTIONS.labels(model, meta.labels[best]).inc()
            predictions.append(
                SentimentPrediction(
                    label=meta.labels[best],
                    score=float(p[best]),
                    probs={lbl: float(v) for lbl, v in zip(meta.labels, p, strict=True)},
                    tokens=n_tokens,
                    tokens_read=n_read,
                    truncated=n_read < n_tokens,
                    ood_score=score,
                    out_of_distribution=_flag(meta, score),
                )
            )
        return _json(AnalyzeSentimentResponse(model=model, version=meta.version, predictions=predictions))

    async def _autoencode(self, model: str, images: list[str]) -> tuple[ModelMetadata, list[ImageItem], list[Any]]:
        meta, items = await self._image_rows(model, "autoencoder", images)
        return meta, items, await self._call("autoencoder", items, model)

    async def reconstruct(self, model: str, images: list[str]) -> Response:
        """Reconstruct images through an autoencoder (with a denoising one, this denoises) and flag anomalies."""
        meta, items, results = await self._autoencode(model, images)
        assert meta.anomaly is not None
        out = []
        for item, r in zip(items, results, strict=True):
            error = float(((r.reconstruction - item.x) ** 2).sum())
            anomaly = error > meta.anomaly.threshold
            if anomaly:
                ANOMALIES.labels(model).inc()
            out.append(Reconstruction(reconstruction=_png_b64(r.reconstruction), error=error, anomaly=anomaly))
        return _json(
            ReconstructImagesResponse(model=model, version=meta.version, threshold=meta.anomaly.threshold, results=out)
        )

    async def encode(self, model: str, images: list[str]) -> Response:
        """An autoencoder's code for each image (its compressed representation)."""
        meta, _, results = await self._autoencode(model, images)
        codes = [[float(v) for v in r.code] for r in results]
        return _json(EncodeImagesResponse(model=model, version=meta.version, codes=codes))

    # ---- generators ---------------------------------------------------------------------------------

    def _label_index(self, meta: ModelMetadata, label: int | str | None, required: bool) -> int | None:
        """A request's label -> class index, validated against the model (400 on any mismatch)."""
        assert meta.generator is not None
        if label is None:
            if required and meta.generator.conditional:
                raise ApiError(
                    "invalid_request", f"{meta.name} is conditional: give a label", [{"labels": meta.labels}]
                )
            return None
        if not meta.generator.conditional:
            raise ApiError("invalid_request", f"{meta.name} is not conditional: it takes no label")
        if isinstance(label, str) and label in meta.labels:
            return meta.labels.index(label)
        if isinstance(label, int) and 0 <= label < len(meta.labels):
            return label
        raise ApiError(
            "invalid_label",
            f"label {quoted(repr(label), 40)} is not one of {meta.name}'s classes: an index 0-{len(meta.labels) - 1} "
            "or a name",
            [{"labels": meta.labels}],
        )

    async def _decode(self, meta: ModelMetadata, z: np.ndarray, labels: list[int]) -> np.ndarray:
        """Latent rows -> images (B, C, H, W) in [0, 1], batched in the generator service."""
        items = [LatentItem(model=meta.name, z=row, label=y) for row, y in zip(z, labels, strict=True)]
        results = await self._call("generator", items, meta.name, "generate")
        GENERATED.labels(meta.name).inc(len(results))
        return np.stack([r.image for r in results])

    async def sample(
        self, model: str, n: int, seed: int | None, label: int | str | None
    ) -> tuple[ModelMetadata, int, list[int] | None, np.ndarray]:
        """n samples: z ~ N(0, I) from numpy's default_rng(seed) (row i is the same for any n >= i + 1)."""
        meta = self.metadata(model, "generator")
        assert meta.generator is not None
        if n > S.max_samples:
            raise ApiError("invalid_request", f"at most {S.max_samples} samples per request")
        index = self._label_index(meta, label, required=False)
        seed = secrets.randbelow(2**31) if seed is None else seed
        z = _latents(seed, n, meta.generator.latent_dim)
        labels = None
        if meta.generator.conditional:
            labels = [index] * n if index is not None else [i % len(meta.labels) for i in range(n)]
        return meta, seed, labels, await self._decode(meta, z, labels or [0] * n)

    async def generate(self, model: str, n: int, seed: int | None, label: int | str | None, format: str) -> Response:
        """Draw n samples from a generator (GAN or VAE decoder); the same seed gives the same images."""
        meta, seed, labels, images = await self.sample(model, n, seed, label)
        grid = format == "grid"
        return _json(
            GenerateResponse(
                model=model,
                version=meta.version,
                seed=seed,
                labels=[meta.labels[i] for i in labels] if labels is not None else None,
                samples=[] if grid else [_png_b64(img) for img in images],
                grid=_b64(_png(image_grid(images, cols=_grid_cols(len(images))))) if grid else None,
            )
        )

    async def interpolate(
        self,
        model: str,
        steps: int,
        seed_a: int | None,
        seed_b: int | None,
        images: list[str] | None,
        label: int | str | None,
        method: str,
        format: str,
    ) -> Response:
        """Frames walking the latent space from end a to end b: two seeds, or (VAE) two encoded images."""
        meta = self.metadata(model, "generator")
        assert meta.generator is not None
        if steps > S.max_samples:
            raise ApiError("invalid_request", f"at most {S.max_samples} steps per request")
        index = self._label_index(meta, label, required=True)
        y = index or 0
        k = meta.generator.latent_dim
        if images is not None:
            if seed_a is not None or seed_b is not None:
                raise ApiError("invalid_request", "give either two images or seeds, not both")
            if meta.generator.encoder is None:
                raise ApiError("invalid_request", f"{model} has no encoder: interpolate between seeds instead")
            _, items = await self._image_rows(model, "generator", images, label=y)
            posts = await self._call("generator", items, model, "encode")
            a, b = posts[0].mu, posts[1].mu
        else:
            seed_a = secrets.randbelow(2**31) if seed_a is None else seed_a
            seed_b = secrets.randbelow(2**31) if seed_b is None else seed_b
            a, b = _latents(seed_a, 1, k)[0], _latents(seed_b, 1, k)[0]
        z = interpolate_latents(a, b, steps, method)
        frames = await self._decode(meta, z, [y] * steps)
        grid = format == "grid"
        return _json(
            InterpolateResponse(
                model=model,
                version=meta.version,
                seed_a=seed_a,
                seed_b=seed_b,
                label=meta.labels[index] if index is not None else None,
                frames=[] if grid else [_png_b64(f) for f in frames],
                grid=_b64(_png(image_grid(frames, cols=steps))) if grid else None,
            )
        )


def _latents(seed: int, n: int, k: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, k), dtype=np.float32)


def interpolate_latents(a: np.ndarray, b: np.ndarray, steps: int, method: str) -> np.ndarray:
    """``steps`` points from a to b inclusive: straight, or along the great circle (slerp, White 2016),
    which for Gaussian latents keeps every frame at a typical norm; ends that are (anti-)parallel, where the
    great circle is undefined, fall back to straight."""
    t = np.linspace(0.0, 1.0, steps)[:, None]
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    cos = float(a64 @ b64) / max(float(np.linalg.norm(a64) * np.linalg.norm(b64)), 1e-12)
    omega = math.acos(min(1.0, max(-1.0, cos)))
    if method == "linear" or math.sin(omega) < 1e-6:
        out = (1 - t) * a64 + t * b64
    else:
        out = (np.sin((1 - t) * omega) * a64 + np.sin(t * omega) * b64) / math.sin(omega)
    return out.astype(np.float32)


def _grid_cols(n: int) -> int:
    return math.ceil(math.sqrt(n))


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


T = TypeVar("T")
_DECODE_POOL = ThreadPoolExecutor(S.decode_threads, thread_name_prefix="nnserve-decode")


async def _off_loop(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in the decode pool (Pillow and numpy release the GIL while they work), keeping the request's
    context (its id in log lines): a costly image delays no other request's event-loop work."""
    ctx = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(_DECODE_POOL, functools.partial(ctx.run, fn, *args))


def _decode_images(images: list[str]) -> list[bytes]:
    """Base64 images of a JSON request -> bytes; the count limit is checked before any decoding.
    (An upload carries one image, always within the limit.)"""
    if len(images) > S.max_images:
        raise ApiError("invalid_request", f"at most {S.max_images} images per request")
    return [b64_to_bytes(s, i, S.max_image_bytes) for i, s in enumerate(images)]


def _pixels(x: np.ndarray, meta: ModelMetadata) -> np.ndarray:
    """A normalised input row (C, H, W) -> its pixels in [0, 1]: what the model saw."""
    pre = meta.image_preprocessing()
    mean = np.asarray(pre.mean, dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(pre.std, dtype=np.float32).reshape(-1, 1, 1)
    return x * std + mean


def _png_b64(pixels: np.ndarray) -> str:
    """(C, H, W) floats in [0, 1] -> base64 PNG."""
    return _b64(_png(to_pil(pixels)))


NNServe.add_asgi_middleware(RequestIdMiddleware)  # type: ignore[attr-defined]  # first: outermost of ours
if S.api_key is not None:  # off by default
    NNServe.add_asgi_middleware(  # type: ignore[attr-defined]
        ApiKeyMiddleware, api_key=S.api_key.get_secret_value(), protect_metrics=S.metrics_require_key
    )
NNServe.add_asgi_middleware(  # type: ignore[attr-defined]
    AdmissionMiddleware,
    max_body_bytes=S.max_body_bytes,
    max_concurrency=max(1, S.max_concurrency // S.api_workers),
    timeout_s=S.request_timeout_s,
    body_timeout_s=S.body_timeout_s,
    max_body_in_flight=max(S.max_body_in_flight, S.max_body_bytes),  # room for one body of the largest size
    max_json_items=S.max_json_items,
)
NNServe.add_asgi_middleware(  # type: ignore[attr-defined]  # /, /docs and /docs.json: nnserve's own
    DocsMiddleware, api_key=S.api_key is not None, metrics_require_key=S.metrics_require_key
)
