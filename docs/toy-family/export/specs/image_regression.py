"""Export of the image-regression toy family: float32 (B, C, H, W) -> value (B,)."""

from __future__ import annotations

from typing import Any

from contract.metadata import TensorSpec
from export.spec import ExportSpec, register_spec
from export.specs.image_classification import image_spec


@register_spec("image-regression")
def regression_spec(ckpt: dict[str, Any]) -> ExportSpec:
    spec = image_spec(ckpt)  # the image input, its dynamic batch axis and parity cases
    spec.outputs = [TensorSpec(name="value", dtype="float32", shape=[-1])]
    return spec
