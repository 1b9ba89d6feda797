"""export/calibrate.py: the calibration error, the temperature fit and what calibration writes into an artifact."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from contract.images import normalize
from contract.metadata import load_metadata
from export.calibrate import OOD_OUTPUT, ece, fit_temperature, mahalanobis, softmax


def test_ece_is_zero_when_confidence_matches_accuracy_and_large_when_overconfident():
    rng = np.random.default_rng(0)
    n = 20_000
    conf = rng.uniform(0.5, 1.0, n)
    labels = np.zeros(n, dtype=np.int64)
    right = rng.random(n) < conf  # right exactly as often as confident
    probs = np.stack([np.where(right, conf, 1 - conf), np.where(right, 1 - conf, conf)], 1)
    assert ece(probs, labels) < 0.01
    over = np.stack([np.where(right, 0.999, 0.001), np.where(right, 0.001, 0.999)], 1)  # sure of everything
    assert ece(over, labels) > 0.2


def test_temperature_fit_recovers_the_temperature_that_made_the_labels():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 4, (20_000, 10))
    labels = np.array([rng.choice(10, p=p) for p in softmax(logits, 2.5)])
    assert fit_temperature(logits, labels) == pytest.approx(2.5, rel=0.05)


def test_a_calibrated_artifact_serves_the_score_from_its_graph(artifact_root, digits):
    meta = load_metadata(artifact_root / "digits-cnn")
    assert meta.calibration is not None and meta.calibration.temperature > 0
    assert set(meta.calibration.ece_after) == {"B clean", "B photos"}
    assert meta.ood is not None and meta.ood.method == "mahalanobis" and meta.ood.output == OOD_OUTPUT
    assert [o.name for o in meta.outputs] == ["logits", OOD_OUTPUT]
    for key in ("auroc_other_dataset", "flagged_clean", "flagged_photos", "flagged blank white page"):
        assert key in meta.ood.figures
    assert meta.ood.figures["flagged blank white page"] == 1.0 and meta.ood.figures["auroc_other_dataset"] > 0.9
    sess = ort.InferenceSession(str(artifact_root / "digits-cnn" / "model.onnx"), providers=["CPUExecutionProvider"])
    pre = meta.image_preprocessing()
    logits, scores = sess.run(None, {"input": normalize(digits.images[:8], pre)})
    assert logits.shape == (8, 10) and scores.shape == (8,) and np.isfinite(scores).all()
    assert (scores >= 0).all()


def test_mahalanobis_is_the_distance_to_the_nearest_class_mean():
    means = np.array([[0.0, 0.0], [10.0, 0.0]])
    chol = np.linalg.cholesky(np.linalg.inv(np.diag([4.0, 1.0])))  # variance 4 along x, 1 along y
    feats = np.array([[2.0, 0.0], [9.0, 1.0]])
    assert mahalanobis(feats, means, chol) == pytest.approx([1.0, 0.25 + 1.0])


def test_text_calibration_flags_unknown_words(artifact_root):
    meta = load_metadata(artifact_root / "synthetic-lstm")
    assert meta.calibration is not None and meta.ood is not None and meta.ood.method == "unknown-token-share"
    assert meta.ood.figures["flagged random characters"] == 1.0 and meta.ood.figures["flagged_clean"] <= 0.05
