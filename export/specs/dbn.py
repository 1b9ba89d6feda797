"""Export of the DBN autoencoder (family dbn): an autoencoder once unrolled and fine-tuned, exported and served as
one (export/specs/autoencoder.py): pixels in [0, 1] -> code (B, 30) and reconstruction (B, C, H, W), with the anomaly
threshold in model.json."""

from __future__ import annotations

from typing import Any

from export.spec import ExportSpec, register_spec
from export.specs.autoencoder import autoencoder_spec


@register_spec("dbn", task="autoencoder")
def dbn_spec(ckpt: dict[str, Any]) -> ExportSpec:
    """The autoencoders' spec: its forward is theirs, (code, reconstruction)."""
    return autoencoder_spec(ckpt)
