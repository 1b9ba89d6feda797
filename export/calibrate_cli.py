"""What export.calibrate checks of its command line before any work: the options a calibration would not use, the
companion models it names, whether a model is an image folder's; the copy of the artifact's folder calibration works
in and the signals held off while it is written back or removed, and SIGTERM as an exception, so that the copy is
removed."""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from contract.cli import load_intact
from contract.metadata import ModelMetadata


def stop(signum: int, frame: object) -> None:
    """SIGTERM as an exception, so that the copy calibration worked in is removed before the process ends, said in
    one line as Ctrl-C is (it ended with status 143 and no word: an audit's)."""
    sys.stderr.write("stopped (SIGTERM)\n")
    raise SystemExit(128 + signum)


HELD = {signal.SIGINT, signal.SIGTERM}


@contextlib.contextmanager
def uninterrupted() -> Iterator[list[int]]:
    """Ctrl-C and SIGTERM held off for the block (the renames into the artifact, the copy's removal): each that comes
    meanwhile is noted in the list yielded, so that the command says what it did rather than "interrupted" after
    writing the calibration (the CLI audit's: 130 over a calibration written). Python's handlers, not a signal mask:
    a process-directed signal goes to any thread that does not block it (onnxruntime's, numpy's), and a mask is
    per thread. From the main thread only, as every handler."""
    came: list[int] = []
    before = {s: signal.signal(s, lambda signum, _: came.append(signum)) for s in HELD}
    try:
        yield came
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def working_copy(artifact: Path) -> Path:
    """A copy, in a new temporary folder, of what calibration reads of the artifact's folder: its files (not hidden
    ones, subfolders, links that lead nowhere or pipes, which a copy of the whole folder failed on, and a link to
    a data folder it copied whole). The graph is rewritten there, so that the folder, which a server may be
    polling, keeps a graph and a model.json that match until both are renamed in (export/record.py:
    write_metadata); ``removed`` takes the copy away."""
    name = artifact.resolve().name or "artifact"  # "." and ".." have no name of their own
    work = Path(tempfile.mkdtemp(prefix="nnserve-calibrate-")) / name
    try:
        work.mkdir()
        for f in artifact.iterdir():
            if not f.name.startswith(".") and f.is_file():  # a FIFO is no file, and is never opened
                shutil.copyfile(f, work / f.name)
        return work
    except BaseException:
        removed(work)
        raise


def removed(work: Path) -> None:
    """The temporary folder ``working_copy`` made, removed whatever signal comes meanwhile."""
    with uninterrupted():
        shutil.rmtree(work.parent, ignore_errors=True)


def writable(folder: Path) -> str | None:
    """Why calibration could not rename its graph and model.json into ``folder`` (None: it can), found before its
    minutes of work (they ended in a traceback): a file is made there and removed."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".nnserve-probe-"):
            return None
    except OSError as e:
        return e.strerror or str(e)


def unused(args: argparse.Namespace, meta: ModelMetadata, folder: bool) -> tuple[list[str], str]:
    """The options given that this calibration of a classifier would not use (a training audit's: --ood-data was
    taken by a text model and by an image folder's, and silently left out), and what the calibration is."""
    given = {"--ood-data": args.ood_data, "--autoencoder": args.autoencoder, "--sibling": args.sibling,
             "--photos": args.photos}  # fmt: skip
    used: set[str] = set()
    if folder:
        kind = "a model of an image folder (export/folder_calibration.py)"
    elif meta.task == "text-classification":
        kind = "a text classifier"
    elif args.second_reading:  # export/second_reading.py's own photos
        kind = "only deciding its second reading"
    elif args.measure:
        used, kind = {"--ood-data", "--photos"}, "re-measured"
    else:
        used, kind = set(given), "calibrated"
    return [flag for flag, value in given.items() if value is not None and flag not in used], kind


def of_image_folder(meta: ModelMetadata) -> bool:
    """An image classifier of a user's own folder: calibrated by export/folder_calibration.py."""
    return meta.task == "image-classification" and meta.dataset.name == "image-folder"


def check_companions(p: argparse.ArgumentParser, args: argparse.Namespace, meta: ModelMetadata) -> None:
    """--sibling and --autoencoder name model folders of the right task: one line before any work (a CLI audit's:
    a text model as --sibling, a file as --autoencoder, failed minutes in with a traceback)."""
    for flag, other, task in (
        ("--sibling", args.sibling, meta.task),
        ("--autoencoder", args.autoencoder, "autoencoder"),
    ):
        try:  # its graph checked against its model.json too: calibration folds that graph into this one
            theirs = None if other is None else load_intact(other).task
        except ValueError as e:
            p.error(f"{flag} {e}")
        if theirs is not None and theirs != task:
            p.error(f"{flag} {other}: its task is {theirs}, not {task}")
