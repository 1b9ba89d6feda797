"""KServe's Python model server: a ``kserve.Model`` over the ONNX graph, ``ModelServer(workers=2)``, the Open
Inference Protocol v2 over REST (gRPC off: the benchmark speaks HTTP only).

    python bench/peers/peer_kserve.py --http_port 3912   (in .peers/kserve)

ModelServer starts its REST workers with multiprocessing's spawn and pickles the registered models into them;
an onnxruntime session does not pickle, so the model drops it when pickled and loads it again in the worker.

KServe logs several lines per request by default (uvicorn's access log, its REST timing trace, the model's
latency); nnserve logs none, so they are off here: ``enable_latency_logging=False``, and uvicorn.access and
kserve.trace at WARNING in KServe's logging config, which each spawned worker applies when it imports this
module again as ``__mp_main__`` (the timing middleware itself still runs).
"""

from __future__ import annotations

from typing import Any

import kserve
from kserve import InferOutput, InferRequest, InferResponse
from kserve.logging import KSERVE_LOG_CONFIG
from peer_mnist import NAME, Digits

for _name in ("uvicorn.access", "kserve.trace"):
    KSERVE_LOG_CONFIG["loggers"][_name]["level"] = "WARNING"


class DigitsModel(kserve.Model):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.digits: Digits | None = None
        self.load()

    def load(self) -> bool:
        self.digits = Digits()
        self.ready = True
        return self.ready

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "digits": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.load()

    def predict(self, payload: InferRequest, headers: dict[str, str] | None = None) -> InferResponse:
        assert self.digits is not None
        x = payload.inputs[0]
        probs, top = self.digits.infer(x.as_numpy(), x.shape)
        outputs = [
            InferOutput("probabilities", list(probs.shape), "FP32", probs.ravel().tolist()),
            InferOutput("top_k", list(top.shape), "INT64", top.ravel().tolist()),
        ]
        return InferResponse(response_id=payload.id or "", model_name=self.name, infer_outputs=outputs)


if __name__ == "__main__":
    kserve.ModelServer(workers=2, enable_grpc=False, enable_latency_logging=False).start([DigitsModel(NAME)])
