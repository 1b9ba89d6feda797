"""``python -m export.evaluate ... --record``: a report's figures kept in the artifact's model.json, so that the
model's card carries them."""

from __future__ import annotations

import argparse
import os
import shutil
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


def write_metadata(model_dir: Path, text: str, graph: Path | None = None) -> None:
    """model.json written beside its place and renamed in: a stopped command never leaves half of one, and a server
    polling the folder never reads half of one (``--record`` and export.calibrate write it so). With ``graph`` (a
    calibrated model.onnx, made in a copy of the folder), that graph too: both staged first, then renamed in back
    to back, so a graph and a model.json that differ stand side by side for the time of one rename, where
    calibration's minutes of work left them so (the CLI audit's leftover; export.calibrate holds Ctrl-C and SIGTERM
    off meanwhile: export/calibrate_cli.py: uninterrupted)."""
    pid = os.getpid()  # two commands at once each stage their own files (an audit's: they took each other's)
    tmp, staged = model_dir / f".{METADATA_FILE}.{pid}.partial", model_dir / f".{ONNX_FILE}.{pid}.partial"
    try:
        tmp.write_text(text)
        if graph is not None:
            shutil.copyfile(graph, staged)
        for new, old in ((tmp, METADATA_FILE), (staged, ONNX_FILE)):  # the files' modes as they were (440 stays)
            if new.exists() and (model_dir / old).exists():
                shutil.copymode(model_dir / old, new)
        if graph is not None:
            staged.replace(model_dir / ONNX_FILE)
        tmp.replace(model_dir / METADATA_FILE)
    finally:
        tmp.unlink(missing_ok=True)
        staged.unlink(missing_ok=True)
