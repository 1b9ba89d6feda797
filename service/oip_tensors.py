"""Tensors of the Open Inference Protocol: a request's inputs (JSON data, flat or nested, or Triton's binary
tensor data) decoded to numpy under the model's tensor schema, and outputs encoded back (JSON, binary, or
Triton's classification extension). The helpers for the tensors tasks share (a graph's own, a classifier's with
its out-of-distribution score) are here too; each task's Adapter (service/registry.py) picks from them."""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
from starlette.responses import Response

from contract.metadata import ModelMetadata, TensorSpec
from contract.reasons import OodReason, beyond, image_reason
from service.errors import ApiError, quoted
from service.oip_schemas import (
    InferenceRequest,
    InferenceResponse,
    RequestInput,
    RequestOutput,
    ResponseOutput,
    Scalar,
    TensorMetadata,
)
from service.registry import Adapter, Tensors
from service.request_id import REQUEST_ID

DATATYPE = {"float32": "FP32", "int64": "INT64", "bool": "BOOL"}  # model.json and numpy dtypes -> the protocol's
# a classifier's out-of-distribution score, flag and reason: outputs on request (``Adapter.on_request``)
OOD_OUTPUTS = ("ood_score", "out_of_distribution", "ood_reason")
NUMPY: dict[str, np.dtype[Any]] = {"FP32": np.dtype("<f4"), "INT64": np.dtype("<i8")}
# narrower integers a client may send for an INT64 input (tritonclient's numpy arrays are often int32): every
# value fits, so they are widened rather than refused
WIDENS: dict[str, dict[str, np.dtype[Any]]] = {
    "INT64": {t: np.dtype(d) for t, d in (("INT8", "i1"), ("INT16", "<i2"), ("INT32", "<i4"), ("UINT8", "u1"),
                                          ("UINT16", "<u2"), ("UINT32", "<u4"))}
}  # fmt: skip


def tensor_metadata(specs: list[TensorSpec]) -> list[TensorMetadata]:
    return [TensorMetadata(name=s.name, datatype=DATATYPE[s.dtype], shape=list(s.shape)) for s in specs]


def graph_inputs(meta: ModelMetadata) -> list[TensorMetadata]:
    return tensor_metadata(meta.inputs)


def graph_outputs(meta: ModelMetadata) -> list[TensorMetadata]:
    return tensor_metadata(meta.outputs)


def classifier_outputs(meta: ModelMetadata) -> list[TensorMetadata]:
    """logits, and for a model with an out-of-distribution calibration its score, flag and reason (on request)."""
    out = [TensorMetadata(name=meta.outputs[0].name, datatype="FP32", shape=list(meta.outputs[0].shape))]
    if meta.ood is not None:
        score, flag, reason = OOD_OUTPUTS
        out += [
            TensorMetadata(name=score, datatype="FP32", shape=[-1]),
            TensorMetadata(name=flag, datatype="BOOL", shape=[-1]),
            TensorMetadata(name=reason, datatype="BYTES", shape=[-1]),
        ]
    return out


def with_ood(
    meta: ModelMetadata,
    logits: np.ndarray,
    scores: list[float | None],
    reasons: Sequence[OodReason | None],
    empty: Sequence[bool],
) -> Tensors:
    """A classifier's outputs: its logits, and where it is calibrated for it, the out-of-distribution score, flag
    (a reason to flag the row: ``reasons``, contract/reasons.py, as /v1 answers them) and reason (empty where the
    row is not flagged) of each row. A row that carries no evidence (``empty``: nothing written in an image row,
    one value; no word the model knows in a text) is answered as on /v1: its logits are 0, so that softmax at any
    temperature is 1/K for every label (what the graph makes of an empty field or a row of <unk> is not an answer
    about the input); such a row always has a reason."""
    blank = np.asarray(empty, dtype=bool)
    if blank.any():
        logits = logits.copy()
        logits[blank] = 0.0
    out = {meta.outputs[0].name: logits}
    if meta.ood is not None:
        values = np.asarray([np.nan if s is None else s for s in scores], dtype=np.float32)
        flags = np.asarray([r is not None for r in reasons], dtype=bool)
        why = np.asarray([(r or "").encode() for r in reasons], dtype=object)
        out |= dict(zip(OOD_OUTPUTS, (values, flags, why), strict=True))
    return out


