"""What every recipe's command line shares: the flags, the shared part of a training config, the image data
named by --data with the preprocessing record a checkpoint carries, and the output folder."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from contract.cli import at_least, typed
from contract.data import PRESETS, Dataset, DatasetPreset, load_idx_dataset, load_image_folder, load_sklearn_digits
from contract.metadata import ImagePreprocessing
from training.augment import PRESETS as AUGMENT_PRESETS
from training.common import TrainConfig
from training.registry import Recipe

positive = at_least(1)
threads = at_least(0)  # 0: torch's default


def between(low: float, high: float | None, low_ok: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number above ``low`` (or equal to it, ``low_ok``) and below ``high``."""

    def parse(value: str) -> float:
        try:
            x = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
        if not math.isfinite(x) or x < low or (x == low and not low_ok) or (high is not None and x >= high):
            where = f"{'at least' if low_ok else 'above'} {low:g}" + ("" if high is None else f" and below {high:g}")
            raise argparse.ArgumentTypeError(f"{value} is not a finite number {where}")
        return x

    return parse


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        help="an MNIST-format folder (train-*-idx*-ubyte[.gz]), an image folder "
        "(one sub-folder per class), or 'sklearn-digits'; default with --dry-run: sklearn-digits",
    )
    p.add_argument("--dataset", choices=sorted(PRESETS), help="dataset preset (default: inferred from --data)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default runs/<model>)")
    # shared flags default to None: the family's config (TrainConfig and its subclasses) supplies the default
    p.add_argument("--epochs", type=positive, default=None)
    p.add_argument("--batch-size", type=positive, default=None)
    p.add_argument("--optimizer", choices=["sgd", "adam"], default=None)
    p.add_argument(
        "--lr", type=between(0, None), default=None, help="peak learning rate (default 0.05 SGD / 3e-3 Adam)"
    )
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--schedule", choices=["onecycle", "cosine", "none"], default=None)
    p.add_argument("--label-smoothing", type=between(0, 1, low_ok=True), default=None)
    p.add_argument("--patience", type=int, default=None, help="early-stopping patience in epochs")
    p.add_argument(
        "--keep",
        choices=["best", "last"],
        default=None,
        help="weights kept: the epoch of lowest validation loss (default) or the last one",
    )
    p.add_argument("--augment", choices=sorted(AUGMENT_PRESETS), default=None, help="default: the dataset's")
    p.add_argument(
        "--fit",
        choices=["resize", "contain", "digit"],
        default=None,
        help="how images of another size are fitted (default: the dataset's)",
    )
    # the front door reads a photo's ink at 256 px a side at most (contract/ink.py: WORK), and every image of a folder
    # is held in memory at this size: --size 5000 asked for 32 GB before the first epoch
    p.add_argument("--size", type=at_least(1, 256), default=None, help="input size for image folders (default 28)")
    p.add_argument("--channels", type=int, choices=[1, 3], default=None, help="image-folder channels (default 1)")
    p.add_argument("--val-fraction", type=between(0, 1), default=None)
    p.add_argument("--split-seed", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--threads", type=threads, default=None, help="torch's CPU threads (0: torch's default)")
    p.add_argument(
        "--model-arg",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="architecture override, e.g. --model-arg 'channels=[16,32,64]'",
    )
    d = p.add_argument_group("distillation (classifiers, image and text: training/distillation.py)")
    d.add_argument("--teacher", action="append", default=[], help="an exported classifier of this data to learn from")
    d.add_argument("--teacher-weight", type=float, default=None, help="the soft term's share of the loss (0.5)")
    d.add_argument(
        "--teacher-shares",
        type=lambda v: tuple(float(x) for x in v.split(",")),
        default=None,
        metavar="S,S,...",
        help="each --teacher's share of the teachers' average, in order (default: equal)",
    )
    d.add_argument("--distill-temperature", type=float, default=None, help="T for both sides' logits (2.0)")
    p.add_argument("--dry-run", action="store_true", help="one batch of tiny data, one epoch")
    p.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="STATE",
        help="continue the run that wrote STATE (its out folder's state.pt), with the same flags",
    )
    p.add_argument(
        "--stop-after",
        type=int,
        default=None,
        metavar="EPOCH",
        help="leave after this epoch with the state written (continue later with --resume)",
    )
    p.add_argument("--no-progress", action="store_true")


# shared flags only some families read (a recipe's ``ignores``): the image data's, load_images and the image recipes'
IMAGE_FLAGS = ("dataset", "augment", "fit", "size", "channels")
DESCENT_FLAGS = ("epochs", "batch_size", "optimizer", "lr", "weight_decay", "schedule", "patience", "keep")
TEACHER_FLAGS = ("teacher", "teacher_weight", "teacher_shares", "distill_temperature")  # a family that distils
TEACHER_NEEDS = tuple((flag, "teacher") for flag in TEACHER_FLAGS[1:])  # read only with a --teacher


