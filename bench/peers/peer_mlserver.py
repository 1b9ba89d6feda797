"""MLServer (Seldon): a custom inference runtime (``MLModel``) over the ONNX graph, served by ``mlserver start``
with ``parallel_workers: 2`` (the inference pool: the main process speaks HTTP and hands each request to a
worker process), the Open Inference Protocol v2 over REST. gRPC and metrics stay on as MLServer's defaults, on
ports of their own; ``debug: false``, because MLServer's default (true) turns on uvicorn's access log, a line per
request, which nnserve does not write.

    python bench/peers/peer_mlserver.py HTTP_PORT GRPC_PORT METRICS_PORT   (in .peers/mlserver)

writes settings.json and mnist-cnn/model-settings.json into the venv's serve/ folder and becomes ``mlserver start``
on it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from peer_mnist import NAME, Digits


class DigitsRuntime(MLModel):
    async def load(self) -> bool:
        self.digits = Digits()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0])
        probs, top = self.digits.infer(x, list(x.shape))
        outputs = [NumpyCodec.encode_output("probabilities", probs), NumpyCodec.encode_output("top_k", top)]
        return InferenceResponse(model_name=self.name, id=payload.id, outputs=outputs)


def main() -> None:
    http, grpc, metrics = sys.argv[1:4]
    folder = Path(sys.prefix) / "serve"
    (folder / NAME).mkdir(parents=True, exist_ok=True)
    settings = {"host": "127.0.0.1", "http_port": int(http), "grpc_port": int(grpc), "metrics_port": int(metrics),
                "parallel_workers": 2, "debug": False}  # fmt: skip
    (folder / "settings.json").write_text(json.dumps(settings))
    model = {"name": NAME, "implementation": "peer_mlserver.DigitsRuntime"}
    (folder / NAME / "model-settings.json").write_text(json.dumps(model))
    here = str(Path(__file__).resolve().parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))
    mlserver = str(Path(sys.executable).with_name("mlserver"))
    os.execv(mlserver, [mlserver, "start", str(folder)])


if __name__ == "__main__":
    main()
