"""BentoML 1.4 the way its documentation writes a service: a ``@bentoml.service`` class that loads the model in
``__init__`` and one ``@bentoml.api(batchable=True)`` method over a list of inputs (adaptive batching across
requests), two workers. No validation beyond the signature, no metrics of its own, no error envelope.

    bentoml serve peer_bentoml:DigitsService --port 3920   (from bench/peers, in .peers/bentoml-docs)

The method takes the base64 PNGs of nnserve's body (``images``; ``model`` and ``top_k`` are accepted and
ignored: a batchable API has exactly one argument, so top-k is fixed at 3) and answers a list of predictions.
The access log is off, as in nnserve. The venv is what ``pip install bentoml`` gives: uvicorn without uvloop
and httptools, which nnserve's pyproject adds.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import bentoml
import numpy as np
from peer_mnist import Digits
from PIL import Image


@bentoml.service(workers=2, logging={"access": {"enabled": False}})  # as nnserve: no log line per request
class DigitsService:
    def __init__(self) -> None:
        self.digits = Digits()

    @bentoml.api(route="/v1/classify", batchable=True)
    def classify(self, images: list[str]) -> list[dict[str, Any]]:
        pil = [Image.open(io.BytesIO(base64.b64decode(s))) for s in images]
        probs = self.digits.probabilities(np.stack([self.digits.prepare_image(img) for img in pil]))
        return [self.digits.top_k(p, 3) for p in probs]
