"""python -m export.evaluate on real exported artifacts, for both families."""

from __future__ import annotations

import gzip
import json
import struct

import numpy as np
import pytest

from contract.metadata import load_metadata, softmax
from contract.text import Vocab, text_logits
from contract.text_data import synthetic_sentiment
from export.evaluate import _session, predict_texts
from export.evaluate import main as evaluate_main


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


def test_auroc_matches_scikit_learn_with_ties():
    from sklearn.metrics import roc_auc_score

    from export.evaluate import auroc

    rng = np.random.default_rng(0)
    neg, pos = rng.normal(0, 1, 300).round(0), rng.normal(1, 1, 200).round(0)
    want = roc_auc_score(np.r_[np.zeros(300), np.ones(200)], np.r_[neg, pos])
    assert auroc(neg, pos) == pytest.approx(want, abs=1e-12)
    assert auroc(np.zeros(5), np.ones(5)) == 1.0 and auroc(np.ones(5), np.zeros(5)) == 0.0


def test_autoencoder_artifact_flags_noise(tmp_path, artifact_root, digits):
    """Digits as the normal class, noise images as anomalies: the AUROC of reconstruction error is high."""
    normal, noise = tmp_path / "normal", tmp_path / "noise"
    for root, imgs in (
        (normal, digits.images[:, 0]),
        (noise, np.random.default_rng(0).integers(0, 256, (300, 28, 28), dtype=np.uint8)),
    ):
        root.mkdir()
        _idx(root / "train-images-idx3-ubyte.gz", imgs)
        _idx(root / "train-labels-idx1-ubyte.gz", (np.arange(len(imgs)) % 10).astype(np.uint8))
    out = tmp_path / "r.json"
    # --data is the recorded training data: here the digits the fixture trained on, rewritten as IDX
    assert (
        evaluate_main(
            [str(artifact_root / "digits-ae"), "--data", str(normal), "--anomalies", str(noise), "--json", str(out)]
        )
        == 0
    )
    r = json.loads(out.read_text())
    assert r["auroc"] > 0.95 and r["anomalies_flagged"] > 0.9 and r["flagged"] < 0.1


def test_text_ensemble_averages_calibrated_answers(tmp_path, artifact_root):
    ds = synthetic_sentiment(200, seed=3)
    a, b = artifact_root / "synthetic-lstm", artifact_root / "synthetic-attn"
    probs = []
    for folder in (a, b):
        meta = load_metadata(folder)
        pre = meta.text_preprocessing()
        z = text_logits(_session(folder), ds.texts, pre.tokenizer, Vocab.load(folder / pre.vocab_file))
        probs.append(softmax(z.astype(np.float64), meta.calibration.temperature))
    expected = np.mean(probs, axis=0).argmax(1)
    got = predict_texts(a, ds.texts, load_metadata(a), ensemble=(b,))
    assert np.array_equal(got, expected)
    assert np.array_equal(predict_texts(a, ds.texts, load_metadata(a), ensemble=(a,)), probs[0].argmax(1))
    with pytest.raises(SystemExit):  # images are not averaged
        evaluate_main([str(artifact_root / "digits-cnn"), "--data", "x", "--ensemble-with", str(a)])


def test_an_ensemble_member_of_another_split_is_refused(tmp_path, artifact_root):
    other = tmp_path / "other"
    other.mkdir()
    for f in (artifact_root / "synthetic-attn").iterdir():
        (other / f.name).symlink_to(f)
    (other / "model.json").unlink()
    meta = json.loads((artifact_root / "synthetic-attn" / "model.json").read_text())
    meta["dataset"]["split_seed"] += 1
    (other / "model.json").write_text(json.dumps(meta))
    a = str(artifact_root / "synthetic-lstm")
    with pytest.raises(SystemExit, match="2"):
        evaluate_main([a, "--data", "x.tsv", "--ensemble-with", str(other)])
