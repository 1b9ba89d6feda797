"""The Open Inference Protocol v2 (KServe / Triton REST), mounted at /v2 beside the /v1 API.

    GET  /v2                                   server metadata (name, version, extensions)
    GET  /v2/health/live | /v2/health/ready    liveness; readiness = every served model ready (OIP)
    GET  /v2/models/{name}[/versions/{v}]      model metadata: platform, input and output tensors
    GET  /v2/models/{name}[/versions/{v}]/ready
    POST /v2/models/{name}[/versions/{v}]/infer

Requests run through the same families, batchers and limits as /v1 (``NNServe._call``). A model's v2
tensors are its ONNX graph's, as its model.json records them, with one exception: a text classifier takes
its texts (``text``, BYTES) and nnserve tokenises them with the artifact's vocabulary, as /v1 does, because a
client has no way to obtain the vocabulary the ``ids`` would need. Each task's tensors and its run live in
one entry of ``ADAPTERS``.

Supported extensions (Triton's, which ``tritonclient`` uses by default): binary tensor data (inputs and
outputs after the JSON header, its length in ``Inference-Header-Content-Length``) and classification
(``"parameters": {"classification": k}`` on a classifier's output: the top k as ``"value:index:label"``).
Errors are ``{"error": "<message>"}`` with 400, 404, 413, 429 or 503 (the protocol's shape, not /v1's
envelope); 429 and 503 carry Retry-After.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import bentoml
import numpy as np
from fastapi import FastAPI, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from contract.metadata import ModelMetadata, TensorSpec
from service import __version__
from service.errors import ApiError, validation_details
from service.middleware import ERROR_CODE_HEADER
from service.model_services import ImageItem

if TYPE_CHECKING:
    from service.service import NNServe

PLATFORM = "onnxruntime_onnx"
EXTENSIONS = ["binary_tensor_data", "classification"]
HEADER_LENGTH = "inference-header-content-length"
DATATYPE = {"float32": "FP32", "int64": "INT64", "bool": "BOOL"}  # model.json and numpy dtypes -> the protocol's
# outputs a client gets only by asking for them (a request without "outputs" gets the graph's own)
OOD_OUTPUTS = ("ood_score", "out_of_distribution")
NUMPY: dict[str, np.dtype[Any]] = {"FP32": np.dtype("<f4"), "INT64": np.dtype("<i8")}


# ---- protocol documents -----------------------------------------------------------------------------


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
    id: str | None = Field(None, max_length=256)
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


# ---- the tensors of each task, and how it runs ------------------------------------------------------


Tensors = dict[str, np.ndarray]


@dataclass(frozen=True)
class Adapter:
    """One task's v2 face: its tensors (from the model's metadata) and its run through the family."""

    inputs: Callable[[ModelMetadata], list[TensorMetadata]]
    outputs: Callable[[ModelMetadata], list[TensorMetadata]]
    run: Callable[[NNServe, ModelMetadata, Tensors], Awaitable[Tensors]]
    classifies: bool = False  # its first output is logits over meta.labels (the classification extension)


def tensor_metadata(specs: list[TensorSpec]) -> list[TensorMetadata]:
    return [TensorMetadata(name=s.name, datatype=DATATYPE[s.dtype], shape=list(s.shape)) for s in specs]


def _graph_inputs(meta: ModelMetadata) -> list[TensorMetadata]:
    return tensor_metadata(meta.inputs)


def _graph_outputs(meta: ModelMetadata) -> list[TensorMetadata]:
    return tensor_metadata(meta.outputs)


def _text_inputs(meta: ModelMetadata) -> list[TensorMetadata]:
    return [TensorMetadata(name="text", datatype="BYTES", shape=[-1])]


def _classifier_outputs(meta: ModelMetadata) -> list[TensorMetadata]:
    """logits, and for a model with an out-of-distribution calibration its score and flag (on request)."""
    out = [TensorMetadata(name=meta.outputs[0].name, datatype="FP32", shape=list(meta.outputs[0].shape))]
    if meta.ood is not None:
        out += [
            TensorMetadata(name="ood_score", datatype="FP32", shape=[-1]),
            TensorMetadata(name="out_of_distribution", datatype="BOOL", shape=[-1]),
        ]
    return out


def _with_ood(meta: ModelMetadata, logits: np.ndarray, scores: list[float | None]) -> Tensors:
    out = {meta.outputs[0].name: logits}
    if meta.ood is not None:
        values = np.asarray([np.nan if s is None else s for s in scores], dtype=np.float32)
        out |= {"ood_score": values, "out_of_distribution": values > meta.ood.threshold}
    return out


async def _classify(svc: NNServe, meta: ModelMetadata, t: Tensors) -> Tensors:
    x = t[meta.inputs[0].name]
    results = await svc._call("image-classification", [ImageItem(model=meta.name, x=row) for row in x], meta.name)
    return _with_ood(meta, np.stack([r.logits for r in results]), [r.ood_score for r in results])


async def _sentiment(svc: NNServe, meta: ModelMetadata, t: Tensors) -> Tensors:
    texts = [_utf8(b, i) for i, b in enumerate(t["text"])]
    items, encoded = svc.text_rows(meta.name, texts)
    results = await svc._call("text-classification", items, meta.name)
    return _with_ood(meta, np.stack([r.logits for r in results]), [unknown for _, _, unknown in encoded])


async def _autoencode(svc: NNServe, meta: ModelMetadata, t: Tensors) -> Tensors:
    x = t[meta.inputs[0].name]
    results = await svc._call("autoencoder", [ImageItem(model=meta.name, x=row) for row in x], meta.name)
    return {
        "code": np.stack([r.code for r in results]),
        "reconstruction": np.stack([r.reconstruction for r in results]),
    }


async def _generate(svc: NNServe, meta: ModelMetadata, t: Tensors) -> Tensors:
    assert meta.generator is not None
    z = t[meta.inputs[0].name]
    labels = [0] * len(z)
    if meta.generator.conditional:
        labels = [int(v) for v in t[meta.inputs[1].name]]
        bad = [v for v in labels if not 0 <= v < len(meta.labels)]
        if bad:
            raise ApiError("invalid_label", f"label {bad[0]} is not a class index 0-{len(meta.labels) - 1}")
    return {meta.outputs[0].name: await svc._decode(meta, z, labels)}


ADAPTERS: dict[str, Adapter] = {
    "image-classification": Adapter(_graph_inputs, _classifier_outputs, _classify, classifies=True),
    "text-classification": Adapter(_text_inputs, _classifier_outputs, _sentiment, classifies=True),
    "autoencoder": Adapter(_graph_inputs, _graph_outputs, _autoencode),
    "generator": Adapter(_graph_inputs, _graph_outputs, _generate),
}


# ---- decoding and encoding tensors ------------------------------------------------------------------


def _utf8(b: bytes, i: int) -> str:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError("invalid_request", f"text[{i}] is not valid UTF-8") from None


def _bytes_elements(raw: bytes, name: str, count: int) -> list[bytes]:
    """Triton's BYTES serialisation: each element a 4-byte little-endian length, then its bytes (at most
    ``count`` of them: the shape's, checked as they are read, so a body of tiny elements costs nothing)."""
    out: list[bytes] = []
    i = 0
    while i < len(raw):
        if len(out) == count:
            raise ApiError("invalid_request", f"input {name!r}: more than the shape's {count} elements")
        if i + 4 > len(raw):
            raise ApiError("invalid_request", f"input {name!r}: truncated BYTES element")
        (n,) = struct.unpack_from("<I", raw, i)
        if i + 4 + n > len(raw):
            raise ApiError("invalid_request", f"input {name!r}: truncated BYTES element")
        out.append(raw[i + 4 : i + 4 + n])
        i += 4 + n
    return out


