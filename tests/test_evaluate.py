"""python -m export.evaluate on real exported artifacts, for both families."""

from __future__ import annotations

import gzip
import json
import struct

import numpy as np

from export.evaluate import main as evaluate_main
from training.text_data import synthetic_sentiment


def _idx(path, arr):
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">HBB", 0, 8, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes())


def test_image_artifact_on_an_idx_pair(tmp_path, artifact_root, digits):
    _idx(tmp_path / "imgs.gz", digits.images[:200, 0])
    _idx(tmp_path / "lbls.gz", digits.labels[:200].astype(np.uint8))
    out = tmp_path / "r.json"
    assert (
        evaluate_main(
            [
                str(artifact_root / "digits-cnn"),
                "--images",
                str(tmp_path / "imgs.gz"),
                "--labels",
                str(tmp_path / "lbls.gz"),
                "--json",
                str(out),
            ]
        )
        == 0
    )
    r = json.loads(out.read_text())
    assert r["n"] == 200 and r["accuracy"] >= 0.8 and set(r["per_class_accuracy"]) == {str(i) for i in range(10)}


def test_text_artifact_on_a_labelled_tsv(tmp_path, artifact_root):
    ds = synthetic_sentiment(100, seed=3)
    lines = ["sentence\tlabel"] + [
        f"{t}\t{['negative', 'positive'][y]}" for t, y in zip(ds.texts, ds.labels, strict=True)
    ]
    (tmp_path / "dev.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "r.json"
    assert (
        evaluate_main([str(artifact_root / "synthetic-lstm"), "--texts", str(tmp_path / "dev.tsv"), "--json", str(out)])
        == 0
    )
    r = json.loads(out.read_text())
    assert r["n"] == 100 and r["accuracy"] >= 0.9
