"""Model control: versions loaded and unloaded while serving, with no failed request (issue 18).

    load(name):   every API worker reads the model's versions from disk (its version policy), loads and warms up
                  the new ones off the event loop  ──►  all ready?  ──►  every worker switches (one dict update on
                  its loop)  ──►  the versions no longer served are dropped once no request can hold them
    unload(name): every worker stops serving the model; its sessions are dropped the same way

A request resolves its model's version once (``Engine.metadata``) and its rows name that version's exact
graph (``served_key``), so a request in flight during a switch finishes on the version it started with, and a
text is never run through a graph other than the one whose vocabulary encoded it. A version is dropped
``NNSERVE_REQUEST_TIMEOUT_S`` + 1 s after its switch: by then every request that resolved it has been answered or
timed out.

Across the API workers a load is two phases over small files in the folder BentoML gives one ``bentoml serve``
(its Prometheus folder): the worker that took the call writes the command, every worker (itself included)
prepares and acknowledges, and only when all of them prepared does it write the commit; one failure (a missing
or corrupt file, metadata that does not match the graph, a warm-up that gives non-finite outputs) aborts
everywhere and the old versions keep serving. The call returns when every worker has switched; a worker that
prepared but then does not switch within 15 s (it crashed) makes the call a 500 naming it, the others switched.

Model control (``NNSERVE_MODEL_CONTROL``): ``none`` (the models of the start, until the end), ``explicit`` (the
repository API: /v2/repository/..., gRPC RepositoryModelLoad/Unload), ``poll`` (the first worker scans the model
folder every ``NNSERVE_REPOSITORY_POLL_S`` and loads what changed, unloads what vanished, as Triton's poll
mode). Model control needs ``NNSERVE_BATCHING=api`` (the sessions live in the API workers).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import re
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contract.metadata import METADATA_FILE, ONNX_FILE, ModelMetadata, TextPreprocessing
from contract.text import Vocab
from service.balance import worker_slot
from service.errors import ApiError, inside, quoted
from service.figures import Figure, read_figures
from service.registry import TASKS
from service.runtime import (
    ArtifactError,
    OnnxModel,
    artifact_label,
    check_files,
    discover,
    load_model,
    load_vocab,
    metadata_head,
    model_names,
    read_metadata,
    served_key,
    twice,
    version_order,
    versions_on_disk,
    warm_up,
)
from service.schemas import MODEL_NAME
from service.settings import Settings

log = logging.getLogger("bentoml.nnserve")
TICK_S = 0.02  # how often a worker looks for a command
COMMIT_TIMEOUT_S = 15.0


@dataclass
class Staged:
    """One worker's preparation of a load: the versions to serve, and the sessions it loaded for them."""

    name: str
    metas: dict[str, ModelMetadata] = field(default_factory=dict)  # version -> metadata
    models: dict[str, OnnxModel] = field(default_factory=dict)  # served_key -> its session (new or reused)
    vocabs: dict[str, Vocab] = field(default_factory=dict)
    figures: dict[str, dict[str, Figure]] = field(default_factory=dict)  # served_key -> its folder's figures


def loaded(engine: Any, key: str) -> OnnxModel | None:
    return next((f.models[key] for f in engine.local.values() if key in f.models), None)


def prepare(engine: Any, name: str, settings: Settings) -> Staged:
    """Read, check, load and warm up the versions of ``name`` its policy serves (blocking: call off the loop);
    a session this worker already holds for the same bytes is reused. Raises ArtifactError, changing nothing."""
    staged = Staged(name)
    seen: set[str] = set()
    for version, path in versions_on_disk(settings, name):  # before any is read: either copy may be the broken one
        if version in seen:
            error = ArtifactError(twice(path, name, version))
            error.folder = artifact_label(path, settings)
            raise error
        seen.add(version)
    for path in discover(settings, name):
        try:
            _stage(engine, staged, path, name, settings)
        except ArtifactError as e:
            e.folder = artifact_label(path, settings)  # which version failed: the index says why (``index``)
            raise
    if not staged.metas:
        raise ArtifactError(f"no version of {name!r} on disk is in its version policy")
    return staged


