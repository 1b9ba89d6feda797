"""Checkpoint -> model.onnx + model.json (+ vocab.json for text), with strict torch/onnxruntime parity.

Each task family contributes an ``ExportSpec``: example inputs, dynamic axes, the parity cases and the
preprocessing record. Everything else (export, checker, parity, metadata, hashes) is shared.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

import models
from contract.images import normalize
from contract.metadata import (
    METADATA_FILE,
    ONNX_FILE,
    AnomalyThreshold,
    DatasetInfo,
    GeneratorInfo,
    GraphInfo,
    ImagePreprocessing,
    ModelMetadata,
    Parity,
    TensorSpec,
    TextPreprocessing,
    sha256_file,
)
from contract.text import VOCAB_FILE, TokenizerConfig, Vocab

log = logging.getLogger(__name__)

RTOL, ATOL = 1e-4, 1e-5
ENCODER_FILE = "encoder.onnx"
PARITY_BATCHES = (1, 8)
PARITY_SEQ_LENS = (7, 64)
MAX_BATCH, MAX_SEQ = 4096, 100_000


class ParityError(AssertionError):
    pass


@dataclass
class ExportSpec:
    example: tuple[torch.Tensor, ...]
    inputs: list[TensorSpec]
    dynamic_shapes: dict[str, dict[int, Any]]
    parity_cases: list[tuple[np.ndarray, ...]]
    preprocessing: ImagePreprocessing | TextPreprocessing
    outputs: list[TensorSpec]
    seq_lens: list[int] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)  # written beside model.onnx
    task: str | None = None  # model.json's task; default: the checkpoint's family
    wrap: Callable[[Any], torch.nn.Module] | None = None  # the part of the model to export
    encoder: ExportSpec | None = None  # a second graph, written to ENCODER_FILE (VAE)


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


def parity_inputs(pre: ImagePreprocessing, n: int, seed: int = 0) -> np.ndarray:
    """Deterministic pseudo-images in the model's input convention: blobs of ink on a dark field."""
    rng = np.random.default_rng(seed)
    h, w = pre.input_size
    pixels = rng.integers(0, 256, size=(n, pre.channels, h, w), dtype=np.uint8)
    pixels[rng.random(pixels.shape) < 0.7] = 0  # mostly background, like real digits and garments
    return normalize(pixels, pre)


