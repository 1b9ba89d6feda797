"""Checkpoint -> model.onnx + model.json, with strict torch/onnxruntime parity."""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

import models
from export.contract import (
    METADATA_FILE,
    ONNX_FILE,
    DatasetInfo,
    ImagePreprocessing,
    ModelMetadata,
    Parity,
    TensorSpec,
    normalize,
    sha256_file,
)

log = logging.getLogger(__name__)

RTOL, ATOL = 1e-4, 1e-5
PARITY_BATCHES = (1, 8)


class ParityError(AssertionError):
    pass


def load_checkpoint(path: str | Path) -> tuple[dict[str, Any], torch.nn.Module]:
    # plain data only, never pickled modules (TorchVersion is a str subclass older checkpoints carry)
    with torch.serialization.safe_globals([torch.torch_version.TorchVersion]):
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if ckpt.get("format") != "nnserve-checkpoint/1":
        raise ValueError(f"{path}: not an nnserve checkpoint")
    cfg = models.make_config(ckpt["model_name"], **ckpt["model_config"])
    model = models.create_model(ckpt["model_name"], cfg)
    model.load_state_dict(ckpt["state_dict"])
    return ckpt, model.eval()


def _source_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, check=True
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def to_onnx(model: torch.nn.Module, example: torch.Tensor, opset: int) -> bytes:
    """Export with a dynamic batch axis; input 'input' (B, C, H, W) -> output 'logits' (B, K)."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    prog = torch.onnx.export(
        model,
        (example,),
        input_names=["input"],
        output_names=["logits"],
        opset_version=opset,
        dynamic_shapes={"x": {0: batch}},
        dynamo=True,
        optimize=True,
        verbose=False,
    )
    assert prog is not None
    return prog.model_proto.SerializeToString()


def parity_inputs(pre: ImagePreprocessing, n: int, seed: int = 0) -> np.ndarray:
    """Deterministic pseudo-images in the model's input convention: blobs of ink on a dark field."""
    rng = np.random.default_rng(seed)
    h, w = pre.input_size
    pixels = rng.integers(0, 256, size=(n, pre.channels, h, w), dtype=np.uint8)
    pixels[rng.random(pixels.shape) < 0.7] = 0  # mostly background, like real digits and garments
    return normalize(pixels, pre)


def check_parity(model: torch.nn.Module, session: ort.InferenceSession, pre: ImagePreprocessing) -> float:
    """Compare torch and onnxruntime at batch 1 and batch 8; raise ParityError beyond rtol/atol."""
    worst = 0.0
    for n in PARITY_BATCHES:
        x = parity_inputs(pre, n, seed=n)
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        (got,) = session.run(["logits"], {"input": x})
        worst = max(worst, float(np.abs(got - expected).max()))
        try:
            np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)
        except AssertionError as e:
            raise ParityError(f"onnxruntime differs from torch at batch {n}: {e}") from None
    return worst


def export_checkpoint(
    ckpt_path: str | Path, out_dir: str | Path, *, name: str, version: str = "1", opset: int = 18
) -> ModelMetadata:
    ckpt, model = load_checkpoint(ckpt_path)
    pre = ImagePreprocessing.model_validate(ckpt["preprocessing"])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    example = torch.from_numpy(parity_inputs(pre, 2))
    onnx_bytes = to_onnx(model, example, opset)
    graph = onnx.load_from_string(onnx_bytes)
    onnx.checker.check_model(graph, full_check=True)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
    worst = check_parity(model, session, pre)  # raises before anything is written

    onnx_path = out / ONNX_FILE
    onnx_path.write_bytes(onnx_bytes)
    m = ckpt["metrics"]
    c, (h, w), k = pre.channels, pre.input_size, len(ckpt["labels"])
    meta = ModelMetadata(
        name=name,
        version=version,
        task="image-classification",
        architecture=ckpt["model_name"],
        architecture_config={k_: (list(v) if isinstance(v, tuple) else v) for k_, v in ckpt["model_config"].items()},
        labels=ckpt["labels"],
        preprocessing=pre,
        inputs=[TensorSpec(name="input", dtype="float32", shape=[-1, c, h, w])],
        outputs=[TensorSpec(name="logits", dtype="float32", shape=[-1, k])],
        opset=max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")),
        metrics={
            key: float(m[key])
            for key in (
                "accuracy",
                "error_rate",
                "val_loss",
                "best_epoch",
                "epochs_run",
                "train_seconds",
                "n_train",
                "n_val",
            )
        },
        class_metrics={str(lbl): float(v) for lbl, v in m["per_class_accuracy"].items()},
        dataset=DatasetInfo.model_validate(ckpt["dataset"]),
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        onnx_sha256=sha256_file(onnx_path),
        checkpoint_sha256=sha256_file(ckpt_path),
        source_commit=_source_commit(),
        torch_version=str(ckpt["torch_version"]),
        parity=Parity(batch_sizes=list(PARITY_BATCHES), max_abs_diff=worst, rtol=RTOL, atol=ATOL),
    )
    (out / METADATA_FILE).write_text(meta.model_dump_json(indent=2) + "\n")
    log.info("exported %s (%d bytes, opset %d), parity max |diff| %.2e", out, len(onnx_bytes), meta.opset, worst)
    return meta
