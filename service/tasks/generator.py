"""Generators (GANs, VAE decoders, RBMs): samples from a seed (/v1/generate as base64 PNGs or a grid, /v1/generate/png
as one image), frames walking the latent space between two seeds or, with a VAE, two encoded images
(/v1/interpolate); on /v2, the graph's own tensors (z, and a conditional model's labels; an RBM's chain state and
noise, with its features p(h | v) as the output 'hidden'). Its family, GeneratorModels, runs z (B, k) [+ labels] ->
images (B, C, H, W) in [0, 1], a VAE's encoder, and runs of a Gibbs sampler's chains (model.json's generator.gibbs:
the service draws each chain's noise from the seed, contract/gibbs.py, and runs the graph until the steps are
taken)."""

from __future__ import annotations

import math
import secrets
from typing import Any, Literal

import bentoml
import numpy as np
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from starlette.responses import Response

from contract import gibbs
from contract.images import image_grid
from contract.latents import cycled_labels, latents
from contract.metadata import ModelMetadata
from service.engine import Engine, current, off_loop
from service.errors import ApiError, quoted
from service.family import (
    SERVICE_CONFIG,
    Family,
    Float32,
    LabeledImageItem,
    group_by_model,
    in_input_order,
)
from service.images import b64, grid_cols, png, png_b64
from service.metrics import GENERATED, child
from service.oip_tensors import graph_inputs, graph_outputs
from service.registry import Adapter, Task, Tensors, register
from service.runtime import OnnxModel, served_key
from service.schemas import (
    ANSWERED_BY,
    ERROR_RESPONSES,
    MODEL_NAME,
    VERSION,
    VersionChoice,
    json_response,
)
from service.settings import get_settings

S = get_settings()
TASK = "generator"


class LatentItem(BaseModel):
    """One generator row: which model, a latent vector (k,), and a class index (conditional models only)."""

    model: str
    z: Float32
    label: int = 0


class ImageResult(BaseModel):
    image: Float32


class PosteriorResult(BaseModel):
    mu: Float32
    logvar: Float32


class ChainItem(BaseModel):
    """One row of a Gibbs sampler's run: its state v (D,), noise u_h (K, H) and u_v (K, D), and steps to take."""

    model: str
    v: Float32
    u_h: Float32
    u_v: Float32
    steps: int


class ChainResult(BaseModel):
    v: Float32
    image: Float32
    hidden: Float32


SEED: Any = Field(
    None, ge=0, le=2**63 - 1, description="seeds numpy's default_rng for z; omitted: the server draws one and echoes it"
)


LABEL = Field(
    None,
    description="conditional models only: a class index or label name. /v1/generate without it cycles "
    "through the classes (sample i gets class i mod K)",
)


Format = Literal["png", "grid"]


FORMAT_DOC = "'png': one base64 PNG per image; 'grid': a single base64 PNG of them all"


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = Field("mnist-gan", pattern=MODEL_NAME, description="a served generator")
    version: VersionChoice = None
    n: StrictInt = Field(min(16, S.max_samples), ge=1, le=S.max_samples, description="samples to draw")
    seed: StrictInt | None = SEED
    label: StrictInt | str | None = LABEL
    steps: StrictInt | None = Field(
        None,
        ge=1,
        le=S.max_gibbs_steps,
        description=f"Gibbs samplers (an RBM) only: steps of each chain (default {S.gibbs_steps}); more steps, "
        "samples further from the chains' random start",
    )
    format: Format = Field("png", description=FORMAT_DOC)


class GenerateResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model: str = Field(description=ANSWERED_BY)
    version: str = Field(description=VERSION)
    seed: int = Field(description="the seed used: the same request with it gives the same images")
    steps: int | None = Field(description="Gibbs samplers: the steps each chain took")
    labels: list[str] | None = Field(description="conditional models: each sample's class, in order")
    samples: list[str] = Field(description="base64 PNGs in the model's pixel convention; empty for 'grid'")
    grid: str | None = Field(description="format 'grid': one base64 PNG, samples row by row")


class InterpolateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = Field("mnist-vae", pattern=MODEL_NAME, description="a served generator")
    version: VersionChoice = None
    steps: StrictInt = Field(
        min(8, max(2, S.max_samples)), ge=2, le=max(2, S.max_samples), description="frames, both end points included"
    )
    seed_a: StrictInt | None = SEED
    seed_b: StrictInt | None = SEED
    images: list[str] | None = Field(
        None,
        min_length=2,
        max_length=2,
        description="VAE only, instead of seeds: two base64 PNG/JPEG images whose posterior means are the ends",
    )
    label: StrictInt | str | None = Field(None, description="conditional models: the class of every frame")
    method: Literal["slerp", "linear"] = Field(
        "slerp", description="spherical (keeps Gaussian samples at a typical norm; White 2016) or straight"
    )
    format: Format = Field("png", description=FORMAT_DOC)


class InterpolateResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model: str = Field(description=ANSWERED_BY)
    version: str = Field(description=VERSION)
    seed_a: int | None = Field(description="z of end a is the first sample /v1/generate draws with this seed")
    seed_b: int | None = Field(description="likewise for end b; null when the ends were images")
    label: str | None = Field(description="conditional models: the class of every frame")
    frames: list[str] = Field(description="base64 PNGs from end a to end b; empty for 'grid'")
    grid: str | None = Field(description="format 'grid': one base64 PNG of the frames in one row")


def _with_labels(model: OnnxModel, x: np.ndarray, labels: list[int]) -> tuple[np.ndarray, ...]:
    """A generator graph's inputs: a conditional one also takes int64 labels (B,)."""
    assert model.meta.generator is not None
    return (x, np.asarray(labels, dtype=np.int64)) if model.meta.generator.conditional else (x,)


@bentoml.service(name="nnserve-generators", **SERVICE_CONFIG)
class GeneratorModels(Family):
    """Generators: z (B, k) [+ labels] -> images (B, C, H, W) in [0, 1]; a VAE's encoder: image -> mu, logvar.

    Rows are independent (batch norm runs on its recorded statistics), so a sample depends on its own z and
    label only, never on the requests it was batched with.
    """

    task = TASK

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

    @bentoml.api(batchable=True, batch_dim=0, max_batch_size=S.max_batch_size, max_latency_ms=S.max_latency_ms)
    def gibbs(self, items: list[ChainItem]) -> list[ChainResult]:
        chunks = []
        for name, rows in group_by_model([it.model for it in items]).items():
            steps = np.asarray([items[i].steps for i in rows], dtype=np.int64)
            tensors = (np.stack([getattr(items[i], t) for i in rows]) for t in ("v", "u_h", "u_v"))
            v, image, hidden = self.models[name].run_all(*tensors, steps)
            results = [ChainResult(v=a, image=b, hidden=c) for a, b, c in zip(v, image, hidden, strict=True)]
            chunks.append((rows, results))
        return in_input_order(len(items), chunks)


def label_index(meta: ModelMetadata, label: int | str | None, required: bool) -> int | None:
    """A request's label -> class index, validated against the model (400 on any mismatch)."""
    assert meta.generator is not None
    if label is None:
        if required and meta.generator.conditional:
            raise ApiError("invalid_request", f"{meta.name} is conditional: give a label", [{"labels": meta.labels}])
        return None
    if not meta.generator.conditional:
        raise ApiError("invalid_request", f"{meta.name} is not conditional: it takes no label")
    if isinstance(label, str) and label in meta.labels:
        return meta.labels.index(label)
    if isinstance(label, int) and 0 <= label < len(meta.labels):
        return label
    raise ApiError(
        "invalid_label",
        f"label {quoted(repr(label), 40)} is not one of {meta.name}'s classes: an index 0-{len(meta.labels) - 1} "
        "or a name",
        [{"labels": meta.labels}],
    )


async def decode(engine: Engine, meta: ModelMetadata, z: np.ndarray, labels: list[int]) -> np.ndarray:
    """Latent rows -> images (B, C, H, W) in [0, 1], batched with other requests' rows."""
    key = served_key(meta)
    items = [LatentItem(model=key, z=row, label=y) for row, y in zip(z, labels, strict=True)]
    results = await engine.call(TASK, items, meta.name, "generate")
    child(GENERATED, meta.name).inc(len(results))
    return np.stack([r.image for r in results])


