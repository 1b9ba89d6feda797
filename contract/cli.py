"""What the command lines share: which flags a user typed, whatever their values (training's and export.evaluate's
refusal of a flag the command would not read counts a flag typed at its default value as given)."""

from __future__ import annotations

import argparse


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
