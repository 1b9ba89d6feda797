"""Checkpoint -> model.onnx + model.json (+ vocab.json for text), with strict torch/onnxruntime parity.

Each model family contributes an ``ExportSpec`` (export/spec.py, one module of export/specs/ per family): example
inputs, dynamic axes, the parity cases, the preprocessing record and its extra metadata. Everything else (export,
checker, parity, metadata, hashes) is shared, here.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

import models
from contract.data import DataError
from contract.metadata import (
    METADATA_FILE,
    MODEL_NAME,
    ONNX_FILE,
    VERSION_PATTERN,
    DatasetInfo,
    GraphInfo,
    ModelMetadata,
    Parity,
    TextPreprocessing,
    sha256_file,
)
from contract.text import VOCAB_FILE
from export.record import renamed_in
from export.spec import PARITY_BATCHES, TASKS, ExportSpec, load_specs

log = logging.getLogger(__name__)
SPECS = load_specs()  # every module of export/specs/ registers its families

RTOL, ATOL = 1e-4, 1e-5
CURVES_FILE = "curves.png"  # the training curves python -m training writes beside checkpoint.pt
ENCODER_FILE = "encoder.onnx"


class ParityError(AssertionError):
    pass


def load_checkpoint(path: str | Path) -> tuple[dict[str, Any], torch.nn.Module]:
    # plain data only, never pickled modules (TorchVersion is a str subclass older checkpoints carry)
    try:
        with torch.serialization.safe_globals([torch.torch_version.TorchVersion]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any other file: unpickling it fails in many ways (UnpicklingError, EOF, IndexError)
        raise DataError(
            f"{path}: not a checkpoint written by python -m training ({type(e).__name__}: {str(e)[:200]})"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != "nnserve-checkpoint/1":
        raise DataError(f"{path}: not an nnserve checkpoint")
    cfg = models.make_config(ckpt["model_name"], **ckpt["model_config"])
    model = models.create_model(ckpt["model_name"], cfg)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:  # missing, extra or misshapen weights: a traceback before (a CLI audit's)
        raise DataError(f"{path}: its weights do not fit its model {ckpt['model_name']!r}: {str(e)[:300]}") from None
    return ckpt, model.eval()


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
    """Export with the spec's dynamic axes and output names."""
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
    proto = prog.model_proto
    # the exporter cannot see through a recurrent layer, so what follows the sequence axis after one (the
    # attention weights and the states before them) is annotated with the example's length: the intermediates'
    # annotations go (onnxruntime infers its own), and for the outputs the spec's -1 wins
    del proto.graph.value_info[:]
    for out, want in zip(proto.graph.output, spec.outputs, strict=True):
        for i, (dim, size) in enumerate(zip(out.type.tensor_type.shape.dim, want.shape, strict=True)):
            if size == -1 and dim.HasField("dim_value"):
                dim.dim_param = f"{want.name}_{i}"
    return proto.SerializeToString()


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
            if np.issubdtype(e.dtype, np.floating) and not np.isfinite(e).all():  # NaN == NaN passed parity
                raise ParityError(
                    f"torch's {spec_out.name} is not finite at batch {case[0].shape[0]}: the checkpoint's weights "
                    "are not numbers a model can serve (a run that diverged)"
                )
            worst = max(worst, float(np.abs(g - e).max()))
            try:
                np.testing.assert_allclose(g, e, rtol=RTOL, atol=ATOL, equal_nan=False)
            except AssertionError as err:
                shape = "x".join(str(d) for d in case[0].shape)
                raise ParityError(
                    f"onnxruntime differs from torch on {spec_out.name} at batch {case[0].shape[0]} ({shape}): {err}"
                ) from None
    return worst


SOURCE_DIRS = ("contract", "models", "training", "export", "service", "pyproject.toml")


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
    wrote = max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx"))
    if wrote != opset:  # torch's exporter logs a failed conversion and keeps its own opset
        hint = "use 18 or later" if opset < 18 else f"use one it converts to, such as {wrote}"
        raise DataError(f"torch's exporter could not write opset {opset} (it wrote {wrote}); {hint}")
    onnx.checker.check_model(graph, full_check=True)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
    return onnx_bytes, graph, check_parity(module, session, spec)


def replace_artifact(out: Path, writes: set[str]) -> None:
    """Before an export into a folder that holds an artifact: say what goes with the old graph, and remove the old
    artifact's files this export does not write (a vocabulary or encoder it named, and its figures, which are
    served as the card's and described the old graph), so nothing of another model is served as this one's."""
    try:
        old = ModelMetadata.model_validate_json((out / METADATA_FILE).read_bytes())
    except ValueError:  # metadata of another version of nnserve, or broken, or not nnserve's: replaced, no more
        old = None
    named = set()
    if old is not None:  # an nnserve artifact: its files and figures
        named = {VOCAB_FILE, ENCODER_FILE, *(f.name for f in out.glob("*.png"))}
        if isinstance(old.preprocessing, TextPreprocessing):
            named.add(old.preprocessing.vocab_file)
        if old.generator is not None and old.generator.encoder is not None:
            named.add(old.generator.encoder.file)
    stale = sorted(f for f in out.iterdir() if f.is_file() and f.name in named - writes)
    for f in stale:
        f.unlink()
    gone = "; its calibration and out-of-distribution score go with the old graph" if old and old.calibration else ""
    dropped = f"; removed {', '.join(f.name for f in stale)}" if stale else ""
    log.warning("replacing the artifact in %s%s%s", out, gone, dropped)


