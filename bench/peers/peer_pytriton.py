"""NVIDIA PyTriton: Triton Inference Server (its CPU build, shipped in the wheel) in front of a Python inference
callable over onnxruntime, bound with two callables (two model instances: two Triton python-backend stubs, each
feeding one handler thread in this process), Triton's default dynamic batching, the Open Inference Protocol v2
over REST. gRPC and metrics stay on as Triton's defaults, on ports of their own.

    python bench/peers/peer_pytriton.py HTTP_PORT GRPC_PORT METRICS_PORT   (in .peers/pytriton)

Triton's python-backend stub links libpython3.X.so from the loader's path; where that is another build than
the venv's interpreter (here Debian's 3.11.2 beside pyenv's 3.11.7) the stub runs the venv's standard library on
the other runtime and fails (``'_thread.RLock' object has no attribute '_recursion_count'``), so the
interpreter's own LIBDIR goes first on LD_LIBRARY_PATH.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path

import numpy as np
from peer_mnist import NAME, Digits
from pytriton.decorators import batch
from pytriton.model_config import ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig


def make_infer(digits: Digits) -> Callable[..., dict[str, np.ndarray]]:
    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        (x,) = inputs.values()
        probs, top = digits.infer(x, list(x.shape))
        return {"probabilities": probs, "top_k": top}

    return infer


def main() -> None:
    http, grpc, metrics = (int(p) for p in sys.argv[1:4])
    libdir = sysconfig.get_config_var("LIBDIR")
    os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [libdir, os.environ.get("LD_LIBRARY_PATH")]))
    digits = [Digits(), Digits()]
    config = TritonConfig(http_address="127.0.0.1", http_port=http, grpc_address="127.0.0.1", grpc_port=grpc,
                          metrics_address="127.0.0.1", metrics_port=metrics)  # fmt: skip
    workspace = Path(sys.prefix) / "workspace"  # one, in the venv, however the last run ended
    shutil.rmtree(workspace, ignore_errors=True)
    with Triton(config=config, workspace=workspace) as triton:
        triton.bind(
            model_name=NAME,
            infer_func=[make_infer(d) for d in digits],
            inputs=[Tensor(name=digits[0].input_name, dtype=np.float32, shape=(1, 28, 28))],
            outputs=[
                Tensor(name="probabilities", dtype=np.float32, shape=(10,)),
                Tensor(name="top_k", dtype=np.int64, shape=(3,)),
            ],
            config=ModelConfig(max_batch_size=64),
            strict=True,
        )
        triton.serve()


if __name__ == "__main__":
    main()
