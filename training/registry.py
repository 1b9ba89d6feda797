"""The registry of training recipes: one module of training/ per model family (the ``family`` of its models'
registry entries) registers a Recipe, and ``python -m training`` finds it by the family of the model it is asked
to train. A recipe is the family's own part of training: its command-line flags, how it turns the flags and the
data into a checkpoint (its data, loss, metrics and loop over training.common's shared pieces), its curves and
its one-line summary."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contract.discovery import import_modules


@dataclass(frozen=True)
class Recipe:
    family: str
    run: Callable[[argparse.Namespace], dict[str, Any]]  # parsed flags -> checkpoint dict
    plot: Callable[[dict[str, Any], str, Path], None]  # checkpoint, title, curves.png -> the training curves
    summary: Callable[[dict[str, Any], Path], str]  # checkpoint, its folder -> one line of its figures
    add_args: Callable[[argparse.ArgumentParser], None] | None = None  # the family's own flags
    # why the family trains in its own loop rather than training.common.fit's; such a recipe runs in one process
    # (no torchrun) and cannot --resume or --stop-after. None: it trains through fit (training/distributed.py)
    own_loop: str | None = None
    distils: bool = False  # the family learns from --teacher artifacts (training/distillation.py)
    # other families' flags this family reads too (the DBN's RBMs take rbm's --cd-k); any other family's own flag
    # given to it is refused, not ignored (training/cli.py: refuse_unread)
    borrows: tuple[str, ...] = ()
    # the shared flags (training/cli.py) this family has no use for, by their dest: refused too when given
    ignores: tuple[str, ...] = ()
    # (flag, flag): the first is read only beside the second (--photo-pool with --photos); alone, it is refused
    needs: tuple[tuple[str, str], ...] = ()


RECIPES: dict[str, Recipe] = {}


def register_recipe(recipe: Recipe) -> Recipe:
    if recipe.family in RECIPES:
        raise ValueError(f"a recipe for {recipe.family!r} is registered twice")
    RECIPES[recipe.family] = recipe
    return recipe


def load_recipes(package: str = "training") -> dict[str, Recipe]:
    """Import every public module of the training package (a recipe module registers itself on import)."""
    import_modules(package)
    return RECIPES
