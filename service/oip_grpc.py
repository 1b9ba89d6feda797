"""The Open Inference Protocol over gRPC: ``inference.GRPCInferenceService`` on ``NNSERVE_GRPC_PORT`` (8001; 0
turns it off), served by grpcio's asyncio server inside each API worker, on the worker's own event loop.

The messages and the service stubs are Triton's, generated from the protocol's .proto files and shipped in the
maintained ``tritonclient[grpc]`` package (``tritonclient.grpc.service_pb2``); nothing here writes a message
by hand. Every call goes the way an HTTP request does: the API key (``authorization: Bearer <key>`` or
``x-api-key`` in the call's metadata, except for ServerLive and ServerReady, the probes), a request id
(``x-request-id`` in, the same in the response's initial metadata), a slot of the worker's concurrency limit
(RESOURCE_EXHAUSTED when none is free), the request timeout (DEADLINE_EXCEEDED), the message size limit
(``NNSERVE_MAX_BODY_BYTES``), the /v2 request's bounds and decoding (service/oip_tensors.py), the same Engine,
batchers and statistics, and the errors metric (``nnserve_errors_total`` with the gRPC method as endpoint).

ModelInfer takes ``raw_input_contents`` or typed ``contents`` and answers with ``raw_output_contents`` (as
Triton does). Every API worker binds the port with SO_REUSEPORT (grpcio's default on Linux), so the kernel
spreads connections over the workers as it does for HTTP; the serving process first checks that no other
process listens there and holds a lock of the port's for its lifetime (service/grpc_port.py), so that two
servers, even started at the same moment, never share one port by accident.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from grpc import aio
from pydantic import ValidationError
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

from service import __version__, middleware
from service.auth import key_matches
from service.deadlines import deadline
from service.engine import Engine
from service.errors import ApiError, quoted, validation_details
from service.grpc_port import http_host
from service.metrics import ERRORS, GRPC_REQUESTS, GRPC_SECONDS, child
from service.oip import EXTENSIONS, model_of, run_request, svc_versions
from service.oip_extensions import PLATFORM, model_config, statistics
from service.oip_schemas import MAX_RANK, MAX_TENSORS, InferenceRequest
from service.oip_tensors import bytes_payload, check_shape, raw_bytes, response_id, select_outputs
from service.oip_wire import MALFORMED, Malformed, Refused, refusal
from service.registry import TASKS
from service.request_id import ARRIVED, REQUEST_ID, request_id_for
from service.settings import Settings, get_settings
from service.transport import Throttled

log = logging.getLogger("bentoml.nnserve")
CALL_GONE = "ExecuteBatchError raised in core by servicer method"  # grpcio's (grpc/_cython/_cygrpc/aio)
S = get_settings()
SERVICE = "inference.GRPCInferenceService"
PROBES = frozenset({"ServerLive", "ServerReady"})  # open without the key, never refused for load

STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
# a typed ``contents`` field per datatype, and the little-endian dtype its values are sent as
CONTENTS: dict[str, tuple[str, str]] = {
    "FP32": ("fp32_contents", "<f4"), "FP64": ("fp64_contents", "<f8"), "BOOL": ("bool_contents", "?"),
    "INT8": ("int_contents", "i1"), "INT16": ("int_contents", "<i2"), "INT32": ("int_contents", "<i4"),
    "INT64": ("int64_contents", "<i8"), "UINT8": ("uint_contents", "u1"), "UINT16": ("uint_contents", "<u2"),
    "UINT32": ("uint_contents", "<u4"), "UINT64": ("uint64_contents", "<u8"),
}  # fmt: skip


def _param(p: service_pb2.InferParameter) -> Any:
    kind = p.WhichOneof("parameter_choice")
    return None if kind is None else getattr(p, kind)


def _params(params: Any) -> dict[str, Any] | None:
    return {k: _param(v) for k, v in params.items()} or None


def _typed_bytes(tensor: Any) -> bytes | None:
    """A tensor's typed ``contents`` -> the bytes binary tensor data would carry (None when it has none)."""
    if tensor.datatype == "BYTES":
        values = list(tensor.contents.bytes_contents)
        return bytes_payload(values) if values else None
    if tensor.datatype not in CONTENTS:
        raise ApiError(  # FP16, BF16: no typed contents field holds them; raw_input_contents does
            "invalid_request",
            f"input {tensor.name!r}: datatype {tensor.datatype!r} has no typed contents here (served: "
            f"{', '.join(sorted(CONTENTS))}, BYTES; or send raw_input_contents)",
        )
    field, dtype = CONTENTS[tensor.datatype]
    values = getattr(tensor.contents, field)
    if not values:
        return None
    try:
        return np.asarray(values, dtype=dtype).tobytes()
    except OverflowError:
        raise ApiError(
            "invalid_request", f"input {tensor.name!r}: a value is out of {tensor.datatype}'s range"
        ) from None