def image_reasons(meta: ModelMetadata, fields: np.ndarray, scores: list[float | None]) -> list[OodReason | None]:
    """Why each of an image classifier's input rows is flagged (contract.reasons.image_reason): no front door reads
    a tensor, so nothing written (one value in each channel) or the model's own score."""
    return [image_reason(beyond(meta.ood, s), None, "", f) for f, s in zip(fields, scores, strict=True)]


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


def _flatten(data: list[Any], name: str, count: int) -> tuple[list[Any], set[type]]:
    """Nested or flat row-major data -> one flat list (the protocol allows both) of exactly ``count`` values, and
    the types of its values. Flat data, what clients send, is taken as it is: its values' types are gathered by
    ``map`` in C, where a Python loop over 784 pixels cost a tenth of a /v2 request's Python time."""
    types = set(map(type, data))
    if list not in types:
        flat = data
    else:
        flat = []
        lengths: dict[int, int] = {}  # each depth's list length, from the first list met there

        def walk(items: list[Any], depth: int) -> None:
            if depth > 8:
                raise ApiError("invalid_request", f"input {name!r}: data nested too deeply")
            lists = sum(isinstance(v, list) for v in items)
            if lengths.setdefault(depth, len(items)) != len(items) or 0 < lists < len(items):  # [[1, 2], [[3], 4]]
                raise ApiError("invalid_request", f"input {name!r}: nested data must be regular (as a tensor is)")
            for v in items:
                if isinstance(v, list):
                    walk(v, depth + 1)
                elif len(flat) == count:
                    raise ApiError("invalid_request", f"input {name!r}: more than the shape's {count} values")
                else:
                    flat.append(v)

        walk(data, 0)
        types = set(map(type, flat))
    if len(flat) > count:
        raise ApiError("invalid_request", f"input {name!r}: more than the shape's {count} values")
    if len(flat) != count:
        raise ApiError("invalid_request", f"input {name!r}: the shape needs {count} values, got {len(flat)}")
    return flat, types


def check_shape(name: str, shape: list[int], want: list[int], max_rows: int) -> None:
    """A request tensor's shape against the model's (-1: any size there), with 1 to ``max_rows`` rows."""
    if len(shape) != len(want) or any(w not in (-1, d) for w, d in zip(want, shape, strict=True)):
        raise ApiError("invalid_request", f"input {name!r} has shape {shape}; the model takes {list(want)}")
    if not 1 <= shape[0] <= max_rows or any(d < 0 for d in shape):
        raise ApiError("invalid_request", f"input {name!r}: 1-{max_rows} rows per request, not {shape[0]}")


def decode_input(inp: RequestInput, spec: TensorMetadata, binary: bytes | None, max_rows: int) -> np.ndarray:
    """One request tensor -> a numpy array of the declared dtype and shape, or a 400 saying what is wrong."""
    want = spec.datatype
    if inp.datatype != want and inp.datatype not in WIDENS.get(want, {}):
        raise ApiError("invalid_request", f"input {inp.name!r} is {want}, not {inp.datatype}")
    shape = list(inp.shape)
    check_shape(inp.name, shape, spec.shape, max_rows)
    count = math.prod(shape)
    if want == "BYTES":
        if binary is not None:
            items = _bytes_elements(binary, inp.name, count)
        else:
            flat, types = _flatten(inp.data or [], inp.name, count)
            if not types <= {str}:
                raise ApiError("invalid_request", f"input {inp.name!r}: BYTES data must be strings")
            items = [v.encode("utf-8") for v in flat]
        if len(items) != count:
            raise ApiError("invalid_request", f"input {inp.name!r}: shape {shape} needs {count} elements")
        arr = np.empty(count, dtype=object)
        arr[:] = items
        return arr.reshape(shape)
    dtype, sent = NUMPY[want], inp.datatype
    given = WIDENS[want][sent] if sent != want else dtype  # the values as sent, widened below
    if binary is not None:
        if len(binary) != count * given.itemsize:
            raise ApiError("invalid_request", f"input {inp.name!r}: {len(binary)} bytes for shape {shape} {sent}")
        arr = np.frombuffer(binary, dtype=given)
    else:
        flat, types = _flatten(inp.data or [], inp.name, count)
        if not types <= ({int, float} if want == "FP32" else {int}):  # JSON's own types: a bool is no number here
            kind = "numbers" if want == "FP32" else "integers"
            raise ApiError("invalid_request", f"input {inp.name!r}: {sent} data must be {kind}")
        try:
            with np.errstate(over="ignore"):  # 1e308 as FP32 is inf, refused below: not numpy's loose warning
                arr = np.asarray(flat, dtype=given)
        except OverflowError:
            raise ApiError("invalid_request", f"input {inp.name!r}: a value is out of {sent}'s range") from None
    if want == "FP32" and not np.isfinite(arr).all():
        if binary is None and np.isfinite(np.asarray(flat, dtype=np.float64)).all():  # 1e300: a number, too large
            raise ApiError("invalid_request", f"input {inp.name!r}: a value is out of {sent}'s range")
        raise ApiError("invalid_request", f"input {inp.name!r}: values must be finite")
    return arr.reshape(shape).astype(dtype.newbyteorder("="), copy=True)


