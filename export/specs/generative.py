"""Export of generators (families gan and vae): a GAN's generator or a VAE's decoder, z (B, k) [+ labels (B,)] ->
image (B, C, H, W) in [0, 1]; a VAE's encoder as a second graph. model.json gets the generator's info."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from contract.metadata import GeneratorInfo, GraphInfo, ImagePreprocessing, TensorSpec
from export.spec import MAX_BATCH, PARITY_BATCHES, ExportSpec, latent_inputs, parity_inputs, register_spec


def _label_input(num_classes: int) -> list[TensorSpec]:
    return [TensorSpec(name="labels", dtype="int64", shape=[-1])] if num_classes else []


@register_spec("gan", "vae", task="generator")
def generator_spec(ckpt: dict[str, Any]) -> ExportSpec:
    """GAN generator or VAE decoder: z (B, k) [+ labels (B,)] -> image (B, C, H, W) in [0, 1]; a VAE also
    gets its encoder exported: image [+ labels] -> mu, logvar (B, k)."""
    from models.generative import VAEDecoder, VAEEncoder

    cfg = ckpt["model_config"]
    k, n_cls = cfg["latent_dim"], cfg["num_classes"]
    pre = ImagePreprocessing.model_validate(ckpt["preprocessing"])
    c, (h, w) = pre.channels, pre.input_size
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    labels = _label_input(n_cls)
    dyn = {"z": {0: batch}, **({"labels": {0: batch}} if n_cls else {})}
    image = TensorSpec(name="image", dtype="float32", shape=[-1, c, h, w])
    spec = ExportSpec(
        example=tuple(torch.from_numpy(a) for a in latent_inputs(k, n_cls, 2)),
        inputs=[TensorSpec(name="z", dtype="float32", shape=[-1, k]), *labels],
        dynamic_shapes=dyn,
        parity_cases=[latent_inputs(k, n_cls, n, seed=n) for n in PARITY_BATCHES],
        preprocessing=pre,
        outputs=[image],
    )
    kind = "vae" if ckpt["family"] == "vae" else "gan"
    class_names = ckpt["labels"] if n_cls else []

    def extras(encoder: GraphInfo | None) -> dict[str, Any]:
        info = GeneratorInfo(kind=kind, latent_dim=k, conditional=n_cls > 0, encoder=encoder)
        return {"generator": info, "labels": class_names}

    spec.extras = extras
    if kind != "vae":
        return spec
    spec.wrap = VAEDecoder

    def images(n: int, seed: int) -> tuple[np.ndarray, ...]:
        x = parity_inputs(pre, n, seed)
        return (x, latent_inputs(k, n_cls, n)[1]) if n_cls else (x,)

    spec.encoder = ExportSpec(
        example=tuple(torch.from_numpy(a) for a in images(2, 0)),
        inputs=[TensorSpec(name="image", dtype="float32", shape=[-1, c, h, w]), *labels],
        dynamic_shapes={"x": {0: batch}, **({"labels": {0: batch}} if n_cls else {})},
        parity_cases=[images(n, seed=n) for n in PARITY_BATCHES],
        preprocessing=pre,
        outputs=[
            TensorSpec(name="mu", dtype="float32", shape=[-1, k]),
            TensorSpec(name="logvar", dtype="float32", shape=[-1, k]),
        ],
        wrap=VAEEncoder,
    )
    return spec
