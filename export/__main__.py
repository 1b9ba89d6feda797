"""python -m export <checkpoint> --out <dir> [--name NAME] [--version V]

Writes <dir>/model.onnx and <dir>/model.json and exits non-zero if onnxruntime and torch disagree beyond
rtol 1e-4 / atol 1e-5 at batch 1 or 8 (nothing is written then). A <dir> named by a number is a version
folder (artifacts/<name>/<version>): the name is then its parent folder's, and the version its own.
"""

from __future__ import annotations

import argparse
import logging
import os
import warnings
from pathlib import Path

from contract.cli import run
from contract.data import DataError
from export.onnx_export import ParityError, export_checkpoint


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--out", type=Path, required=True, help="artifact folder, e.g. artifacts/mnist-cnn")
    p.add_argument("--name", help="served model name (default: the --out folder's name, or its parent's)")
    p.add_argument("--version", help="the version (default: 1, or the --out folder's number)")
    p.add_argument("--opset", type=int, default=18)
    p.add_argument("--dry-run", action="store_true", help="export and check parity into --out, quietly")
    args = p.parse_args(argv)
    if args.checkpoint.is_dir() and (args.checkpoint / "checkpoint.pt").is_file():
        p.error(f"{args.checkpoint} is training's folder: export its checkpoint, {args.checkpoint / 'checkpoint.pt'}")
    if not args.checkpoint.is_file():
        p.error(f"{args.checkpoint}: no such file (python -m training writes <its --out>/checkpoint.pt)")
    logging.basicConfig(level=logging.WARNING if args.dry_run else logging.INFO, format="%(name)s %(message)s")
    for noisy in ("onnxscript", "onnx_ir", "torch.onnx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # torch's exporter talks about itself (torchvision's absence, its deprecated internals, names it keeps for
    # dynamic axes, an LSTM's weights it copies): none of it is about the artifact, which the parity check judges
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    for said, kind in (
        (r"_check_is_size will be removed", FutureWarning),
        (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),
        (r"# The axis name", UserWarning),
        (r"The tensor attributes .* were assigned during export", UserWarning),
    ):
        warnings.filterwarnings("ignore", message=said, category=kind)
    if args.out.exists() and not args.out.is_dir():  # said before the export and its parity check, not after them
        p.error(f"cannot write {args.out}: File exists")
    out = Path(os.path.abspath(args.out))  # "." or "x/..": its name is the folder's (it was '', a CLI audit's)
    name, version = args.name or out.name, args.version or "1"
    if out.name.isdigit():  # a version folder: nnserve serves it as a version of its parent's name
        name, version = args.name or out.parent.name, args.version or out.name
        if version != out.name:
            p.error(f"--version {version} for the folder of version {out.name}")
        logging.getLogger("export").info("%s is a version folder: model %r, version %s", args.out, name, version)
    try:
        export_checkpoint(args.checkpoint, args.out, name=name, version=version, opset=args.opset)
    except ParityError as e:
        logging.getLogger("export").error("parity check failed: %s", e)
        return 1
    except DataError as e:  # not a checkpoint python -m training wrote, a name that cannot be served, an opset
        p.error(str(e))
    except OSError as e:  # --out is a file, or cannot be written
        p.error(f"cannot write {args.out}: {e.strerror or e}")
    return 0


if __name__ == "__main__":
    run(main)
