"""What every task's family shares. A family is one BentoML service class per task (in its module of
service/tasks/), holding its onnxruntime sessions.

Each family's batch function (``infer``; a generator's ``generate`` and ``encode``) takes rows from any
number of requests (possibly for several models of the family), groups them by model, runs each group and
returns one result per row in input order. Pre/post-processing stays in the API service.

The classes are BentoML services, and they run either as model services (``NNSERVE_BATCHING=services``:
BentoML's adaptive batcher merges rows from concurrent requests, one internal HTTP hop per request) or
inside each API worker (``NNSERVE_BATCHING=api``, the default: service/batching.py calls the same batch
functions on their own thread).
"""

from __future__ import annotations

from typing import Annotated, TypeVar

import bentoml
import numpy as np
from bentoml.validators import TensorSchema
from pydantic import BaseModel

from service.runtime import OnnxModel, load_family, settle_heap
from service.settings import get_settings
from service.shutdown import delay_sigterm

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
    """One image row: which model, its preprocessed tensor (C, H, W), and for a photo how unlike one of the
    model's kind of input it is (contract.ink.Ink.oddness: above 1, unlike any), read as pen strokes, their
    polarity (``contract.images.Reading.dark_ink``), and whether its sheet was cut out of a table
    (``Reading.on_table``: read at the model's table temperature), and the reason of its oddness
    (``Reading.odd_reason``)."""

    model: str
    x: Float32
    oddness: float | None = None
    dark_ink: bool | None = None
    on_table: bool = False
    odd_reason: str = ""


class LabeledImageItem(ImageItem):
    """An image row for a VAE's encoder; ``label`` is read by conditional models only."""

    label: int = 0


class InferResult(BaseModel):
    logits: Float32
    ood_score: float | None = None  # image classifiers calibrated by export/calibrate.py: the graph's score
    attention: Float32 | None = None  # text classifiers with attention pooling: the row's weights (T,)


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


def outlive_the_api_drain() -> None:
    """'services' batching: a model service gets SIGTERM with the API workers and keeps serving a second longer
    than their drain, so their requests during it still reach it. (In 'api' batching the families live in the
    API worker, whose own drain covers them.)"""
    if S.batching == "services":
        delay_sigterm(S.drain_s + 1, "model service")


def family_state(models: dict[str, OnnxModel], failed: dict[str, str] | None = None) -> FamilyState:
    return FamilyState(
        models=[ModelState(name=m.name, providers=m.session.get_providers()) for m in models.values()],
        failed=dict(failed or {}),
    )


class Family:
    """What every family class shares: at start it loads and warms up every artifact of its task (an ArtifactError
    names a bad file; with skip_bad_artifacts the artifact is left out and recorded in ``failed``), and it reports
    its models' state for the model cards. A task's family subclasses it, names its ``task`` and adds its batch
    functions, and is decorated with ``@bentoml.service(name=..., **SERVICE_CONFIG)``."""

    task = ""

    def __init__(self) -> None:
        self.failed: dict[str, str] = {}  # skip_bad_artifacts: folder name -> why it is not served
        self.models = load_family(self.task, S, self.failed)
        settle_heap(S)
        outlive_the_api_drain()

    def __is_ready__(self) -> bool:
        return True  # __init__ loaded and warmed up every model, or start-up failed

    @bentoml.api
    def state(self) -> FamilyState:
        return family_state(self.models, self.failed)