async def chain_images(engine: Engine, meta: ModelMetadata, n: int, seed: int, steps: int) -> np.ndarray:
    """A Gibbs sampler's n chains from the seed (contract/gibbs.py), ``steps`` steps each, in runs of the graph
    batched with other requests' rows -> the last step's p(v | h), (n, C, H, W)."""
    assert meta.generator is not None and meta.generator.gibbs is not None
    g, key = meta.generator.gibbs, served_key(meta)
    rngs = gibbs.chain_rngs(seed, n)
    v = await off_loop(gibbs.start_state, rngs, g.visible)
    results: list[ChainResult] = []
    runs = gibbs.runs(steps, g.steps_per_run)
    for k, todo in enumerate(runs):
        # the noise of a run is n x K x (H + D) uniforms (about a million at the limits): drawn in the decode pool,
        # so a large request's draws do not stall the event loop; the runs stay in order, so the streams do too
        u_h, u_v = await off_loop(gibbs.run_noise, rngs, g.steps_per_run, g.hidden, g.visible)
        rows = [ChainItem(model=key, v=v[i], u_h=u_h[i], u_v=u_v[i], steps=todo) for i in range(n)]
        results = await engine.call(TASK, rows, meta.name, "gibbs", count=k == len(runs) - 1)  # one request
        v = np.stack([r.v for r in results])
    child(GENERATED, meta.name).inc(n)
    return np.stack([r.image for r in results])


def chain_steps(meta: ModelMetadata, steps: int | None) -> int | None:
    """A request's Gibbs steps: the default for a Gibbs sampler, none for the others (400 if given)."""
    assert meta.generator is not None
    if meta.generator.gibbs is None:
        if steps is not None:
            raise ApiError("invalid_request", f"{meta.name} draws each sample in one pass: it takes no steps")
        return None
    return S.gibbs_steps if steps is None else steps


async def sample(
    engine: Engine, model: str, n: int, seed: int | None, label: int | str | None, steps: int | None = None
) -> tuple[ModelMetadata, int, list[int] | None, np.ndarray]:
    """n samples: z ~ N(0, I) from numpy's default_rng(seed), or a Gibbs sampler's chains from the seed (row i is
    the same for any n >= i + 1)."""
    meta = engine.metadata(model, TASK)
    assert meta.generator is not None
    if n > S.max_samples:
        raise ApiError("invalid_request", f"at most {S.max_samples} samples per request")
    index = label_index(meta, label, required=False)
    steps = chain_steps(meta, steps)
    seed = secrets.randbelow(2**31) if seed is None else seed
    if steps is not None:
        return meta, seed, None, await chain_images(engine, meta, n, seed, steps)
    z = latents(seed, n, meta.generator.latent_dim)
    labels = None
    if meta.generator.conditional:
        labels = [index] * n if index is not None else cycled_labels(n, len(meta.labels)).tolist()
    return meta, seed, labels, await decode(engine, meta, z, labels or [0] * n)


def interpolate_latents(a: np.ndarray, b: np.ndarray, steps: int, method: str) -> np.ndarray:
    """``steps`` points from a to b inclusive: straight, or along the great circle (slerp, White 2016),
    which for Gaussian latents keeps every frame at a typical norm; ends that are (anti-)parallel, where the
    great circle is undefined, fall back to straight."""
    t = np.linspace(0.0, 1.0, steps)[:, None]
    a64, b64_ = a.astype(np.float64), b.astype(np.float64)
    cos = float(a64 @ b64_) / max(float(np.linalg.norm(a64) * np.linalg.norm(b64_)), 1e-12)
    omega = math.acos(min(1.0, max(-1.0, cos)))
    if method == "linear" or math.sin(omega) < 1e-6:
        out = (1 - t) * a64 + t * b64_
    else:
        out = (np.sin((1 - t) * omega) * a64 + np.sin(t * omega) * b64_) / math.sin(omega)
    return out.astype(np.float32)


router = APIRouter()


@router.post(
    "/generate/png",
    response_class=Response,
    responses={**ERROR_RESPONSES, 200: {"content": {"image/png": {}}, "description": "a PNG grid of the samples"}},
)
async def generate_png(request: GenerateRequest) -> Response:
    """Samples as one PNG grid (image/png), for a browser or ``curl -o``; the seed is in ``X-Seed``."""
    r = request
    meta, seed, _, images = await sample(current(), current().requested_by(r, TASK), r.n, r.seed, r.label, r.steps)
    headers = {"X-Seed": str(seed), "X-Model-Version": meta.version}
    return Response(png(image_grid(images, cols=grid_cols(len(images)))), media_type="image/png", headers=headers)


@router.post("/generate", response_model=GenerateResponse, responses=ERROR_RESPONSES)
async def generate(request: GenerateRequest) -> Response:
    """Draw n samples from a generator (GAN, VAE decoder, or an RBM's Gibbs chains); the same seed gives the same
    images."""
    r = request
    model = current().requested_by(r, TASK)
    meta, seed, labels, images = await sample(current(), model, r.n, r.seed, r.label, r.steps)
    grid = r.format == "grid"
    return json_response(
        GenerateResponse(
            model=meta.name,
            version=meta.version,
            seed=seed,
            steps=chain_steps(meta, r.steps),
            labels=[meta.labels[i] for i in labels] if labels is not None else None,
            samples=[] if grid else [png_b64(img) for img in images],
            grid=b64(png(image_grid(images, cols=grid_cols(len(images))))) if grid else None,
        )
    )