def _flatten(data: list[Any], name: str, count: int) -> list[Any]:
    """Nested or flat row-major data -> one flat list (the protocol allows both) of exactly ``count`` values."""
    flat: list[Any] = []

    def walk(items: list[Any], depth: int) -> None:
        if depth > 8:
            raise ApiError("invalid_request", f"input {name!r}: data nested too deeply")
        for v in items:
            if isinstance(v, list):
                walk(v, depth + 1)
            elif len(flat) == count:
                raise ApiError("invalid_request", f"input {name!r}: more than the shape's {count} values")
            else:
                flat.append(v)

    walk(data, 0)
    if len(flat) != count:
        raise ApiError("invalid_request", f"input {name!r}: the shape needs {count} values, got {len(flat)}")
    return flat


def decode_input(inp: RequestInput, spec: TensorMetadata, binary: bytes | None, max_rows: int) -> np.ndarray:
    """One request tensor -> a numpy array of the declared dtype and shape, or a 400 saying what is wrong."""
    want = spec.datatype
    if inp.datatype != want:
        raise ApiError("invalid_request", f"input {inp.name!r} is {want}, not {inp.datatype}")
    shape = list(inp.shape)
    if len(shape) != len(spec.shape) or any(d not in (-1, s) for d, s in zip(spec.shape, shape, strict=True)):
        raise ApiError("invalid_request", f"input {inp.name!r} has shape {shape}; the model takes {list(spec.shape)}")
    if not 1 <= shape[0] <= max_rows:
        raise ApiError("invalid_request", f"input {inp.name!r}: 1-{max_rows} rows per request, not {shape[0]}")
    count = math.prod(shape)
    if want == "BYTES":
        if binary is not None:
            items = _bytes_elements(binary, inp.name, count)
        else:
            flat = _flatten(inp.data or [], inp.name, count)
            if not all(isinstance(v, str) for v in flat):
                raise ApiError("invalid_request", f"input {inp.name!r}: BYTES data must be strings")
            items = [v.encode("utf-8") for v in flat]
        if len(items) != count:
            raise ApiError("invalid_request", f"input {inp.name!r}: shape {shape} needs {count} elements")
        arr = np.empty(count, dtype=object)
        arr[:] = items
        return arr.reshape(shape)
    dtype = NUMPY[want]
    if binary is not None:
        if len(binary) != count * dtype.itemsize:
            raise ApiError("invalid_request", f"input {inp.name!r}: {len(binary)} bytes for shape {shape} {want}")
        arr = np.frombuffer(binary, dtype=dtype)
    else:
        flat = _flatten(inp.data or [], inp.name, count)
        ok = (int, float) if want == "FP32" else (int,)
        if not all(isinstance(v, ok) and not isinstance(v, bool) for v in flat):
            raise ApiError("invalid_request", f"input {inp.name!r}: {want} data must be numbers")
        try:
            arr = np.asarray(flat, dtype=dtype)
        except OverflowError:
            raise ApiError("invalid_request", f"input {inp.name!r}: a value is out of {want}'s range") from None
    if want == "FP32" and not np.isfinite(arr).all():
        raise ApiError("invalid_request", f"input {inp.name!r}: values must be finite")
    return arr.reshape(shape).astype(dtype.newbyteorder("="), copy=True)


