"""Image classification: base64 images in JSON (/v1/classify) or one file part (/v1/classify/upload) -> calibrated
top-k labels with an out-of-distribution score; on /v2, the graph's own tensors (with the classification
extension). Its family, ImageModels, runs image classifiers: float32 (B, C, H, W) -> logits (B, K)."""

from __future__ import annotations

from typing import Annotated, Any, cast

import bentoml
import numpy as np
from fastapi import APIRouter, File, Form, Request, UploadFile
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from starlette.responses import Response

from contract.images import second_reading_kept
from contract.metadata import ModelMetadata
from contract.reasons import NOTHING_WRITTEN, OodReason, beyond, flag_reason
from service.engine import Engine, current, flagged
from service.errors import ApiError
from service.family import (
    SERVICE_CONFIG,
    Family,
    ImageItem,
    InferResult,
    group_by_model,
    in_input_order,
)
from service.images import pixels, png_b64
from service.metrics import PREDICTIONS, child
from service.oip_tensors import OOD_OUTPUTS, classifier_outputs, graph_inputs, image_reasons, with_ood
from service.registry import Adapter, Task, Tensors, register
from service.runtime import served_key
from service.schemas import (
    ANSWERED_BY,
    ERROR_RESPONSES,
    MODEL_NAME,
    OOD_FLAG,
    OOD_REASON,
    OOD_SCORE,
    VERSION,
    VERSION_CHOICE,
    VERSION_PATTERN,
    ImagesInput,
    json_response,
)
from service.settings import get_settings

S = get_settings()
TASK = "image-classification"
DEFAULT_MODEL = "mnist-cnn"  # a request without "model": this, or where it is not served the one model of the task


class ClassifyImagesRequest(ImagesInput):
    model: str = Field(DEFAULT_MODEL, pattern=MODEL_NAME, description="a served image-classification model")
    top_k: StrictInt = Field(3, ge=1, le=100, description="alternatives per image, capped at the number of labels")
    include_input: bool = Field(
        False, description="also return what the model saw: the prepared input image (base64 PNG) per prediction"
    )


class LabelScore(BaseModel):
    label: str = Field(description="a class of the model")
    score: float = Field(ge=0, le=1, description="its calibrated probability")


class Prediction(BaseModel):
    label: str = Field(description="the most probable class")
    index: int = Field(ge=0, description="its position in the model card's labels")
    score: float = Field(ge=0, le=1, description="calibrated probability of the top label")
    top_k: list[LabelScore] = Field(description="the top_k most probable classes, most probable first")
    ood_score: float | None = OOD_SCORE
    out_of_distribution: bool = OOD_FLAG
    ood_reason: OodReason | None = OOD_REASON
    input: str | None = Field(None, description="with include_input: the prepared input the model saw (base64 PNG)")


class ClassifyImagesResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model: str = Field(description=ANSWERED_BY)
    version: str = Field(description=VERSION)
    predictions: list[Prediction] = Field(description="one per input image, in input order")


@bentoml.service(name="nnserve-image-models", **SERVICE_CONFIG)
class ImageModels(Family):
    """Image classifiers: float32 (B, C, H, W) -> logits (B, K)."""

    task = TASK

    @bentoml.api(batchable=True, batch_dim=0, max_batch_size=S.max_batch_size, max_latency_ms=S.max_latency_ms)
    def infer(self, items: list[ImageItem]) -> list[InferResult]:
        chunks = []
        for name, rows in group_by_model([it.model for it in items]).items():
            model = self.models[name]
            outs = model.run_all(np.stack([items[i].x for i in rows]))
            ood = model.meta.ood
            k = model.output_index(ood.output) if ood is not None and ood.output else None  # model.json names it
            scores = [None] * len(rows) if k is None else [float(v) for v in outs[k]]
            chunks.append((rows, [InferResult(logits=lg, ood_score=s) for lg, s in zip(outs[0], scores, strict=True)]))
        return in_input_order(len(items), chunks)


def served_ood(meta: ModelMetadata, score: float | None, item: ImageItem) -> tuple[float | None, bool]:
    """One image's out-of-distribution answer (``ModelMetadata.ood_answer``)."""
    return meta.ood_answer(score, item.oddness, item.x)


