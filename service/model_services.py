"""Model families: one BentoML service class per task family, each holding its onnxruntime sessions.

Each family's batch function (``infer``; a generator's ``generate`` and ``encode``) takes rows from any
number of requests (possibly for several models of the family), groups them by model, runs each group and
returns one result per row in input order. Pre/post-processing stays in the API service.

The classes are BentoML services, and they run either as model services (``NNSERVE_BATCHING=services``:
BentoML's adaptive batcher merges rows from concurrent requests, one internal HTTP hop per request) or
inside each API worker (``NNSERVE_BATCHING=api``, the default: service/batching.py calls the same batch
functions on their own thread).
"""

from __future__ import annotations

import logging
from typing import Annotated, TypeVar

import bentoml
import numpy as np
from bentoml.validators import TensorSchema
from pydantic import BaseModel

from contract.text import pad_right
from service.runtime import OnnxModel, load_family, settle_heap
from service.settings import get_settings
from service.shutdown import delay_sigterm

log = logging.getLogger("bentoml.nnserve")  # under "bentoml" so BentoML's log setup shows it
S = get_settings()  # BentoML takes service configuration at class definition

T = TypeVar("T")
Float32 = Annotated[np.ndarray, TensorSchema("numpy-array", dtype="float32")]
Int64 = Annotated[np.ndarray, TensorSchema("numpy-array", dtype="int64")]

SERVICE_CONFIG = {
    "workers": S.model_workers,
    "logging": {"access": {"enabled": False}},  # a log line per request costs ~16 % of CPU (PERF-NOTES)
    "traffic": {"timeout": S.request_timeout_s},
    # BentoML's client to a dependency recycles its connection every 100 requests by default and fails the
    # calls in flight on it (sporadic 500s under load); keep one connection for the worker's life.
    "runner_connection": {"max_requests": 1_000_000_000, "max_age": 1e9},
}


class ImageItem(BaseModel):
    """One image row: which model, and its preprocessed tensor (C, H, W)."""

    model: str
    x: Float32


class TextItem(BaseModel):
    """One text row: which model, and its token ids (T,) (unpadded)."""

    model: str
    ids: Int64


class LatentItem(BaseModel):
    """One generator row: which model, a latent vector (k,), and a class index (conditional models only)."""

    model: str
    z: Float32
    label: int = 0


class LabeledImageItem(ImageItem):
    """An image row for a VAE's encoder; ``label`` is read by conditional models only."""

    label: int = 0


class InferResult(BaseModel):
    logits: Float32
    ood_score: float | None = None  # image classifiers calibrated by export/calibrate.py: the graph's score


class AutoencoderResult(BaseModel):
    code: Float32
    reconstruction: Float32


class ImageResult(BaseModel):
    image: Float32


class PosteriorResult(BaseModel):
    mu: Float32
    logvar: Float32


class ModelState(BaseModel):
    name: str
    providers: list[str]


class FamilyState(BaseModel):
    models: list[ModelState]
    failed: dict[str, str] = {}  # artifacts left out (skip_bad_artifacts): folder name -> why