def _bytes_payload(values: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def classification(logits: np.ndarray, labels: list[str], k: int) -> np.ndarray:
    """Triton's classification extension: the top k of each row as "value:index:label" (BYTES, (B, k))."""
    k = min(k, logits.shape[1])
    order = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    rows = [[f"{row[j]:f}:{j}:{labels[j]}".encode() for j in idx] for row, idx in zip(logits, order, strict=True)]
    arr = np.empty((len(rows), k), dtype=object)
    arr[:] = rows
    return arr


def _flag(params: dict[str, Scalar] | None, key: str) -> bool:
    return bool(params and params.get(key) is True)


# ---- the app ----------------------------------------------------------------------------------------


def _error(status: int, message: str, code: str | None = None, retry_after: int | None = None) -> Response:
    """The protocol's error body; the error's code travels to AdmissionMiddleware (which counts it in
    nnserve_errors_total like /v1's) in a header it removes."""
    headers = {ERROR_CODE_HEADER: code} if code else {}
    if status in (429, 503):
        headers["retry-after"] = str(retry_after or 1)
    return Response(
        OipError(error=message).model_dump_json(), status_code=status, media_type="application/json", headers=headers
    )


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return _error(exc.status, exc.message, exc.code, exc.retry_after)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error(exc.status_code, str(exc.detail))


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError | ValidationError)
    message, _ = validation_details(list(exc.errors()))
    return _error(400, f"invalid request: {message}", "invalid_request")


v2_app = FastAPI(
    title="nnserve /v2 (Open Inference Protocol)",
    docs_url=None,
    redoc_url=None,
    openapi_url=None,
    exception_handlers={
        ApiError: _api_error,
        HTTPException: _http_error,
        RequestValidationError: _validation_error,
        ValidationError: _validation_error,
    },
)
_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": OipError} for code in (400, 404, 413, 429, 503)}
Name = Annotated[str, PathParam(max_length=64)]
Version = Annotated[str, PathParam(max_length=64)]


def _svc() -> NNServe:
    return bentoml.get_current_service()


def _json(model: BaseModel, status: int = 200) -> Response:
    return Response(model.model_dump_json(exclude_none=True), status_code=status, media_type="application/json")


