"""onnxruntime sessions for exported artifacts: load once, run on a batch, one output row per input row."""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from contract.metadata import METADATA_FILE, ONNX_FILE, ModelMetadata, TensorSpec, load_metadata, sha256_file
from contract.text import Vocab
from service.metrics import BATCH_SIZE, INFERENCE_SECONDS, child
from service.settings import Settings
from service.stats import executed

log = logging.getLogger(__name__)


class ArtifactError(RuntimeError):
    """An artifact that must not be served; the message names the file."""


def providers() -> list[str]:
    """CUDA when this onnxruntime build and machine have it, CPU always."""
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


@dataclass
class OnnxModel:
    """One served graph: model.onnx (inputs/outputs as model.json lists them) or a second graph beside it."""

    meta: ModelMetadata
    session: ort.InferenceSession
    path: Path
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    encoder: OnnxModel | None = None  # VAE: encoder.onnx

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def series(self) -> str:
        """The ``model`` label of this graph's metrics: the model's name, '/encoder' for a second graph."""
        return self.name if self.path.name == ONNX_FILE else f"{self.name}/{self.path.stem}"

    def run_all(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """Input arrays in the order of ``inputs``, batch first -> every output, batch first."""
        t0 = time.perf_counter()
        feed = {spec.name: x for spec, x in zip(self.inputs, inputs, strict=True)}
        outs = self.session.run([o.name for o in self.outputs], feed)
        seconds = time.perf_counter() - t0
        child(INFERENCE_SECONDS, self.series).observe(seconds)
        child(BATCH_SIZE, self.series).observe(len(inputs[0]))
        executed(self.name, len(inputs[0]), seconds)
        return outs

    def output_index(self, name: str) -> int | None:
        return next((i for i, o in enumerate(self.outputs) if o.name == name), None)

    def run(self, *inputs: np.ndarray) -> np.ndarray:
        """-> the first output: (B, K) logits for classifiers."""
        return self.run_all(*inputs)[0]


def _dims(shape: list) -> list[int]:
    """onnxruntime reports dynamic axes by name (or None): -1, as model.json writes them."""
    return [d if isinstance(d, int) else -1 for d in shape]


def _check_schema(
    session: ort.InferenceSession, onnx_path: Path, inputs: list[TensorSpec], outputs: list[TensorSpec]
) -> None:
    got = (
        [(i.name, _dims(i.shape)) for i in session.get_inputs()],
        [(o.name, _dims(o.shape)) for o in session.get_outputs()],
    )
    want = ([(t.name, t.shape) for t in inputs], [(t.name, t.shape) for t in outputs])
    if got != want:
        raise ArtifactError(f"{onnx_path}: graph inputs/outputs {got} do not match {METADATA_FILE} {want}")


def load_model(model_dir: Path, settings: Settings) -> OnnxModel:
    meta = read_metadata(model_dir)
    model = _open_graph(meta, model_dir / ONNX_FILE, meta.onnx_sha256, meta.inputs, meta.outputs, settings)
    enc = meta.generator.encoder if meta.generator else None
    if enc is not None:
        model.encoder = _open_graph(meta, model_dir / enc.file, enc.sha256, enc.inputs, enc.outputs, settings)
    return model


def _open_graph(
    meta: ModelMetadata,
    onnx_path: Path,
    sha256: str,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    settings: Settings,
) -> OnnxModel:
    """An onnxruntime session for one graph whose bytes and tensor schema match what model.json records."""
    if not onnx_path.is_file():
        raise ArtifactError(f"{onnx_path}: missing")
    if sha256_file(onnx_path) != sha256:
        raise ArtifactError(f"{onnx_path}: sha256 does not match the one in {METADATA_FILE} (corrupt or replaced)")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = settings.ort_intra_op_threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        session = ort.InferenceSession(str(onnx_path), opts, providers=providers())
    except Exception as e:  # onnxruntime raises its own exception types for invalid graphs
        raise ArtifactError(f"{onnx_path}: onnxruntime cannot load it: {e}") from None
    _check_schema(session, onnx_path, inputs, outputs)
    return OnnxModel(meta, session, onnx_path, inputs, outputs)


def discover(settings: Settings) -> list[Path]:
    """Artifact folders to serve: ``settings.models`` if given, else every folder holding model.json."""
    root = settings.model_dir
    if settings.models:
        return [root / name for name in settings.models]
    return sorted(p.parent for p in root.glob(f"*/{METADATA_FILE}"))


def warm_up(model: OnnxModel) -> None:
    """One inference on a minimal input of the right dtypes; non-finite outputs mean a broken artifact."""
    for graph in (model, model.encoder):
        if graph is None:
            continue
        feed = {}
        for spec in graph.inputs:
            shape = [1 if d == -1 else d for d in spec.shape]
            feed[spec.name] = np.zeros(shape, np.float32) if spec.dtype == "float32" else np.ones(shape, np.int64)
        if not all(np.isfinite(out).all() for out in graph.session.run(None, feed)):
            raise ArtifactError(f"{graph.path}: warm-up inference produced non-finite outputs")


def read_metadata(model_dir: Path) -> ModelMetadata:
    try:
        return load_metadata(model_dir)
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{model_dir / METADATA_FILE}: unreadable metadata: {e}") from None


def load_family(task: str, settings: Settings, failed: dict[str, str] | None = None) -> dict[str, OnnxModel]:
    """Load and warm up every artifact of one task family. A bad artifact raises ArtifactError (naming the
    file), or with ``skip_bad_artifacts`` is left out and recorded in ``failed`` (folder name -> why)."""
    loaded: dict[str, OnnxModel] = {}
    for path in discover(settings):
        try:
            if read_metadata(path).task != task:
                continue
            model = load_model(path, settings)
            warm_up(model)
        except ArtifactError as e:
            if not settings.skip_bad_artifacts:
                raise
            log.error("not serving %s: %s", path.name, e)
            if failed is not None:
                failed[path.name] = str(e)
            continue
        loaded[model.name] = model
        log.info("loaded %s (%s) from %s", model.name, model.meta.architecture, path)
    return loaded


def load_vocab(model_dir: Path, meta: ModelMetadata) -> Vocab:
    """A text model's vocabulary, checked against the sha256 its metadata records."""
    pre = meta.text_preprocessing()
    path = model_dir / pre.vocab_file
    if not path.is_file() or sha256_file(path) != pre.vocab_sha256:
        raise ArtifactError(f"{path}: missing, or its sha256 does not match vocab_sha256 in {METADATA_FILE}")
    return Vocab.load(path)


def settle_heap(settings: Settings) -> None:
    """After start-up: one full collection, then (``gc_freeze``) freeze the survivors, so later collections
    only look at objects created while serving."""
    if settings.gc_freeze:
        gc.collect()
        gc.freeze()
