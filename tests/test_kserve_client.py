"""KServe's own Python SDK clients (kserve.InferenceRESTClient and InferenceGRPCClient, protocol v2) against a
real nnserve: health, metadata and inference, with answers equal to tritonclient's.

The KServe side runs in a process of its own: kserve registers the protocol's messages under the same protobuf
names as tritonclient.grpc (package ``inference``), and one process cannot load both."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import tritonclient.http as th

from tests.conftest import png_bytes
from tests.test_oip_http import CNN, LSTM, metadata, preprocessed

pytestmark = [pytest.mark.server, pytest.mark.slow]

KSERVE_SIDE = """
import asyncio, sys
import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig

url, grpc_url, folder = sys.argv[1:4]
inputs = np.load(f"{folder}/inputs.npz", allow_pickle=True)

def request(model, name, value, datatype, rid):
    t = InferInput(name=name, shape=list(value.shape), datatype=datatype)
    t.set_data_from_numpy(value, binary_data=False)
    return InferRequest(model_name=model, infer_inputs=[t], request_id=rid)

async def main():
    rest = InferenceRESTClient(config=RESTConfig(protocol="v2", timeout=30))
    grpc_client = InferenceGRPCClient(url=grpc_url, timeout=30)
    assert await rest.is_server_ready(url) and await rest.is_model_ready(url, sys.argv[4])
    out = {}
    for model, name, datatype in ((sys.argv[4], "input", "FP32"), (sys.argv[5], "text", "BYTES")):
        value = inputs[name]
        r = await rest.infer(url, request(model, name, value, datatype, f"rest-{model}"), model_name=model)
        assert r.model_name == model and r.id == f"rest-{model}", (r.model_name, r.id)
        out[f"rest-{model}"] = r.outputs[0].as_numpy()
        g = await grpc_client.infer(request(model, name, value, datatype, f"grpc-{model}"))
        assert g.model_name == model and g.id == f"grpc-{model}", (g.model_name, g.id)
        out[f"grpc-{model}"] = g.outputs[0].as_numpy()
    await rest.close()
    await grpc_client.close()
    np.savez(f"{folder}/outputs.npz", **out)

asyncio.run(main())
"""


def _tritonclient_logits(tc, model: str, name: str, value: np.ndarray, datatype: str) -> np.ndarray:
    t = th.InferInput(name, list(value.shape), datatype)
    t.set_data_from_numpy(value)
    return tc.infer(model, [t]).as_numpy("logits")


def test_kserve_rest_and_grpc_clients(server, tc, artifact_root, digits, tmp_path):
    x = preprocessed(metadata(artifact_root, CNN), [png_bytes(np.asarray(a[0])) for a in digits.images[:3]])
    texts = np.array([b"the film is wonderful", b"THE ENDING IS AWFUL."], dtype=object)
    np.savez(tmp_path / "inputs.npz", input=x, text=texts)
    run = subprocess.run(
        [sys.executable, "-c", KSERVE_SIDE, server.url, server.grpc_url, str(tmp_path), CNN, LSTM],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    answers = np.load(tmp_path / "outputs.npz")
    for side in ("rest", "grpc"):
        np.testing.assert_array_equal(answers[f"{side}-{CNN}"], _tritonclient_logits(tc, CNN, "input", x, "FP32"))
        np.testing.assert_array_equal(answers[f"{side}-{LSTM}"], _tritonclient_logits(tc, LSTM, "text", texts, "BYTES"))
