"""onnxruntime sessions for exported artifacts: load once, run on a batch, one output row per input row."""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from pydantic import ValidationError

from contract.metadata import (
    METADATA_FILE,
    ONNX_FILE,
    ModelMetadata,
    TensorSpec,
    TextPreprocessing,
    sha256_file,
)
from contract.text import TEXT_IDS, Vocab
from service.metrics import BATCH_SIZE, INFERENCE_SECONDS, child
from service.registry import load_tasks
from service.settings import Settings, VersionPolicy, get_settings
from service.stats import executed

log = logging.getLogger(__name__)


class ArtifactError(RuntimeError):
    """An artifact that must not be served; the message names the file, ``folder`` (where known) its artifact
    folder as ``artifact_label`` names it."""

    folder: str | None = None


def providers() -> list[str]:
    """CUDA when this onnxruntime build and machine have it, CPU always."""
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


# onnxruntime's CPU arena keeps every chunk a run allocated, per session, for the session's lifetime: a batch of
# 128 long texts (1,024 windows) left 422 MB held by sst2-gru alone, and a worker that had served an audit's
# batches sat at 1.9 GB (over the pod's 1,536 MiB). Shrinking the arena at the end of every run hands back what
# the run no longer uses (tests/test_bad_artifacts.py; the 20 graphs' 64-row batches, one after another: 282 ->
# 1,016 MB without, 282 -> 448 MB with; a 1-row mnist-cnn run 403 vs 402 us, 128 texts 47.5 vs 47.9 ms).
RUN_OPTIONS = ort.RunOptions()
RUN_OPTIONS.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")


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
        outs = self.session.run([o.name for o in self.outputs], feed, RUN_OPTIONS)
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
    logits = next((o.shape[-1] for o in meta.outputs if o.name == "logits"), None)
    task = load_tasks().get(meta.task)  # imported here: load_model is also called outside a served process
    if task is not None and task.v2.classifies and logits not in (None, -1, len(meta.labels)):
        raise ArtifactError(  # an answer's label is labels[argmax]: fewer labels were a 500, more were listed
            f"{model_dir / METADATA_FILE}: {len(meta.labels)} labels for a graph of {logits} logits"
        )
    enc = meta.generator.encoder if meta.generator else None
    if enc is not None:
        path = in_folder(model_dir, enc.file)
        model.encoder = _open_graph(meta, path, enc.sha256, enc.inputs, enc.outputs, settings)
    return model


def in_folder(model_dir: Path, name: str) -> Path:
    """A file model.json names, which must lie in the artifact's own folder: a name leading elsewhere ("../x",
    "/etc/passwd") is refused, never read. Judged on the name, not on where links lead: a mounted volume's files
    are links (Kubernetes' ..data), which are the deployer's to make."""
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts:
        raise ArtifactError(f"{model_dir / METADATA_FILE}: {name!r} lies outside the artifact's folder")
    return model_dir / rel


def check_files(model_dir: Path, meta: ModelMetadata) -> None:
    """The files model.json records (the graph, a VAE's encoder, a text model's vocabulary) are on disk with the
    bytes it records (ArtifactError otherwise): run before a session already held for them is reused, and by
    preflight, so a file replaced or lost on disk is refused at a load and at start-up alike."""
    files = [(model_dir / ONNX_FILE, meta.onnx_sha256)]
    enc = meta.generator.encoder if meta.generator else None
    if enc is not None:
        files.append((in_folder(model_dir, enc.file), enc.sha256))
    if isinstance(meta.preprocessing, TextPreprocessing):
        files.append((in_folder(model_dir, meta.preprocessing.vocab_file), meta.preprocessing.vocab_sha256))
    for path, sha256 in files:
        verified(path, sha256)


