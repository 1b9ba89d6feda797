"""The reference server of ``make bench``: plain uvicorn + FastAPI + onnxruntime, no BentoML, no batching.

One request = one onnxruntime run, called inline from an ``async def`` handler in one worker process: the
fastest simple server PERF-NOTES measured on this machine. It does the same work per request as nnserve's
endpoints (base64 + PNG decoding, the contract's preprocessing, softmax and top-k; tokenisation for text)
through the same torch-free functions, so the comparison prices what nnserve adds: validation, batching,
metrics, the envelope and BentoML.

    python -m bench.reference --model-dir artifacts --port 3900
"""

from __future__ import annotations

import argparse
import base64
from pathlib import Path

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

from contract.images import decode_image, normalize, prepare_image
from contract.metadata import load_metadata
from contract.text import Vocab, encode_text


class ClassifyBody(BaseModel):
    model: str
    images: list[str]
    top_k: int = 3


class SentimentBody(BaseModel):
    model: str
    texts: list[str]


def _session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path / "model.onnx"), opts, providers=["CPUExecutionProvider"])


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def build_app(model_dir: Path, names: list[str]) -> FastAPI:
    metas = {n: load_metadata(model_dir / n) for n in names}
    sessions = {n: _session(model_dir / n) for n in names}
    vocabs = {
        n: Vocab.load(model_dir / n / m.text_preprocessing().vocab_file)
        for n, m in metas.items()
        if m.task == "text-classification"
    }
    app = FastAPI()

    @app.post("/v1/classify")
    async def classify(body: ClassifyBody) -> dict:
        meta, sess = metas[body.model], sessions[body.model]
        pre = meta.image_preprocessing()
        x = np.stack(
            [normalize(prepare_image(decode_image(base64.b64decode(s), max_pixels=25_000_000), pre), pre)
             for s in body.images]
        )  # fmt: skip
        probs = _softmax(sess.run(["logits"], {"input": x})[0])
        out = []
        for p in probs:
            order = np.argsort(-p)[: body.top_k]
            out.append(
                {
                    "label": meta.labels[int(order[0])],
                    "score": float(p[order[0]]),
                    "top_k": [{"label": meta.labels[int(j)], "score": float(p[j])} for j in order],
                }
            )
        return {"model": body.model, "predictions": out}

    @app.post("/v1/sentiment")
    async def sentiment(body: SentimentBody) -> dict:
        meta, sess = metas[body.model], sessions[body.model]
        pre = meta.text_preprocessing()
        out = []
        for text in body.texts:  # one run per text: no batching
            ids = encode_text(text, pre.tokenizer, vocabs[body.model])[0] or [pre.unk_id]
            feed = {"ids": np.asarray([ids], dtype=np.int64), "lengths": np.asarray([len(ids)], dtype=np.int64)}
            p = _softmax(sess.run(["logits"], feed)[0])[0]
            out.append({"label": meta.labels[int(p.argmax())], "score": float(p.max())})
        return {"model": body.model, "predictions": out}

    return app


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.reference", description=__doc__)
    p.add_argument("--model-dir", type=Path, default=Path("artifacts"))
    p.add_argument("--models", nargs="+", default=["mnist-cnn", "sst2-lstm"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3900)
    args = p.parse_args()
    uvicorn.run(build_app(args.model_dir, args.models), host=args.host, port=args.port, log_level="warning",
                access_log=False)  # fmt: skip


if __name__ == "__main__":
    main()
