"""The hand-written server a user would write instead: FastAPI + uvicorn, an ``async def`` handler that calls
onnxruntime inline, no batching, nnserve's typed route and body.

    uvicorn --app-dir bench/peers peer_fastapi:app --workers 2 --port 3911   (in .peers/fastapi)
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from peer_mnist import NAME, Digits
from pydantic import BaseModel


class ClassifyBody(BaseModel):
    model: str
    images: list[str]
    top_k: int = 3


model = Digits()
app = FastAPI()


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/v1/classify")
async def classify(body: ClassifyBody) -> dict[str, Any]:
    return {"model": NAME, "predictions": model.classify(body.images, body.top_k)}
