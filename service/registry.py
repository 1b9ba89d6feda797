"""The service's registry of tasks: one module of service/tasks/ per task (the model.json ``task`` it serves)
registers a Task here, and the rest of the service (the API worker's batchers, the model services, /v1's routes,
/v2's adapters, the route table of metrics and media types) reads the registry instead of a table of its own.

A task module holds, together: its family (the BentoML service class whose batch functions run its onnxruntime
sessions), its /v1 router with its request and response schemas, and its /v2 face (an Adapter). Every module
of the service/tasks package is imported by ``load_tasks``, so adding a file there is all it takes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import APIRouter

from contract.discovery import import_modules
from contract.metadata import ModelMetadata
from service.oip_schemas import TensorMetadata
from service.settings import Settings

Tensors = dict[str, np.ndarray]


@dataclass(frozen=True)
class Adapter:
    """A task's /v2 face: its tensors (from the model's metadata) and its run through the task's public
    functions; ``run`` gets the Engine (service/engine.py), the model's metadata and the decoded inputs."""

    inputs: Callable[[ModelMetadata], list[TensorMetadata]]
    outputs: Callable[[ModelMetadata], list[TensorMetadata]]
    run: Callable[[Any, ModelMetadata, Tensors], Awaitable[Tensors]]
    classifies: bool = False  # its first output is logits over meta.labels (the classification extension)
    # outputs a client gets only by asking for them: a request without "outputs" gets the others
    on_request: tuple[str, ...] = ()


@dataclass(frozen=True)
class Task:
    name: str  # model.json's task
    family: Any  # a @bentoml.service class: __init__ loads the task's models, `methods` are its batch functions
    methods: tuple[str, ...]
    max_batch: Callable[[Settings], int]  # rows per batch of its batch functions
    max_rows: Callable[[Settings], int]  # rows (images, texts, samples) one request may carry
    router: APIRouter  # its /v1 routes, mounted under /v1
    v2: Adapter
    # whether its batches may run on the event loop when the batcher expects them to be cheap (service/batching.py);
    # False where a row's cost depends on the request (recall's sweeps), so past batches' average bounds nothing
    inline: bool = True

    @property
    def attr(self) -> str:
        """The NNServe attribute holding its model service in 'services' batching."""
        return self.name.replace("-", "_") + "_models"


TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    if task.name in TASKS:
        raise ValueError(f"task {task.name!r} is registered twice")
    TASKS[task.name] = task
    return task


def load_tasks(package: str = "service.tasks") -> dict[str, Task]:
    """Import every module of the tasks package (each registers itself); the registry, in module-name order."""
    import_modules(package)
    return TASKS
