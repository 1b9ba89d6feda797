"""The Open Inference Protocol's documents (KServe / Triton REST v2), as pydantic models with bounds on every
list and string a client sends."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field

from service.settings import get_settings


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


class RequestInput(BaseModel):
    name: str = Field(max_length=256)
    shape: list[Annotated[int, Field(ge=0)]] = Field(max_length=8)
    datatype: str = Field(max_length=16)
    parameters: dict[str, Scalar] | None = None
    data: list[Any] | None = Field(None, description="row-major, flat or nested; absent with binary data")


class RequestOutput(BaseModel):
    name: str = Field(max_length=256)
    parameters: dict[str, Scalar] | None = None


class InferenceRequest(BaseModel):
    id: str | None = Field(None, max_length=get_settings().max_inference_id_chars)
    parameters: dict[str, Scalar] | None = None
    inputs: list[RequestInput] = Field(min_length=1, max_length=16)
    outputs: list[RequestOutput] | None = Field(None, max_length=16)


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
