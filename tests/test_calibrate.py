"""export/calibrate.py and export/ood.py: the calibration error, the temperature fit, the out-of-distribution score
and what calibration writes into an artifact."""

from __future__ import annotations

import os
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from contract.images import normalize
from contract.metadata import load_metadata, sha256_file
from export.calibrate import fit_temperature, softmax
from export.frechet import feature_session
from export.ood import (
    OOD_OUTPUT,
    choose_components,
    combined_score,
    energy_score,
    fit_mahalanobis,
    mahalanobis,
    nearest_centre,
    scaling_of,
)
from export.reliability import ece, ece_floor


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


def test_ece_reads_the_answered_label_where_the_probabilities_tie():
    """Rows served at 1/K (nothing written) are answered with the graph's label, not the first of the tie: 100
    rows at 0.5 over two labels, answered 1 and right half the time, are calibrated; read as label 0 they are
    never right."""
    probs, answered = np.full((100, 2), 0.5), np.ones(100, dtype=np.int64)
    labels = np.repeat([1, 0], 50)
    assert ece(probs, labels, answered=answered) == pytest.approx(0.0)
    assert ece(probs, np.ones(100, dtype=np.int64)) == pytest.approx(0.5)  # argmax 0: wrong every time
    assert ece(probs, np.ones(100, dtype=np.int64), answered=answered) == pytest.approx(0.5)  # right, at 0.5


def test_the_ece_floor_is_what_noise_alone_scores_on_that_many_inputs():
    """A perfectly calibrated model measured on 344 inputs (SST-2's half B) scores an ECE of several points by
    chance; on 20,000 a fraction of one. The floor says which an ECE figure is."""
    rng = np.random.default_rng(2)

    def calibrated(n: int) -> tuple[np.ndarray, np.ndarray]:
        conf = rng.uniform(0.5, 1.0, n)
        right = rng.random(n) < conf
        return np.stack([conf, 1 - conf], 1), np.where(right, 0, 1)

    small, large = calibrated(344), calibrated(20_000)
    assert 0.025 < ece_floor(small[0]) < 0.06 and ece_floor(large[0]) < 0.008
    measured = [ece(*calibrated(344)) for _ in range(50)]
    assert abs(np.median(measured) - ece_floor(small[0])) < 0.01  # the floor is the median of such figures
    sure = np.tile([1.0, 0.0], (344, 1))
    assert ece_floor(sure) == 0.0  # always right, as it says


def test_temperature_fit_recovers_the_temperature_that_made_the_labels():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 4, (20_000, 10))
    labels = np.array([rng.choice(10, p=p) for p in softmax(logits, 2.5)])
    assert fit_temperature(logits, labels) == pytest.approx(2.5, rel=0.05)


def test_no_temperature_is_fitted_on_answers_that_are_all_right():
    """With every row right the likelihood grows as T falls to the search's bound (a new user's 21 texts gave
    T = 0.13 and served 1.0): fewer than MIN_WRONG wrong answers keep T = 1."""
    from export.flagged import MIN_WRONG, fitted_on

    logits = np.array([[2.0, -1.0], [-0.5, 0.5]] * 20)
    labels = np.array([0, 1] * 20)
    assert fit_temperature(logits, labels) == 1.0
    # and the card says so (it said "validation half A", as for a fitted one: a user audit)
    said = "not fitted (half A: 40 inputs, 0 answered wrong; 5 needed), T = 1; ECE measured on half B's 3"
    assert fitted_on("half A", logits, labels, 3) == said
    labels[:MIN_WRONG] = 1 - labels[:MIN_WRONG]  # five wrong: fitted, and far above the search's lower bound
    assert 0.1 < fit_temperature(logits, labels) != 1.0
    assert fitted_on("half A", logits, labels, 40) == "half A (40 inputs); ECE measured on half B's 40"


TABLES = ("B table", "B desk")  # a digit model's photos of a sheet on a table, measured (export/flagged.py)


