"""What export.calibrate checks of its command line before any work: the options a calibration would not use, the
companion models it names, whether a model is an image folder's; the copy of the artifact's folder calibration works
in, and SIGTERM as an exception, so that the copy is removed."""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from contract.cli import load_intact
from contract.metadata import ModelMetadata


def stop(signum: int, frame: object) -> None:
    """SIGTERM as an exception, so that the copy calibration worked in is removed before the process ends."""
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def working_copy(artifact: Path) -> Iterator[Path]:
    """A copy of the artifact's folder (of the same name) for calibration to rewrite its graph in, removed at the
    end: the folder, which a server may be polling, keeps a graph and a model.json that match until both are
    renamed in (export/record.py: write_metadata)."""
    with tempfile.TemporaryDirectory(prefix="nnserve-calibrate-") as scratch:
        work = Path(scratch) / artifact.name
        shutil.copytree(artifact, work, ignore=shutil.ignore_patterns(".*"))
        yield work


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
