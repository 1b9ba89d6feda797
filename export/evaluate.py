"""Measure an exported artifact with onnxruntime, through the service's own preprocessing.

    python -m export.evaluate artifacts/mnist-cnn --data ../shared/data/mnist            # validation split
    python -m export.evaluate artifacts/mnist-cnn --images t10k-images-idx3-ubyte.gz \\
        --labels t10k-labels-idx1-ubyte.gz                                                 # any IDX pair

With ``--data``, the validation split is rebuilt from the seed and fraction recorded in model.json and the
data files must hash to the sha256 recorded there, so the figure is the one training reported, re-measured
on the exported graph.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from export.contract import ONNX_FILE, ModelMetadata, load_metadata, normalize, prepare_image, sha256_file
from training.data import read_idx, stratified_split


def predict(model_dir: Path, images: np.ndarray, meta: ModelMetadata, batch: int = 500) -> np.ndarray:
    """uint8 images (N, H, W) or (N, C, H, W) -> predicted label indices, preprocessed as the service does."""
    sess = ort.InferenceSession(str(model_dir / ONNX_FILE), providers=["CPUExecutionProvider"])
    pre = meta.image_preprocessing()
    preds = []
    for i in range(0, len(images), batch):
        chunk = images[i : i + batch]
        if chunk.ndim == 3:
            chunk = chunk[:, None]
        pixels = np.stack(
            [prepare_image(Image.fromarray(a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)), pre) for a in chunk]
        )
        (logits,) = sess.run([meta.outputs[0].name], {meta.inputs[0].name: normalize(pixels, pre)})
        preds.append(logits.argmax(1))
    return np.concatenate(preds)


def report(pred: np.ndarray, labels: np.ndarray, names: list[str]) -> dict[str, float | int | dict[str, float]]:
    per_class = {names[c]: float((pred[labels == c] == c).mean()) for c in range(len(names)) if (labels == c).any()}
    return {
        "n": len(labels),
        "accuracy": float((pred == labels).mean()),
        "error_rate": float((pred != labels).mean()),
        "per_class_accuracy": per_class,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m export.evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("model_dir", type=Path)
    p.add_argument("--data", type=Path, help="the training folder: evaluate on the recorded validation split")
    p.add_argument("--images", type=Path, help="an IDX images file (e.g. the official t10k set)")
    p.add_argument("--labels", type=Path, help="the matching IDX labels file")
    p.add_argument("--json", type=Path, help="also write the report here")
    args = p.parse_args(argv)
    meta = load_metadata(args.model_dir)
    if args.data is not None:
        img_path = next(args.data.glob("train-images-idx3-ubyte*"))
        lbl_path = next(args.data.glob("train-labels-idx1-ubyte*"))
        for path in (img_path, lbl_path):
            want = meta.dataset.sha256.get(path.name)
            if want is not None and sha256_file(path) != want:
                p.error(f"{path} is not the file {meta.name} was trained on (sha256 differs)")
        labels = read_idx(lbl_path).astype(np.int64)
        _, val = stratified_split(labels, meta.dataset.val_fraction, meta.dataset.split_seed)
        images, labels, split = read_idx(img_path)[val], labels[val], "validation"
    elif args.images is not None and args.labels is not None:
        images, labels, split = read_idx(args.images), read_idx(args.labels).astype(np.int64), str(args.images)
    else:
        p.error("give --data, or --images and --labels")
    result = {"model": meta.name, "split": split, **report(predict(args.model_dir, images, meta), labels, meta.labels)}
    out = json.dumps(result, indent=2)
    if args.json:
        args.json.write_text(out + "\n")
    sys.stdout.write(out + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
