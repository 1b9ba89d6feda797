"""Export of RBMs (family rbm), served as generators: model.onnx runs up to K Gibbs steps with the noise as inputs,
(v (B, D), u_h (B, K, H), u_v (B, K, D), steps (B,)) -> (v (B, D), image (B, C, H, W), hidden (B, H)); ``hidden``
is p(h | v) of the input v, the RBM's features. model.json's generator.gibbs says how to drive it."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from contract import gibbs
from contract.metadata import GeneratorInfo, GibbsInfo, GraphInfo, ImagePreprocessing, TensorSpec
from export.spec import MAX_BATCH, PARITY_BATCHES, ExportSpec, register_spec


def chain_inputs(n: int, k: int, hidden: int, visible: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """A run's inputs as the service draws them; rows take 0..K steps (0: the row keeps its state)."""
    rngs = gibbs.chain_rngs(seed, n)
    v = gibbs.start_state(rngs, visible)
    u_h, u_v = gibbs.run_noise(rngs, k, hidden, visible)
    return v, u_h, u_v, np.arange(n, dtype=np.int64) % (k + 1)


@register_spec("rbm", task="generator")
def rbm_spec(ckpt: dict[str, Any]) -> ExportSpec:
    """A binary RBM's Gibbs chain, K = contract.gibbs.STEPS_PER_RUN steps per run, with its features as an output."""
    from models.rbm import GibbsChain

    pre = ImagePreprocessing.model_validate(ckpt["preprocessing"])
    c, (h, w) = pre.channels, pre.input_size
    d, hid, k = c * h * w, ckpt["model_config"]["hidden"], gibbs.STEPS_PER_RUN
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    spec = ExportSpec(
        example=tuple(torch.from_numpy(a) for a in chain_inputs(2, k, hid, d)),
        inputs=[
            TensorSpec(name="v", dtype="float32", shape=[-1, d]),
            TensorSpec(name="u_h", dtype="float32", shape=[-1, k, hid]),
            TensorSpec(name="u_v", dtype="float32", shape=[-1, k, d]),
            TensorSpec(name="steps", dtype="int64", shape=[-1]),
        ],
        dynamic_shapes={name: {0: batch} for name in ("v", "u_h", "u_v", "steps")},
        parity_cases=[chain_inputs(n, k, hid, d, seed=n) for n in PARITY_BATCHES],
        preprocessing=pre,
        outputs=[
            TensorSpec(name="v_next", dtype="float32", shape=[-1, d]),
            TensorSpec(name="image", dtype="float32", shape=[-1, c, h, w]),
            TensorSpec(name="hidden", dtype="float32", shape=[-1, hid]),
        ],
        wrap=lambda rbm: GibbsChain(rbm, k),
    )

    def extras(encoder: GraphInfo | None) -> dict[str, Any]:
        chain = GibbsInfo(steps_per_run=k, visible=d, hidden=hid)
        info = GeneratorInfo(kind="rbm", latent_dim=hid, conditional=False, noise="uniform", gibbs=chain)
        return {"generator": info, "labels": []}

    spec.extras = extras
    return spec
