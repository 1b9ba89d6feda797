"""The Engine: what every task's routes (/v1 and /v2 alike) call. It holds the served models' metadata, runs rows
through a task's family (in this worker's batchers, or in the model services), prepares images in the decode
pool, and answers with the model cards. service.service's NNServe is an Engine; ``current()`` returns the one
serving this request.

    route (service/tasks/<task>.py) ─► Engine.metadata / image_rows ─► Engine.call ─► the family's batch function
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import functools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, cast

import bentoml
from bentoml.exceptions import BentoMLException

from contract.images import NotAsIs
from contract.metadata import ImagePreprocessing, ModelMetadata, TextPreprocessing
from contract.reasons import OodReason
from contract.text import Vocab
from service.batching import GreedyBatcher, QueueFull
from service.errors import ApiError, inside, quoted
from service.family import ImageItem, LabeledImageItem, family_state
from service.figures import Figure, read_figures
from service.images import b64_to_bytes, to_input
from service.metrics import OUT_OF_DISTRIBUTION, PREPROCESS_SECONDS, child
from service.registry import TASKS
from service.repository import Repository
from service.runtime import (
    ArtifactError,
    artifact_label,
    discover,
    load_model,
    load_vocab,
    providers,
    read_metadata,
    served_key,
    twice,
    version_order,
    warm_up,
)
from service.schemas import BatchingInfo, ModelCard, at_version
from service.settings import get_settings
from service.stats import BatchTiming, request_done

log = logging.getLogger("bentoml.nnserve")  # under "bentoml" so BentoML's log setup shows it
S = get_settings()
T = TypeVar("T")
_DECODE_POOL = ThreadPoolExecutor(S.decode_threads, thread_name_prefix="nnserve-decode")


class Engine:
    """The served models and the way to run them; built once per API worker."""

    def __init__(self) -> None:
        self.draining = False  # set on SIGTERM: readiness turns false (service.service)
        self.local: dict[str, Any] = {}  # 'api' batching: task -> its family, loaded in this process
        self.batchers: dict[tuple[str, str], GreedyBatcher] = {}
        if S.batching == "api":
            for task in TASKS.values():
                family = task.family.inner()  # the model service's class, loaded in this process
                self.local[task.name] = family
                for method in task.methods:
                    fn = functools.partial(getattr(task.family.inner, method).func, family)
                    self.batchers[task.name, method] = GreedyBatcher(
                        fn,
                        max_batch=task.max_batch(S),
                        max_queue=S.max_queue_rows,
                        name=f"{task.name}.{method}",
                        inline_s=S.inline_batch_ms / 1e3 if task.inline else 0.0,
                    )
        self.catalog: dict[str, ModelMetadata] = {}  # name -> its default version: the newest served
        self.versions: dict[str, dict[str, ModelMetadata]] = {}  # name -> every served version
        self.vocabs: dict[str, Vocab] = {}  # served_key -> the vocabulary a text model's version encodes with
        self.figures: dict[str, dict[str, Figure]] = {}  # served_key -> the figures its folder held at load
        self.failed: dict[str, str] = {}  # skip_bad_artifacts: folder (model or model/version) -> why not served
        self.load_failed: dict[str, str] = {}  # the repository's last failed load of a model: its folder -> why
        for family in self.local.values():
            self.failed.update(family.failed)
        paths = discover(S)
        if S.batching == "api":  # and what the families loaded, should a version written since push it past the policy
            paths += sorted({m.path.parent for f in self.local.values() for m in f.models.values()} - set(paths))
        for path in paths:
            label = artifact_label(path, S)
            try:
                meta = read_metadata(path)
                if meta.version in self.versions.get(meta.name, {}):
                    raise ArtifactError(twice(path, meta.name, meta.version))
                if meta.task not in TASKS:
                    raise ArtifactError(f"{path}: task {meta.task!r} is not one this server serves ({sorted(TASKS)})")
                if isinstance(meta.preprocessing, TextPreprocessing):  # the vocabulary that text is encoded with
                    self.vocabs[served_key(meta)] = load_vocab(path, meta)
                self.figures[served_key(meta)] = read_figures(path, S.max_figure_bytes, S.max_figures)
                if S.batching == "services" and S.skip_bad_artifacts:
                    warm_up(load_model(path, S))  # learn here what the model services will leave out
            except ArtifactError as e:
                if not S.skip_bad_artifacts:
                    raise
                self.failed[label] = str(e)
                continue
            if S.batching == "api" and not any(served_key(meta) in f.models for f in self.local.values()):
                if label not in self.failed:  # written after the families looked (a version landing while the
                    continue  # worker starts): not this scan's to judge; the repository's first poll loads it
                # readable metadata, but its family left the graph out (the reason is logged under the folder)
                self.failed.setdefault(meta.name, self.failed[label])
            self.serve(meta)  # a failed one too: its card says why it is not ready
        for name, why in self.failed.items():
            log.error("not serving %s: %s", name, why)
        self.repository = Repository(self, S)  # model control (NNServe starts it on the worker's loop)
        log.info("serving %s", ", ".join(sorted(self.working())) or "no models")

    def working(self) -> set[str]:
        """The names of the models served and not failed."""
        return set(self.catalog) - set(self.failed)

    def serve(self, meta: ModelMetadata) -> None:
        """Add one loaded version to the served ones (its family holds its session)."""
        versions = self.versions.setdefault(meta.name, {})
        versions[meta.version] = meta
        self.catalog[meta.name] = versions[max(versions, key=version_order)]

    def max_rows(self, task: str) -> int:
        """The rows one request may carry for a task (images, texts, or samples)."""
        return TASKS[task].max_rows(S)

    def requested_by(self, request: Any, task: str) -> str:
        """``requested`` for a /v1 request model: its ``model`` counts as sent only when the client sent it."""
        sent = request.model if "model" in request.model_fields_set else None
        return self.requested(sent, request.model, request.version, task)

    def requested(self, sent: str | None, default: str, version: str | None, task: str) -> str:
        """The model a /v1 request names, as ``metadata`` reads it (``name@version``): the one the client sent;
        else the route's ``default``, or, where that is not served and one model of the task is (a server of a
        user's own models), that one; else a 404 that says the request named none and lists the models served."""
        name = sent or default
        if sent is None and name not in self.catalog and name not in self.failed:  # a failed default: its 503
            served = sorted(n for n, m in self.catalog.items() if m.task == task)
            if len(served) != 1:
                choose = f": name one of {served}" if served else f", nor is any {task} model"
                message = f"the request names no model, and this route's default {default!r} is not served{choose}"
                raise ApiError("model_not_found", message, [{"available": served}])
            name = served[0]
        return at_version(name, version)

    def metadata(self, name: str, task: str | None = None, version: str | None = None) -> ModelMetadata:
        """A served model's metadata: the version asked for (``version``, or ``name@version`` as /v1's routes pass
        it), else its default, the newest served."""
        if version is None and "@" in name:
            name, version = name.split("@", 1)
        if name in self.failed:
            raise ApiError("not_ready", f"model {name!r} is not ready: its artifact failed to load", retry_after=30)
        shown = quoted(name, 64)  # gRPC's names are not held to the HTTP routes' pattern: never echo a megabyte
        meta = self.catalog.get(name)
        if meta is None or (task is not None and meta.task != task):  # unknown, or served for another route
            available = sorted(n for n, m in self.catalog.items() if task is None or m.task == task)
            kind = f"{task} model" if task else "model"
            message = f"no {kind} named {shown!r} is served"
            if meta is not None:  # whatever the version asked: the route is what is wrong
                message = f"model {shown!r} is served for the task {meta.task!r}; this route takes {task!r} models"
            raise ApiError("model_not_found", message, [{"available": available}])
        if version is not None:
            served = self.versions.get(name, {})
            if version not in served:
                raise ApiError(
                    "model_not_found",
                    f"model {shown!r} has no version {quoted(version, 64)!r} served",
                    [{"versions": sorted(served, key=version_order)}],
                )
            meta = served[version]
        return meta

    async def call(
        self, task: str, items: list[Any], model: str, method: str = "infer", *, count: bool = True
    ) -> list[Any]:
        """Rows to the task's family, batched with other requests' rows (in this worker, or in the model
        service); one result per row. ``model`` is the model's name, for the log and the statistics (the rows name
        the version they were prepared for). A request that calls the model several times (a Gibbs sampler's
        runs) counts in the statistics once: ``count`` on its last call (a failure counts whenever it happens)."""
        handed_over, timing, ok = time.perf_counter(), BatchTiming(), False
        try:
            if S.batching == "api":
                results = await self.batchers[task, method].submit(items, timing)
            else:
                results = await getattr(getattr(self, TASKS[task].attr).to_async, method)(items)
            ok = True
            return results
        except QueueFull:
            raise ApiError("overloaded", "the model queue is full; retry later", retry_after=1) from None
        except BentoMLException as e:
            if int(getattr(e, "error_code", 500)) in (429, 503):
                raise ApiError("overloaded", "the model service is overloaded; retry later", retry_after=1) from None
            log.exception("inference failed for %s", model)
            raise ApiError("internal_error", "inference failed") from None
        except Exception:  # in-worker batching: the batch function itself failed
            log.exception("inference failed for %s", model)
            raise ApiError("internal_error", "inference failed") from None
        finally:
            if count or not ok:
                request_done(model, ok, handed_over, timing)

    async def image_rows(
        self,
        model: str | ModelMetadata,
        task: str,
        blobs: list[bytes] | list[str],
        label: int | None = None,
        dark: list[bool] | None = None,
    ) -> tuple[ModelMetadata, list[ImageItem]]:
        """Encoded images (bytes, or a JSON request's base64 strings) -> the input rows of ``model`` (a name, or
        the metadata of the version a request already resolved, which a swap meanwhile must not change), preprocessed
        exactly as in training (with a class label for a conditional VAE's encoder; ``dark``: photos of pen
        strokes read at these polarities), in the decode pool, or on the event loop when they are small PNGs of
        the model's input size, taken pixel for pixel (a hop to the pool costs more than that; any other size, or
        a photo shrunk to the input size, runs the front door's ink finding, 7-30 ms an image here, which would
        stall every request of the worker)."""
        meta = model if isinstance(model, ModelMetadata) else self.metadata(model, task)
        pre = meta.preprocessing
        size = pre.input_size if isinstance(pre, ImagePreprocessing) else None
        if size is not None and small_pngs(blobs, S.inline_decode_bytes, size):
            try:  # each image held to the model's pixels by the size Pillow reads, not only by bytes 16-24
                return self._image_rows_now(meta, blobs, label, dark, size[0] * size[1], inline=True)
            except NotAsIs:  # a photo shrunk to the input size (contract.images.read): the pool
                pass
            except ApiError as e:
                if e.code != "image_too_large":
                    raise
                # a PNG whose header said small and whose chunks say otherwise (a second IHDR): the pool, and
                # the request's own limits there
        return await off_loop(self._image_rows_now, meta, blobs, label, dark)

    def _image_rows_now(
        self,
        meta: ModelMetadata,
        blobs: list[bytes] | list[str],
        label: int | None,
        dark: list[bool] | None,
        max_pixels: int | None = None,
        inline: bool = False,
    ) -> tuple[ModelMetadata, list[ImageItem]]:
        b64 = bool(blobs) and isinstance(blobs[0], str)
        data = _decode_images(cast(list[str], blobs)) if b64 else cast(list[bytes], blobs)
        limits = {
            "max_bytes": S.max_image_bytes,
            "max_pixels": S.max_image_pixels if max_pixels is None else min(max_pixels, S.max_image_pixels),
            "max_side": S.max_image_side,
            "max_scans": S.max_jpeg_scans,
        }
        polarity: list[bool | None] = list(dark) if dark else [None] * len(data)
        rows, took = [], []
        for i, b in enumerate(data):
            check_abandoned()
            t0 = time.perf_counter() if inline else 0.0  # in the pool, to_input counts its own time
            rows.append(to_input(b, meta, index=i, dark=polarity[i], inline=inline, **limits))
            if inline:
                took.append(time.perf_counter() - t0)
        for seconds in took:  # counted once every row is read here: a photo among them sends them all to the pool
            child(PREPROCESS_SECONDS, meta.name).observe(seconds)
        key = served_key(meta)  # a hash: once per request, not per row
        if label is None:
            return meta, [
                ImageItem(
                    model=key, x=x, oddness=r.oddness, dark_ink=r.dark_ink, on_table=r.on_table, odd_reason=r.odd_reason
                )
                for x, r in rows
            ]
        return meta, [LabeledImageItem(model=key, x=x, oddness=r.oddness, label=label) for x, r in rows]

    async def model_cards(self, only: ModelMetadata | None = None) -> list[ModelCard]:
        """Every served model's card (its default version's), or ``only`` that version's."""
        runtime: dict[str, list[str]] = {}
        for task in TASKS.values():
            if S.batching == "api":
                state = family_state(self.local[task.name].models)
            else:
                try:
                    state = await getattr(self, task.attr).to_async.state()
                except BentoMLException:
                    continue
            runtime.update({m.name: m.providers for m in state.models})
        return [
            ModelCard(
                name=m.name,
                version=m.version,
                versions=sorted(self.versions.get(m.name, {}), key=version_order),
                task=m.task,
                architecture=m.architecture,
                architecture_config=m.architecture_config,
                parameters=m.parameters,
                training=m.training,
                labels=m.labels,
                preprocessing=m.preprocessing,
                inputs=m.inputs,
                outputs=m.outputs,
                opset=m.opset,
                metrics=m.metrics,
                class_metrics=m.class_metrics,
                dataset=m.dataset.name,
                created=m.created,
                onnx_sha256=m.onnx_sha256,
                source_commit=m.source_commit,
                ready=m.name in runtime and m.name not in self.failed,
                error=None if m.name not in self.failed else inside(self.failed[m.name], S.model_dir),
                figures=sorted(self.figures.get(served_key(m), {})),
                providers=runtime.get(m.name, providers()),
                batching=BatchingInfo(
                    mode=S.batching,
                    max_batch_size=TASKS[m.task].max_batch(S),
                    max_latency_ms=S.max_latency_ms if S.batching == "services" else None,
                ),
                anomaly=m.anomaly,
                generator=m.generator,
                calibration=m.calibration,
                ood=m.ood,
                evaluation=m.evaluation,
            )
            # by name, however models came and went
            for m in ([only] if only is not None else sorted(self.catalog.values(), key=lambda m: m.name))
        ]