def _check_sizes(msg: service_pb2.ModelInferRequest, specs: dict[str, list[int]], max_rows: int) -> None:
    """Bounds checked on the message's counts before anything is converted (its counts of inputs, outputs,
    parameters, dimensions and values were read off its bytes before it was parsed: service/oip_wire.py): each
    input's shape the model's (fixed axes, 1 to max_rows rows), and typed contents of the datatype's kind and
    exactly the shape's element count."""
    if not msg.inputs:
        raise ApiError("invalid_request", f"1-{MAX_TENSORS} inputs and at most {MAX_TENSORS} outputs per request")
    for t in msg.inputs:
        want = specs.get(t.name)
        shape = list(t.shape)
        if want is None:
            raise ApiError("invalid_request", f"the model takes inputs {sorted(specs)}, not {quoted(t.name)!r}")
        if len(shape) > MAX_RANK:  # as HTTP's schema (a shape quoted whole stays short)
            raise ApiError("invalid_request", f"input {t.name!r} has {len(shape)} dimensions; at most {MAX_RANK}")
        check_shape(t.name, shape, want, max_rows)
        if t.datatype in CONTENTS or t.datatype == "BYTES":
            field = CONTENTS[t.datatype][0] if t.datatype in CONTENTS else "bytes_contents"
            stray = next((f.name for f, _ in t.contents.ListFields() if f.name != field), None)
            if stray is not None:  # was dropped unread (a gRPC audit's)
                raise ApiError("invalid_request", f"input {t.name!r} is {t.datatype}: values in {field}, not {stray}")
            given = len(getattr(t.contents, field))
            if given and given != math.prod(shape):
                raise ApiError("invalid_request", f"input {t.name!r}: {given} values for shape {shape}")


def to_request(msg: service_pb2.ModelInferRequest) -> tuple[InferenceRequest, bytes]:
    """A gRPC inference request (its sizes checked by ``_check_sizes``) -> the REST request it is (under the same
    bounds) and its binary tensor data."""
    raw = list(msg.raw_input_contents)
    if raw and len(raw) != len(msg.inputs):
        raise ApiError("invalid_request", f"{len(raw)} raw_input_contents for {len(msg.inputs)} inputs")
    for t in msg.inputs if raw else ():
        if t.contents.ListFields():  # Triton refuses it too: which would the model get?
            raise ApiError("invalid_request", f"input {t.name!r} has both contents and raw_input_contents")
    blobs = raw or [_typed_bytes(t) for t in msg.inputs]
    inputs = []
    for tensor, blob in zip(msg.inputs, blobs, strict=True):
        params = _params(tensor.parameters) or {}
        if blob is not None:
            params["binary_data_size"] = len(blob)
        inputs.append(
            {"name": tensor.name, "shape": list(tensor.shape), "datatype": tensor.datatype, "parameters": params}
        )
    outputs = [{"name": o.name, "parameters": _params(o.parameters)} for o in msg.outputs] or None
    body = {"id": msg.id or None, "parameters": _params(msg.parameters), "inputs": inputs, "outputs": outputs}
    try:
        req = InferenceRequest.model_validate(body)
    except ValidationError as e:
        message, _ = validation_details(list(e.errors()))
        raise ApiError("invalid_request", f"invalid inference request: {message}") from None
    return req, b"".join(b for b in blobs if b is not None)


class Servicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    """Each RPC of the protocol over the Engine, through ``_call``'s door (key, id, slot, timeout, errors)."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.key = settings.api_key.get_secret_value().encode() if settings.api_key is not None else None

    async def _call(self, method: str, context: aio.ServicerContext, work: Callable[[], Awaitable[Any]]) -> Any:
        arrived = time.perf_counter()
        ARRIVED.set(arrived)
        metadata = {k.lower(): v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        rid = request_id_for(
            [(b"x-request-id", metadata["x-request-id"].encode())] if "x-request-id" in metadata else []
        )
        REQUEST_ID.set(rid)
        try:
            await context.send_initial_metadata((("x-request-id", rid),))
        except Exception:  # the call ended before its first byte (cancelled, or its deadline passed): grpcio logged
            child(GRPC_REQUESTS, method, grpc.StatusCode.CANCELLED.name).inc()  # the failed send with a traceback,
            raise asyncio.CancelledError from None  # one per call a client could cancel; a cancel it logs at debug
        admission = middleware.ADMISSION
        slot = False
        code = grpc.StatusCode.OK
        try:
            if method not in PROBES:
                if self.key is not None and not key_matches(metadata, self.key):
                    raise ApiError("unauthorized", "missing or wrong API key: send authorization: Bearer <key>")
                if admission is not None:
                    if admission.full():
                        raise admission.too_many()
                    admission.in_flight += 1
                    slot = True
            async with deadline(self.settings.request_timeout_s):
                return await work()
        except TimeoutError:
            code = await self._abort(
                context, method, ApiError("timeout", f"no answer within {self.settings.request_timeout_s} s")
            )
        except ApiError as e:
            code = await self._abort(context, method, e)
        except asyncio.CancelledError:  # the client went away (or the deadline passed on its side)
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception:  # a bug: logged with its traceback, never sent to the client
            log.exception("gRPC %s failed", method)
            code = await self._abort(context, method, ApiError("internal_error", "internal error"))
        finally:
            if slot and admission is not None:
                admission.in_flight -= 1
            child(GRPC_REQUESTS, method, code.name).inc()
            child(GRPC_SECONDS, method).observe(time.perf_counter() - arrived)

    async def _abort(self, context: aio.ServicerContext, method: str, err: ApiError) -> grpc.StatusCode:
        code = STATUS.get(err.status, grpc.StatusCode.INTERNAL)
        child(ERRORS, f"/{SERVICE}/{method}", err.code).inc()
        context.set_code(code)
        context.set_details(err.message)
        return code

    async def ServerLive(self, request: Any, context: aio.ServicerContext) -> Any:
        return await self._call("ServerLive", context, self._live)

    async def _live(self) -> Any:
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: aio.ServicerContext) -> Any:
        async def ready() -> Any:
            return service_pb2.ServerReadyResponse(ready=not self.engine.failed and not self.engine.draining)

        return await self._call("ServerReady", context, ready)

    async def ServerMetadata(self, request: Any, context: aio.ServicerContext) -> Any:
        async def answer() -> Any:
            return service_pb2.ServerMetadataResponse(name="nnserve", version=__version__, extensions=EXTENSIONS)

        return await self._call("ServerMetadata", context, answer)

    async def ModelReady(self, request: Any, context: aio.ServicerContext) -> Any:
        async def answer() -> Any:  # as Triton: not ready (rather than an error) for a model it does not serve
            try:
                model_of(self.engine, request.name, request.version or None)
            except ApiError:
                return service_pb2.ModelReadyResponse(ready=False)
            return service_pb2.ModelReadyResponse(ready=True)

        return await self._call("ModelReady", context, answer)

    async def ModelMetadata(self, request: Any, context: aio.ServicerContext) -> Any:
        async def answer() -> Any:
            meta = model_of(self.engine, request.name, request.version or None)
            adapter = TASKS[meta.task].v2
            tensor = service_pb2.ModelMetadataResponse.TensorMetadata
            return service_pb2.ModelMetadataResponse(
                name=meta.name,
                versions=svc_versions(self.engine, meta),
                platform=PLATFORM,
                inputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in adapter.inputs(meta)],
                outputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in adapter.outputs(meta)],
            )

        return await self._call("ModelMetadata", context, answer)

    async def ModelConfig(self, request: Any, context: aio.ServicerContext) -> Any:
        async def answer() -> Any:
            meta = model_of(self.engine, request.name, request.version or None)
            config = model_config(meta, self.settings).model_dump(exclude_none=True)
            return service_pb2.ModelConfigResponse(config=json_format.ParseDict(config, model_config_pb2.ModelConfig()))

        return await self._call("ModelConfig", context, answer)

    async def ModelStatistics(self, request: Any, context: aio.ServicerContext) -> Any:
        async def answer() -> Any:
            catalog = self.engine.catalog
            if request.name:
                names = [model_of(self.engine, request.name, request.version or None).name]
            else:
                names = sorted(self.engine.working())
            stats = [s.model_dump() for s in statistics(catalog, names)]
            return json_format.ParseDict({"model_stats": stats}, service_pb2.ModelStatisticsResponse())

        return await self._call("ModelStatistics", context, answer)

    async def RepositoryIndex(self, request: Any, context: aio.ServicerContext) -> Any:
        async def answer() -> Any:
            entries = self.engine.repository.listing(request.ready)
            return service_pb2.RepositoryIndexResponse(
                models=[service_pb2.RepositoryIndexResponse.ModelIndex(**e) for e in entries]
            )

        return await self._call("RepositoryIndex", context, answer)

    async def RepositoryModelLoad(self, request: Any, context: aio.ServicerContext) -> Any:
        return await self._control("load", request, context, service_pb2.RepositoryModelLoadResponse())

    async def RepositoryModelUnload(self, request: Any, context: aio.ServicerContext) -> Any:
        return await self._control("unload", request, context, service_pb2.RepositoryModelUnloadResponse())

    async def _control(self, action: str, request: Any, context: aio.ServicerContext, done: Any) -> Any:
        async def answer() -> Any:
            await self.engine.repository.call(action, request.model_name, request.parameters)
            return done

        return await self._call(f"RepositoryModel{action.title()}", context, answer)

    async def ModelInfer(self, request: Any, context: aio.ServicerContext) -> Any:
        async def answer() -> Any:
            meta = model_of(self.engine, request.model_name, request.model_version or None)
            specs = {t.name: list(t.shape) for t in TASKS[meta.task].v2.inputs(meta)}
            _check_sizes(request, specs, self.engine.max_rows(meta.task))
            req, binary = to_request(request)
            outputs = await run_request(self.engine, meta, req, binary)
            response = service_pb2.ModelInferResponse(
                model_name=meta.name, model_version=meta.version, id=response_id(req) or ""
            )
            for out, value, datatype in select_outputs(req, meta, TASKS[meta.task].v2, outputs):
                response.outputs.add(name=out.name, datatype=datatype, shape=list(value.shape))
                response.raw_output_contents.append(raw_bytes(value, datatype))
            return response

        return await self._call("ModelInfer", context, answer)


class RefuseMalformed(aio.ServerInterceptor):
    """A call whose bytes are not a protobuf message of its method gets INVALID_ARGUMENT. grpcio would answer
    UNKNOWN, naming the parser's exception class, and log a traceback per call (a client could fill the log).
    So does one whose counts are past the protocol's bounds, read off its bytes before they are parsed
    (service/oip_wire.py: parsed, the smallest repeated elements cost up to 47 times their size)."""

    def __init__(self, max_values: int) -> None:
        self.max_values = max_values

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:  # a method no service here has: grpcio answers UNIMPLEMENTED, counted under one label
            unimplemented("other", "other")
            return handler
        if handler.unary_unary is None or handler.request_deserializer is None:
            return handler
        parse, behavior = handler.request_deserializer, handler.unary_unary
        method = details.method.rsplit("/", 1)[-1]

        def tolerant(data: bytes) -> Any:
            try:
                reason = refusal(data, method, self.max_values)
                return parse(data) if reason is None else Refused(reason)
            except (DecodeError, Malformed):
                return MALFORMED

        async def guarded(request: Any, context: aio.ServicerContext) -> Any:
            if isinstance(request, Refused):  # counted as _call counts its answers (an audit found these left out)
                child(ERRORS, details.method, "invalid_request").inc()
                child(GRPC_REQUESTS, method, grpc.StatusCode.INVALID_ARGUMENT.name).inc()
                child(GRPC_SECONDS, method).observe(0.0)
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(request))
            return await behavior(request, context)

        return handler._replace(request_deserializer=tolerant, unary_unary=guarded)


def unimplemented(method: str, endpoint: str) -> None:
    """Counts a call answered UNIMPLEMENTED as HTTP counts a 404 (a method name a client made up: "other")."""
    child(ERRORS, endpoint, "not_found").inc()
    child(GRPC_REQUESTS, method, grpc.StatusCode.UNIMPLEMENTED.name).inc()
    child(GRPC_SECONDS, method).observe(0.0)


def _unimplemented(name: str) -> Callable[..., Awaitable[Any]]:
    async def rpc(self: Servicer, request: Any, context: aio.ServicerContext) -> Any:
        unimplemented(name, f"/{SERVICE}/{name}")
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{name} is not supported by nnserve")

    return rpc


for _name in dir(service_pb2_grpc.GRPCInferenceServiceServicer):  # shared memory, streams, traces, logs, load
    if not _name.startswith("_") and _name not in Servicer.__dict__:
        setattr(Servicer, _name, _unimplemented(_name))


# ---- the listener --------------------------------------------------------------------------------------


class GrpcServer:
    """This worker's gRPC server: bound when the Engine is built (a taken port fails the start), started on the
    worker's loop, stopped ``drain_s`` after SIGTERM with the request timeout for calls in flight."""

    def __init__(self, engine: Engine, settings: Settings, loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self.loop = loop
        self.tasks: list[asyncio.Task[None]] = []  # held: the loop keeps only weak references to its tasks
        slots = max(1, settings.max_concurrency // settings.api_workers)
        self.server = aio.server(
            interceptors=[RefuseMalformed(settings.max_json_items)],
            # calls past the worker's slots (and a few for the probes) are refused before their message is held:
            # memory stays within (slots + 8) messages of NNSERVE_MAX_BODY_BYTES
            maximum_concurrent_rpcs=slots + 8,
            options=[
                ("grpc.max_receive_message_length", settings.max_body_bytes),
                ("grpc.max_send_message_length", -1),
                # the soft limit (grpcio refuses at random between it and the hard one) and the hard one alike
                ("grpc.max_metadata_size", settings.max_head_bytes),
                ("grpc.absolute_max_metadata_size", settings.max_head_bytes),
                ("grpc.so_reuseport", 1),
            ],
        )
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Servicer(engine, settings), self.server)
        # grpcio logs an ERROR and a traceback for each answer it cannot send to a call its client has cancelled
        # (grpcio's own "Concurrent RPC limit exceeded" to calls cancelled as they arrive: one a call, at will)
        grpc_log = logging.getLogger("grpc._cython.cygrpc")
        if not any(isinstance(f, Throttled) for f in grpc_log.filters):  # once a process
            grpc_log.addFilter(Throttled(CALL_GONE, warning=True))
        self.address = f"{settings.grpc_host or http_host()}:{settings.grpc_port}"
        self.server.add_insecure_port(self.address)  # raises when it cannot bind

    async def start(self) -> None:
        await self.server.start()
        log.info("gRPC (Open Inference Protocol) listening on %s", self.address)

    def stop_later(self) -> None:
        """From the SIGTERM handler: stop taking calls once the drain is over (thread-safe scheduling only)."""

        def stop() -> None:
            self.tasks.append(self.loop.create_task(self.server.stop(self.settings.request_timeout_s)))

        self.loop.call_soon_threadsafe(self.loop.call_later, self.settings.drain_s, stop)


def serve_grpc(engine: Engine) -> GrpcServer | None:
    """In an API worker (an event loop is running): the gRPC server over ``engine``; elsewhere, or with the port
    set to 0, nothing."""
    if S.grpc_port == 0:
        return None
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # built outside a server (a script or a test)
        return None
    server = GrpcServer(engine, S, loop)
    server.tasks.append(loop.create_task(server.start()))
    return server