def test_a_calibrated_artifact_serves_the_score_from_its_graph(artifact_root, digits):
    meta = load_metadata(artifact_root / "digits-cnn")
    assert meta.calibration is not None and meta.calibration.temperature > 0
    assert set(meta.calibration.ece_after) == set(meta.calibration.ece_floor) == {"B clean", "B photos", *TABLES}
    assert meta.ood is not None and meta.ood.method == "mahalanobis+energy" and meta.ood.output == OOD_OUTPUT
    assert set(meta.ood.scaling) == {"mahalanobis", "energy"}
    assert [o.name for o in meta.outputs] == ["logits", OOD_OUTPUT]
    for key in ("auroc_other_dataset", "auroc_other_dataset_energy", "flagged_clean", "flagged blank white page"):
        assert key in meta.ood.figures
    assert meta.ood.figures["flagged blank white page"] == 1.0 and meta.ood.figures["auroc_other_dataset"] > 0.9
    path = artifact_root / "digits-cnn" / "model.onnx"
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = normalize(digits.images[:8], meta.image_preprocessing())
    logits, scores = sess.run(None, {"input": x})
    assert logits.shape == (8, 10) and scores.shape == (8,) and np.isfinite(scores).all()
    # the graph's score, recomputed outside it: its own class means and whitening, the logits' energy
    consts = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    feats_sess, feat = feature_session(artifact_root / "digits-cnn")
    feats = feats_sess.run([feat], {"input": x})[0].reshape(8, -1).astype(np.float64)
    parts = {
        "mahalanobis": mahalanobis(feats, consts["ood_means"][0].astype(np.float64), consts["ood_chol"]),
        "energy": energy_score(logits, 1.0),
    }
    np.testing.assert_allclose(scores, combined_score(parts, meta.ood.scaling), rtol=1e-3, atol=1e-3)


def test_calibrating_again_replaces_the_score(artifact_root, digits, tmp_path):
    from tests.conftest import calibrate

    copy = tmp_path / "digits-cnn"
    shutil.copytree(artifact_root / "digits-cnn", copy)
    before = onnx.load(str(copy / "model.onnx")).graph
    calibrate(copy, digits)
    after = onnx.load(str(copy / "model.onnx")).graph
    assert [o.name for o in after.output] == ["logits", OOD_OUTPUT]
    assert [n.op_type for n in after.node] == [n.op_type for n in before.node]  # replaced, not stacked
    meta = load_metadata(copy)
    assert meta.onnx_sha256 == sha256_file(copy / "model.onnx")


def test_an_autoencoders_reconstruction_error_is_folded_into_the_graph(artifact_root, digits, tmp_path):
    """The served autoencoder's graph joins the classifier's (one file still), fed from its normalised input: the
    score served is the larger scaled of the logits' energy and the squared reconstruction error the autoencoder
    itself gives those pixels; stripping the score removes every node the autoencoder brought."""
    from export.ood import AE_PREFIX, add_ood_output, reconstruction_error, strip_ood_output

    copy = tmp_path / "digits-cnn"
    shutil.copytree(artifact_root / "digits-cnn", copy)
    strip_ood_output(copy)
    bare = [n.op_type for n in onnx.load(str(copy / "model.onnx")).graph.node]
    ae = artifact_root / "digits-ae"
    pixels = digits.images[:16].copy()
    pixels[8:] = np.random.default_rng(0).integers(0, 256, pixels[8:].shape, dtype=np.uint8)  # noise
    errors = reconstruction_error(ae, pixels)
    assert errors[8:].min() > errors[:8].max()  # noise is reconstructed worse than any digit
    scaling = {"energy": (-3.0, 2.0), "reconstruction": (float(np.median(errors[:8])), 5.0)}
    add_ood_output(copy, None, None, None, scaling, autoencoder=ae)
    model = onnx.load(str(copy / "model.onnx"))
    assert [i.name for i in model.graph.input] == ["input"] and any(
        n.name.startswith(AE_PREFIX) for n in model.graph.node
    )
    meta = load_metadata(copy)
    sess = ort.InferenceSession(str(copy / "model.onnx"), providers=["CPUExecutionProvider"])
    logits, served = sess.run(["logits", OOD_OUTPUT], {"input": normalize(pixels, meta.image_preprocessing())})
    want = combined_score({"energy": energy_score(logits, 1.0), "reconstruction": errors}, scaling)
    np.testing.assert_allclose(served, want, rtol=1e-4, atol=1e-4)
    assert strip_ood_output(copy) and [n.op_type for n in onnx.load(str(copy / "model.onnx")).graph.node] == bare