async def read_twice(
    engine: Engine, meta: ModelMetadata, blobs: list[bytes] | list[str], items: list[ImageItem], results: list[Any]
) -> tuple[list[ImageItem], list[Any], list[tuple[float | None, bool]]]:
    """The rows, the graph's results and their out-of-distribution answers, after a second reading where the model
    takes one (``ood.second_reading``, export/second_reading.py): each photo of pen strokes that the model flags is
    read again at the other polarity, and that reading kept when the model finds it typical
    (``contract.images.second_reading_kept``)."""
    answers = [served_ood(meta, r.ood_score, item) for r, item in zip(results, items, strict=True)]
    ood = meta.ood
    if ood is None or not ood.second_reading:
        return items, results, answers
    again = [i for i, (_, flagged) in enumerate(answers) if flagged and items[i].dark_ink is not None]
    if not again:
        return items, results, answers
    dark = [not items[i].dark_ink for i in again]
    _, second = await engine.image_rows(meta, TASK, cast(list[Any], [blobs[i] for i in again]), dark=dark)
    second_results = await engine.call(TASK, second, meta.name, count=False)
    items, results = list(items), list(results)
    for i, item, r in zip(again, second, second_results, strict=True):
        answer = served_ood(meta, r.ood_score, item)
        if second_reading_kept(ood.threshold, *answer):
            items[i], results[i], answers[i] = item, r, answer
    return items, results, answers


async def classify_blobs(
    engine: Engine, model: str, blobs: list[bytes] | list[str], top_k: int, include_input: bool
) -> ClassifyImagesResponse:
    meta, items = await engine.image_rows(model, TASK, blobs)
    items, results, answers = await read_twice(engine, meta, blobs, items, await engine.call(TASK, items, meta.name))
    logits = np.stack([r.logits for r in results])
    probs = meta.probabilities(logits, answers, [item.x for item in items], [item.on_table for item in items])
    k = min(top_k, len(meta.labels))
    predictions = []
    for z, p, item, result, (ood_score, odd) in zip(logits, probs, items, results, answers, strict=True):
        order = np.argsort(-z, kind="stable")[:k]  # the graph's ranking (probabilities may tie: nothing written)
        best = int(order[0])
        child(PREDICTIONS, meta.name, meta.labels[best]).inc()
        own = beyond(meta.ood, result.ood_score)
        reason = flag_reason(odd, own, item.oddness, item.odd_reason, item.x)
        predictions.append(
            Prediction(
                label=meta.labels[best],
                index=best,
                score=float(p[best]),
                top_k=[LabelScore(label=meta.labels[j], score=float(p[j])) for j in order],
                ood_score=ood_score,
                out_of_distribution=flagged(meta, reason),
                ood_reason=reason,
                input=png_b64(pixels(item.x, meta)) if include_input else None,
            )
        )
    return ClassifyImagesResponse(model=meta.name, version=meta.version, predictions=predictions)


router = APIRouter()


@router.post("/classify/upload", response_model=ClassifyImagesResponse, responses=ERROR_RESPONSES)
async def classify_upload(
    request: Request,
    image: Annotated[UploadFile, File(description="a PNG, JPEG or WebP file part")],
    model: Annotated[
        str | None,
        Form(
            pattern=MODEL_NAME,
            description="a served image-classification model (default: mnist-cnn, or the one served)",
        ),
    ] = None,
    top_k: Annotated[int, Form(ge=1, le=100, description="alternatives, capped at the number of labels")] = 3,
    version: Annotated[str | None, Form(pattern=VERSION_PATTERN, description=VERSION_CHOICE)] = None,
) -> Response:
    """Classify one uploaded image (multipart/form-data).

    Only real file parts are accepted: this route is parsed by FastAPI, not by BentoML's multipart input,
    which would download a URL given as the value of a file field.
    """
    if len((await request.form()).getlist("image")) != 1:  # FastAPI would take the last and drop the others
        raise ApiError("invalid_request", "send one image: the form has several 'image' file parts")
    data = await image.read(S.max_image_bytes + 1)
    return json_response(
        await classify_blobs(
            current(), current().requested(model, DEFAULT_MODEL, version, TASK), [data], top_k, include_input=False
        )
    )


@router.post("/classify", response_model=ClassifyImagesResponse, responses=ERROR_RESPONSES)
async def classify(request: ClassifyImagesRequest) -> Response:
    """Classify base64 PNG/JPEG images; predictions come back in input order."""
    r = request
    return json_response(
        await classify_blobs(current(), current().requested_by(r, TASK), r.images, r.top_k, r.include_input)
    )


async def _v2_classify(engine: Engine, meta: ModelMetadata, t: Tensors) -> Tensors:
    x = t[meta.inputs[0].name]
    key = served_key(meta)
    results = await engine.call(TASK, [ImageItem(model=key, x=row) for row in x], meta.name)
    scores = [r.ood_score for r in results]
    reasons = image_reasons(meta, x, scores)
    empty = [r == NOTHING_WRITTEN for r in reasons]  # the first reason that holds
    return with_ood(meta, np.stack([r.logits for r in results]), scores, reasons, empty)


register(
    Task(
        name=TASK,
        family=ImageModels,
        methods=("infer",),
        max_batch=lambda s: s.max_batch_size,
        max_rows=lambda s: s.max_images,
        router=router,
        v2=Adapter(graph_inputs, classifier_outputs, _v2_classify, classifies=True, on_request=OOD_OUTPUTS),
    )
)
