"""A gRPC request's counts read off its bytes before protobuf parses them (service/oip_wire.py): the requests
clients send pass, the ones whose parsed form would cost many times their size are refused, and a real server
refuses them without the memory (a helper's audit, 2026-12-07: 19 MiB of empty inputs parsed into 893 MiB)."""

from __future__ import annotations

import re

import grpc
import numpy as np
import psutil
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from service.oip_wire import MAX_WALKED, Malformed, refusal
from tests.server import Server


def _length(n: int) -> bytes:
    out = b""
    while True:
        low, n = n & 0x7F, n >> 7
        out += bytes([low | (0x80 if n else 0)])
        if not n:
            return out


def _field(key: int, payload: bytes) -> bytes:
    return bytes([key]) + _length(len(payload)) + payload


def _infer(**inputs: object) -> service_pb2.ModelInferRequest:
    req = service_pb2.ModelInferRequest(model_name="m")
    req.outputs.add(name="probs")
    req.parameters["priority"].int64_param = 1
    for name, (datatype, shape, field, values) in inputs.items():
        t = req.inputs.add(name=name, datatype=datatype, shape=shape)
        getattr(t.contents, field).extend(values)
    return req


def test_the_requests_clients_send_pass():
    raw = _infer()
    raw.inputs.add(name="input", datatype="FP32", shape=[64, 1, 28, 28])
    raw.raw_input_contents.append(np.zeros((64, 1, 28, 28), "<f4").tobytes())
    for req in [
        raw,
        _infer(input=("FP32", [64, 784], "fp32_contents", np.zeros(64 * 784))),
        _infer(ids=("INT64", [64, 400], "int64_contents", np.arange(64 * 400) * 100_000)),  # 3-byte varints
        _infer(text=("BYTES", [64], "bytes_contents", [b"a fine film"] * 64)),
    ]:
        assert refusal(req.SerializeToString(), "ModelInfer", 64 * 784) is None


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x2a\x00" * 100_000, "1-16 inputs and at most 16 outputs per request"),  # empty inputs
        (b"\x32\x00" * 100_000, "1-16 inputs and at most 16 outputs per request"),  # empty outputs
        (b"\x3a\x00" * 17, "at most 16 raw_input_contents"),
        (b"\x22\x00" * 100_000, "at most 64 parameters per map"),
        (_field(0x2A, b"\x22\x00" * 65), "at most 64 parameters per map"),  # an input's
        (_field(0x32, b"\x12\x00" * 65), "at most 64 parameters per map"),  # an output's
        (b"\x0a\x00" * 100_000, "a message of the request holds more than 256 fields"),  # model_name again and again
        (_field(0x2A, b"\x18\x01" * 257), "holds more than 256 fields"),  # shape, a field a dimension
        (_field(0x2A, _field(0x1A, b"\x01" * 257)), "an input has more than 256 dimensions"),  # shape, packed
        (_field(0x2A, _field(0x2A, b"\x42\x00" * (MAX_WALKED + 1))), "more than 4096 values sent one field each"),
        (_field(0x2A, _field(0x2A, b"\x35\x00\x00\x80\x3f" * (MAX_WALKED + 1))), "numbers not packed"),
        (_field(0x2A, _field(0x2A, _field(0x1A, b"\x01" * 1001))), "typed contents hold more than 1000 values"),
        (_field(0x2A, _field(0x2A, _field(0x32, b"\x00" * 4004))), "typed contents hold more than 1000 values"),
    ],
)
def test_counts_past_the_protocols_bounds_are_refused_from_the_bytes(data, reason):
    assert reason in (refusal(data, "ModelInfer", 1000) or "")


def test_a_request_of_another_method_is_held_to_256_fields_and_bytes_of_no_message_are_malformed():
    load = service_pb2.RepositoryModelLoadRequest(model_name="m")
    assert refusal(load.SerializeToString(), "RepositoryModelLoad", 1000) is None
    assert "more than 256 fields" in (refusal(b"\x1a\x00" * 257, "RepositoryModelLoad", 1000) or "")
    for data in [b"\x2a\x10abc", b"\x0b\x0c", b"\x08" + b"\xff" * 11]:  # cut short, a group, a varint past 64 bits
        with pytest.raises(Malformed):
            refusal(data, "ModelInfer", 1000)


@pytest.mark.server
@pytest.mark.slow
def test_a_server_refuses_them_without_parsing_them(artifact_root, tmp_path):
    """Four 40 MiB requests of empty inputs, empty strings, parameters and a field sent again and again: before,
    one worker's memory rose by gigabytes while protobuf parsed them on its event loop; now each is refused with
    its reason, and the worker's peak memory rises by about the messages themselves."""
    srv = Server(artifact_root, tmp_path / "serve.log", NNSERVE_API_WORKERS="1").start()
    try:
        worker = next(p for p in psutil.Process(srv.proc.pid).children(recursive=True) if "--worker-id" in p.cmdline())

        def peak_mib() -> int:
            return int(re.search(r"VmHWM:\s+(\d+)", open(f"/proc/{worker.pid}/status").read())[1]) >> 10  # type: ignore[index]

        with grpc.insecure_channel(srv.grpc_url, [("grpc.max_send_message_length", -1)]) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            infer = channel.unary_unary(
                "/inference.GRPCInferenceService/ModelInfer", lambda b: b, service_pb2.ModelInferResponse.FromString
            )
            assert stub.ServerLive(service_pb2.ServerLiveRequest()).live
            before = peak_mib()
            n = 20 << 20  # 2-byte fields: 40 MiB each, under the 64 MiB a message may hold
            empty_strings = _field(0x2A, _field(0x2A, b"\x42\x00" * n))  # an input's contents
            for data in [b"\x2a\x00" * n, empty_strings, b"\x22\x00" * n, b"\x0a\x00" * n]:
                with pytest.raises(grpc.RpcError) as e:
                    infer(data, timeout=60)
                assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value
            grown = peak_mib() - before
        assert grown < 400, grown  # before: 893 MiB from 19 MiB of empty inputs
        assert "Traceback" not in srv.log_path.read_text()
    finally:
        srv.stop()
