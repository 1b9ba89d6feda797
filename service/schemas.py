"""Typed request/response models of the /v1 API (pydantic, with Field limits)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from export.contract import AnomalyThreshold, ImagePreprocessing, TensorSpec, TextPreprocessing

MODEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class ImagesInput(BaseModel):
    """What every image endpoint takes: a model name and 1-64 encoded images."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str
    images: list[str] = Field(
        min_length=1, max_length=64, description="base64-encoded PNG or JPEG images (data: URLs accepted)"
    )


class ClassifyImagesRequest(ImagesInput):
    model: str = Field("mnist-cnn", pattern=MODEL_NAME, description="a served image-classification model")
    top_k: int = Field(3, ge=1, le=100, description="alternatives per image, capped at the number of labels")


class LabelScore(BaseModel):
    label: str
    score: float = Field(ge=0, le=1)


class Prediction(BaseModel):
    label: str
    index: int = Field(ge=0)
    score: float = Field(ge=0, le=1, description="softmax probability of the top label")
    top_k: list[LabelScore]


class ClassifyImagesResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model: str
    version: str
    predictions: list[Prediction] = Field(description="one per input image, in input order")


class BatchingInfo(BaseModel):
    max_batch_size: int
    max_latency_ms: int


class ModelCard(BaseModel):
    """GET /v1/models/{name}: the artifact's metadata plus its runtime state."""

    model_config = ConfigDict(protected_namespaces=())

    name: str
    version: str
    task: str
    architecture: str
    labels: list[str]
    preprocessing: ImagePreprocessing | TextPreprocessing
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    opset: int
    metrics: dict[str, float]
    class_metrics: dict[str, float]
    dataset: str
    created: str
    onnx_sha256: str
    source_commit: str
    ready: bool
    providers: list[str]
    batching: BatchingInfo
    anomaly: AnomalyThreshold | None = Field(None, description="autoencoders: the anomaly threshold")


class ListModelsResponse(BaseModel):
    models: list[ModelCard]


class AnalyzeSentimentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = Field("sst2-lstm", pattern=MODEL_NAME, description="a served text-classification model")
    texts: list[Annotated[str, Field(max_length=10_000)]] = Field(
        min_length=1, max_length=64, description="1-64 texts of at most 10,000 characters each"
    )


class SentimentPrediction(BaseModel):
    label: str
    score: float = Field(ge=0, le=1, description="probability of the predicted label")
    probs: dict[str, float] = Field(description="probability of every label")
    tokens: int = Field(ge=1, description="tokens the model read (after truncation)")
    truncated: bool = Field(description="the text was longer than the model's max_len tokens")


class AnalyzeSentimentResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model: str
    version: str
    predictions: list[SentimentPrediction] = Field(description="one per input text, in input order")


class ReconstructImagesRequest(ImagesInput):
    model: str = Field("mnist-ae", pattern=MODEL_NAME, description="a served autoencoder")


class Reconstruction(BaseModel):
    reconstruction: str = Field(description="base64 PNG in the model's pixel convention (MNIST: white on black)")
    error: float = Field(ge=0, description="squared error summed over pixels in [0, 1]")
    anomaly: bool = Field(description="error is above the model's calibrated threshold")


class ReconstructImagesResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model: str
    version: str
    threshold: float = Field(description="99th percentile of validation reconstruction errors")
    results: list[Reconstruction] = Field(description="one per input image, in input order")


class EncodeImagesRequest(ReconstructImagesRequest):
    """Same input as reconstruction."""


class EncodeImagesResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model: str
    version: str
    codes: list[list[float]] = Field(description="one code vector per input image, in input order")
