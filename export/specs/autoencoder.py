"""Export of autoencoders: pixels in [0, 1] (mean 0, std 1) -> code (B, k) and reconstruction (B, C, H, W), with
the anomaly threshold (the 99th percentile of validation reconstruction errors) in model.json."""

from __future__ import annotations

from typing import Any

from contract.metadata import AnomalyThreshold, TensorSpec
from export.spec import ExportSpec, register_spec
from export.specs.image_classification import image_spec


@register_spec("autoencoder")
def autoencoder_spec(ckpt: dict[str, Any]) -> ExportSpec:
    """Pixels in [0, 1] (mean 0, std 1) -> code (B, k) and reconstruction (B, C, H, W)."""
    spec = image_spec(ckpt)
    c, (h, w) = spec.inputs[0].shape[1], spec.inputs[0].shape[2:]
    spec.outputs = [
        TensorSpec(name="code", dtype="float32", shape=[-1, ckpt["model_config"]["code_size"]]),
        TensorSpec(name="reconstruction", dtype="float32", shape=[-1, c, h, w]),
    ]
    threshold = AnomalyThreshold(threshold=ckpt["metrics"]["val_sse_p99"], percentile=99.0)
    spec.extras = lambda encoder: {"anomaly": threshold}
    return spec