def verified(path: Path, sha256: str) -> Path:
    """``path``, a file whose bytes hash to the ``sha256`` model.json records (ArtifactError: missing, or
    corrupt or replaced since)."""
    if not path.is_file():
        raise ArtifactError(f"{path}: missing")
    if sha256_file(path) != sha256:
        raise ArtifactError(f"{path}: sha256 does not match the one in {METADATA_FILE} (corrupt or replaced)")
    return path


EXTERNAL_DATA_FOLDER = "session.model_external_initializers_file_folder_path"  # onnxruntime's config key


def _open_graph(
    meta: ModelMetadata,
    onnx_path: Path,
    sha256: str,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    settings: Settings,
) -> OnnxModel:
    """An onnxruntime session for one graph whose bytes and tensor schema match what model.json records; a graph
    whose weights lie in another file (ONNX external data, which no sha256 in model.json covers) is refused:
    nnserve's export writes one self-contained file. (Opened from its path: from bytes, the 20 shipped models
    held 377 MiB more across the server's three processes.)"""
    verified(onnx_path, sha256)
    opts = ort.SessionOptions()
    # onnxruntime reads a graph's external data from this folder, which is never there: any is refused
    opts.add_session_config_entry(EXTERNAL_DATA_FOLDER, str(onnx_path.parent / ".nnserve-no-external-data"))
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


def served_key(meta: ModelMetadata) -> str:
    """What a batch row names its model by: one loaded version of it, down to its files' bytes (the graph, a VAE's
    encoder, a text model's vocabulary), so that rows prepared for a version (a text encoded with its vocabulary)
    never run through another one that replaced it meanwhile (service/repository.py), and a reload of unchanged
    files is the same model."""
    enc = meta.generator.encoder if meta.generator else None
    vocab = meta.preprocessing.vocab_sha256 if isinstance(meta.preprocessing, TextPreprocessing) else ""
    files = hashlib.sha256(f"{meta.onnx_sha256}:{enc.sha256 if enc else ''}:{vocab}".encode()).hexdigest()
    return f"{meta.name}@{meta.version}#{files[:16]}"


