"""What the command lines share: whole numbers within bounds (``at_least``), and which flags a user typed, whatever
their values (training's and export.evaluate's refusal of a flag the command would not read counts a flag typed at
its default value as given)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from contract.metadata import METADATA_FILE, ONNX_FILE, ModelMetadata, load_metadata, sha256_file


def typed(p: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The dests of the flags on the command line, whatever their values: ``argv`` parsed again with every default
    suppressed (argparse keeps its actions in ``_actions``: there is no public list), then the defaults put back."""
    kept = [(action, action.default) for action in p._actions]
    for action, _ in kept:
        action.default = argparse.SUPPRESS
    try:
        return set(vars(p.parse_args(argv)))
    finally:
        for action, default in kept:
            action.default = default


def at_least(least: int, most: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``least`` (and at most ``most``)."""

    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
        if n < least or (most is not None and n > most):
            bounds = f"at least {least}" if most is None else f"from {least} to {most}"
            raise argparse.ArgumentTypeError(f"{value} is not {bounds}")
        return n

    return parse


def run(main: Callable[[], int]) -> NoReturn:
    """A command's entry point: its exit status, and Ctrl-C as one line and status 130 (a traceback before, once
    torch's own advice to "submit a PR to PyTorch", from an export interrupted mid-trace)."""
    try:
        code = main()
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        code = 130
    sys.exit(code)


def load_intact(model_dir: str | Path) -> ModelMetadata:
    """An artifact's metadata with its graph checked against it, as the server checks it before serving; ValueError
    naming what is wrong: unreadable, the graph missing, or not the one model.json records (the command lines
    measured or calibrated such a graph: a CLI audit's)."""
    try:
        meta = load_metadata(model_dir)
        same = sha256_file(Path(model_dir) / ONNX_FILE) == meta.onnx_sha256
    except (OSError, ValueError) as e:
        raise ValueError(f"{model_dir}: not a readable artifact ({str(e).splitlines()[0]})") from None
    if not same:
        raise ValueError(
            f"{Path(model_dir) / ONNX_FILE}: sha256 does not match its {METADATA_FILE} (corrupt or replaced)"
        )
    return meta