def group_by_model(names: list[str]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        groups.setdefault(name, []).append(i)
    return groups


def in_input_order(n: int, chunks: list[tuple[list[int], list[T]]]) -> list[T]:
    """Results computed per model (and per bucket) -> one list in the rows' original order."""
    out: list[T | None] = [None] * n
    for rows, results in chunks:
        for i, result in zip(rows, results, strict=True):
            out[i] = result
    assert all(r is not None for r in out), "a row got no result"
    return out  # type: ignore[return-value]


def length_buckets(lengths: list[int], max_ratio: float = 2.0) -> list[list[int]]:
    """Row indices sorted by length and cut wherever the longest row would exceed ``max_ratio`` times the
    shortest: padding stays under half of each run's work, and one run serves similar lengths."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    buckets: list[list[int]] = []
    for i in order:
        if buckets and lengths[i] <= max_ratio * lengths[buckets[-1][0]]:
            buckets[-1].append(i)
        else:
            buckets.append([i])
    return buckets


def _outlive_the_api_drain() -> None:
    """'services' batching: a model service gets SIGTERM with the API workers and keeps serving a second longer
    than their drain, so their requests during it still reach it. (In 'api' batching the families live in the
    API worker, whose own drain covers them.)"""
    if S.batching == "services":
        delay_sigterm(S.drain_s + 1, "model service")


def family_state(models: dict[str, OnnxModel], failed: dict[str, str] | None = None) -> FamilyState:
    return FamilyState(
        models=[ModelState(name=n, providers=m.session.get_providers()) for n, m in models.items()],
        failed=dict(failed or {}),
    )


@bentoml.service(name="nnserve-image-models", **SERVICE_CONFIG)
class ImageModels:
    """Image classifiers: float32 (B, C, H, W) -> logits (B, K)."""

    def __init__(self) -> None:
        self.failed: dict[str, str] = {}  # skip_bad_artifacts: folder name -> why it is not served
        self.models = load_family("image-classification", S, self.failed)  # ArtifactError names the bad file
        settle_heap(S)
        _outlive_the_api_drain()

    def __is_ready__(self) -> bool:
        return True  # __init__ loaded and warmed up every model, or start-up failed

    @bentoml.api(batchable=True, batch_dim=0, max_batch_size=S.max_batch_size, max_latency_ms=S.max_latency_ms)
    def infer(self, items: list[ImageItem]) -> list[InferResult]:
        chunks = []
        for name, rows in group_by_model([it.model for it in items]).items():
            model = self.models[name]
            outs = model.run_all(np.stack([items[i].x for i in rows]))
            ood = model.meta.ood
            k = model.output_index(ood.output) if ood is not None and ood.output else None  # model.json names it
            scores = [None] * len(rows) if k is None else [float(v) for v in outs[k]]
            chunks.append((rows, [InferResult(logits=lg, ood_score=s) for lg, s in zip(outs[0], scores, strict=True)]))
        return in_input_order(len(items), chunks)

    @bentoml.api
    def state(self) -> FamilyState:
        return family_state(self.models, self.failed)


@bentoml.service(name="nnserve-text-models", **SERVICE_CONFIG)
class TextModels:
    """Text classifiers: right-padded int64 ids (B, T) + lengths (B,) -> logits (B, K).

    The recurrent models are padding-invariant (models/rnn.py), so a text's logits do not depend on the
    bucket it is padded into or on the other texts of its batch.
    """

    def __init__(self) -> None:
        self.failed: dict[str, str] = {}  # skip_bad_artifacts: folder name -> why it is not served
        self.models = load_family("text-classification", S, self.failed)
        settle_heap(S)
        _outlive_the_api_drain()

    def __is_ready__(self) -> bool:
        return True

    @bentoml.api(batchable=True, batch_dim=0, max_batch_size=S.text_max_batch_size, max_latency_ms=S.max_latency_ms)
    def infer(self, items: list[TextItem]) -> list[InferResult]:
        chunks = []
        for name, rows in group_by_model([it.model for it in items]).items():
            for bucket in length_buckets([len(items[i].ids) for i in rows]):
                idx = [rows[j] for j in bucket]
                ids, lens = pad_right([items[i].ids for i in idx])
                chunks.append((idx, [InferResult(logits=row) for row in self.models[name].run(ids, lens)]))
        return in_input_order(len(items), chunks)

    @bentoml.api
    def state(self) -> FamilyState:
        return family_state(self.models, self.failed)


@bentoml.service(name="nnserve-autoencoders", **SERVICE_CONFIG)
class AutoencoderModels:
    """Autoencoders: pixels in [0, 1] (B, C, H, W) -> code (B, k) and reconstruction (B, C, H, W)."""

    def __init__(self) -> None:
        self.failed: dict[str, str] = {}  # skip_bad_artifacts: folder name -> why it is not served
        self.models = load_family("autoencoder", S, self.failed)
        settle_heap(S)
        _outlive_the_api_drain()

    def __is_ready__(self) -> bool:
        return True

    @bentoml.api(batchable=True, batch_dim=0, max_batch_size=S.max_batch_size, max_latency_ms=S.max_latency_ms)
    def infer(self, items: list[ImageItem]) -> list[AutoencoderResult]:
        chunks = []
        for name, rows in group_by_model([it.model for it in items]).items():
            codes, recons = self.models[name].run_all(np.stack([items[i].x for i in rows]))
            results = [AutoencoderResult(code=c, reconstruction=r) for c, r in zip(codes, recons, strict=True)]
            chunks.append((rows, results))
        return in_input_order(len(items), chunks)

    @bentoml.api
    def state(self) -> FamilyState:
        return family_state(self.models, self.failed)


def _with_labels(model: OnnxModel, x: np.ndarray, labels: list[int]) -> tuple[np.ndarray, ...]:
    """A generator graph's inputs: a conditional one also takes int64 labels (B,)."""
    assert model.meta.generator is not None
    return (x, np.asarray(labels, dtype=np.int64)) if model.meta.generator.conditional else (x,)


@bentoml.service(name="nnserve-generators", **SERVICE_CONFIG)
class GeneratorModels:
    """Generators: z (B, k) [+ labels] -> images (B, C, H, W) in [0, 1]; a VAE's encoder: image -> mu, logvar.

    Rows are independent (batch norm runs on its recorded statistics), so a sample depends on its own z and
    label only, never on the requests it was batched with.
    """

    def __init__(self) -> None:
        self.failed: dict[str, str] = {}  # skip_bad_artifacts: folder name -> why it is not served
        self.models = load_family("generator", S, self.failed)
        settle_heap(S)
        _outlive_the_api_drain()

    def __is_ready__(self) -> bool:
        return True

    @bentoml.api(batchable=True, batch_dim=0, max_batch_size=S.max_batch_size, max_latency_ms=S.max_latency_ms)
    def generate(self, items: list[LatentItem]) -> list[ImageResult]:
        chunks = []
        for name, rows in group_by_model([it.model for it in items]).items():
            model = self.models[name]
            z = np.stack([items[i].z for i in rows])
            images = model.run(*_with_labels(model, z, [items[i].label for i in rows]))
            chunks.append((rows, [ImageResult(image=img) for img in images]))
        return in_input_order(len(items), chunks)

    @bentoml.api(batchable=True, batch_dim=0, max_batch_size=S.max_batch_size, max_latency_ms=S.max_latency_ms)
    def encode(self, items: list[LabeledImageItem]) -> list[PosteriorResult]:
        chunks = []
        for name, rows in group_by_model([it.model for it in items]).items():
            encoder = self.models[name].encoder
            assert encoder is not None, f"{name} has no encoder"  # the API service checks before calling
            x = np.stack([items[i].x for i in rows])
            mu, logvar = encoder.run_all(*_with_labels(self.models[name], x, [items[i].label for i in rows]))
            chunks.append((rows, [PosteriorResult(mu=m, logvar=v) for m, v in zip(mu, logvar, strict=True)]))
        return in_input_order(len(items), chunks)

    @bentoml.api
    def state(self) -> FamilyState:
        return family_state(self.models, self.failed)
