"""KServe's own Python SDK clients (kserve.InferenceRESTClient and InferenceGRPCClient, protocol v2) against a
real nnserve: health, metadata and inference, with answers equal to tritonclient's."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import tritonclient.http as th
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig

from tests.conftest import png_bytes
from tests.test_oip_http import CNN, LSTM, metadata, preprocessed

pytestmark = [pytest.mark.server, pytest.mark.slow]


def _tritonclient_logits(tc, model: str, name: str, value: np.ndarray, datatype: str) -> np.ndarray:
    t = th.InferInput(name, list(value.shape), datatype)
    t.set_data_from_numpy(value)
    return tc.infer(model, [t]).as_numpy("logits")


def test_kserve_rest_and_grpc_clients(server, tc, artifact_root, digits):
    x = preprocessed(metadata(artifact_root, CNN), [png_bytes(np.asarray(a[0])) for a in digits.images[:3]])
    texts = np.array([b"the film is wonderful", b"THE ENDING IS AWFUL."], dtype=object)

    def request(model: str, name: str, value: np.ndarray, datatype: str, rid: str) -> InferRequest:
        t = InferInput(name=name, shape=list(value.shape), datatype=datatype)
        t.set_data_from_numpy(value, binary_data=False)
        return InferRequest(model_name=model, infer_inputs=[t], request_id=rid)

    async def both() -> dict[str, dict[str, np.ndarray]]:
        rest = InferenceRESTClient(config=RESTConfig(protocol="v2", timeout=30))
        grpc_client = InferenceGRPCClient(url=server.grpc_url, timeout=30)
        out: dict[str, dict[str, np.ndarray]] = {"rest": {}, "grpc": {}}
        assert await rest.is_server_ready(server.url) and await rest.is_model_ready(server.url, CNN)
        for model, name, value, datatype in ((CNN, "input", x, "FP32"), (LSTM, "text", texts, "BYTES")):
            r = await rest.infer(server.url, request(model, name, value, datatype, f"rest-{model}"), model_name=model)
            assert r.model_name == model and r.id == f"rest-{model}"
            out["rest"][model] = r.outputs[0].as_numpy()
            g = await grpc_client.infer(request(model, name, value, datatype, f"grpc-{model}"))
            assert g.model_name == model and g.id == f"grpc-{model}"
            out["grpc"][model] = g.outputs[0].as_numpy()
        await rest.close()
        await grpc_client.close()
        return out

    answers = asyncio.run(both())
    for side in ("rest", "grpc"):
        np.testing.assert_array_equal(answers[side][CNN], _tritonclient_logits(tc, CNN, "input", x, "FP32"))
        np.testing.assert_array_equal(answers[side][LSTM], _tritonclient_logits(tc, LSTM, "text", texts, "BYTES"))
