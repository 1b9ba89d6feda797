"""One training run on one process or on N under torchrun (PyTorch DistributedDataParallel), and its resumable state.

    python -m training mlp --data ../shared/data/mnist                                   # one process
    torchrun --standalone --nproc_per_node 2 -m training mlp --data ../shared/data/mnist # two, this machine

torchrun starts the N processes and hands each its place in environment variables (RANK, LOCAL_RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT); ``start`` reads them and joins the process group: gloo on CPUs, nccl when CUDA is
available (one GPU per process, LOCAL_RANK's). Without them the run is the ordinary single process.

How a global batch is shared (``shard``): every rank draws the same batches, from the same seeded generators in
the same order, and keeps its contiguous share of each; ``--batch-size`` stays the global batch.

    global batch of B rows:  [ rank 0: ⌈B/N⌉ rows | rank 1 | ... | rank N-1 ]   (shares differ by at most 1)
    rank r's loss:           mean over its n_r rows  x  n_r·N/B
    DDP's all-reduce:        (1/N) Σ_r ∇(loss_r)  =  Σ_r (n_r/B) ∇mean_r  =  ∇(mean over all B rows)

so each step is the one-process step, up to the order of float32 sums, whatever B mod N is, and the learning rate
needs no scaling. Exceptions, where a batch statistic is computed per share: batch norm (on the CPU each rank
normalises by its own share's statistics; on GPUs it becomes SyncBatchNorm), the sparse autoencoder's KL penalty
on the mean code, and randomness drawn inside the model (dropout, the VAE's noise), which comes from per-rank
streams. A share that would be empty (a last batch with fewer rows than processes) runs one row weighted 0.

Validation runs on rank 0 alone (the recipe's own function, on the whole validation split), which broadcasts the
two figures, so early stopping decides alike everywhere. Rank 0 alone logs, writes the state, the checkpoint and
the plots.

The resumable state (``save_state``, ``load_state``): after each epoch rank 0 writes ``state.pt`` beside the
checkpoint: the model, optimiser, schedule, early stopping, history and every rank's RNG state, as plain
dicts and state_dicts. ``--resume`` loads it (it must be readable by every node), replays the data order of the
finished epochs (the recipes' generators are their own; drawing the batches again without training puts them
where they were) and continues; the run's configuration must be the one that wrote it. A run may resume on a
different number of processes: the step does not depend on it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

STATE_FORMAT = "nnserve-train-state/1"
# fields that may change between a run and its resumption (how it runs, not what it computes)
RESUMABLE_CHANGES = frozenset({"threads", "progress"})


class Stopped(Exception):
    """Raised by the shared loop after ``--stop-after`` epochs, once the state is written."""

    def __init__(self, epoch: int, state_path: Path | None) -> None:
        super().__init__(f"stopped after epoch {epoch}; continue with --resume {state_path}")
        self.epoch, self.state_path = epoch, state_path


class StateMismatch(ValueError):
    """A state written by another configuration (or not a state at all)."""


@dataclass(frozen=True)
class Run:
    """This process's place in the run, and where the run keeps its resumable state."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: str | None = None  # gloo | nccl; None for one process
    device: str = "cpu"
    state_path: Path | None = None  # written after every epoch by rank 0 (None: not written)
    resume: Path | None = None  # a state to continue from
    stop_after: int | None = None  # leave after this epoch, state written (a job's time slice)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


_RUN = Run()
_WRAPPED = False  # did the recipe train through ``wrap``? (a recipe with its own loop would train N copies)


def env_world_size() -> int:
    """The number of processes torchrun started (1 without torchrun), known before joining the group."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def env_rank() -> int:
    return int(os.environ.get("RANK", "0"))


def start(state_path: Path | None = None, resume: Path | None = None, stop_after: int | None = None) -> Run:
    """Join torchrun's process group when there is one (init_method env://) -> this process's Run."""
    global _RUN, _WRAPPED
    world = env_world_size()
    run = Run(state_path=state_path, resume=resume, stop_after=stop_after)
    if world > 1:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        cuda = torch.cuda.is_available()
        device = f"cuda:{local_rank}" if cuda else "cpu"
        if cuda:
            torch.cuda.set_device(local_rank)
        backend = "nccl" if cuda else "gloo"
        dist.init_process_group(backend)
        run = dataclasses.replace(
            run,
            rank=dist.get_rank(),
            local_rank=local_rank,
            world_size=dist.get_world_size(),
            backend=backend,
            device=device,
        )
        log.info("process %d of %d (%s, %s)", run.rank, run.world_size, backend, device)
    _RUN, _WRAPPED = run, False
    return run


def finish(clean: bool = True) -> None:
    """Leave the process group; the module is a single process again.

    After a clean end (trained, or stopped with the state written) every rank first meets the others at a
    barrier, so that no rank tears its connections down while a peer still writes the state or sits in the last
    collective. Without it, rank 1 of a ``--stop-after`` run left while rank 0 was still writing the state, and
    gloo aborted it once in CI ("terminate called without an active exception", SIGABRT; 27 runs here, 15 of
    them on a loaded machine, did not reproduce it). After an error there is no barrier: a failed peer may never
    arrive, and torchrun stops the others.
    """
    global _RUN, _WRAPPED
    if dist.is_available() and dist.is_initialized():
        if clean:
            dist.barrier()
        dist.destroy_process_group()
    _RUN, _WRAPPED = Run(), False


def current() -> Run:
    return _RUN


def was_wrapped() -> bool:
    return _WRAPPED


def share(n: int, rank: int, world_size: int) -> slice:
    """Rank ``rank``'s contiguous rows of a global batch of ``n``: the first n mod N ranks take one more."""
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def shard(
    inputs: tuple[torch.Tensor, ...], y: torch.Tensor
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor, int, float]:
    """This rank's share of a global batch -> (inputs, targets, its row count, the weight of its mean loss)."""
    run = _RUN
    if not run.distributed:
        return inputs, y, len(y), 1.0
    n = len(y)
    rows = share(n, run.rank, run.world_size)
    n_local = rows.stop - rows.start
    if n_local == 0:  # DDP needs every rank's backward: one row, weighted 0
        rows, weight = slice(0, 1), 0.0
    else:
        weight = n_local * run.world_size / n
    return tuple(t[rows] for t in inputs), y[rows], n_local, weight


def wrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module the loop calls: DistributedDataParallel over ``model`` under torchrun, else ``model`` itself.
    The recipe keeps ``model``, so its state_dict has no ``module.`` prefix."""
    global _WRAPPED
    _WRAPPED = True
    run = _RUN
    if not run.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if run.device != "cpu":  # the same parameters in SyncBatchNorm modules: state_dict keys unchanged
        torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DistributedDataParallel(model, device_ids=[run.local_rank])
    return DistributedDataParallel(model)


def to_device(t: torch.Tensor) -> torch.Tensor:
    return t if _RUN.device == "cpu" else t.to(_RUN.device, non_blocking=True)


@contextlib.contextmanager
def on_cpu(model: torch.nn.Module) -> Iterator[None]:
    """The recipes validate on CPU tensors: a model trained on a GPU visits the CPU meanwhile."""
    if _RUN.device == "cpu":
        yield
        return
    # moved in place (.data), not by model.to: DDP holds the parameter and buffer tensors themselves
    tensors = [*model.parameters(), *model.buffers()]
    for p in model.parameters():
        p.grad = None
    for t in tensors:
        t.data = t.data.cpu()
    try:
        yield
    finally:
        for t in tensors:
            t.data = t.data.to(_RUN.device)


def all_sum(t: torch.Tensor) -> torch.Tensor:
    """The element-wise sum over ranks (the tensor itself for one process)."""
    if not _RUN.distributed:
        return t
    out = to_device(t.clone())
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out.cpu()


def from_main(values: list[float]) -> list[float]:
    """Rank 0's values on every rank."""
    if not _RUN.distributed:
        return values
    t = to_device(torch.tensor(values, dtype=torch.float64))
    dist.broadcast(t, src=0)
    return t.cpu().tolist()


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order."""
    if not _RUN.distributed:
        return [obj]
    out: list[Any] = [None] * _RUN.world_size
    dist.all_gather_object(out, obj)
    return out


# -------------------------------------------------------------------------------------- random number streams


def rng_state() -> dict[str, Any]:
    """This process's global generators (torch, numpy, CUDA): dropout and the models' own noise draw from them."""
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    npy = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": npy["key"].numpy().astype(np.uint32), "pos": npy["pos"]},
            "has_gauss": npy["has_gauss"],
            "gauss": npy["gauss"],
        }
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def fork_rng(seed: int) -> None:
    """Ranks above 0 draw their in-model randomness (dropout, a VAE's noise) from their own stream, not a copy of
    rank 0's; rank 0 keeps the one-process stream."""
    if _RUN.rank > 0:
        torch.manual_seed(int(np.random.SeedSequence([seed, _RUN.rank]).generate_state(1)[0]))


# -------------------------------------------------------------------------------------- resumable state


def save_state(state: dict[str, Any]) -> None:
    """Rank 0 writes the state (plain dicts and state_dicts), atomically: a crash leaves the previous one."""
    run = _RUN
    if run.state_path is None or not run.is_main:
        return
    run.state_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = run.state_path.with_name(run.state_path.name + ".tmp")
    torch.save({"format": STATE_FORMAT, "world_size": run.world_size, **state}, tmp)
    os.replace(tmp, run.state_path)


def load_state(path: Path, train_config: dict[str, Any], identity: dict[str, Any] | None = None) -> dict[str, Any]:
    """A state written by ``save_state`` for this configuration and, where given, this ``identity`` (the data
    read and the model's tensor shapes: common.fit); StateMismatch for another run's state."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != STATE_FORMAT:
        raise StateMismatch(f"{path} is not a training state ({STATE_FORMAT})")
    saved = state["train_config"]
    keys = (set(saved) | set(train_config)) - RESUMABLE_CHANGES
    changed = sorted(k for k in keys if saved.get(k) != train_config.get(k))
    if changed:
        diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {train_config.get(k)!r}" for k in changed)
        raise StateMismatch(f"{path} was written by another configuration ({diffs}); resume with the same flags")
    was = state.get("identity")  # None in a state written before it was kept: not checked
    if identity is not None and was is not None:
        if was["shapes"] != identity["shapes"]:
            raise StateMismatch(f"{path} holds another model (its tensors' shapes differ); resume with the same flags")
        old, new = was["data"], identity["data"]
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if changed:
            raise StateMismatch(
                f"{path} was written reading other data ({', '.join(changed)} differ); resume with the same --data "
                "and flags, the data unchanged"
            )
    return state


def restore_rng(states: list[dict[str, Any]], seed: int) -> None:
    """Each rank's saved stream when the process count is the one saved; otherwise rank 0's for rank 0 and
    fresh per-rank streams for the others."""
    run = _RUN
    if len(states) == run.world_size:
        set_rng_state(states[run.rank])
    elif run.rank == 0:
        set_rng_state(states[0])
    else:
        fork_rng(seed)