def token_inputs(vocab_size: int, batch: int, seq_len: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic right-padded id batches; the first row always fills ``seq_len``."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, seq_len + 1, size=batch).astype(np.int64)
    lengths[0] = seq_len
    ids = rng.integers(2, vocab_size, size=(batch, seq_len)).astype(np.int64)
    ids[np.arange(seq_len)[None, :] >= lengths[:, None]] = 0
    return ids, lengths


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


def autoencoder_spec(ckpt: dict[str, Any]) -> ExportSpec:
    """Pixels in [0, 1] (mean 0, std 1) -> code (B, k) and reconstruction (B, C, H, W)."""
    spec = image_spec(ckpt)
    c, (h, w) = spec.inputs[0].shape[1], spec.inputs[0].shape[2:]
    spec.outputs = [
        TensorSpec(name="code", dtype="float32", shape=[-1, ckpt["model_config"]["code_size"]]),
        TensorSpec(name="reconstruction", dtype="float32", shape=[-1, c, h, w]),
    ]
    return spec


def text_spec(ckpt: dict[str, Any]) -> ExportSpec:
    vocab = Vocab(ckpt["vocab"])
    vocab_bytes = (json.dumps(vocab.itos, ensure_ascii=False) + "\n").encode("utf-8")
    pre = TextPreprocessing(
        tokenizer=TokenizerConfig.model_validate(ckpt["tokenizer"]),
        vocab_sha256=hashlib.sha256(vocab_bytes).hexdigest(),
        vocab_size=len(vocab),
    )
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    seq = torch.export.Dim("seq", min=1, max=MAX_SEQ)
    ids, lengths = token_inputs(len(vocab), 2, 16)
    cases: list[tuple[np.ndarray, ...]] = [
        token_inputs(len(vocab), b, t, seed=b * 100 + t) for b in PARITY_BATCHES for t in PARITY_SEQ_LENS
    ]
    return ExportSpec(
        example=(torch.from_numpy(ids), torch.from_numpy(lengths)),
        inputs=[
            TensorSpec(name="ids", dtype="int64", shape=[-1, -1]),
            TensorSpec(name="lengths", dtype="int64", shape=[-1]),
        ],
        dynamic_shapes={"ids": {0: batch, 1: seq}, "lengths": {0: batch}},
        parity_cases=cases,
        preprocessing=pre,
        outputs=[TensorSpec(name="logits", dtype="float32", shape=[-1, len(ckpt["labels"])])],
        seq_lens=list(PARITY_SEQ_LENS),
        files={VOCAB_FILE: vocab_bytes},
    )


def latent_inputs(latent_dim: int, num_classes: int, n: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Deterministic z ~ N(0, I) rows, plus labels cycling through the classes for conditional models."""
    z = np.random.default_rng(seed).standard_normal((n, latent_dim), dtype=np.float32)
    return (z, np.arange(n, dtype=np.int64) % num_classes) if num_classes else (z,)


def _label_input(num_classes: int) -> list[TensorSpec]:
    return [TensorSpec(name="labels", dtype="int64", shape=[-1])] if num_classes else []


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
        task="generator",
    )
    if ckpt["family"] != "vae":
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


SPECS: dict[str, Callable[[dict[str, Any]], ExportSpec]] = {
    "image-classification": image_spec,
    "text-classification": text_spec,
    "autoencoder": autoencoder_spec,
    "gan": generator_spec,
    "vae": generator_spec,
}


def _clear_recurrent_dispatch_caches() -> None:
    """Make every export in a process trace aten.lstm / gru / rnn_* as single ops, like the first one.

    Tracing the first recurrent model fills these ops' dispatch caches with the Python decompositions
    (``torch._decomp``) that unroll the recurrence over time; a later trace in the same process then
    specialises the dynamic sequence axis to the example's length. Emptying the caches before each
    export restores the first export's behaviour (ONNX LSTM/GRU/RNN nodes over a dynamic axis).
    """
    for name in ("lstm", "gru", "rnn_tanh", "rnn_relu"):
        for overload in ("input", "data"):
            op = getattr(getattr(torch.ops.aten, name), overload, None)
            if op is not None:
                op._dispatch_cache.clear()


def to_onnx(model: torch.nn.Module, spec: ExportSpec, opset: int) -> bytes:
    """Export with dynamic axes; output 'logits' (B, K)."""
    _clear_recurrent_dispatch_caches()
    prog = torch.onnx.export(
        model,
        spec.example,
        input_names=[t.name for t in spec.inputs],
        output_names=[t.name for t in spec.outputs],
        opset_version=opset,
        dynamic_shapes=spec.dynamic_shapes,
        dynamo=True,
        optimize=True,
        verbose=False,
    )
    assert prog is not None
    return prog.model_proto.SerializeToString()


def check_parity(model: torch.nn.Module, session: ort.InferenceSession, spec: ExportSpec) -> float:
    """Compare torch and onnxruntime on every parity case; raise ParityError beyond rtol/atol."""
    worst = 0.0
    names = [t.name for t in spec.inputs]
    for case in spec.parity_cases:
        with torch.no_grad():
            out = model(*(torch.from_numpy(a) for a in case))
        expected = [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]
        got = session.run([t.name for t in spec.outputs], dict(zip(names, case, strict=True)))
        for spec_out, g, e in zip(spec.outputs, got, expected, strict=True):
            worst = max(worst, float(np.abs(g - e).max()))
            try:
                np.testing.assert_allclose(g, e, rtol=RTOL, atol=ATOL)
            except AssertionError as err:
                shape = "x".join(str(d) for d in case[0].shape)
                raise ParityError(
                    f"onnxruntime differs from torch on {spec_out.name} at batch {case[0].shape[0]} ({shape}): {err}"
                ) from None
    return worst


SOURCE_DIRS = ("models", "training", "export", "service", "pyproject.toml")


def _source_commit() -> str:
    """HEAD, marked -dirty when the code that shapes a model (not the artifacts) has uncommitted changes."""
    try:
        run = {"capture_output": True, "text": True, "check": True}
        sha = subprocess.run(["git", "rev-parse", "HEAD"], **run).stdout.strip()  # type: ignore[call-overload]
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", *SOURCE_DIRS], **run
        ).stdout.strip()  # type: ignore[call-overload]
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _export_graph(model: torch.nn.Module, spec: ExportSpec, opset: int) -> tuple[bytes, onnx.ModelProto, float]:
    """One graph: export, check, and prove parity (ParityError before anything is written)."""
    module = spec.wrap(model).eval() if spec.wrap else model
    onnx_bytes = to_onnx(module, spec, opset)
    graph = onnx.load_from_string(onnx_bytes)
    onnx.checker.check_model(graph, full_check=True)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
    return onnx_bytes, graph, check_parity(module, session, spec)


def _generator_info(ckpt: dict[str, Any], encoder: GraphInfo | None) -> GeneratorInfo:
    cfg = ckpt["model_config"]
    kind = "vae" if ckpt["family"] == "vae" else "gan"
    return GeneratorInfo(kind=kind, latent_dim=cfg["latent_dim"], conditional=cfg["num_classes"] > 0, encoder=encoder)


def export_checkpoint(
    ckpt_path: str | Path, out_dir: str | Path, *, name: str, version: str = "1", opset: int = 18
) -> ModelMetadata:
    ckpt, model = load_checkpoint(ckpt_path)
    family = ckpt.get("family", "image-classification")
    spec = SPECS[family](ckpt)
    onnx_bytes, graph, worst = _export_graph(model, spec, opset)
    encoder = _export_graph(model, spec.encoder, opset) if spec.encoder else None

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / ONNX_FILE
    onnx_path.write_bytes(onnx_bytes)
    encoder_info = None
    if encoder is not None and spec.encoder is not None:
        (out / ENCODER_FILE).write_bytes(encoder[0])
        worst = max(worst, encoder[2])
        encoder_info = GraphInfo(
            file=ENCODER_FILE,
            sha256=sha256_file(out / ENCODER_FILE),
            inputs=spec.encoder.inputs,
            outputs=spec.encoder.outputs,
        )
    for fname, data in spec.files.items():
        (out / fname).write_bytes(data)
    m = ckpt["metrics"]
    generative = spec.task == "generator"
    meta = ModelMetadata(
        name=name,
        version=version,
        task=spec.task or family,
        architecture=ckpt["model_name"],
        architecture_config={k: (list(v) if isinstance(v, tuple) else v) for k, v in ckpt["model_config"].items()},
        labels=ckpt["labels"] if not generative or ckpt["model_config"]["num_classes"] else [],
        preprocessing=spec.preprocessing,
        inputs=spec.inputs,
        outputs=spec.outputs,
        training=dict(ckpt["train_config"]),
        opset=max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")),
        metrics={k: float(v) for k, v in m.items() if isinstance(v, int | float)},
        class_metrics={str(lbl): float(v) for lbl, v in m.get("per_class_accuracy", {}).items()},
        anomaly=AnomalyThreshold(threshold=m["val_sse_p99"], percentile=99.0) if family == "autoencoder" else None,
        generator=_generator_info(ckpt, encoder_info) if generative else None,
        dataset=DatasetInfo.model_validate(
            {
                **ckpt["dataset"],
                "split": "sentences" if ckpt["train_config"].get("split") == "sentences" else "stratified",
            }
        ),
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        onnx_sha256=sha256_file(onnx_path),
        checkpoint_sha256=sha256_file(ckpt_path),
        source_commit=_source_commit(),
        torch_version=str(ckpt["torch_version"]),
        parity=Parity(
            batch_sizes=list(PARITY_BATCHES), seq_lens=spec.seq_lens, max_abs_diff=worst, rtol=RTOL, atol=ATOL
        ),
    )
    (out / METADATA_FILE).write_text(meta.model_dump_json(indent=2) + "\n")
    log.info("exported %s (%d bytes, opset %d), parity max |diff| %.2e", out, len(onnx_bytes), meta.opset, worst)
    return meta
