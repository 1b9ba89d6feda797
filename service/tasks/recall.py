"""Recall from associative memories (Hopfield networks): images or ±1 state vectors in JSON (/v1/recall) -> the
state each one settles in, its sweeps, the energy after each, and the stored pattern it matched or that it is a
spurious state; on /v2, states in (FP32 rows, read by sign) and the final state, energy, sweeps, overlaps and
matched index out.

Its family, MemoryModels, repeats the artifact's one-sweep graph, state (B, N) ±1 -> next_state (B, N), energy (B,),
overlaps (B, P), over the rows still moving until each reaches a fixed point, a 2-cycle or its sweep limit
(contract/hopfield.py, the loop training measured with): one batch function call per request batch, however many
sweeps it takes. The graph's fields are exact (models/hopfield.py), so a row's recall depends on its own cue only.
"""

from __future__ import annotations

import reprlib
from typing import Annotated, Any, Literal

import bentoml
import numpy as np
from fastapi import APIRouter
from prometheus_client import Counter, Histogram
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, WithJsonSchema
from starlette.responses import Response

from contract import hopfield
from contract.metadata import ModelMetadata
from service.engine import Engine, current
from service.errors import ApiError
from service.family import SERVICE_CONFIG, Family, Float32, group_by_model, in_input_order
from service.images import pixels, png_b64
from service.metrics import child
from service.oip_schemas import TensorMetadata
from service.registry import Adapter, Task, Tensors, register
from service.runtime import served_key
from service.schemas import ANSWERED_BY, ERROR_RESPONSES, MODEL_NAME, VERSION, VersionChoice, json_response
from service.settings import get_settings

S = get_settings()
TASK = "recall"
MAX_UNITS = 16_384  # units of a state vector the schema admits (a 128 x 128 image); a model takes exactly its own N
DEFAULT_SWEEPS = S.recall_sweeps