def refuse_unread(p: argparse.ArgumentParser, argv: list[str], recipe: Recipe, owners: dict[str, str]) -> None:
    """Every flag on the command line that the recipe would not read is refused, naming them: another family's
    own (--vectors to a CNN, --photos to a text model), a shared one it has no use for (--size to a text model),
    or one read only beside another that is not there (--teacher-weight without --teacher)."""
    given = typed(p, argv)
    ignores = set(recipe.ignores) | (set() if recipe.distils else set(TEACHER_FLAGS))
    needs = dict(recipe.needs + (TEACHER_NEEDS if recipe.distils else ()))
    unread = []
    if recipe.distils and {"teacher", "label_smoothing"} <= given:  # the distillation loss has no smoothing term
        unread.append("--label-smoothing (with --teacher)")
    for action in p._actions:
        if action.dest not in given or not action.option_strings:
            continue
        owner = owners.get(action.dest, recipe.family)
        name = action.option_strings[0]
        if isinstance(action, argparse.BooleanOptionalAction):
            name = f"--[no-]{name[2:]}"
        if action.dest in ignores or (owner != recipe.family and action.dest not in recipe.borrows):
            unread.append(name + (f" ({owner}'s)" if owner != recipe.family else ""))
        elif action.dest in needs and needs[action.dest] not in given:
            unread.append(f"{name} (without --{needs[action.dest].replace('_', '-')})")
    if unread:
        raise SystemExit(f"python -m training: {recipe.family} models do not read {', '.join(unread)}")


def model_args(args: argparse.Namespace) -> dict[str, Any]:
    """--model-arg KEY=JSON pairs -> architecture overrides, e.g. channels=[16,32,64] dropout=0.2."""
    out: dict[str, Any] = {}
    for pair in args.model_arg:
        key, _, raw = pair.partition("=")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            raise ValueError(f"--model-arg {pair!r}: KEY=JSON, as in channels=[16,32] or cell='\"gru\"'") from None
    return out


def common_config(args: argparse.Namespace, defaults: TrainConfig) -> dict[str, Any]:
    """CLI values for the fields every family shares; None means the family's default."""
    given = {
        "model": args.model,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "optimizer": args.optimizer,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "schedule": args.schedule,
        "label_smoothing": args.label_smoothing,
        "patience": args.patience,
        "keep": args.keep,
        "val_fraction": args.val_fraction,
        "split_seed": args.split_seed,
        "seed": args.seed,
        "threads": args.threads,
        "teachers": tuple(args.teacher) or None,
        "teacher_weight": args.teacher_weight,
        "teacher_shares": args.teacher_shares,
        "distill_temperature": args.distill_temperature,
        "dry_run": args.dry_run,
        "progress": not args.no_progress and sys.stderr.isatty(),
    }
    return {k: (getattr(defaults, k) if v is None else v) for k, v in given.items()}


def out_dir(args: argparse.Namespace) -> Path:
    return args.out or Path("runs") / args.model


def load_images(args: argparse.Namespace) -> tuple[Dataset, dict, DatasetPreset]:
    """The image dataset named by --data, and the preprocessing record the checkpoint will carry."""
    data = args.data or ("sklearn-digits" if args.dry_run else None)
    if data is None:
        raise SystemExit("--data is required (or --dry-run)")
    if data == "sklearn-digits":
        name = "sklearn-digits"
    elif Path(data, "train-images-idx3-ubyte.gz").exists() or Path(data, "train-images-idx3-ubyte").exists():
        name = args.dataset or ("fashion-mnist" if "fashion" in Path(data).resolve().name.lower() else "mnist")
    else:
        name = "image-folder"
    preset = PRESETS[args.dataset or name]
    # IDX files come at their size and channels (the flags were ignored); sklearn's digits are resized to --size
    fixed = [flag for flag, value in (("--channels", args.channels), ("--size", args.size)) if value is not None]
    if name == "sklearn-digits":
        fixed = [flag for flag in fixed if flag != "--size"]
    if name != "image-folder" and fixed:
        raise SystemExit(f"{' and '.join(fixed)}: an image folder's; {name}'s images are as they come")
    if (args.channels or 1) == 3 and (args.fit or preset.fit) == "digit":  # the front door would resize instead
        raise SystemExit("--fit digit reads pen strokes on one channel: use --channels 1, or --fit contain or resize")
    size = args.size or 28
    pre = {
        "input_size": [size, size],
        "channels": args.channels or 1,
        "white_on_black": preset.white_on_black,
        "fit": args.fit or preset.fit,
        "mean": [0.0],
        "std": [1.0],
    }
    if name == "sklearn-digits":
        ds = load_sklearn_digits(size)
    elif name == "image-folder":
        pre["mean"], pre["std"] = [0.0] * pre["channels"], [1.0] * pre["channels"]
        ds = load_image_folder(data, ImagePreprocessing.model_validate(pre))
    else:
        ds = load_idx_dataset(data, name)
        ds.name = args.dataset or name
    # a preset's class names for its own data; an image folder's classes are its folders' names, whatever the preset
    if (
        preset.labels is not None
        and args.dataset
        and name != "image-folder"
        and len(preset.labels) == len(set(ds.labels.tolist()))
    ):
        ds.label_names = list(preset.labels)
    pre["input_size"] = list(ds.images.shape[2:])
    pre["channels"] = int(ds.images.shape[1])
    return ds, pre, preset
