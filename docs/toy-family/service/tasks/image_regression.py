"""Image regression, the toy family of docs/ARCHITECTURE.md: base64 images in JSON (/v1/regress) -> one number
each; on /v2, the graph's own tensors. Its family, RegressionModels, runs float32 (B, C, H, W) -> value (B,)."""

from __future__ import annotations

import bentoml
import numpy as np
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from contract.metadata import ModelMetadata
from service.engine import Engine, current
from service.family import (
    SERVICE_CONFIG,
    Family,
    ImageItem,
    group_by_model,
    in_input_order,
)
from service.oip_tensors import graph_inputs, graph_outputs
from service.registry import Adapter, Task, Tensors, register
from service.runtime import served_key
from service.schemas import ANSWERED_BY, ERROR_RESPONSES, MODEL_NAME, VERSION, ImagesInput, json_response
from service.settings import get_settings

S = get_settings()
TASK = "image-regression"


class RegressImagesRequest(ImagesInput):
    model: str = Field(pattern=MODEL_NAME, description="a served image-regression model")


class RegressImagesResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model: str = Field(description=ANSWERED_BY)
    version: str = Field(description=VERSION)
    values: list[float] = Field(description="one per input image, in input order")


class ValueResult(BaseModel):
    value: float


@bentoml.service(name="nnserve-image-regression", **SERVICE_CONFIG)
class RegressionModels(Family):
    """Image regressors: float32 (B, C, H, W) -> value (B,)."""

    task = TASK

    @bentoml.api(batchable=True, batch_dim=0, max_batch_size=S.max_batch_size, max_latency_ms=S.max_latency_ms)
    def infer(self, items: list[ImageItem]) -> list[ValueResult]:
        chunks = []
        for name, rows in group_by_model([it.model for it in items]).items():
            values = self.models[name].run(np.stack([items[i].x for i in rows]))
            chunks.append((rows, [ValueResult(value=float(v)) for v in values]))
        return in_input_order(len(items), chunks)


router = APIRouter()


@router.post("/regress", response_model=RegressImagesResponse, responses=ERROR_RESPONSES)
async def regress(request: RegressImagesRequest) -> Response:
    """One number per image (an image-regression model's output)."""
    engine = current()
    meta, items = await engine.image_rows(request.model, TASK, request.images)
    results = await engine.call(TASK, items, request.model)
    values = [r.value for r in results]
    return json_response(RegressImagesResponse(model=request.model, version=meta.version, values=values))


async def _v2_regress(engine: Engine, meta: ModelMetadata, t: Tensors) -> Tensors:
    key = served_key(meta)
    rows = [ImageItem(model=key, x=row) for row in t[meta.inputs[0].name]]
    results = await engine.call(TASK, rows, meta.name)
    return {"value": np.asarray([r.value for r in results], dtype=np.float32)}


register(
    Task(
        name=TASK,
        family=RegressionModels,
        methods=("infer",),
        max_batch=lambda s: s.max_batch_size,
        max_rows=lambda s: s.max_images,
        router=router,
        v2=Adapter(graph_inputs, graph_outputs, _v2_regress),
    )
)