@router.post("/interpolate", response_model=InterpolateResponse, responses=ERROR_RESPONSES)
async def interpolate(request: InterpolateRequest) -> Response:
    """Frames walking the latent space from end a to end b: two seeds, or (VAE) two encoded images."""
    r, engine = request, current()
    meta = engine.metadata(engine.requested_by(r, TASK), TASK)
    assert meta.generator is not None
    if meta.generator.gibbs is not None:
        raise ApiError("invalid_request", f"{meta.name} samples by Gibbs chains: it has no latent space to walk")
    if r.steps > S.max_samples:
        raise ApiError("invalid_request", f"at most {S.max_samples} steps per request")
    index = label_index(meta, r.label, required=True)
    y = index or 0
    k = meta.generator.latent_dim
    seed_a, seed_b = r.seed_a, r.seed_b
    if r.images is not None:
        if seed_a is not None or seed_b is not None:
            raise ApiError("invalid_request", "give either two images or seeds, not both")
        if meta.generator.encoder is None:
            raise ApiError("invalid_request", f"{meta.name} has no encoder: interpolate between seeds instead")
        _, items = await engine.image_rows(meta, TASK, r.images, label=y)
        posts = await engine.call(TASK, items, meta.name, "encode")
        a, b = posts[0].mu, posts[1].mu
    else:
        seed_a = secrets.randbelow(2**31) if seed_a is None else seed_a
        seed_b = secrets.randbelow(2**31) if seed_b is None else seed_b
        a, b = latents(seed_a, 1, k)[0], latents(seed_b, 1, k)[0]
    z = interpolate_latents(a, b, r.steps, r.method)
    frames = await decode(engine, meta, z, [y] * r.steps)
    grid = r.format == "grid"
    return json_response(
        InterpolateResponse(
            model=meta.name,
            version=meta.version,
            seed_a=seed_a,
            seed_b=seed_b,
            label=meta.labels[index] if index is not None else None,
            frames=[] if grid else [png_b64(f) for f in frames],
            grid=b64(png(image_grid(frames, cols=r.steps))) if grid else None,
        )
    )


async def _v2_chain_run(engine: Engine, meta: ModelMetadata, t: Tensors) -> Tensors:
    """One run of a Gibbs sampler's graph on the client's own state, noise and steps (steps 0: just the features)."""
    v, u_h, u_v, steps = (t[spec.name] for spec in meta.inputs)
    assert meta.generator is not None and meta.generator.gibbs is not None
    most = meta.generator.gibbs.steps_per_run  # the graph takes at most one run's noise, so at most its steps
    bad = [int(k) for k in steps if not 0 <= k <= most]
    if bad:
        raise ApiError("invalid_request", f"steps {bad[0]} is not 0-{most}: one run of the graph takes at most {most}")
    key = served_key(meta)
    rows = [ChainItem(model=key, v=v[i], u_h=u_h[i], u_v=u_v[i], steps=int(steps[i])) for i in range(len(v))]
    results = await engine.call(TASK, rows, meta.name, "gibbs")
    return {
        spec.name: np.stack([getattr(r, f) for r in results])
        for spec, f in zip(meta.outputs, ChainResult.model_fields, strict=True)
    }


async def _v2_generate(engine: Engine, meta: ModelMetadata, t: Tensors) -> Tensors:
    assert meta.generator is not None
    if meta.generator.gibbs is not None:
        return await _v2_chain_run(engine, meta, t)
    z = t[meta.inputs[0].name]
    labels = [0] * len(z)
    if meta.generator.conditional:
        labels = [int(v) for v in t[meta.inputs[1].name]]
        bad = [v for v in labels if not 0 <= v < len(meta.labels)]
        if bad:
            raise ApiError("invalid_label", f"label {bad[0]} is not a class index 0-{len(meta.labels) - 1}")
    return {meta.outputs[0].name: await decode(engine, meta, z, labels)}


register(
    Task(
        name=TASK,
        family=GeneratorModels,
        methods=("generate", "encode", "gibbs"),
        max_batch=lambda s: s.max_batch_size,
        max_rows=lambda s: s.max_samples,
        router=router,
        v2=Adapter(graph_inputs, graph_outputs, _v2_generate),
    )
)