_get_current_service = bentoml.get_current_service  # resolved once: bentoml's module __getattr__ is slow


def current() -> Engine:
    """The Engine serving this request (BentoML's current service)."""
    return cast(Engine, _get_current_service())


def flagged(meta: ModelMetadata, reason: OodReason | None) -> bool:
    """Out of distribution: there is a reason to flag the input (contract/reasons.py), counted in the metric."""
    if reason is not None:
        child(OUT_OF_DISTRIBUTION, meta.name, reason).inc()
    return reason is not None


class Abandoned(Exception):
    """Raised in the decode pool by ``check_abandoned``: the request this work was for has gone."""


_STOP: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar("nnserve_stop", default=None)


def check_abandoned() -> None:
    """Between the items of a job in the decode pool (each image, each text): stop if its request's task was
    cancelled (its timeout fired; a gRPC call cancelled), so that an abandoned request costs at most one more
    item's work and the requests queued behind it in the pool are not starved. A no-op outside ``off_loop``."""
    stop = _STOP.get()
    if stop is not None and stop.is_set():
        raise Abandoned


async def off_loop(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in the decode pool (Pillow and numpy release the GIL while they work), keeping the request's
    context (its id in log lines): a costly image delays no other request's event-loop work. When the awaiting
    task is cancelled, a job not yet started never runs and one running stops at its next ``check_abandoned``."""
    ctx = contextvars.copy_context()
    stop = threading.Event()
    ctx.run(_STOP.set, stop)
    try:
        return await asyncio.get_running_loop().run_in_executor(_DECODE_POOL, functools.partial(ctx.run, fn, *args))
    except asyncio.CancelledError:
        stop.set()
        raise


_PNG = b"\x89PNG\r\n\x1a\n"
_PNG_B64 = base64.b64encode(_PNG).decode()[:10]  # how a base64 PNG starts (without a data-URL prefix)


def small_pngs(blobs: list[bytes] | list[str], max_bytes: int, size: tuple[int, ...]) -> bool:
    """Whether the images are PNGs of at most ``max_bytes`` in all, each of ``size`` (height, width: the model's
    input, which the front door takes pixel for pixel, 0.1 ms) by its header (IHDR's width and height, bytes
    16-24), so that reading them on the event loop is cheap and bounded. A PNG whose first chunk is not IHDR
    (Pillow reads past chunks before it) is not taken at its word: the pool."""
    total = 0
    for blob in blobs:
        total += len(blob) * 3 // 4 if isinstance(blob, str) else len(blob)
        head = _head(blob)
        if total > max_bytes or head[:8] != _PNG or len(head) < 24 or head[12:16] != b"IHDR":
            return False
        if (int.from_bytes(head[20:24], "big"), int.from_bytes(head[16:20], "big")) != tuple(size[:2]):
            return False
    return bool(blobs)


def _head(blob: bytes | str) -> bytes:
    """An image's first 24 bytes (of its base64 text, if it is a base64 PNG); empty if that text is not base64."""
    if isinstance(blob, bytes):
        return blob[:24]
    if not blob.startswith(_PNG_B64):
        return b""
    try:
        return base64.b64decode(blob[:32], validate=True)
    except ValueError:  # binascii.Error
        return b""


def _decode_images(images: list[str]) -> list[bytes]:
    """Base64 images of a JSON request -> bytes; the count limit is checked before any decoding.
    (An upload carries one image, always within the limit.)"""
    if len(images) > S.max_images:
        raise ApiError("invalid_request", f"at most {S.max_images} images per request")
    return [b64_to_bytes(s, i, S.max_image_bytes) for i, s in enumerate(images)]
