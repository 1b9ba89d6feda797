"""Autoencoders: images in JSON -> their reconstructions with an anomaly flag (/v1/reconstruct; a denoising model
denoises) or their codes (/v1/encode); on /v2, the graph's own tensors. Its family, AutoencoderModels, runs
autoencoders: pixels in [0, 1] (B, C, H, W) -> code (B, k) and reconstruction (B, C, H, W)."""

from __future__ import annotations

from typing import Any

import bentoml
import numpy as np
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from contract.metadata import ModelMetadata
from contract.reasons import OodReason, flag_reason
from service.engine import Engine, current
from service.family import (
    SERVICE_CONFIG,
    Family,
    Float32,
    ImageItem,
    group_by_model,
    in_input_order,
)
from service.images import png_b64
from service.metrics import ANOMALIES, child
from service.oip_tensors import graph_inputs, graph_outputs
from service.registry import Adapter, Task, Tensors, register
from service.runtime import served_key
from service.schemas import ANSWERED_BY, ERROR_RESPONSES, MODEL_NAME, VERSION, ImagesInput, json_response
from service.settings import get_settings

S = get_settings()
TASK = "autoencoder"


class AutoencoderResult(BaseModel):
    code: Float32
    reconstruction: Float32


class ReconstructImagesRequest(ImagesInput):
    model: str = Field("mnist-ae", pattern=MODEL_NAME, description="a served autoencoder")


class Reconstruction(BaseModel):
    reconstruction: str = Field(description="base64 PNG in the model's pixel convention (MNIST: white on black)")
    error: float = Field(ge=0, description="squared error summed over pixels in [0, 1]")
    anomaly: bool = Field(
        description="error is above the model's calibrated threshold, or the front door found nothing written (a "
        "blank page, uniform paper) or a page unlike any photo of the model's kind (a scene, printed text)"
    )
    anomaly_reason: OodReason | None = Field(
        None,
        description="why it is an anomaly, null when it is not: the ood_reason vocabulary of the classifiers "
        "(unlike_training_data: the error is above the threshold)",
    )


class ReconstructImagesResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model: str = Field(description=ANSWERED_BY)
    version: str = Field(description=VERSION)
    threshold: float = Field(description="99th percentile of validation reconstruction errors")
    results: list[Reconstruction] = Field(description="one per input image, in input order")


class EncodeImagesRequest(ReconstructImagesRequest):
    """Same input as reconstruction."""


class EncodeImagesResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model: str = Field(description=ANSWERED_BY)
    version: str = Field(description=VERSION)
    codes: list[list[float]] = Field(description="one code vector per input image, in input order")


@bentoml.service(name="nnserve-autoencoders", **SERVICE_CONFIG)
class AutoencoderModels(Family):
    """Autoencoders: pixels in [0, 1] (B, C, H, W) -> code (B, k) and reconstruction (B, C, H, W)."""

    task = TASK

    @bentoml.api(batchable=True, batch_dim=0, max_batch_size=S.max_batch_size, max_latency_ms=S.max_latency_ms)
    def infer(self, items: list[ImageItem]) -> list[AutoencoderResult]:
        chunks = []
        for name, rows in group_by_model([it.model for it in items]).items():
            codes, recons = self.models[name].run_all(np.stack([items[i].x for i in rows]))
            results = [AutoencoderResult(code=c, reconstruction=r) for c, r in zip(codes, recons, strict=True)]
            chunks.append((rows, results))
        return in_input_order(len(items), chunks)


async def _autoencode(
    engine: Engine, model: str, images: list[str]
) -> tuple[ModelMetadata, list[ImageItem], list[Any]]:
    meta, items = await engine.image_rows(model, TASK, images)
    return meta, items, await engine.call(TASK, items, meta.name)


router = APIRouter()


@router.post("/reconstruct", response_model=ReconstructImagesResponse, responses=ERROR_RESPONSES)
async def reconstruct(request: ReconstructImagesRequest) -> Response:
    """Reconstruct images through an autoencoder (with a denoising one, this denoises) and flag anomalies."""
    meta, items, results = await _autoencode(current(), current().requested_by(request, TASK), request.images)
    assert meta.anomaly is not None
    out = []
    for item, r in zip(items, results, strict=True):
        error = float(((r.reconstruction - item.x) ** 2).sum())
        anomaly = meta.anomaly_answer(error, item.oddness, item.x)
        reason = flag_reason(anomaly, error > meta.anomaly.threshold, item.oddness, item.odd_reason, item.x)
        if reason is not None:
            child(ANOMALIES, meta.name, reason).inc()
        out.append(
            Reconstruction(
                reconstruction=png_b64(r.reconstruction), error=error, anomaly=reason is not None, anomaly_reason=reason
            )
        )
    return json_response(
        ReconstructImagesResponse(model=meta.name, version=meta.version, threshold=meta.anomaly.threshold, results=out)
    )


@router.post("/encode", response_model=EncodeImagesResponse, responses=ERROR_RESPONSES)
async def encode(request: EncodeImagesRequest) -> Response:
    """An autoencoder's code for each image (its compressed representation)."""
    meta, _, results = await _autoencode(current(), current().requested_by(request, TASK), request.images)
    codes = [[float(v) for v in r.code] for r in results]
    return json_response(EncodeImagesResponse(model=meta.name, version=meta.version, codes=codes))


async def _v2_autoencode(engine: Engine, meta: ModelMetadata, t: Tensors) -> Tensors:
    x = t[meta.inputs[0].name]
    key = served_key(meta)
    results = await engine.call(TASK, [ImageItem(model=key, x=row) for row in x], meta.name)
    return {
        "code": np.stack([r.code for r in results]),
        "reconstruction": np.stack([r.reconstruction for r in results]),
    }


register(
    Task(
        name=TASK,
        family=AutoencoderModels,
        methods=("infer",),
        max_batch=lambda s: s.max_batch_size,
        max_rows=lambda s: s.max_images,
        router=router,
        v2=Adapter(graph_inputs, graph_outputs, _v2_autoencode),
    )
)