def version_order(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (-1, version)


def metadata_head(path: Path) -> bytes:
    """A model.json's first NNSERVE_MAX_METADATA_BYTES + 1 bytes: never more is read (a file that holds more is
    refused where it is loaded), so a 100 MB one costs an index or a poll scan what 1 MiB does."""
    if not path.is_file():  # a folder, a FIFO (whose open would wait for a writer), a link to nothing or a loop
        raise OSError(f"{path}: not a file")
    with open(path, "rb") as f:
        return f.read(get_settings().max_metadata_bytes + 1)


def _folder_version(folder: Path) -> str:
    """Today's layout (model.json in the model's folder itself): the version its model.json names, else "1"."""
    try:
        raw = metadata_head(folder / METADATA_FILE)
        if len(raw) > get_settings().max_metadata_bytes:
            return "1"  # its load says why it is refused
        version = json.loads(raw).get("version", "1")
    except (OSError, ValueError, AttributeError):
        return "1"
    return str(version)


def versions_on_disk(settings: Settings, name: str) -> list[tuple[str, Path]]:
    """(version, folder) of one model, oldest first: its numbered subfolders that hold a model.json
    (``<name>/<version>/``), and the model's folder itself when it holds one (today's layout, read as the version
    its model.json names: "1" for every artifact shipped so far)."""
    folder = settings.model_dir / name
    found = [(_folder_version(folder), folder)] if _present(folder / METADATA_FILE) else []
    if folder.is_dir():
        found += [(p.name, p) for p in folder.iterdir() if p.name.isdigit() and _present(p / METADATA_FILE)]
    return sorted(found, key=lambda vp: version_order(vp[0]))


def twice(path: Path, name: str, version: str) -> str:
    """The reason a version is refused when another folder of its model holds the same version (a model.json in
    the model's folder naming a numbered folder's version: one of them was served without a word, an audit's)."""
    return f"{path / METADATA_FILE}: version {version} of {name} is on disk twice (in another folder too)"


def _present(path: Path) -> bool:
    """Is there a model.json, readable or not? One that is a folder, a FIFO or a broken link makes a version whose
    load fails naming it (such a version was left out without a word, and its load answered 200: an audit's)."""
    return path.exists() or path.is_symlink()


def model_names(settings: Settings) -> list[str]:
    """``settings.models`` if given, else every folder of the model folder holding a version."""
    if settings.models:
        return list(settings.models)
    root = settings.model_dir
    return sorted(p.name for p in root.iterdir() if p.is_dir() and versions_on_disk(settings, p.name))


def discover(settings: Settings, name: str | None = None) -> list[Path]:
    """Artifact folders to serve: the versions each model's version policy picks among those on disk (the newest
    one without a policy), for every model or for ``name``. A named model with no version on disk is returned as
    its folder, whose reading then fails with the reason."""
    out: list[Path] = []
    for model in [name] if name is not None else model_names(settings):
        on_disk = versions_on_disk(settings, model)
        if not on_disk:
            out.append(settings.model_dir / model)
            continue
        chosen = set(settings.version_policy.get(model, VersionPolicy()).pick([v for v, _ in on_disk]))
        out += [path for version, path in on_disk if version in chosen]
    return out


def artifact_label(path: Path, settings: Settings) -> str:
    """How a folder is named in the model cards' ``unavailable``: the model, or model/version."""
    try:
        return path.relative_to(settings.model_dir).as_posix()
    except ValueError:
        return path.name


def warm_up(model: OnnxModel) -> None:
    """One inference on a minimal input of the right dtypes; non-finite outputs mean a broken artifact. A text
    model reads its vocabulary's last id, so a graph whose embedding holds fewer rows fails here, not on the
    first request that uses a rare word."""
    pre = model.meta.preprocessing
    last_id = pre.vocab_size - 1 if isinstance(pre, TextPreprocessing) else 1
    for graph in (model, model.encoder):
        if graph is None:
            continue
        feed = {}
        for spec in graph.inputs:
            shape = [1 if d == -1 else d for d in spec.shape]
            feed[spec.name] = np.zeros(shape, np.float32) if spec.dtype == "float32" else np.ones(shape, np.int64)
        if TEXT_IDS in feed:
            feed[TEXT_IDS][:] = last_id
        try:
            outputs = graph.session.run(None, feed, RUN_OPTIONS)
        except Exception as e:  # onnxruntime's own errors: a graph that cannot run what model.json says it takes
            raise ArtifactError(f"{graph.path}: the warm-up inference failed: {str(e)[:300]}") from None
        if not all(np.isfinite(out).all() for out in outputs):
            raise ArtifactError(f"{graph.path}: warm-up inference produced non-finite outputs")


def read_metadata(model_dir: Path) -> ModelMetadata:
    """An artifact's model.json, read to at most NNSERVE_MAX_METADATA_BYTES (ArtifactError: unreadable, too
    large, not the schema, or not the folder's)."""
    limit = get_settings().max_metadata_bytes
    try:
        raw = metadata_head(model_dir / METADATA_FILE)
        if len(raw) > limit:
            raise ValueError(f"over NNSERVE_MAX_METADATA_BYTES ({limit:,} bytes)")
        meta = ModelMetadata.model_validate_json(raw)
    except ValidationError as e:  # one line: the first few fields and what is wrong with each
        why = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'the file'}: {err['msg']}" for err in e.errors()[:3])
        raise ArtifactError(f"{model_dir / METADATA_FILE}: unreadable metadata: {why}") from None
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{model_dir / METADATA_FILE}: unreadable metadata: {e}") from None
    if model_dir.name.isdigit() and meta.version != model_dir.name:
        raise ArtifactError(
            f"{model_dir / METADATA_FILE}: version {meta.version!r} in the folder of version {model_dir.name}"
        )
    folder = model_dir.parent if model_dir.name.isdigit() else model_dir
    if meta.name != folder.name and (folder.parent / meta.name).is_dir():  # a copy beside the model's own folder
        raise ArtifactError(  # ("mnist-cnn.old") served as the model, in its place when its name sorted later
            f"{model_dir / METADATA_FILE}: names the model {meta.name!r}, whose own folder is beside it"
        )
    return meta