def _model(name: str, version: str | None) -> ModelMetadata:
    """The served model named in the URL (404 for an unknown name or version, 503 when not ready)."""
    meta = _svc().metadata(name)  # 404 for an unknown name, 503 for an artifact that failed to load
    if version is not None and version != meta.version:
        raise ApiError("model_not_found", f"model {name!r} has no version {version!r} (served: {meta.version})")
    return meta


@v2_app.get("/", response_model=ServerMetadata)
async def server_metadata() -> Response:
    """Server metadata (``GET /v2``)."""
    return _json(ServerMetadata(name="nnserve", version=__version__, extensions=EXTENSIONS))


@v2_app.get("/health/live", response_model=Live)
async def live() -> Response:
    """200 while the server can answer metadata and inference requests."""
    return _json(Live(live=True))


@v2_app.get("/health/ready", response_model=Ready, responses={503: {"model": Ready}})
async def ready() -> Response:
    """200 when every served model is ready; 503 while one is not, or while the server drains on SIGTERM
    (use /readyz as a load balancer's probe: it stays 200 while models left out by
    NNSERVE_SKIP_BAD_ARTIFACTS are reported not ready)."""
    svc = _svc()
    ok = not svc.failed and not svc.draining
    return _json(Ready(ready=ok), 200 if ok else 503)


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema with its ``$defs`` substituted in place (the OpenAPI document has no components
    for models that only a hand-written request body uses)."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return resolve(schema)


_INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _inline(InferenceRequest.model_json_schema())},
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary"},
                "description": "binary tensor data extension: the JSON request (its length in the "
                "Inference-Header-Content-Length header) followed by the inputs' raw bytes",
            },
        },
    }
}
_INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    200: {
        "description": "the outputs: JSON, or with binary outputs requested the JSON header (its length in "
        "Inference-Header-Content-Length) followed by the outputs' raw bytes",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    },
}


async def _metadata(name: str, version: str | None) -> Response:
    meta = _model(name, version)
    adapter = ADAPTERS[meta.task]
    return _json(
        ModelMetadataResponse(
            name=meta.name,
            versions=[meta.version],
            platform=PLATFORM,
            inputs=adapter.inputs(meta),
            outputs=adapter.outputs(meta),
        )
    )


async def _ready(name: str, version: str | None) -> Response:
    _model(name, version)
    return _json(ModelReady(name=name, ready=True))


async def _infer(request: Request, name: str, version: str | None) -> Response:
    meta = _model(name, version)
    body = await request.body()
    header, binary = _split_body(body, request.headers.get(HEADER_LENGTH))
    try:
        req = InferenceRequest.model_validate_json(header)
    except ValidationError as e:
        message, _ = validation_details(list(e.errors()))
        raise ApiError("invalid_request", f"invalid inference request: {message}") from None
    svc = _svc()
    adapter = ADAPTERS[meta.task]
    tensors = _decode_inputs(req, adapter.inputs(meta), binary, svc.max_rows(meta.task))
    outputs = await adapter.run(svc, meta, tensors)
    return _encode_response(req, meta, adapter, outputs)


@v2_app.get("/models/{name}", response_model=ModelMetadataResponse, responses=_ERRORS)
async def model_metadata(name: Name) -> Response:
    """A model's metadata: versions, platform, and its input and output tensors."""
    return await _metadata(name, None)


@v2_app.get("/models/{name}/versions/{version}", response_model=ModelMetadataResponse, responses=_ERRORS)
async def model_version_metadata(name: Name, version: Version) -> Response:
    """A model version's metadata (404 for a version not served)."""
    return await _metadata(name, version)


@v2_app.get("/models/{name}/ready", response_model=ModelReady, responses=_ERRORS)
async def model_ready(name: Name) -> Response:
    """200 when the model is ready for inference; 503 when its artifact failed to load."""
    return await _ready(name, None)


@v2_app.get("/models/{name}/versions/{version}/ready", response_model=ModelReady, responses=_ERRORS)
async def model_version_ready(name: Name, version: Version) -> Response:
    """200 when this version of the model is ready for inference."""
    return await _ready(name, version)


@v2_app.post(
    "/models/{name}/infer", response_model=InferenceResponse, responses=_INFER_RESPONSES, openapi_extra=_INFER_BODY
)
async def infer(request: Request, name: Name) -> Response:
    """Inference on JSON tensors (or binary tensor data), batched with /v1 requests for the same model."""
    return await _infer(request, name, None)


