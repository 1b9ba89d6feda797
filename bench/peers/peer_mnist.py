"""The work every peer app does per request, shared so that it is the same in each: base64 -> PNG -> Pillow,
grayscale, 28x28, /255 and the training set's mean/std from model.json (the digits bench/ab.py sends are
already 28x28 and white on black, where nnserve's contract preprocessing takes the pixels as they are), one
onnxruntime run on one thread, softmax, top-k.

The peer apps run in their own virtual environments (.peers/<peer>/), from this folder (sys.path[0]), so this
module imports nothing from the repository: only the standard library, numpy, Pillow and onnxruntime.
"""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from PIL import Image

MODEL_DIR = Path(os.environ.get("PEER_MODEL_DIR", Path(__file__).resolve().parents[2] / "artifacts" / "mnist-cnn"))
NAME = "mnist-cnn"


class Digits:
    """mnist-cnn's ONNX graph in one onnxruntime session (intra- and inter-op threads 1)."""

    def __init__(self, model_dir: Path = MODEL_DIR) -> None:
        meta = json.loads((model_dir / "model.json").read_text())
        pre = meta["preprocessing"]
        self.mean, self.std = float(pre["mean"][0]), float(pre["std"][0])
        self.size = (int(pre["input_size"][1]), int(pre["input_size"][0]))  # PIL's (width, height)
        self.labels: list[str] = meta["labels"]
        self.input_name: str = meta["inputs"][0]["name"]
        self.logits_name: str = meta["outputs"][0]["name"]
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(model_dir / "model.onnx"), opts, providers=["CPUExecutionProvider"])

    def prepare_image(self, img: Image.Image) -> np.ndarray:
        """A decoded image -> (1, 28, 28) float32, normalised."""
        img = img.convert("L")
        if img.size != self.size:
            img = img.resize(self.size, Image.Resampling.BILINEAR)
        x = np.asarray(img, dtype=np.float32) / np.float32(255.0)
        return ((x - self.mean) / self.std)[None].astype(np.float32)

    def prepare(self, b64: str) -> np.ndarray:
        """One base64 PNG -> (1, 28, 28) float32."""
        return self.prepare_image(Image.open(io.BytesIO(base64.b64decode(b64))))

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """(N, 1, 28, 28) float32 -> (N, 10) softmax probabilities: one onnxruntime run."""
        z = self.session.run([self.logits_name], {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def top_k(self, p: np.ndarray, k: int = 3) -> dict[str, Any]:
        """One row of probabilities -> nnserve's prediction shape: label, score and the top k."""
        order = np.argsort(-p)[:k]
        top = [{"label": self.labels[int(j)], "score": float(p[j])} for j in order]
        return {"label": top[0]["label"], "score": top[0]["score"], "top_k": top}

    def classify(self, images: list[str], k: int = 3) -> list[dict[str, Any]]:
        """The typed route's work: base64 PNGs -> one prediction each (one run for all of them)."""
        probs = self.probabilities(np.stack([self.prepare(s) for s in images]))
        return [self.top_k(p, k) for p in probs]

    def infer(self, data: list[float], shape: list[int], k: int = 3) -> tuple[np.ndarray, np.ndarray]:
        """The /v2 route's work: an FP32 tensor as JSON numbers -> (probabilities (N, 10), top-k indices (N, k))."""
        probs = self.probabilities(np.asarray(data, dtype=np.float32).reshape(shape))
        return probs.astype(np.float32), np.argsort(-probs, axis=1)[:, :k].astype(np.int64)
