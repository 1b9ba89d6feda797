"""``python -m export.evaluate``'s command line: its options, and which of them each kind of artifact reads (any
other given is refused rather than measured as if it were not there)."""

from __future__ import annotations

import argparse
from pathlib import Path

from contract.cli import at_least, typed
from contract.metadata import ModelMetadata
from contract.text import DEFAULT_WINDOWS


def parser(description: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m export.evaluate", description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("model_dir", type=Path)
    p.add_argument("--data", type=Path, help="the training folder or file: evaluate on the recorded validation split")
    p.add_argument("--images", type=Path, help="an IDX images file (e.g. the official t10k set)")
    p.add_argument("--labels", type=Path, help="the matching IDX labels file")
    p.add_argument("--texts", type=Path, help="a CSV/TSV of labelled texts")
    p.add_argument("--text-column", help="--texts: the text column (default: the model's training table's)")
    p.add_argument(
        "--windows", type=at_least(1, 64), default=DEFAULT_WINDOWS, help="texts: max_len-token windows read (1: cut)"
    )
    p.add_argument("--label-column", help="--texts: the label column (default: the model's training table's)")
    averaged = "texts: another classifier whose calibrated probabilities are averaged in (repeatable)"
    p.add_argument("--ensemble-with", type=Path, action="append", default=[], help=averaged)
    p.add_argument("--anomalies", type=Path, help="autoencoders: an IDX folder of out-of-distribution images")
    p.add_argument(
        "--sizes",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[],
        help="autoencoders: also the anomaly flag /v1/reconstruct answers with the images enlarged to these sizes "
        "(e.g. 56,112,280: through the front door)",
    )
    p.add_argument("--sizes-n", type=at_least(1), default=1000, help="autoencoders: images of each set for --sizes")
    p.add_argument("--classifier", type=Path, help="generators: a classifier artifact of the same dataset")
    p.add_argument(
        "--samples", type=at_least(1), help="generators: images per set (default: the validation split's size)"
    )
    p.add_argument(
        "--gibbs-steps", type=at_least(1), default=1000, help="Gibbs samplers: steps of each chain (the service's)"
    )
    p.add_argument("--json", type=Path, help="also write the report here")
    p.add_argument("--record", action="store_true", help="with --data: also keep the figures in model.json (the card)")
    return p


# what each kind of artifact reads besides model_dir, --json and --record: any other option given is refused
READS = {
    "image-classification": ("data", "images", "labels"),
    "text-classification": ("data", "texts", "text_column", "label_column", "windows", "ensemble_with"),
    "autoencoder": ("data", "anomalies", "sizes", "sizes_n"),
    "generator": ("data", "classifier", "samples", "gibbs_steps"),
}


def refuse_unread(p: argparse.ArgumentParser, argv: list[str], args: argparse.Namespace, meta: ModelMetadata) -> None:
    """--texts to an image model, --windows to a generator: refused rather than measured as if not there (typed
    on the command line counts, at the default value too, as training's refusal counts it)."""
    if meta.task not in READS:
        return  # a task measured elsewhere: main says so
    given = typed(p, argv)
    reads = {"help", "model_dir", "json", "record", *READS[meta.task]}
    if meta.generator is None or meta.generator.gibbs is None:
        reads.discard("gibbs_steps")  # a Gibbs sampler's (an RBM's) only
    # read only beside another: the columns of --texts, the sizes of --sizes
    needs = {"text_column": args.texts, "label_column": args.texts, "sizes_n": args.sizes or None}
    unread = [
        a
        for a in p._actions  # argparse's own list: no public one
        if a.dest in given and (a.dest not in reads or (a.dest in needs and needs[a.dest] is None))
    ]
    if unread:
        p.error(f"{meta.name} ({meta.task}) does not read {', '.join(a.option_strings[0] for a in unread)} here")
    if args.data is not None and any(x is not None for x in (args.texts, args.images, args.labels)):
        p.error("--data measures the validation split model.json records: give it or --texts / --images, not both")