def _stage(engine: Any, staged: Staged, path: Path, name: str, settings: Settings) -> None:
    """One version of ``name`` read, checked, loaded and warmed up into ``staged`` (ArtifactError otherwise)."""
    meta = read_metadata(path)
    if meta.name != name:
        raise ArtifactError(f"{path / METADATA_FILE}: names the model {meta.name!r}, not {name!r}")
    if meta.task not in TASKS:
        raise ArtifactError(f"{path}: task {meta.task!r} is not one this server serves ({sorted(TASKS)})")
    key = served_key(meta)
    model = loaded(engine, key)  # held here: a drop pending for it (a rollback) cannot take it away
    vocab = None
    if model is not None and model.meta == meta:  # the same files under other metadata are loaded anew
        check_files(path, meta)  # the bytes on disk are still those the session and vocabulary came from
        vocab = engine.vocabs.get(key)
    else:
        model = load_model(path, settings)  # which checks the graph's bytes as it opens it
        warm_up(model)
    staged.models[key] = model
    if isinstance(meta.preprocessing, TextPreprocessing):
        staged.vocabs[key] = vocab or load_vocab(path, meta)
    staged.figures[key] = read_figures(path, settings.max_figure_bytes, settings.max_figures)  # a figure may be new
    staged.metas[meta.version] = meta


def commit(engine: Any, staged: Staged | None, name: str, settings: Settings) -> None:
    """Switch this worker to the staged versions (None: unload the model), on its event loop, at once."""
    old = {served_key(m) for m in engine.versions.get(name, {}).values()}
    if staged is not None:
        for key, model in staged.models.items():
            engine.local[model.meta.task].models[key] = model
        engine.vocabs.update(staged.vocabs)
        engine.figures.update(staged.figures)
        engine.versions[name] = dict(staged.metas)
        engine.catalog[name] = staged.metas[max(staged.metas, key=version_order)]
    else:
        engine.versions.pop(name, None)
        engine.catalog.pop(name, None)
    for failures in (engine.failed, engine.load_failed):  # what failed before is read again: it serves now
        forget(failures, name)
    new = {served_key(m) for m in engine.versions.get(name, {}).values()}
    loop = asyncio.get_running_loop()
    for key in old - new:
        loop.call_later(settings.request_timeout_s + 1, _drop, engine, key)


def forget(failures: dict[str, str], name: str) -> None:
    """Drop the entries of ``name`` (its folder's, and its versions' folders') from a folder -> why mapping."""
    for label in [k for k in failures if k == name or k.startswith(f"{name}/")]:
        del failures[label]


def _drop(engine: Any, key: str) -> None:
    """A version no longer served, once no request can hold it: its session and vocabulary go."""
    if any(served_key(m) == key for versions in engine.versions.values() for m in versions.values()):
        return  # served again meanwhile
    for family in engine.local.values():
        family.models.pop(key, None)
    engine.vocabs.pop(key, None)
    engine.figures.pop(key, None)
    log.info("unloaded %s", key)