RECALLS = Counter(
    "nnserve_recalls_total", "associative-memory recalls by result (matched or spurious)", ["model", "result"]
)
SWEEPS = Histogram(
    "nnserve_recall_sweeps", "synchronous sweeps per recall", ["model"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
)


def _bipolar(row: list[Any]) -> list[Any]:
    """A whole state checked at once, failing at its first bad unit: one error per state, however long (a unit
    type validated item by item would build one error object per bad unit: a million for a 2 MB body)."""
    for i, v in enumerate(row):
        if type(v) is not int or (v != 1 and v != -1):  # bool and float are refused too
            raise ValueError(f"unit {i} is {reprlib.repr(v)}: a unit is -1 or 1")  # 60 MB of "x": 40 shown
    return row


State = Annotated[
    list[Any],
    Field(min_length=1, max_length=MAX_UNITS),
    AfterValidator(_bipolar),
    WithJsonSchema(
        {"type": "array", "items": {"type": "integer", "enum": [-1, 1]}, "minItems": 1, "maxItems": MAX_UNITS}
    ),
]


class CueItem(BaseModel):
    """One recall row: which model, its cue state (N,) ±1, and its sweep limit."""

    model: str
    state: Float32
    max_sweeps: int


class RecallResult(BaseModel):
    state: Float32  # (N,) ±1
    energies: Float32  # (sweeps,)
    overlaps: Float32  # (P,)
    outcome: str


class RecallPatternsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = Field("mnist-hopfield", pattern=MODEL_NAME, description="a served associative memory (task recall)")
    version: VersionChoice = None
    images: list[str] | None = Field(
        None,
        min_length=1,
        max_length=S.max_recall_inputs,
        description=f"1-{S.max_recall_inputs} base64 PNG, JPEG or WebP images, prepared as the model's card says "
        "(an MNIST digit as it is) and binarised (a pixel above the model's binarize threshold is +1); or give states",
    )
    states: list[State] | None = Field(
        None,
        min_length=1,
        max_length=S.max_recall_inputs,
        description=f"1-{S.max_recall_inputs} cue states of -1 and 1, each as long as the model has units (its "
        "card's inputs[0].shape[1]; for an image, row-major pixels, +1 ink); or give images",
    )
    max_sweeps: StrictInt = Field(
        DEFAULT_SWEEPS,
        ge=1,
        le=S.max_recall_sweeps,
        description="stop after this many synchronous sweeps if the state has not settled",
    )


class Recalled(BaseModel):
    state: list[int] = Field(description="the final state: -1 or 1 per unit (row-major pixels, +1 ink)")
    image: str = Field(description="the final state as a base64 PNG at the model's input size, ink white")
    sweeps: int = Field(
        ge=1, description="synchronous sweeps run (a fixed point's last one is the sweep that changed nothing)"
    )
    energies: list[float] = Field(description="the energy E = -1/2 sᵀWs + bᵀs after each sweep")
    outcome: Literal["fixed-point", "2-cycle", "max-sweeps"] = Field(
        description="how recall stopped: a state no sweep changes, two states alternating (the later one is "
        "answered), or the sweep limit"
    )
    matched: int | None = Field(
        description="the stored pattern matched: an index into the model card's labels; null if spurious"
    )
    label: str | None = Field(description="the matched pattern's class; null if spurious")
    overlap: float = Field(
        ge=-1,
        le=1,
        description="the largest s·ξ/N over the stored patterns ξ: 1 is identical (a reversed pattern shows as "
        "-1 in /v2's overlaps, not here: this is the closest pattern's, read as it is stored)",
    )
    spurious: bool = Field(description="no stored pattern reaches match_overlap: a mixture, a reversed pattern, ...")


class RecallPatternsResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model: str = Field(description=ANSWERED_BY)
    version: str = Field(description=VERSION)
    rule: str = Field(description="how the patterns were stored: hebbian or pseudo-inverse")
    patterns: int = Field(description="patterns stored")
    match_overlap: float = Field(description="the overlap a final state needs with a stored pattern to match it")
    binarize: float = Field(description="images: a pixel in [0, 1] above this level is +1 (ink), the others -1")
    results: list[Recalled] = Field(description="one per input, in input order")


@bentoml.service(name="nnserve-associative-memories", **SERVICE_CONFIG)
class MemoryModels(Family):
    """Associative memories: cue states (B, N) ±1 -> each one's recall, sweep after sweep of the one-sweep graph."""

    task = TASK

    @bentoml.api(batchable=True, batch_dim=0, max_batch_size=S.max_batch_size, max_latency_ms=S.max_latency_ms)
    def recall(self, items: list[CueItem]) -> list[RecallResult]:
        chunks = []
        for name, rows in group_by_model([it.model for it in items]).items():
            model = self.models[name]

            def sweep(states: np.ndarray, model: Any = model) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
                nxt, energy, overlaps = model.run_all(states)
                return nxt, energy, overlaps

            cues = np.stack([items[i].state for i in rows])
            out = hopfield.recall(sweep, cues, np.asarray([items[i].max_sweeps for i in rows]))
            results = [
                RecallResult(
                    state=r.state, energies=np.asarray(r.energies, np.float32), overlaps=r.overlaps, outcome=r.outcome
                )
                for r in out
            ]
            chunks.append((rows, results))
        return in_input_order(len(items), chunks)


def units(meta: ModelMetadata) -> int:
    return meta.inputs[0].shape[1]


def config(meta: ModelMetadata) -> hopfield.Reading:
    """The model's binarize threshold, match overlap and storage rule (its architecture config, checked)."""
    return hopfield.Reading.of(meta.architecture_config)


async def run(engine: Engine, meta: ModelMetadata, states: np.ndarray, max_sweeps: int) -> list[RecallResult]:
    """Cue states (B, N) ±1 -> their recalls, batched with other requests' rows."""
    key = served_key(meta)
    items = [CueItem(model=key, state=s, max_sweeps=max_sweeps) for s in states]
    results = await engine.call(TASK, items, meta.name, "recall")
    for r in results:
        child(SWEEPS, meta.name).observe(len(r.energies))
    return results


router = APIRouter()


@router.post("/recall", response_model=RecallPatternsResponse, responses=ERROR_RESPONSES)
async def recall(request: RecallPatternsRequest) -> Response:
    """Recall stored patterns from cues (images or ±1 states): each cue's final state, how many sweeps it took, the
    energy after each, and the stored pattern it matched, or that it fell into a spurious state."""
    r, engine = request, current()
    if (r.images is None) == (r.states is None):
        raise ApiError("invalid_request", "give either images or states")
    meta = engine.metadata(engine.requested_by(r, TASK), TASK)
    reading = config(meta)
    n = units(meta)
    if r.images is not None:
        _, items = await engine.image_rows(meta, TASK, r.images)
        states = np.stack([hopfield.to_state(pixels(it.x, meta), reading.binarize) for it in items])
    else:
        assert r.states is not None
        for i, s in enumerate(r.states):
            if len(s) != n:
                raise ApiError(
                    "invalid_request", f"states[{i}] has {len(s)} units; {meta.name} has {n}", [{"index": i}]
                )
        states = np.asarray(r.states, dtype=np.float32)
    results = await run(engine, meta, states, r.max_sweeps)
    pre = meta.image_preprocessing()
    shape = (pre.channels, *pre.input_size)
    out = []
    for res in results:
        index, overlap = hopfield.best_match(res.overlaps, reading.match_overlap)
        child(RECALLS, meta.name, "spurious" if index is None else "matched").inc()
        out.append(
            Recalled(
                state=res.state.astype(np.int64).tolist(),
                image=png_b64((res.state.reshape(shape) + 1) / 2),
                sweeps=len(res.energies),
                energies=[float(e) for e in res.energies],
                outcome=res.outcome,
                matched=index,
                label=None if index is None else meta.labels[index],
                overlap=min(1.0, max(-1.0, overlap)),
                spurious=index is None,
            )
        )
    return json_response(
        RecallPatternsResponse(
            model=meta.name,
            version=meta.version,
            rule=reading.rule,
            patterns=len(meta.labels),
            match_overlap=reading.match_overlap,
            binarize=reading.binarize,
            results=out,
        )
    )


def _v2_inputs(meta: ModelMetadata) -> list[TensorMetadata]:
    return [TensorMetadata(name="state", datatype="FP32", shape=[-1, units(meta)])]


def _v2_outputs(meta: ModelMetadata) -> list[TensorMetadata]:
    n, p = units(meta), len(meta.labels)
    return [
        TensorMetadata(name="state", datatype="FP32", shape=[-1, n]),
        TensorMetadata(name="energy", datatype="FP32", shape=[-1]),
        TensorMetadata(name="sweeps", datatype="INT64", shape=[-1]),
        TensorMetadata(name="overlaps", datatype="FP32", shape=[-1, p]),
        TensorMetadata(name="matched", datatype="INT64", shape=[-1]),
    ]


async def _v2_recall(engine: Engine, meta: ModelMetadata, t: Tensors) -> Tensors:
    """A state row's units are read by sign (> 0: +1, else -1); recall runs to NNSERVE_RECALL_SWEEPS sweeps."""
    states = np.where(t["state"] > 0, 1.0, -1.0).astype(np.float32)
    results = await run(engine, meta, states, DEFAULT_SWEEPS)
    match_overlap = config(meta).match_overlap
    matched = [hopfield.best_match(r.overlaps, match_overlap)[0] for r in results]
    return {
        "state": np.stack([r.state for r in results]),
        "energy": np.asarray([r.energies[-1] for r in results], dtype=np.float32),
        "sweeps": np.asarray([len(r.energies) for r in results], dtype=np.int64),
        "overlaps": np.stack([r.overlaps for r in results]),
        "matched": np.asarray([-1 if m is None else m for m in matched], dtype=np.int64),
    }


register(
    Task(
        name=TASK,
        family=MemoryModels,
        methods=("recall",),
        max_batch=lambda s: s.max_batch_size,
        max_rows=lambda s: s.max_recall_inputs,
        router=router,
        v2=Adapter(_v2_inputs, _v2_outputs, _v2_recall),
        inline=False,  # a row's sweeps are the request's to choose (up to NNSERVE_MAX_RECALL_SWEEPS): never on the loop
    )
)
