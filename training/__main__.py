"""python -m training <model> --data PATH [...]: train a registered model into a checkpoint.

Examples:
    python -m training cnn --data ../shared/data/mnist --out runs/mnist-cnn
    python -m training cnn --data ../shared/data/fashion-mnist --epochs 30 --out runs/fashion-cnn
    python -m training cnn --data my_photos/ --fit contain --out runs/my-cnn   # one sub-folder per class
    python -m training rnn-classifier --data ../shared/data/sentiment/sst2/train.tsv --out runs/sst2-lstm
    python -m training rnn-classifier --data reviews.csv --text-column review --label-column stars
    python -m training lenet5 --dry-run                                          # tiny data, one batch
    python -m training mlp --data ../shared/data/mnist --resume runs/mlp/state.pt  # continue a stopped run
    torchrun --standalone --nproc_per_node 2 -m training mlp --data ../shared/data/mnist   # 2 processes (DDP)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

import torch

import models
from contract.cli import run
from contract.data import DataError
from training import distributed
from training.cli import add_common_args, out_dir, refuse_unread
from training.registry import load_recipes

log = logging.getLogger("training")
RECIPES = load_recipes()  # every module of training/ that trains a family registers its recipe


def build_parser() -> argparse.ArgumentParser:
    return _parser_and_owners()[0]


def _parser_and_owners() -> tuple[argparse.ArgumentParser, dict[str, str]]:
    """The command line, and which family added each of the flags that are a family's own (dest -> family)."""
    p = argparse.ArgumentParser(
        prog="python -m training", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("model", choices=models.list_models(), help="registered architecture")
    add_common_args(p)
    owners: dict[str, str] = {}
    for recipe in RECIPES.values():
        if recipe.add_args is not None:
            before = len(p._actions)  # argparse keeps its actions in order; there is no public list of them
            recipe.add_args(p)
            owners.update({action.dest: recipe.family for action in p._actions[before:]})
    return p, owners


def main(argv: list[str] | None = None) -> int:
    parser, owners = _parser_and_owners()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    level = logging.INFO if distributed.env_rank() == 0 else logging.WARNING  # rank 0 logs for the run
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # its font search: 21 INFO lines of a run's 24
    family = models.get_entry(args.model).family
    if family not in RECIPES:
        raise SystemExit(f"no training recipe for the {family!r} family of {args.model} (training/registry.py)")
    recipe = RECIPES[family]
    refuse_unread(parser, argv, recipe, owners)
    own_loop = recipe.own_loop is not None
    if own_loop and (distributed.env_world_size() > 1 or args.resume or args.stop_after):
        raise SystemExit(
            f"{args.model} ({family}) trains in one process, without --resume or --stop-after: {recipe.own_loop}. "
            "Run it with python -m training, not torchrun."
        )
    out = out_dir(args)
    if out.exists() and not out.is_dir():  # found before training, not after it
        raise SystemExit(f"python -m training: --out {out} is a file, not a folder")
    state = None if own_loop else out / "state.pt"  # the resumable state, rewritten after every epoch
    run = distributed.start(state_path=state, resume=args.resume, stop_after=args.stop_after)
    clean = False
    try:
        ckpt = recipe.run(args)
        if run.distributed and not distributed.was_wrapped():
            raise SystemExit(f"the {family} recipe trained without DistributedDataParallel: N copies, none kept")
        clean = True
    except distributed.Stopped as stopped:
        log.info("%s", stopped)
        clean = True
        return 0
    except distributed.StateMismatch as e:
        raise SystemExit(str(e)) from e
    except (DataError, OSError) as e:  # the data as given (missing, a folder for a file, unreadable): one line
        raise SystemExit(f"python -m training: {e}") from None
    except (ValueError, TypeError) as e:  # flags that do not fit the model or the data (a --model-arg, --negate)
        if os.environ.get("TRAINING_TRACEBACK"):  # a bug, not a flag: the whole story
            raise
        raise SystemExit(f"python -m training: {type(e).__name__}: {e} (TRAINING_TRACEBACK=1 shows where)") from None
    finally:
        distributed.finish(clean)
    if not run.is_main:
        return 0
    out.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, out / "checkpoint.pt")
    metrics = {k: ckpt[k] for k in ("model_name", "model_config", "train_config", "dataset", "metrics", "history")}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    recipe.plot(ckpt, f"{args.model} on {ckpt['dataset']['name']}", out / "curves.png")
    log.info("%s; wrote %s", recipe.summary(ckpt, out), out)
    return 0


if __name__ == "__main__":
    run(main)
