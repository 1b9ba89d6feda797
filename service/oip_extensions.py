"""Triton's model configuration and statistics extensions, built from what nnserve serves: the model's /v2
tensors and batching settings (``model_config``) and the counters of service/stats.py (``statistics``). Shared
by the HTTP routes (service/oip.py) and gRPC (service/oip_grpc.py)."""

from __future__ import annotations

from typing import Any

from contract.metadata import ModelMetadata
from service.oip_schemas import (
    ConfigTensor,
    DynamicBatching,
    InstanceGroup,
    ModelConfig,
    ModelStatistics,
    TensorMetadata,
)
from service.registry import TASKS
from service.settings import Settings, VersionPolicy
from service.stats import model_statistics

PLATFORM = "onnxruntime_onnx"
TRITON_TYPE = {"FP32": "TYPE_FP32", "INT64": "TYPE_INT64", "BYTES": "TYPE_STRING", "BOOL": "TYPE_BOOL"}


def _config_tensor(t: TensorMetadata) -> ConfigTensor:
    """A /v2 tensor (batch axis first) -> Triton's config entry: dims without the batch axis, and a tensor of one
    value per row as dims [1] reshaped to [] (Triton's way of writing it)."""
    dims = list(t.shape[1:])
    reshape: dict[str, list[int]] | None = None
    if not dims:
        dims, reshape = [1], {"shape": []}
    return ConfigTensor(name=t.name, data_type=TRITON_TYPE[t.datatype], dims=dims, reshape=reshape)


def _version_policy(policy: VersionPolicy) -> dict[str, dict[str, Any]]:
    """NNSERVE_VERSION_POLICY's entry in Triton's shape (its versions are numbers)."""
    if policy.specific is not None:
        return {"specific": {"versions": [int(v) if v.isdigit() else v for v in policy.specific]}}
    return {"latest": {"num_versions": policy.latest or 1}}


def model_config(meta: ModelMetadata, settings: Settings) -> ModelConfig:
    task = TASKS[meta.task]
    api = settings.batching == "api"
    delay_us = 0 if api else settings.max_latency_ms * 1000  # the greedy batcher never waits to fill a batch
    return ModelConfig(
        name=meta.name,
        platform=PLATFORM,
        backend="onnxruntime",
        max_batch_size=task.max_rows(settings),
        input=[_config_tensor(t) for t in task.v2.inputs(meta)],
        output=[_config_tensor(t) for t in task.v2.outputs(meta)],
        dynamic_batching=DynamicBatching(max_queue_delay_microseconds=delay_us),
        instance_group=[
            InstanceGroup(
                name=f"{meta.name}_0",
                kind="KIND_CPU",
                count=settings.api_workers if api else settings.model_workers,
            )
        ],
        version_policy=_version_policy(settings.version_policy.get(meta.name, VersionPolicy())),
        parameters={
            "batching": {"string_value": settings.batching},
            "max_rows_per_execution": {"string_value": str(task.max_batch(settings))},
            "intra_op_threads": {"string_value": str(settings.ort_intra_op_threads)},
        },
    )


def statistics(catalog: dict[str, ModelMetadata], names: list[str]) -> list[ModelStatistics]:
    raw = model_statistics(names, {n: catalog[n].version for n in names})
    return [ModelStatistics.model_validate(s) for s in raw]