def preflight(settings: Settings) -> None:
    """What the ``bentoml serve`` process checks when it imports the service, before any worker starts: a model
    folder that is not there or holds no model (unless model control may load some later), or (without
    ``skip_bad_artifacts``) an artifact whose metadata cannot be read or whose graph is missing, stops the server
    with one line (SystemExit) rather than workers that fail and are restarted for ever; the files' sha256 are
    checked here too (``check_files``), and a text model's vocabulary is read. The workers still run every check
    (hashes, tensor schema, warm-up) as they load."""
    root = settings.model_dir
    if not root.is_dir():
        raise SystemExit(f"nnserve: the model folder {root} (NNSERVE_MODEL_DIR) is not a folder")
    for model, policy in settings.version_policy.items():  # a policy that picks nothing drops its model silently
        on_disk = [v for v, _ in versions_on_disk(settings, model)]
        if not policy.pick(on_disk):
            why = f"NNSERVE_VERSION_POLICY picks no version of {model} (on disk: {', '.join(on_disk) or 'none'})"
            if settings.model_control == "none":
                raise SystemExit(f"nnserve: {why}")
            log.warning("nnserve: %s; it is served once the folder holds one the policy picks", why)
    paths = discover(settings)
    if not paths and settings.model_control == "none":
        raise SystemExit(f"nnserve: {root} holds no model (a folder per model: model.json and model.onnx)")
    if settings.skip_bad_artifacts:
        return
    for path in paths:
        try:
            meta = read_metadata(path)
            check_files(path, meta)  # the vocabulary's sha256 among them: it is read, not hashed again
            if isinstance(meta.preprocessing, TextPreprocessing):  # one that is not a vocabulary would fail every
                read_vocab(in_folder(path, meta.preprocessing.vocab_file), meta.preprocessing)  # worker, for ever
        except ArtifactError as e:
            raise SystemExit(f"nnserve: {e} (NNSERVE_SKIP_BAD_ARTIFACTS=true serves the others)") from None


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
            label = artifact_label(path, settings)
            log.error("not serving %s: %s", label, e)
            if failed is not None:
                failed[label] = str(e)
            continue
        loaded[served_key(model.meta)] = model
        log.info("loaded %s (%s) from %s", model.name, model.meta.architecture, path)
    return loaded


def load_vocab(model_dir: Path, meta: ModelMetadata) -> Vocab:
    """A text model's vocabulary, checked against the sha256 and the size its metadata records (the graph's
    embedding is checked to hold that many rows by ``warm_up``)."""
    pre = meta.text_preprocessing()
    return read_vocab(verified(in_folder(model_dir, pre.vocab_file), pre.vocab_sha256), pre)


def read_vocab(path: Path, pre: TextPreprocessing) -> Vocab:
    """``load_vocab`` of a file whose sha256 has been checked: a JSON list of distinct tokens, as many as
    model.json records (ArtifactError otherwise)."""
    try:
        vocab = Vocab.load(path)
    except (ValueError, TypeError, AttributeError) as e:  # not JSON, or not a list of distinct tokens
        raise ArtifactError(f"{path}: not a vocabulary: {str(e)[:200]}") from None
    if len(vocab) != pre.vocab_size:
        raise ArtifactError(f"{path}: {len(vocab)} tokens, where {METADATA_FILE} says {pre.vocab_size}")
    return vocab


def settle_heap(settings: Settings) -> None:
    """After start-up: one full collection, then (``gc_freeze``) freeze the survivors, so later collections
    only look at objects created while serving."""
    if settings.gc_freeze:
        gc.collect()
        gc.freeze()