def index(engine: Any, settings: Settings) -> list[dict[str, str]]:
    """Every version on disk and every one served: READY when served, else UNAVAILABLE with the reason."""
    out: dict[tuple[str, str], dict[str, str]] = {}
    for name in model_names(settings):
        for version, path in versions_on_disk(settings, name):
            label = artifact_label(path, settings)
            why = engine.failed.get(label) or engine.failed.get(name) or engine.load_failed.get(label)
            reason = why or ("unloaded" if name not in engine.versions else "not in the version policy")
            out[name, version] = {"name": name, "version": version, "state": "UNAVAILABLE", "reason": reason}
    for name, versions in engine.versions.items():
        for version in versions:
            ready = name not in engine.failed
            out[name, version] = {"name": name, "version": version, "state": "READY" if ready else "UNAVAILABLE",
                                  "reason": "" if ready else engine.failed[name]}  # fmt: skip
    return [out[k] for k in sorted(out, key=lambda k: (k[0], version_order(k[1])))]


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class Repository:
    """This worker's side of model control: the calls it takes, the commands it follows, and (poll mode, the
    first worker) the scans of the model folder."""

    def __init__(self, engine: Any, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.staged: dict[int, Staged | None] = {}
        self.handled: set[tuple[int, str]] = set()
        self.tasks: list[asyncio.Task[None]] = []  # held: the loop keeps only weak references to its tasks
        self.folder: Path | None = None
        self.index = 0
        slot = worker_slot("nnserve", settings.api_workers)
        if slot is not None and settings.api_workers > 1:
            self.folder, self.index = Path(slot[0]), slot[1]
        self.local_lock = asyncio.Lock()
        self.loader = ThreadPoolExecutor(1, thread_name_prefix="nnserve-repository")

    def start(self) -> None:
        """On the worker's loop: follow commands (several workers), and scan the folder (poll mode, worker 0)."""
        if self.settings.model_control == "none":  # (model control needs api batching: settings.py refuses else)
            return
        loop = asyncio.get_running_loop()
        if self.folder is not None:
            self.tasks.append(loop.create_task(self._follow()))
        if self.settings.model_control == "poll" and self.index == 0:
            self.tasks.append(loop.create_task(self._poll()))

    # ---- a call: load or unload, coordinated ----

    def check(self, action: str | None) -> None:
        """The gate of the repository API: the key (or the explicit opening), the mode."""
        s = self.settings
        if s.api_key is None and not s.repository_open:
            raise ApiError(
                "forbidden", "the repository API needs NNSERVE_API_KEY (or NNSERVE_REPOSITORY_OPEN=true to serve it "
                "without a key)"
            )  # fmt: skip
        if action is not None and s.model_control != "explicit":
            raise ApiError(
                "invalid_request",
                f"model control is {s.model_control!r}: loading and unloading need NNSERVE_MODEL_CONTROL=explicit",
            )

    def listing(self, ready: bool) -> list[dict[str, str]]:
        """The index a client asks for (HTTP or gRPC), behind the gate; with ``ready``, the READY versions only."""
        self.check(None)
        entries = index(self.engine, self.settings)
        return [e for e in entries if e["state"] == "READY"] if ready else entries

    async def call(self, action: str, name: str, parameters: Iterable[str]) -> None:
        """A client's load or unload (HTTP or gRPC; ``parameters``: its parameters' names), behind the gate (first:
        a client the gate turns away learns nothing of what it would have refused, a gRPC audit's)."""
        self.check(action)
        if action == "load" and any(k == "config" or k.startswith("file:") for k in parameters):
            raise ApiError(
                "invalid_request", "nnserve loads what is on disk: 'config' and 'file:' parameters are not taken"
            )
        await self.run(action, name)

    async def run(self, action: str, name: str) -> None:
        """Load or unload ``name`` in every API worker; returns when all of them serve the outcome, or raises
        (ApiError) having changed nothing. Runs to its end even if the caller goes away."""
        if not re.fullmatch(MODEL_NAME, name):  # a folder of the model folder, never a path out of it
            raise ApiError("model_not_found", f"no model named {quoted(name)!r} in the model folder")
        if self.settings.models and name not in self.settings.models:
            raise ApiError("model_not_found", f"{name!r} is not among NNSERVE_MODELS, the models this server may serve")
        if action == "load" and not (self.settings.model_dir / name).is_dir():
            raise ApiError("model_not_found", f"no model named {name!r} in the model folder")
        task = asyncio.get_running_loop().create_task(self._run(action, name))
        await asyncio.shield(task)

    async def _run(self, action: str, name: str) -> None:
        async with self.local_lock:
            if self.folder is None:  # one worker: prepare and switch here
                staged = await self._prepare(action, name)
                commit(self.engine, staged, name, self.settings)
                log.info("%sed %s", action, name)
                return
            with await self._cross_worker_lock():
                await self._coordinate(action, name)

    async def _prepare(self, action: str, name: str) -> Staged | None:
        if action == "unload":
            if name not in self.engine.versions:
                raise ApiError("model_not_found", f"no model named {name!r} is served")
            return None
        try:  # on the repository's own thread: a load never waits for images being decoded, nor they for it
            return await asyncio.get_running_loop().run_in_executor(
                self.loader, prepare, self.engine, name, self.settings
            )
        except ArtifactError as e:  # the model folder's own path is the server's business, not the caller's
            reason = inside(str(e), self.settings.model_dir)
            forget(self.engine.load_failed, name)  # the last load's failure only
            self.engine.load_failed[e.folder or name] = f"the last load failed: {reason}"
            raise ApiError("invalid_request", f"failed to load {name!r}: {reason}") from None

    async def _cross_worker_lock(self) -> Any:
        assert self.folder is not None
        handle = open(self.folder / "nnserve-repository.lock", "a")  # noqa: SIM115  (closed by the caller's with)
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return handle
            except BlockingIOError:
                await asyncio.sleep(TICK_S)

    async def _coordinate(self, action: str, name: str) -> None:
        assert self.folder is not None
        command = self.folder / "nnserve-repository.json"
        gen = int((_read(command) or {}).get("gen", 0)) + 1
        _write(command, {"gen": gen, "phase": "prepare", "action": action, "name": name})
        acks = await self._acks(gen, "prepare", self.settings.prepare_timeout_s)
        failures = [a for a in acks if not a.get("ok")]
        phase = "abort" if failures else "commit"
        _write(command, {"gen": gen, "phase": phase, "action": action, "name": name})
        done = await self._acks(gen, phase, COMMIT_TIMEOUT_S)
        if failures:
            first = failures[0]
            raise ApiError(first.get("code") or "internal_error", first.get("error") or "a worker did not answer")
        if not all(a.get("ok") for a in done):
            raise ApiError("internal_error", f"a worker did not switch {name!r}: {[a.get('error') for a in done]}")
        log.info("%sed %s in %d workers", action, name, len(done))

    async def _acks(self, gen: int, phase: str, timeout_s: float) -> list[dict[str, Any]]:
        assert self.folder is not None
        deadline = time.monotonic() + timeout_s
        while True:
            acks = [
                _read(self.folder / f"nnserve-repository-ack-{i}.json") or {} for i in range(self.settings.api_workers)
            ]
            if all(a.get("gen") == gen and a.get("phase") == phase for a in acks):
                return acks
            if time.monotonic() > deadline:
                return [a if a.get("gen") == gen and a.get("phase") == phase else {"ok": False} for a in acks]
            await asyncio.sleep(TICK_S)

    async def _follow(self) -> None:
        """Every worker: carry out the commands of the shared file, and acknowledge each phase."""
        assert self.folder is not None
        command, seen = self.folder / "nnserve-repository.json", None
        ack = self.folder / f"nnserve-repository-ack-{self.index}.json"
        while True:
            await asyncio.sleep(TICK_S)
            with contextlib.suppress(OSError):
                stat = command.stat()
                if (stat.st_mtime_ns, stat.st_size) == seen:
                    continue
                seen = (stat.st_mtime_ns, stat.st_size)
            cmd = _read(command)
            if cmd is None or (cmd.get("gen"), cmd.get("phase")) in self.handled:
                continue
            gen, phase, name = int(cmd["gen"]), str(cmd["phase"]), str(cmd["name"])
            self.handled.add((gen, phase))
            for old in [g for g in self.staged if g < gen]:  # a command this worker never saw end (overwritten)
                del self.staged[old]
            ok, error, code = True, "", ""
            try:
                action = str(cmd["action"])
                if phase == "prepare":
                    self.staged[gen] = await self._prepare(action, name)
                elif phase == "commit":
                    # a worker that (re)started after the prepare reads the disk now; re-applying a command is
                    # harmless (a load serves what is on disk, an unload of what is not served does nothing)
                    staged = self.staged.pop(gen) if gen in self.staged else None
                    if staged is None and action == "load":
                        staged = await self._prepare(action, name)
                    commit(self.engine, staged, name, self.settings)
                else:
                    self.staged.pop(gen, None)
            except ApiError as e:
                ok, error, code = False, e.message, e.code
            except Exception as e:  # a bug must not stop this worker from following
                log.exception("repository %s of %s failed", phase, name)
                ok, error, code = False, f"internal error: {type(e).__name__}", "internal_error"
            _write(ack, {"gen": gen, "phase": phase, "ok": ok, "error": error, "code": code})

    # ---- poll mode ----

    def _signature(self, name: str) -> tuple[Any, ...]:
        """What a reload looks at: each served version's model.json, its bytes (a rewrite within one clock tick
        keeps its size and time) as far as a load reads them, and its size; its graph's size, time and inode."""
        sig: list[Any] = []
        for path in discover(self.settings, name):
            with contextlib.suppress(OSError):
                meta = path / METADATA_FILE
                sig.append((str(path), metadata_head(meta), meta.stat().st_size))
                st = (path / ONNX_FILE).stat()
                sig.append((st.st_size, st.st_mtime_ns, st.st_ino))
        return tuple(sig)

    async def _poll(self) -> None:
        """The first scan loads every model (a no-op where a worker already serves the same bytes), so workers that
        read the folder at slightly different moments while starting agree; later scans load what changed."""
        seen: dict[str, tuple[Any, ...]] = {name: () for name in self.engine.versions}
        while True:
            await asyncio.sleep(self.settings.repository_poll_s)
            with contextlib.suppress(OSError):
                names = set(model_names(self.settings))
                for name in sorted(names | set(seen)):
                    sig = self._signature(name) if name in names else ()
                    if sig == seen.get(name) and sig:
                        continue
                    if not sig and name not in self.engine.versions:
                        seen.pop(name, None)
                        continue
                    action = "load" if sig else "unload"
                    try:
                        await self.run(action, name)
                    except ApiError as e:
                        log.error("poll: %s of %s failed, the old version keeps serving: %s", action, name, e.message)
                    except Exception:  # the scans must go on
                        log.exception("poll: %s of %s failed, the old version keeps serving", action, name)
                    seen[name] = sig  # a failed load is retried when its files change again