def test_calibration_tries_the_reconstruction_error_and_refuses_an_autoencoder_of_other_images(
    artifact_root, digits, tmp_path
):
    import json

    from export.ood import input_feed
    from tests.conftest import calibrate

    copy = tmp_path / "digits-cnn"
    shutil.copytree(artifact_root / "digits-cnn", copy)
    calibrate(copy, digits, artifact_root / "digits-ae")
    meta = load_metadata(copy)
    assert meta.ood is not None and "reconstruction: " in meta.ood.fitted_on  # among the candidates tried
    assert ("reconstruction" in meta.ood.scaling) == ("reconstruction: the squared error" in meta.ood.fitted_on)
    other = tmp_path / "other-ae"
    shutil.copytree(artifact_root / "digits-ae", other)
    card = json.loads((other / "model.json").read_text())
    card["preprocessing"]["fit"] = "contain"
    (other / "model.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match="does not read"):
        input_feed(copy, other)


def test_a_sibling_classifiers_score_is_folded_into_the_graph(artifact_root, digits, tmp_path):
    """A calibrated sibling's graph joins the classifier's, fed from its input: the score served is the larger
    scaled of the logits' energy and the out-of-distribution score the sibling itself gives those pixels;
    stripping removes every node it brought. An uncalibrated sibling has no score to lend."""
    from export.ood import SIBLING_PREFIX, add_ood_output, sibling_score, strip_ood_output

    copy = tmp_path / "digits-lenet5"
    shutil.copytree(artifact_root / "digits-lenet5", copy)  # uncalibrated: the graph is bare
    bare = [n.op_type for n in onnx.load(str(copy / "model.onnx")).graph.node]
    pixels = digits.images[:16].copy()
    pixels[8:] = np.random.default_rng(0).integers(0, 256, pixels[8:].shape, dtype=np.uint8)  # noise
    lent = sibling_score(artifact_root / "digits-cnn", pixels)
    assert lent[8:].min() > lent[:8].max()  # the sibling finds noise odder than any digit
    scaling = {"energy": (-3.0, 2.0), "sibling": (float(np.median(lent[:8])), 2.0)}
    add_ood_output(copy, None, None, None, scaling, sibling=artifact_root / "digits-cnn")
    model = onnx.load(str(copy / "model.onnx"))
    assert any(n.name.startswith(SIBLING_PREFIX) for n in model.graph.node)
    sess = ort.InferenceSession(str(copy / "model.onnx"), providers=["CPUExecutionProvider"])
    pre = load_metadata(copy).image_preprocessing()
    logits, served = sess.run(["logits", OOD_OUTPUT], {"input": normalize(pixels, pre)})
    want = combined_score({"energy": energy_score(logits, 1.0), "sibling": lent}, scaling)
    np.testing.assert_allclose(served, want, rtol=1e-4, atol=1e-4)
    assert strip_ood_output(copy) and [n.op_type for n in onnx.load(str(copy / "model.onnx")).graph.node] == bare
    with pytest.raises(ValueError, match="calibrate it first"):
        sibling_score(artifact_root / "digits-lenet5", pixels)


def test_calibration_tries_a_siblings_score(artifact_root, digits, tmp_path):
    """With a sibling, its score is among the candidates, and the account names it where it is served."""
    from tests.conftest import calibrate

    copy = tmp_path / "digits-lenet5"
    shutil.copytree(artifact_root / "digits-lenet5", copy)
    calibrate(copy, digits, sibling=artifact_root / "digits-cnn")
    meta = load_metadata(copy)
    assert meta.ood is not None and "sibling" in meta.ood.fitted_on.split("(")[-1]  # among the candidates tried
    assert ("sibling" in meta.ood.scaling) == ("sibling: the out-of-distribution score" in meta.ood.fitted_on)
    assert meta.onnx_sha256 == sha256_file(copy / "model.onnx")


def test_each_component_is_scaled_to_its_own_threshold():
    rng = np.random.default_rng(2)
    clean, photos = rng.normal(10, 2, 10_000), rng.normal(12, 2, 10_000)
    centre, unit = scaling_of(clean, photos)
    assert centre == pytest.approx(10, abs=0.1)
    scaled = {"a": (clean - centre) / unit, "p": (photos - centre) / unit}
    # photos sit higher here, so theirs is the binding share: 10 % of them above 1, fewer than 5 % of clean
    assert (scaled["p"] > 1).mean() == pytest.approx(0.10, abs=0.002) and (scaled["a"] > 1).mean() < 0.05
    # the served score is the larger scaled component: either one alone can raise it
    s = {"m": np.array([0.0, 5.0, 0.0]), "e": np.array([0.0, 0.0, 7.0])}
    assert combined_score(s, {"m": (0.0, 1.0), "e": (-1.0, 2.0)}).tolist() == [0.5, 5.0, 4.0]


def test_the_components_served_are_those_that_flag_the_most_of_the_other_dataset():
    rng = np.random.default_rng(3)
    n = 4_000

    def sets(shift_m: float, shift_e: float, half: float) -> dict[str, dict[str, np.ndarray]]:
        """'m' and 'e' both normal on clean and photos; the other dataset is shifted in m for one half of its
        images and in e for the other (``half``: the share shifted in m)."""
        k = int(n * half)
        other_m = np.concatenate([rng.normal(shift_m, 1, k), rng.normal(0, 1, n - k)])
        other_e = np.concatenate([rng.normal(0, 1, k), rng.normal(shift_e, 1, n - k)])
        return {
            "A clean": {"m": rng.normal(0, 1, n), "e": rng.normal(0, 1, n)},
            "A photos": {"m": rng.normal(0, 1, n), "e": rng.normal(0, 1, n)},
            "A other dataset": {"m": other_m, "e": other_e},
        }

    scaling, _, detected = choose_components(sets(6, 6, 0.5))  # each sees half of the other dataset
    assert set(scaling) == {"m", "e"} and detected["m+e"] > max(detected["m"], detected["e"]) + 0.3
    scaling, threshold, detected = choose_components(sets(3, 0, 1.0))  # e sees nothing: it would only add flags
    assert set(scaling) == {"m"} and detected["m"] > detected["m+e"]
    clean = combined_score({"m": rng.normal(0, 1, n)}, scaling)
    assert (clean > threshold).mean() == pytest.approx(0.03, abs=0.01)  # the operating point: 3 % of clean


def test_any_set_of_components_may_be_served_not_only_one_or_all():
    """Three components, of which 'm' and 'e' each see half of the other dataset and 'c' none of it: the pair
    is served (all three would only add c's false alarms; one alone sees half)."""
    rng = np.random.default_rng(4)
    n = 4_000

    def normal(*shift: float) -> dict[str, np.ndarray]:
        return {c: rng.normal(s, 1, n) for c, s in zip("mec", shift, strict=True)}

    other = normal(0, 0, 0)
    other["m"][: n // 2] += 3
    other["e"][n // 2 :] += 3
    scaling, _, detected = choose_components(
        {"A clean": normal(0, 0, 0), "A photos": normal(0, 0, 0), "A other dataset": other}
    )
    assert set(scaling) == {"m", "e"} and len(detected) == 7
    assert detected["m+e"] > max(detected["m"], detected["e"], detected["m+e+c"])


def test_a_costly_component_is_served_only_where_it_flags_clearly_more():
    """The autoencoder's reconstruction error costs more than the classifier: a set with it is served over the
    best set without it only if it flags at least COSTLY_GAIN more of the other dataset."""
    from export.ood import COSTLY_GAIN

    rng = np.random.default_rng(5)
    n = 20_000

    def comps(shift_m: float, shift_r: float) -> dict[str, dict[str, np.ndarray]]:
        normal = {"m": rng.normal(0, 1, n), "reconstruction": rng.normal(0, 1, n)}
        other = {"m": rng.normal(shift_m, 1, n), "reconstruction": rng.normal(shift_r, 1, n)}
        return {"A clean": normal, "A photos": {k: rng.normal(0, 1, n) for k in normal}, "A other dataset": other}

    scaling, _, detected = choose_components(comps(4.5, 4.6))  # the error gains a little over m alone
    assert set(scaling) == {"m"} and 0 < max(detected.values()) - detected["m"] < COSTLY_GAIN
    scaling, _, detected = choose_components(comps(2, 6))  # m alone flags ~64 %, the error ~100 %
    assert "reconstruction" in scaling and detected["+".join(scaling)] > detected["m"] + 0.3


def test_mahalanobis_is_the_distance_to_the_nearest_class_mean():
    means = np.array([[0.0, 0.0], [10.0, 0.0]])
    chol = np.linalg.cholesky(np.linalg.inv(np.diag([4.0, 1.0])))  # variance 4 along x, 1 along y
    feats = np.array([[2.0, 0.0], [9.0, 1.0]])
    assert mahalanobis(feats, means, chol) == pytest.approx([1.0, 0.25 + 1.0])


def test_features_that_do_not_vary_within_a_class_still_have_a_distance():
    """A user's folder whose images of each class were copies of one another: every class's features were alike,
    the covariance all zeros, and calibration stopped with numpy's LinAlgError (singular matrix)."""
    feats = np.repeat(np.array([[1.0, 2.0], [3.0, 5.0]]), 10, axis=0)
    means, chol = fit_mahalanobis(feats, np.repeat([0, 1], 10), 2)
    assert np.array_equal(means, [[1.0, 2.0], [3.0, 5.0]]) and np.isfinite(chol).all()
    assert mahalanobis(np.array([[1.0, 2.0], [1.0, 2.001]]), means, chol)[0] == 0.0


def test_calibrate_names_a_missing_artifact_or_data_in_one_line(artifact_root, tmp_path, capsys):
    """Each was a FileNotFoundError traceback; export names the same mistakes in one line, and so does this."""
    from export.calibrate import main as calibrate_main

    cases = (
        ([str(tmp_path / "gone"), "--data", str(tmp_path)], "gone: no model.json (python -m export writes"),
        ([str(artifact_root / "digits-cnn"), "--data", str(tmp_path / "nope")], "nope: no such file or folder"),
    )
    for argv, message in cases:
        with pytest.raises(SystemExit) as e:
            calibrate_main(argv)
        assert e.value.code == 2 and message in capsys.readouterr().err


def test_an_rbf_networks_score_is_its_inputs_distance_to_the_nearest_centre(tmp_path):
    """An RBF network's graph holds its centres (the initializer ``centres``) and computes the squared distances
    of its input to them: calibration finds that tensor by its values, whatever the exporter named it, and the
    served score's third component is its smallest entry (nothing computed twice); the larger scaled component
    is served."""
    from onnx import TensorProto, helper, numpy_helper

    from export.ood import add_ood_output, distance_tensor, graph_centres

    centres = np.array([[0, 0, 0, 0], [1, 1, 1, 1], [3, 0, 0, 0]], dtype=np.float32)
    graph = helper.make_graph(
        [  # d2 = |x|^2 - 2 x c + |c|^2, then a decoy of the same shape, then logits = -d2
            helper.make_node("Flatten", ["input"], ["flat"], axis=1),
            helper.make_node("ReduceSumSquare", ["flat", "one"], ["x2"], keepdims=1),
            helper.make_node("ReduceSumSquare", ["centres", "one"], ["c2"], keepdims=0),
            helper.make_node("Transpose", ["centres"], ["ct"], perm=[1, 0]),
            helper.make_node("MatMul", ["flat", "ct"], ["xc"]),
            helper.make_node("Mul", ["xc", "minus_two"], ["xc2"]),
            helper.make_node("Add", ["xc2", "x2"], ["part"]),
            helper.make_node("Add", ["part", "c2"], ["d2_named_by_chance"]),
            helper.make_node("Neg", ["d2_named_by_chance"], ["logits"]),
        ],
        "rbf-like",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 2, 2])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        [
            numpy_helper.from_array(centres, "centres"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "one"),
            numpy_helper.from_array(np.array(-2.0, dtype=np.float32), "minus_two"),
        ],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(tmp_path / "model.onnx"))
    np.testing.assert_array_equal(graph_centres(tmp_path), centres)
    x = np.array([[[[0, 0], [0, 1]]], [[[1, 1], [1, 2]]], [[[9, 9], [9, 9]]]], dtype=np.float32)
    assert nearest_centre(x, centres.astype(np.float64)).tolist() == [1.0, 1.0, 4 * 64.0]
    assert distance_tensor(tmp_path, centres.astype(np.float64), x) == "d2_named_by_chance"
    scaling = {"nearest_centre": (1.0, 2.0), "energy": (-3.0, 2.0)}
    add_ood_output(tmp_path, None, None, None, scaling, "d2_named_by_chance")
    sess = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    served, logits = sess.run(["ood_score", "logits"], {"input": x})
    want = combined_score({"nearest_centre": np.array([1.0, 1.0, 256.0]), "energy": energy_score(logits, 1.0)}, scaling)
    np.testing.assert_allclose(served, want, rtol=1e-5)


def test_text_calibration_flags_unknown_words(artifact_root):
    meta = load_metadata(artifact_root / "synthetic-lstm")
    assert meta.calibration is not None and meta.ood is not None
    assert meta.ood.method == "unknown-token-share+word-rarity" and meta.ood.threshold == 1
    assert 0 < meta.calibration.ece_floor["B"] < 0.2
    assert meta.ood.figures["flagged random characters"] == 1.0 and meta.ood.figures["flagged_clean"] <= 0.05


def test_a_score_of_the_energy_alone_runs_and_leaves_nothing_unused(tmp_path):
    """The graph of a model whose score is its logits' energy alone (mnist-rbf's): no Mahalanobis constants."""
    from onnx import TensorProto, helper

    from export.ood import add_ood_output, strip_ood_output

    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["logits"])],
        "logits-only",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(tmp_path / "model.onnx"))
    add_ood_output(tmp_path, None, None, None, {"energy": (-3.0, 2.0)})
    model = onnx.load(str(tmp_path / "model.onnx"))
    used = {i for n in model.graph.node for i in n.input}
    assert [i.name for i in model.graph.initializer if i.name not in used] == []
    x = np.array([[0.0, 1.0, 2.0, 3.0], [10.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    sess = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    served = sess.run(["ood_score"], {"input": x})[0]
    np.testing.assert_allclose(served, (energy_score(x, 1.0) + 3.0) / 2.0, rtol=1e-5)
    assert strip_ood_output(tmp_path) and [o.name for o in onnx.load(str(tmp_path / "model.onnx")).graph.output] == [
        "logits"
    ]


def test_the_shipped_rbf_network_keeps_its_centres_where_calibration_looks():
    """mnist-rbf's graph keeps its centres under the name calibration looks for (models/mlp.py's RBFNetwork.centres:
    a renamed parameter would silently drop the nearest-centre component from the candidates)."""
    from export.ood import graph_centres
    from tests.conftest import REPO

    centres = graph_centres(REPO / "artifacts" / "mnist-rbf")
    assert centres is not None and centres.shape == (1000, 784)


@pytest.mark.parametrize("name", ["mnist-cnn", "mnist-lenet5", "mnist-mlp", "mnist-rbf"])
def test_a_shipped_digit_model_serves_the_score_its_card_describes(name):
    """The score a shipped digit model's graph serves is the largest scaled of the components its model.json
    names, each recomputed outside the graph (Mahalanobis from the graph's own class means and whitening, the
    logits' energy, the distance to the nearest centre, mnist-ae's reconstruction error, mnist-cnn's own score),
    and a page of noise is flagged."""
    from export.ood import graph_centres, reconstruction_error, sibling_score
    from tests.conftest import REPO

    folder = REPO / "artifacts" / name
    meta = load_metadata(folder)
    assert meta.ood is not None and meta.ood.scaling
    rng = np.random.default_rng(0)
    pixels = np.concatenate([np.zeros((1, 1, 28, 28), np.uint8), rng.integers(0, 256, (1, 1, 28, 28), np.uint8)])
    x = normalize(pixels, meta.image_preprocessing())
    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    logits, served = sess.run(["logits", OOD_OUTPUT], {meta.inputs[0].name: x})
    parts = {"energy": energy_score(logits, 1.0)}
    if "mahalanobis" in meta.ood.scaling:
        consts = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(folder / "model.onnx")).graph.initializer}
        feats_sess, feat = feature_session(folder)
        feats = feats_sess.run([feat], {meta.inputs[0].name: x})[0].reshape(len(x), -1).astype(np.float64)
        parts["mahalanobis"] = mahalanobis(feats, consts["ood_means"][0].astype(np.float64), consts["ood_chol"])
    if "nearest_centre" in meta.ood.scaling:
        centres = graph_centres(folder)
        assert centres is not None
        parts["nearest_centre"] = nearest_centre(x, centres)
    if "reconstruction" in meta.ood.scaling:
        assert load_metadata(REPO / "artifacts" / "mnist-ae").onnx_sha256 in meta.ood.fitted_on  # the one folded in
        parts["reconstruction"] = reconstruction_error(REPO / "artifacts" / "mnist-ae", pixels)
    if "sibling" in meta.ood.scaling:
        assert load_metadata(REPO / "artifacts" / "mnist-cnn").onnx_sha256 in meta.ood.fitted_on  # the one folded in
        parts["sibling"] = sibling_score(REPO / "artifacts" / "mnist-cnn", pixels)
    np.testing.assert_allclose(served, combined_score(parts, meta.ood.scaling), rtol=1e-3, atol=1e-3)
    assert served[1] > meta.ood.threshold  # a page of noise is unlike any digit


def test_calibration_refuses_data_other_than_what_the_model_was_trained_on(artifact_root, digits, tmp_path, capsys):
    """The validation split is recomputed from the data given: other files would make "validation" other rows, so
    the files must hash to what model.json records (export.evaluate has always checked; calibration now too)."""
    import gzip
    import struct

    from contract.metadata import METADATA_FILE
    from export.calibrate import main as calibrate_main

    folder = tmp_path / "idx"
    folder.mkdir()
    for name, values in (
        ("train-images-idx3-ubyte.gz", digits.images[:, 0]),
        ("train-labels-idx1-ubyte.gz", digits.labels),
    ):
        arr = np.asarray(values, dtype=np.uint8)
        with gzip.open(folder / name, "wb") as f:
            f.write(struct.pack(">HBB", 0, 8, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes())
    for name, data in (("digits-cnn", folder), ("synthetic-lstm", tmp_path / "train.tsv")):
        copy = shutil.copytree(artifact_root / name, tmp_path / name)
        meta = load_metadata(copy)
        files = [p.name for p in folder.iterdir()] if data.is_dir() else [data.name]
        meta.dataset.sha256 = {f: "0" * 64 for f in files}  # recorded: some other file
        (copy / METADATA_FILE).write_text(meta.model_dump_json(indent=2) + "\n")
        if not data.is_dir():
            data.write_text("sentence\tlabel\na fine film\t1\n")
        graph = sha256_file(copy / "model.onnx")
        with pytest.raises(SystemExit):
            calibrate_main([str(copy), "--data", str(data), "--ood-data", str(folder)])
        assert "was trained on (its sha256 is none of those recorded)" in capsys.readouterr().err
        assert sha256_file(copy / "model.onnx") == graph and load_metadata(copy) == meta  # nothing written


def test_a_model_of_an_image_folder_is_calibrated_on_its_folder(tmp_path, capsys, monkeypatch):
    """A user's own image folder: no photo renderer and no other dataset, yet a temperature and an
    out-of-distribution score (export/folder_calibration.py) folded into the graph as the service reads it."""
    import random

    from PIL import Image, ImageDraw

    from export.__main__ import main as export_main
    from export.calibrate import main as calibrate_main
    from training.__main__ import main as train_main

    rng = random.Random(0)
    folder = tmp_path / "shapes"
    for cls in ("circle", "square", "triangle"):
        (folder / cls).mkdir(parents=True)
        for i in range(60):
            im = Image.new("RGB", (48, 48), tuple(rng.randint(170, 255) for _ in range(3)))
            x, y, r = rng.randint(16, 32), rng.randint(16, 32), rng.randint(7, 14)
            shape = {"circle": "ellipse", "square": "rectangle"}.get(cls)
            draw, ink = ImageDraw.Draw(im), tuple(rng.randint(0, 100) for _ in range(3))
            if shape:
                getattr(draw, shape)([x - r, y - r, x + r, y + r], fill=ink)
            else:
                draw.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=ink)
            im.save(folder / cls / f"{i}.png")
    argv = ["cnn", "--data", str(folder), "--fit", "contain", "--channels", "3", "--epochs", "4", "--threads", "1"]
    assert train_main([*argv, "--no-progress", "--out", str(tmp_path / "run")]) == 0
    art = tmp_path / "art"
    assert export_main([str(tmp_path / "run" / "checkpoint.pt"), "--out", str(art), "--dry-run"]) == 0
    import tempfile

    import export.folder_calibration

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    took, seen = export.folder_calibration.took_ood_output, []

    def watched(*a: object, **kw: object) -> object:  # the score just folded into the graph, in the copy
        seen.append(sha256_file(art / "model.onnx") == load_metadata(art).onnx_sha256)
        return took(*a, **kw)

    monkeypatch.setattr(export.folder_calibration, "took_ood_output", watched)
    os.symlink(tmp_path / "nowhere", art / "dangling")  # an audit's: a copy of the whole folder failed on these
    os.mkfifo(art / "pipe")
    (art / "model.json").chmod(0o440)
    assert calibrate_main([str(art), "--data", str(folder)]) == 0
    assert (art / "model.json").stat().st_mode & 0o777 == 0o440 and (art / "pipe").exists()
    # the folder a server may poll kept a graph and model.json that match while calibration ran (until 2026-12-07
    # it rewrote the graph in place, minutes before model.json), and the copy it worked in is gone
    assert seen == [True] and list(scratch.iterdir()) == []
    monkeypatch.chdir(art)  # "." has no name of its own: the copy's folder was the temporary folder itself
    assert calibrate_main([".", "--data", str(folder)]) == 0 and list(scratch.iterdir()) == []
    monkeypatch.undo()
    meta = load_metadata(art)
    assert meta.calibration is not None and meta.ood is not None and meta.ood.output == "ood_score"
    assert meta.ood.method == "mahalanobis" and meta.onnx_sha256 == sha256_file(art / "model.onnx")
    assert 0.02 <= meta.ood.figures["flagged_clean"] <= 0.1  # the validation split's 95th percentile
    assert meta.ood.figures["flagged page of noise"] == meta.ood.figures["flagged blank white page"] == 1.0
    sess = ort.InferenceSession(str(art / "model.onnx"))
    assert [o.name for o in sess.get_outputs()] == ["logits", "ood_score"]

    def broken(*_: object) -> float:
        raise RuntimeError("a failure half way")

    monkeypatch.setattr(export.folder_calibration, "fit_temperature", broken)  # after the graph was stripped
    with pytest.raises(RuntimeError, match="half way"):
        calibrate_main([str(art), "--data", str(folder)])
    assert sha256_file(art / "model.onnx") == meta.onnx_sha256  # the graph as it was: never touched
    monkeypatch.undo()
    with pytest.raises(SystemExit) as e:  # a training audit's: --ood-data was accepted and silently not used
        calibrate_main([str(art), "--data", str(folder), "--ood-data", str(tmp_path)])
    assert e.value.code == 2 and "--ood-data would not be used" in capsys.readouterr().err
    (folder / "circle" / "0.png").unlink()  # another folder than it was trained on: refused, nothing written
    with pytest.raises(SystemExit):
        calibrate_main([str(art), "--data", str(folder)])
    assert "was trained on" in capsys.readouterr().err and sha256_file(art / "model.onnx") == meta.onnx_sha256


def test_a_stop_while_calibration_is_written_is_taken_not_raised():
    """Ctrl-C as the graph and model.json were renamed in printed "interrupted" (130) over a calibration written, and
    one as the copy was removed left part of it in /tmp (an audit's): held off, then said."""
    import signal

    from export.calibrate_cli import uninterrupted

    with uninterrupted() as came:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
    assert sorted(came) == [signal.SIGINT, signal.SIGTERM]


def test_sigterm_ends_calibration_in_one_line(capsys):
    """It ended with status 143 and no word (an audit's): one line, as Ctrl-C's "interrupted"."""
    import signal

    from export.calibrate_cli import stop

    with pytest.raises(SystemExit) as e:
        stop(signal.SIGTERM, None)
    assert e.value.code == 143 and capsys.readouterr().err == "stopped (SIGTERM)\n"


def test_a_validation_split_of_one_row_or_an_option_for_another_kind_is_refused_in_one_line(tmp_path, capsys):
    """A training audit's (2026-12-07): a text model whose validation split held one row (a class of one row and
    ten of another) reached calibration, which ended in a traceback (half A was empty); and --ood-data, for image
    models, was taken by a text model and not used."""
    from export.__main__ import main as export_main
    from export.calibrate import main as calibrate_main
    from training.__main__ import main as train_main

    table = tmp_path / "few.csv"
    table.write_text("text,label\na fine film,pos\n" + "".join(f"a dull film take {i},neg\n" for i in range(10)))
    argv = ["rnn-classifier", "--data", str(table), "--epochs", "1", "--threads", "1", "--no-progress"]
    assert train_main([*argv, "--model-arg", "hidden_size=8", "--out", str(tmp_path / "run")]) == 0
    art = tmp_path / "art"
    assert export_main([str(tmp_path / "run" / "checkpoint.pt"), "--out", str(art), "--dry-run"]) == 0
    graph = sha256_file(art / "model.onnx")
    cases = (
        ([], "the validation split holds 1 row: calibration needs 2 at least"),
        (["--ood-data", str(tmp_path)], "--ood-data would not be used: art is a text classifier"),
        (["--photos", "10", "--sibling", str(tmp_path)], "--sibling, --photos would not be used: art is a text"),
    )
    for extra, message in cases:
        with pytest.raises(SystemExit) as e:
            calibrate_main([str(art), "--data", str(table), *extra])
        assert e.value.code == 2 and message in capsys.readouterr().err
        assert sha256_file(art / "model.onnx") == graph and load_metadata(art).calibration is None
