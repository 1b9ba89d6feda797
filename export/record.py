"""``python -m export.evaluate ... --record``: a report's figures kept in the artifact's model.json, so that the
model's card carries them."""

from __future__ import annotations

import argparse
import os
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from contract.metadata import METADATA_FILE, ONNX_FILE, Evaluation, ModelMetadata, load_metadata


def record(model_dir: Path, meta: ModelMetadata, result: dict, args: argparse.Namespace) -> None:
    """``--record``: the report's numbers into model.json's ``evaluation``, so that the model's card carries them;
    what else was read is named (data folders by name, a classifier by name and graph hash, never a path)."""
    figures: dict[str, float] = {}

    def walk(prefix: str, node: dict) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(f"{prefix}{key}.", value)
            elif isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value):
                figures[prefix + key] = float(value)  # a NaN (a class no sample asked for) is left out

    walk("", result)
    against = {"data": args.data.name}
    if args.anomalies is not None:
        against["anomalies"] = args.anomalies.name
    if args.classifier is not None:
        cls = load_metadata(args.classifier)
        against["classifier"] = f"{cls.name} (model.onnx sha256 {cls.onnx_sha256})"
    measured = datetime.now(UTC).isoformat(timespec="seconds")
    evaluation = Evaluation(figures=figures, against=against, measured=measured)
    text = meta.model_copy(update={"evaluation": evaluation}).model_dump_json(indent=2) + "\n"
    ModelMetadata.model_validate_json(text)  # what is written reads back (the server refuses what does not)
    write_metadata(model_dir, text)


def renamed_in(model_dir: Path, files: dict[str, bytes], before: Callable[[], None] | None = None) -> None:
    """``files`` into ``model_dir``, each written beside its place first (named for this process: two commands at
    once took each other's, an audit's), with the mode of the file it replaces (440 stays), then renamed in,
    model.json last; ``before`` runs once all are written and before the first rename. A command stopped part way
    leaves what was there, and a server polling the folder never reads half a file nor, but for the time of one
    rename, a graph beside a model.json that is not its own (export's write_artifact, --record and calibrate)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    staged: dict[str, Path] = {}
    try:
        for name, data in files.items():
            staged[name] = model_dir / f".{name}.{os.getpid()}.partial"
            staged[name].write_bytes(data)
            if (model_dir / name).is_file():
                shutil.copymode(model_dir / name, staged[name])
        if before is not None:
            before()
        for name in sorted(staged, key=lambda n: n == METADATA_FILE):
            staged[name].replace(model_dir / name)
    finally:
        for path in staged.values():
            path.unlink(missing_ok=True)


def write_metadata(model_dir: Path, text: str, graph: Path | None = None) -> None:
    """model.json renamed into an artifact (``renamed_in``); with ``graph``, a calibrated model.onnx made in a copy
    of the folder, that graph first (export.calibrate holds Ctrl-C and SIGTERM off meanwhile:
    export/calibrate_cli.py: uninterrupted)."""
    renamed_in(model_dir, {**({ONNX_FILE: graph.read_bytes()} if graph else {}), METADATA_FILE: text.encode()})
