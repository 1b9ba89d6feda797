"""What the command lines share: whole numbers within bounds (``at_least``), and which flags a user typed, whatever
their values (training's and export.evaluate's refusal of a flag the command would not read counts a flag typed at
its default value as given)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn


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
