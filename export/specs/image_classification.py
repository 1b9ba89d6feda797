"""Export of image classifiers: float32 (B, C, H, W), normalised as model.json says -> logits (B, K)."""

from __future__ import annotations

from typing import Any

import torch

from contract.metadata import ImagePreprocessing, TensorSpec
from export.spec import MAX_BATCH, PARITY_BATCHES, ExportSpec, parity_inputs, register_spec


@register_spec("image-classification")
def image_spec(ckpt: dict[str, Any]) -> ExportSpec:
    pre = ImagePreprocessing.model_validate(ckpt["preprocessing"])
    c, (h, w) = pre.channels, pre.input_size
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    return ExportSpec(
        example=(torch.from_numpy(parity_inputs(pre, 2)),),
        inputs=[TensorSpec(name="input", dtype="float32", shape=[-1, c, h, w])],
        dynamic_shapes={"x": {0: batch}},
        parity_cases=[(parity_inputs(pre, n, seed=n),) for n in PARITY_BATCHES],
        preprocessing=pre,
        outputs=[TensorSpec(name="logits", dtype="float32", shape=[-1, len(ckpt["labels"])])],
    )