def bytes_payload(values: list[bytes]) -> bytes:
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


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    if not re.fullmatch(r"[0-9]{1,12}", header_length) or int(header_length) > len(body):
        raise ApiError(
            "invalid_request", f"Inference-Header-Content-Length {quoted(header_length, 32)!r} does not fit the body"
        )
    n = int(header_length)
    return body[:n], body[n:]


def decode_inputs(req: InferenceRequest, specs: list[TensorMetadata], binary: bytes, max_rows: int) -> Tensors:
    by_name = {s.name: s for s in specs}
    given = [i.name for i in req.inputs]
    if sorted(given) != sorted(by_name):
        raise ApiError("invalid_request", f"the model takes inputs {sorted(by_name)}, not {given}")
    tensors: Tensors = {}
    offset = 0
    for inp in req.inputs:
        size = (inp.parameters or {}).get("binary_data_size")
        raw = None
        if size is not None and inp.data is not None:  # Triton refuses it too: which would the model get?
            raise ApiError("invalid_request", f"input {inp.name!r} has both data and binary_data_size")
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


def select_outputs(
    req: InferenceRequest, meta: ModelMetadata, adapter: Adapter, outputs: Tensors
) -> list[tuple[RequestOutput, np.ndarray, str]]:
    """The outputs a request asked for (the graph's own when it names none), each with its value (the top k as
    strings under the classification extension) and its datatype."""
    requested = req.outputs or [RequestOutput(name=n) for n in outputs if n not in adapter.on_request]
    names = [o.name for o in requested]
    if len(set(names)) != len(names):
        raise ApiError("invalid_request", f"an output is requested more than once: {names}")
    selected = []
    for out in requested:
        if out.name not in outputs:
            raise ApiError("invalid_request", f"the model has outputs {list(outputs)}, not {out.name!r}")
        value = outputs[out.name]
        k = (out.parameters or {}).get("classification")
        if k is not None:
            if not adapter.classifies or out.name != meta.outputs[0].name:
                raise ApiError("invalid_request", f"output {out.name!r} does not support classification")
            if isinstance(k, float) and k.is_integer():  # the protocol's $number (gRPC: a double_param)
                k = int(k)
            if not isinstance(k, int) or isinstance(k, bool) or k < 1:
                raise ApiError("invalid_request", "classification takes a positive integer")
            if not np.isfinite(value).all():  # the top k of NaN is no ranking
                raise ApiError("invalid_request", f"output {out.name!r} is not finite for this input: no top k of it")
            value = classification(value, meta.labels, k)
        selected.append((out, value, "BYTES" if value.dtype == object else DATATYPE[str(value.dtype)]))
    return selected


def raw_bytes(value: np.ndarray, datatype: str) -> bytes:
    """An output's bytes under the binary tensor data extension (and gRPC's raw_output_contents)."""
    if datatype == "BYTES":
        return bytes_payload(list(value.ravel()))
    return value.astype(value.dtype.newbyteorder("<")).tobytes()


def response_id(req: InferenceRequest) -> str | None:
    """The request's own id, else the request id (X-Request-ID): KServe's InferenceResponse requires one."""
    return req.id if req.id is not None else REQUEST_ID.get()


def encode_response(req: InferenceRequest, meta: ModelMetadata, adapter: Adapter, outputs: Tensors) -> Response:
    binary_default = _flag(req.parameters, "binary_data_output")
    body: list[ResponseOutput] = []
    blobs: list[bytes] = []
    for out, value, datatype in select_outputs(req, meta, adapter, outputs):
        params = out.parameters or {}
        binary = params["binary_data"] is True if "binary_data" in params else binary_default
        if binary:
            raw = raw_bytes(value, datatype)
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
    header = InferenceResponse(model_name=meta.name, model_version=meta.version, id=response_id(req), outputs=body)
    text = header.model_dump_json(exclude_none=True).encode()
    if not blobs:
        return Response(text, media_type="application/json")
    return Response(
        text + b"".join(blobs),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(text))},
    )
