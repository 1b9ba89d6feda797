"""onnxruntime sessions for exported artifacts: load once, run on a batch, one output row per input row."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from export.contract import METADATA_FILE, ONNX_FILE, ModelMetadata, load_metadata, sha256_file
from service.metrics import BATCH_SIZE, INFERENCE_SECONDS
from service.settings import Settings

log = logging.getLogger(__name__)


class ArtifactError(RuntimeError):
    """An artifact that must not be served; the message names the file."""


def providers() -> list[str]:
    """CUDA when this onnxruntime build and machine have it, CPU always."""
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


@dataclass
class OnnxModel:
    meta: ModelMetadata
    session: ort.InferenceSession
    path: Path

    @property
    def name(self) -> str:
        return self.meta.name

    def run(self, x: np.ndarray) -> np.ndarray:
        """(B, ...) float32 -> (B, K) logits."""
        t0 = time.perf_counter()
        (out,) = self.session.run([self.meta.outputs[0].name], {self.meta.inputs[0].name: x})
        INFERENCE_SECONDS.labels(self.name).observe(time.perf_counter() - t0)
        BATCH_SIZE.labels(self.name).observe(len(x))
        return out


def _check_schema(meta: ModelMetadata, session: ort.InferenceSession, onnx_path: Path) -> None:
    got_in = [(i.name, i.shape[1:]) for i in session.get_inputs()]
    got_out = [(o.name, o.shape[1:]) for o in session.get_outputs()]
    want_in = [(t.name, t.shape[1:]) for t in meta.inputs]
    want_out = [(t.name, t.shape[1:]) for t in meta.outputs]
    if got_in != want_in or got_out != want_out:
        raise ArtifactError(
            f"{onnx_path}: graph inputs/outputs {got_in} -> {got_out} do not match "
            f"{METADATA_FILE} {want_in} -> {want_out}"
        )


def load_model(model_dir: Path, settings: Settings) -> OnnxModel:
    onnx_path = model_dir / ONNX_FILE
    try:
        meta = load_metadata(model_dir)
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{model_dir / METADATA_FILE}: unreadable metadata: {e}") from None
    if not onnx_path.is_file():
        raise ArtifactError(f"{onnx_path}: missing")
    if sha256_file(onnx_path) != meta.onnx_sha256:
        raise ArtifactError(f"{onnx_path}: sha256 does not match onnx_sha256 in {METADATA_FILE} (corrupt or replaced)")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = settings.ort_intra_op_threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        session = ort.InferenceSession(str(onnx_path), opts, providers=providers())
    except Exception as e:  # onnxruntime raises its own exception types for invalid graphs
        raise ArtifactError(f"{onnx_path}: onnxruntime cannot load it: {e}") from None
    _check_schema(meta, session, onnx_path)
    return OnnxModel(meta, session, onnx_path)


def discover(settings: Settings) -> list[Path]:
    """Artifact folders to serve: ``settings.models`` if given, else every folder holding model.json."""
    root = settings.model_dir
    if settings.models:
        return [root / name for name in settings.models]
    return sorted(p.parent for p in root.glob(f"*/{METADATA_FILE}"))


def warm_up(model: OnnxModel) -> None:
    shape = [1 if d == -1 else d for d in model.meta.inputs[0].shape]
    out = model.session.run(None, {model.meta.inputs[0].name: np.zeros(shape, dtype=np.float32)})[0]
    if not np.isfinite(out).all():
        raise ArtifactError(f"{model.path}: warm-up inference produced non-finite outputs")
