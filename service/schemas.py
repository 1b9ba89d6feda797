"""Typed request/response models of the /v1 API (pydantic, with Field limits).

The limits on images, texts, characters and samples per request are the service's settings (NNSERVE_MAX_*,
service/settings.py), so the OpenAPI document states the limits the server enforces.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from contract.metadata import (
    AnomalyThreshold,
    Calibration,
    GeneratorInfo,
    ImagePreprocessing,
    OutOfDistribution,
    TensorSpec,
    TextPreprocessing,
)
from service.settings import get_settings

S = get_settings()

MODEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
ANSWERED_BY = "the model that answered"
VERSION = "that model's version (its artifact's)"


class ImagesInput(BaseModel):
    """What every image endpoint takes: a model name and 1 to NNSERVE_MAX_IMAGES encoded images."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str
    images: list[str] = Field(
        min_length=1,
        max_length=S.max_images,
        description=f"1-{S.max_images} base64-encoded PNG or JPEG images (data: URLs accepted), each at most "
        f"{S.max_image_bytes:,} bytes, {S.max_image_pixels:,} pixels and {S.max_image_side:,} pixels a side",
    )


class ClassifyImagesRequest(ImagesInput):
    model: str = Field("mnist-cnn", pattern=MODEL_NAME, description="a served image-classification model")
    top_k: StrictInt = Field(3, ge=1, le=100, description="alternatives per image, capped at the number of labels")
    include_input: bool = Field(
        False, description="also return what the model saw: the prepared input image (base64 PNG) per prediction"
    )


OOD_SCORE = Field(
    description="how unlike the training data the input is, higher is less alike (the model card's ood.method); "
    "null for a model without an out-of-distribution calibration"
)
OOD_FLAG = Field(description="ood_score is above the model's threshold (ood.threshold in its card)")


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
    input: str | None = Field(None, description="with include_input: the prepared input the model saw (base64 PNG)")


class ClassifyImagesResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model: str = Field(description=ANSWERED_BY)
    version: str = Field(description=VERSION)
    predictions: list[Prediction] = Field(description="one per input image, in input order")


class BatchingInfo(BaseModel):
    mode: Literal["api", "services"] = Field(description="where batching runs (NNSERVE_BATCHING)")
    max_batch_size: int
    max_latency_ms: int | None = Field(description="'services' mode: BentoML's batching latency budget")


class ModelCard(BaseModel):
    """GET /v1/models/{name}: the artifact's metadata plus its runtime state."""

    model_config = ConfigDict(protected_namespaces=())

    name: str = Field(description="the name requests use")
    version: str = Field(description="the artifact's version")
    task: str = Field(description="image-classification, text-classification, autoencoder or generator")
    architecture: str = Field(description="the registered architecture it was trained as")
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
    error: str | None = Field(None, description="why the model is not ready (skip_bad_artifacts), naming the file")


class ListModelsResponse(BaseModel):
    models: list[ModelCard] = Field(description="one card per served model")
    unavailable: dict[str, str] = Field(
        default_factory=dict, description="artifact folders left out at start-up (skip_bad_artifacts) -> why"
    )


class AnalyzeSentimentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = Field("sst2-lstm", pattern=MODEL_NAME, description="a served text-classification model")
    texts: list[Annotated[str, Field(max_length=S.max_text_chars)]] = Field(
        min_length=1,
        max_length=S.max_texts,
        description=f"1-{S.max_texts} texts of at most {S.max_text_chars:,} characters each",
    )


class SentimentPrediction(BaseModel):
    label: str = Field(description="the most probable class")
    score: float = Field(ge=0, le=1, description="calibrated probability of the predicted label")
    probs: dict[str, float] = Field(description="calibrated probability of every label")
    tokens: int = Field(ge=1, description="tokens in the text (the model's tokenizer)")
    tokens_read: int = Field(ge=1, description="tokens the model read: all of them, or its first max_len")
    truncated: bool = Field(description="the text had more than the model's max_len tokens: tokens_read < tokens")
    ood_score: float | None = OOD_SCORE
    out_of_distribution: bool = OOD_FLAG


class AnalyzeSentimentResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model: str = Field(description=ANSWERED_BY)
    version: str = Field(description=VERSION)
    predictions: list[SentimentPrediction] = Field(description="one per input text, in input order")


class ReconstructImagesRequest(ImagesInput):
    model: str = Field("mnist-ae", pattern=MODEL_NAME, description="a served autoencoder")


class Reconstruction(BaseModel):
    reconstruction: str = Field(description="base64 PNG in the model's pixel convention (MNIST: white on black)")
    error: float = Field(ge=0, description="squared error summed over pixels in [0, 1]")
    anomaly: bool = Field(description="error is above the model's calibrated threshold")


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


SEED: Any = Field(
    None, ge=0, le=2**63 - 1, description="seeds numpy's default_rng for z; omitted: the server draws one and echoes it"
)
LABEL = Field(
    None,
    description="conditional models only: a class index or label name. /v1/generate without it cycles "
    "through the classes (sample i gets class i mod K)",
)
Format = Literal["png", "grid"]
FORMAT_DOC = "'png': one base64 PNG per image; 'grid': a single base64 PNG of them all"


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = Field("mnist-gan", pattern=MODEL_NAME, description="a served generator")
    n: StrictInt = Field(min(16, S.max_samples), ge=1, le=S.max_samples, description="samples to draw")
    seed: StrictInt | None = SEED
    label: StrictInt | str | None = LABEL
    format: Format = Field("png", description=FORMAT_DOC)


class GenerateResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model: str = Field(description=ANSWERED_BY)
    version: str = Field(description=VERSION)
    seed: int = Field(description="the seed used: the same request with it gives the same images")
    labels: list[str] | None = Field(description="conditional models: each sample's class, in order")
    samples: list[str] = Field(description="base64 PNGs in the model's pixel convention; empty for 'grid'")
    grid: str | None = Field(description="format 'grid': one base64 PNG, samples row by row")


class InterpolateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = Field("mnist-vae", pattern=MODEL_NAME, description="a served generator")
    steps: StrictInt = Field(
        min(8, max(2, S.max_samples)), ge=2, le=max(2, S.max_samples), description="frames, both end points included"
    )
    seed_a: StrictInt | None = SEED
    seed_b: StrictInt | None = SEED
    images: list[str] | None = Field(
        None,
        min_length=2,
        max_length=2,
        description="VAE only, instead of seeds: two base64 PNG/JPEG images whose posterior means are the ends",
    )
    label: StrictInt | str | None = Field(None, description="conditional models: the class of every frame")
    method: Literal["slerp", "linear"] = Field(
        "slerp", description="spherical (keeps Gaussian samples at a typical norm; White 2016) or straight"
    )
    format: Format = Field("png", description=FORMAT_DOC)


class InterpolateResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model: str = Field(description=ANSWERED_BY)
    version: str = Field(description=VERSION)
    seed_a: int | None = Field(description="z of end a is the first sample /v1/generate draws with this seed")
    seed_b: int | None = Field(description="likewise for end b; null when the ends were images")
    label: str | None = Field(description="conditional models: the class of every frame")
    frames: list[str] = Field(description="base64 PNGs from end a to end b; empty for 'grid'")
    grid: str | None = Field(description="format 'grid': one base64 PNG of the frames in one row")