def write_artifact(out: Path, files: dict[str, bytes]) -> None:
    """``files`` into ``out`` as ``renamed_in`` writes them, model.json last: an export stopped part way (Ctrl-C, a
    full disk) leaves the artifact that was there, not a new graph beside an empty model.json (an audit's); the old
    artifact's files this one does not write go only once all are written."""
    replaces = (out / METADATA_FILE).is_file()
    renamed_in(out, files, before=(lambda: replace_artifact(out, set(files))) if replaces else None)


def export_checkpoint(
    ckpt_path: str | Path, out_dir: str | Path, *, name: str, version: str = "1", opset: int = 18
) -> ModelMetadata:
    if not re.fullmatch(MODEL_NAME, name):
        raise DataError(f"{name!r} cannot be a served model's name (letters, digits, '.', '_', '-'; 64 at most)")
    if not re.fullmatch(VERSION_PATTERN, version):
        raise DataError(f"{version!r} cannot be a version (letters, digits, '.', '_', '-'; a number to be served)")
    if Path(out_dir).resolve() == Path(ckpt_path).resolve().parent:  # training's own folder: its files stay
        raise DataError(f"{out_dir} is the checkpoint's folder: export into another one (e.g. artifacts/<name>)")
    ckpt, model = load_checkpoint(ckpt_path)
    family = ckpt.get("family", "image-classification")
    if family not in SPECS:
        raise ValueError(f"no export spec for the {family!r} family (export/specs/)")
    spec = SPECS[family](ckpt)
    onnx_bytes, graph, worst = _export_graph(model, spec, opset)
    encoder = _export_graph(model, spec.encoder, opset) if spec.encoder else None

    out = Path(out_dir)
    curves = Path(ckpt_path).parent / CURVES_FILE  # training's plot beside its checkpoint: a figure of the card
    files: dict[str, bytes] = {ONNX_FILE: onnx_bytes, **spec.files}
    encoder_info = None
    if encoder is not None and spec.encoder is not None:
        files[ENCODER_FILE] = encoder[0]
        worst = max(worst, encoder[2])
        encoder_info = GraphInfo(
            file=ENCODER_FILE,
            sha256=hashlib.sha256(encoder[0]).hexdigest(),
            inputs=spec.encoder.inputs,
            outputs=spec.encoder.outputs,
        )
    m = ckpt["metrics"]
    extras = spec.extras(encoder_info) if spec.extras else {}
    meta = ModelMetadata(
        name=name,
        version=version,
        task=TASKS[family],
        architecture=ckpt["model_name"],
        architecture_config={k: (list(v) if isinstance(v, tuple) else v) for k, v in ckpt["model_config"].items()},
        parameters=sum(p.numel() for p in model.parameters()),
        labels=extras.pop("labels", ckpt["labels"]),
        preprocessing=spec.preprocessing,
        inputs=spec.inputs,
        outputs=spec.outputs,
        training=dict(ckpt["train_config"]) | extras.pop("training", {}),
        opset=max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")),
        metrics={k: float(v) for k, v in m.items() if isinstance(v, int | float)},
        class_metrics={str(lbl): float(v) for lbl, v in m.get("per_class_accuracy", {}).items()},
        dataset=DatasetInfo.model_validate(
            {
                **ckpt["dataset"],
                "split": DatasetInfo.recorded_split(ckpt["train_config"].get("split")),
            }
        ),
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        onnx_sha256=hashlib.sha256(onnx_bytes).hexdigest(),
        checkpoint_sha256=sha256_file(ckpt_path),
        source_commit=_source_commit(),
        torch_version=str(ckpt["torch_version"]),
        distillation=ckpt.get("distillation"),
        parity=Parity(
            batch_sizes=list(PARITY_BATCHES), seq_lens=spec.seq_lens, max_abs_diff=worst, rtol=RTOL, atol=ATOL
        ),
        **extras,
    )
    files[METADATA_FILE] = (meta.model_dump_json(indent=2) + "\n").encode()
    if curves.is_file():
        files[CURVES_FILE] = curves.read_bytes()
    write_artifact(out, files)
    log.info("exported %s (%d bytes, opset %d), parity max |diff| %.2e", out, len(onnx_bytes), meta.opset, worst)
    return meta
