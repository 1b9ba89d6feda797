"""Typed models the /v1 API shares across tasks (pydantic, with Field limits): the image input, the model card,
the error responses. Each task's own request and response models live in its module of service/tasks/.

The limits on images, texts, characters and samples per request are the service's settings (NNSERVE_MAX_*,
service/settings.py), so the OpenAPI document states the limits the server enforces.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from contract.metadata import (
    MODEL_NAME,  # noqa: F401  (the routes' pattern, which model.json's names follow)
    VERSION_PATTERN,
    AnomalyThreshold,
    Calibration,
    ConfigValue,
    Evaluation,
    GeneratorInfo,
    ImagePreprocessing,
    OutOfDistribution,
    TensorSpec,
    TextPreprocessing,
    TrainingValue,
)
from contract.reasons import REASONS
from service.errors import ErrorResponse
from service.settings import get_settings

S = get_settings()

ANSWERED_BY = "the model that answered"
VERSION = "that model's version (its artifact's)"


VERSION_CHOICE = "one of the model's served versions (its card's 'versions'); absent: the newest served"
# the optional version every /v1 request body takes
VersionChoice = Annotated[str | None, Field(pattern=VERSION_PATTERN, description=VERSION_CHOICE)]


def at_version(model: str, version: str | None) -> str:
    """A request's model and optional version as the Engine's ``metadata`` reads them (``name@version``)."""
    return model if version is None else f"{model}@{version}"


class ImagesInput(BaseModel):
    """What every image endpoint takes: a model name and 1 to NNSERVE_MAX_IMAGES encoded images."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str
    version: VersionChoice = None
    images: list[str] = Field(
        min_length=1,
        max_length=S.max_images,
        description=f"1-{S.max_images} base64-encoded PNG, JPEG or WebP images (data: URLs accepted), each at most "
        f"{S.max_image_bytes:,} bytes, {S.max_image_pixels:,} pixels and {S.max_image_side:,} pixels a side",
    )


OOD_SCORE = Field(
    description="how unlike the training data the input is, higher is less alike (the model card's ood.method; "
    "for a photo, at least the front door's judgement of the page, scaled so that its limit is the threshold); "
    "null for a model without an out-of-distribution calibration"
)
OOD_REASON = Field(
    None,
    description="why the input is flagged, null when it is not: "
    + "; ".join(f"{reason}: {meaning}" for reason, meaning in REASONS.items()),
)
OOD_FLAG = Field(
    description="ood_score is above the model's threshold (ood.threshold in its card) or not a number (an input "
    "of extreme values); for an image, also when nothing is found written on it (a blank or uniform page) or the "
    "photo is unlike any of the model's kind (a scene behind the object, strokes scattered over a whole scene), "
    "whether the model is calibrated or not; for a text, also when it holds no word of meaning (punctuation, "
    "function words)"
)


class BatchingInfo(BaseModel):
    mode: Literal["api", "services"] = Field(description="where batching runs (NNSERVE_BATCHING)")
    max_batch_size: int
    max_latency_ms: int | None = Field(description="'services' mode: BentoML's batching latency budget")


class ModelCard(BaseModel):
    """GET /v1/models/{name}: the artifact's metadata plus its runtime state."""

    model_config = ConfigDict(protected_namespaces=())

    name: str = Field(description="the name requests use")
    version: str = Field(description="the version this card describes: the default one, the newest served")
    versions: list[str] = Field(
        default_factory=list,
        description="every version served (the version policy), oldest first; requests pick "
        "one with 'version' (/v1) or /versions/{v} (/v2)",
    )
    task: str = Field(description="the task it is served as, e.g. image-classification (one module of service/tasks/)")
    architecture: str = Field(description="the registered architecture it was trained as")
    architecture_config: dict[str, ConfigValue] = Field(
        default_factory=dict, description="the architecture's configuration (layer sizes, units, ...)"
    )
    parameters: int | None = Field(None, description="parameters, learnt or fixed (null: not recorded by its export)")
    training: dict[str, TrainingValue] = Field(
        default_factory=dict, description="the training recipe: epochs, batch size, optimiser, schedule, augmentation"
    )
    labels: list[str] = Field(description="class names, in index order")
    preprocessing: ImagePreprocessing | TextPreprocessing = Field(description="how inputs become its tensors")
    inputs: list[TensorSpec] = Field(description="the ONNX graph's inputs")
    outputs: list[TensorSpec] = Field(description="the ONNX graph's outputs")
    opset: int = Field(description="ONNX opset")
    metrics: dict[str, float] = Field(description="figures measured on its validation split at export")
    class_metrics: dict[str, float] = Field(description="classifiers: validation accuracy per class")
    dataset: str = Field(description="the dataset it was trained on")
    created: str = Field(description="export time, ISO 8601")
    onnx_sha256: str = Field(description="sha256 of model.onnx, checked at load")
    source_commit: str = Field(description="the git commit of the code that exported it")
    ready: bool = Field(description="loaded and warmed up")
    providers: list[str] = Field(description="onnxruntime execution providers")
    batching: BatchingInfo
    anomaly: AnomalyThreshold | None = Field(None, description="autoencoders: the anomaly threshold")
    generator: GeneratorInfo | None = Field(None, description="generators: latent size, conditioning, encoder")
    calibration: Calibration | None = Field(None, description="classifiers: the temperature and its ECE figures")
    ood: OutOfDistribution | None = Field(None, description="classifiers: the out-of-distribution method and figures")
    evaluation: Evaluation | None = Field(
        None, description="generators, autoencoders: figures measured on the exported graph (export.evaluate --record)"
    )
    error: str | None = Field(None, description="why the model is not ready (skip_bad_artifacts), naming the file")
    figures: list[str] = Field(
        default_factory=list,
        description="the PNG figures its artifact folder held when this version was loaded, by name: curves.png (the "
        "training curves), and e.g. samples.png, centres.png, patterns.png; each at "
        "GET /v1/models/{name}/figures/{figure}",
    )


class ListModelsResponse(BaseModel):
    models: list[ModelCard] = Field(description="one card per served model")
    unavailable: dict[str, str] = Field(
        default_factory=dict, description="artifact folders left out at start-up (skip_bad_artifacts) -> why"
    )


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 404, 413, 415, 429, 503, 504)
}


def json_response(model: BaseModel) -> Response:
    return Response(model.model_dump_json(), media_type="application/json")
