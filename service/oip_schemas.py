"""The Open Inference Protocol's documents (KServe / Triton REST v2), as pydantic models with bounds on every
list and string a client sends."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field

from service.settings import get_settings

MAX_RANK = 8  # dimensions of a request tensor (every model's inputs have at most 4)
MAX_TENSORS = 16  # inputs or outputs per request
MAX_PARAMETERS = 64  # entries of any parameters map


class OipError(BaseModel):
    error: str


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 marks a dynamic axis")


class ModelMetadataResponse(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


Scalar = float | int | str | bool


# a request's parameter maps (over gRPC too, service/oip_grpc.py): 64 entries, names of 256 characters
Parameters = Annotated[dict[Annotated[str, Field(max_length=256)], Scalar], Field(max_length=MAX_PARAMETERS)]


def _no_shared_memory(params: dict[str, Scalar]) -> dict[str, Scalar]:
    """A tensor's data in a shared-memory region is refused, not answered inline (where a client that asked for it
    would not look: a gRPC audit's): nnserve announces no shared-memory extension."""
    if any(key.startswith("shared_memory_") for key in params):
        raise ValueError("shared memory is not supported: send the tensor's data in the request")
    return params


TensorParameters = Annotated[Parameters, AfterValidator(_no_shared_memory)]


class RequestInput(BaseModel):
    name: str = Field(max_length=256)
    # strict: the protocol's $integer, so neither 1.0, "1" nor true
    shape: list[Annotated[int, Field(ge=0, strict=True)]] = Field(max_length=MAX_RANK)
    datatype: str = Field(max_length=16)
    parameters: TensorParameters | None = None
    data: list[Any] | None = Field(None, description="row-major, flat or nested; absent with binary data")


class RequestOutput(BaseModel):
    name: str = Field(max_length=256)
    parameters: TensorParameters | None = None


class InferenceRequest(BaseModel):
    id: str | None = Field(None, max_length=get_settings().max_inference_id_chars)
    parameters: Parameters | None = None
    inputs: list[RequestInput] = Field(min_length=1, max_length=MAX_TENSORS)
    outputs: list[RequestOutput] | None = Field(None, max_length=MAX_TENSORS)


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Scalar] | None = None
    data: list[Scalar] | None = None


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[ResponseOutput]


# ---- Triton's extensions: model configuration and statistics ---------------------------------------------


class ConfigTensor(BaseModel):
    name: str
    data_type: str = Field(description="Triton's type name: TYPE_FP32, TYPE_INT64, TYPE_STRING, TYPE_BOOL")
    dims: list[int] = Field(description="without the batch axis (max_batch_size > 0); -1 marks a dynamic axis")
    reshape: dict[str, list[int]] | None = Field(None, description="{'shape': []}: a tensor of one value per row")


class DynamicBatching(BaseModel):
    max_queue_delay_microseconds: int
    preferred_batch_size: list[int] = []


class InstanceGroup(BaseModel):
    name: str
    kind: str
    count: int


class ModelConfig(BaseModel):
    """Triton's model configuration (``GET /v2/models/{name}/config``): what the model takes and how it is
    batched."""

    name: str
    platform: str
    backend: str
    max_batch_size: int = Field(description="rows one request may carry")
    input: list[ConfigTensor]
    output: list[ConfigTensor]
    dynamic_batching: DynamicBatching
    instance_group: list[InstanceGroup]
    version_policy: dict[str, dict[str, Any]] = Field(description="Triton's shape of NNSERVE_VERSION_POLICY")
    parameters: dict[str, dict[str, str]] = Field(description="nnserve's batching settings, as string_value")


class StatisticDuration(BaseModel):
    count: int
    ns: int


class InferStatistics(BaseModel):
    success: StatisticDuration
    fail: StatisticDuration
    queue: StatisticDuration
    compute_input: StatisticDuration
    compute_infer: StatisticDuration
    compute_output: StatisticDuration
    cache_hit: StatisticDuration
    cache_miss: StatisticDuration


class InferBatchStatistics(BaseModel):
    batch_size: int
    compute_input: StatisticDuration
    compute_infer: StatisticDuration
    compute_output: StatisticDuration


class ModelStatistics(BaseModel):
    name: str
    version: str
    last_inference: int = Field(description="ms since the epoch; 0: never")
    inference_count: int = Field(description="rows run through the model's graphs")
    execution_count: int = Field(description="onnxruntime runs")
    inference_stats: InferStatistics
    batch_stats: list[InferBatchStatistics]


class ModelStatisticsResponse(BaseModel):
    model_stats: list[ModelStatistics]


# ---- Triton's repository extension ---------------------------------------------------------------------


class RepositoryIndexRequest(BaseModel):
    repository_name: str | None = Field(None, max_length=256)
    ready: bool | None = Field(None, description="true: only the versions ready for inference")


class RepositoryEntry(BaseModel):
    name: str
    version: str
    state: str = Field(description="READY or UNAVAILABLE")
    reason: str = Field(description="why a version is unavailable (unloaded, not in the version policy, failed)")


class ModelControlRequest(BaseModel):
    parameters: dict[str, Scalar] | None = Field(None, max_length=16)


class ModelControlResponse(BaseModel):
    pass