@v2_app.post(
    "/models/{name}/versions/{version}/infer",
    response_model=InferenceResponse,
    responses=_INFER_RESPONSES,
    openapi_extra=_INFER_BODY,
)
async def infer_version(request: Request, name: Name, version: Version) -> Response:
    """Inference on a given version of the model."""
    return await _infer(request, name, version)


def _split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    if not re.fullmatch(r"[0-9]{1,12}", header_length) or int(header_length) > len(body):
        raise ApiError("invalid_request", f"Inference-Header-Content-Length {header_length!r} does not fit the body")
    n = int(header_length)
    return body[:n], body[n:]


def _decode_inputs(req: InferenceRequest, specs: list[TensorMetadata], binary: bytes, max_rows: int) -> Tensors:
    by_name = {s.name: s for s in specs}
    given = [i.name for i in req.inputs]
    if sorted(given) != sorted(by_name):
        raise ApiError("invalid_request", f"the model takes inputs {sorted(by_name)}, not {given}")
    tensors: Tensors = {}
    offset = 0
    for inp in req.inputs:
        size = (inp.parameters or {}).get("binary_data_size")
        raw = None
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
                raise ApiError(
                    "invalid_request", f"input {inp.name!r}: binary_data_size {size!r} does not fit the body"
                )
            raw, offset = binary[offset : offset + size], offset + size
        elif inp.data is None:
            raise ApiError("invalid_request", f"input {inp.name!r} has neither data nor binary_data_size")
        tensors[inp.name] = decode_input(inp, by_name[inp.name], raw, max_rows)
    if offset != len(binary):
        raise ApiError("invalid_request", f"{len(binary) - offset} bytes after the last binary input")
    rows = {len(t) for t in tensors.values()}
    if len(rows) > 1:
        raise ApiError("invalid_request", f"inputs disagree on the batch size: {sorted(rows)}")
    return tensors


def _encode_response(req: InferenceRequest, meta: ModelMetadata, adapter: Adapter, outputs: Tensors) -> Response:
    requested = req.outputs or [RequestOutput(name=n) for n in outputs if n not in OOD_OUTPUTS]
    names = [o.name for o in requested]
    if len(set(names)) != len(names):
        raise ApiError("invalid_request", f"an output is requested more than once: {names}")
    binary_default = _flag(req.parameters, "binary_data_output")
    body: list[ResponseOutput] = []
    blobs: list[bytes] = []
    for out in requested:
        if out.name not in outputs:
            raise ApiError("invalid_request", f"the model has outputs {list(outputs)}, not {out.name!r}")
        value = outputs[out.name]
        k = (out.parameters or {}).get("classification")
        if k is not None:
            if not adapter.classifies or out.name != meta.outputs[0].name:
                raise ApiError("invalid_request", f"output {out.name!r} does not support classification")
            if not isinstance(k, int) or isinstance(k, bool) or k < 1:
                raise ApiError("invalid_request", "classification takes a positive integer")
            value = classification(value, meta.labels, k)
        datatype = "BYTES" if value.dtype == object else DATATYPE[str(value.dtype)]
        params = out.parameters or {}
        binary = params["binary_data"] is True if "binary_data" in params else binary_default
        if binary:
            raw = (
                _bytes_payload(list(value.ravel()))
                if datatype == "BYTES"
                else value.astype(value.dtype.newbyteorder("<")).tobytes()
            )
            blobs.append(raw)
            body.append(
                ResponseOutput(
                    name=out.name, shape=list(value.shape), datatype=datatype, parameters={"binary_data_size": len(raw)}
                )
            )
        else:
            if datatype == "FP32" and not np.isfinite(value).all():  # JSON has no inf or NaN
                raise ApiError(
                    "invalid_request",
                    f"output {out.name!r} is not finite for this input; request it as binary data to receive it",
                )
            data = [v.decode() for v in value.ravel()] if datatype == "BYTES" else value.ravel().tolist()
            body.append(ResponseOutput(name=out.name, shape=list(value.shape), datatype=datatype, data=data))
    header = InferenceResponse(model_name=meta.name, model_version=meta.version, id=req.id, outputs=body)
    text = header.model_dump_json(exclude_none=True).encode()
    if not blobs:
        return Response(text, media_type="application/json")
    return Response(
        text + b"".join(blobs),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(text))},
    )
