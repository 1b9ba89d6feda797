"""The Hopfield network (models/hopfield.py), its recall loop (contract/hopfield.py), its recipe and its export: the
rules store what they should, fields are exact so rows never depend on their batch, torch and onnxruntime agree
sweep for sweep, and a corrupted stored pattern is restored through the exported graph."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

import models
from contract.hopfield import Reading, best_match, recall, to_state
from models.hopfield import GRID, HopfieldNetwork
from training.hopfield_study import corrupt, network, random_patterns, torch_sweep


def digit_patterns(digits, per_class: int = 1) -> np.ndarray:
    """The first ``per_class`` digits of each class, binarised: correlated patterns."""
    idx = np.concatenate([np.flatnonzero(digits.labels == c)[:per_class] for c in range(10)])
    return to_state(digits.images[idx].astype(np.float32) / 255.0, 0.5)


def fixed_points(model: HopfieldNetwork, patterns: np.ndarray) -> np.ndarray:
    nxt, _, _ = model(torch.from_numpy(patterns))
    return (nxt.numpy() == patterns).all(axis=1)


def test_registry_entries_name_their_rule():
    assert set(models.list_models("associative-memory")) == {"hopfield-hebbian", "hopfield-pseudo-inverse"}
    assert models.make_config("hopfield-hebbian").rule == "hebbian"
    assert models.make_config("hopfield-pseudo-inverse").rule == "pseudo-inverse"
    with pytest.raises(ValueError, match="unknown rule"):
        models.create_model("hopfield-hebbian", rule="storkey")


def test_weights_are_symmetric_with_zero_diagonal_and_exact():
    rng = np.random.default_rng(0)
    for arch in ("hopfield-hebbian", "hopfield-pseudo-inverse"):
        w = network(arch, random_patterns(12, 100, rng)).weight
        assert torch.equal(w, w.T) and not w.diagonal().any()
        step = 1.0 if arch == "hopfield-hebbian" else GRID  # integer counts, or multiples of 2^-16
        assert torch.equal(torch.round(w / step) * step, w)


def test_hebbian_stores_few_random_patterns_but_not_correlated_digits(digits):
    rng = np.random.default_rng(1)
    few = random_patterns(10, 400, rng)  # load 0.025, far under 0.138
    assert fixed_points(network("hopfield-hebbian", few), few).all()
    pats = digit_patterns(digits)
    assert not fixed_points(network("hopfield-hebbian", pats), pats).any()  # they share most background pixels
    assert fixed_points(network("hopfield-pseudo-inverse", pats), pats).all()


def test_pseudo_inverse_refuses_dependent_patterns(digits):
    pats = digit_patterns(digits)
    with pytest.raises(ValueError, match="linearly dependent"):
        network("hopfield-pseudo-inverse", np.concatenate([pats, pats[:1]]))
    with pytest.raises(ValueError, match="±1"):
        models.create_model("hopfield-hebbian", units=4, patterns=1).store(torch.zeros(1, 4))


def test_a_sweep_keeps_a_unit_whose_field_is_zero():
    model = models.create_model("hopfield-hebbian", units=3, patterns=1)
    model.weight.copy_(torch.tensor([[0.0, 1, 0], [1, 0, 0], [0, 0, 0]]))  # unit 2 has no inputs: h = 0
    nxt, energy, _ = model(torch.tensor([[1.0, 1, -1], [1.0, 1, 1]]))
    assert nxt.tolist() == [[1, 1, -1], [1, 1, 1]] and energy.tolist() == [-1.0, -1.0]


def fake_sweep(w: np.ndarray):
    def sweep(s: np.ndarray):
        h = s @ w
        nxt = np.where(h > 0, 1.0, np.where(h < 0, -1.0, s)).astype(np.float32)
        return nxt, -0.5 * np.einsum("bi,ij,bj->b", nxt, w, nxt), nxt[:, :1]

    return sweep


def test_recall_stops_at_a_fixed_point_a_2_cycle_or_the_limit():
    w = np.array([[0.0, 1.0], [1.0, 0.0]], dtype=np.float32)
    states = np.array([[1, 1], [1, -1], [1, -1]], dtype=np.float32)
    fixed, cycle, limited = recall(fake_sweep(w), states, np.array([10, 10, 1]))
    assert (fixed.outcome, fixed.sweeps, fixed.state.tolist()) == ("fixed-point", 1, [1, 1])
    # synchronous updates of two coupled units that disagree swap them forever: (1, -1) -> (-1, 1) -> (1, -1)
    assert (cycle.outcome, cycle.sweeps, cycle.state.tolist()) == ("2-cycle", 2, [1, -1])
    assert (limited.outcome, limited.sweeps, limited.state.tolist()) == ("max-sweeps", 1, [-1, 1])
    with pytest.raises(ValueError):
        recall(fake_sweep(w), states, 0)


def test_to_state_and_best_match():
    px = np.array([[[[0.0, 0.6], [0.5, 1.0]]]], dtype=np.float32)  # (1, 1, 2, 2)
    assert to_state(px, 0.5).tolist() == [[-1, 1, -1, 1]] and to_state(px[0], 0.5).tolist() == [-1, 1, -1, 1]
    assert best_match(np.array([0.2, 0.95, 0.9]), 0.9) == (1, pytest.approx(0.95))
    assert best_match(np.array([0.2, -1.0]), 0.9) == (None, pytest.approx(0.2))


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory):
    """The recipe on scikit-learn's digits (30 patterns, pseudo-inverse, a short study), exported."""
    from export.onnx_export import export_checkpoint
    from training.associative_memory import HopfieldTrainConfig, _plot, train_hopfield

    pre = {"input_size": [28, 28], "channels": 1, "white_on_black": True, "fit": "digit", "mean": [0], "std": [1]}
    cfg = HopfieldTrainConfig(progress=False, threads=2, trials=20, dry_run=True)
    ckpt = train_hopfield(digits, cfg, {}, pre)
    out = tmp_path_factory.mktemp("hopfield")
    torch.save(ckpt, out / "checkpoint.pt")
    _plot(ckpt, "test", out / "curves.png")
    meta = export_checkpoint(out / "checkpoint.pt", out / "artifact", name="digits-hopfield")
    return ckpt, meta, out


@pytest.mark.slow
def test_recipe_stores_class_medoids_and_measures_recall(trained):
    ckpt, _, out = trained
    m = ckpt["metrics"]
    assert ckpt["family"] == "associative-memory" and ckpt["labels"] == [str(c) for c in range(10) for _ in range(3)]
    assert m["patterns"] == 30 and m["units"] == 784 and m["recall_00"] == 1.0 and m["recall_20"] >= 0.9
    assert m["recall_50"] <= m["recall_20"] and 0 < m["val_digits_matched"] <= 1
    rules = {r["rule"] for r in m["capacity"]}
    assert rules == {"hebbian", "pseudo-inverse"} and {r["source"] for r in m["capacity"]} == {
        "random",
        "sklearn-digits",
    }
    assert (out / "curves.png").stat().st_size > 0 and (out / "energy.png").stat().st_size > 0
    for t in ckpt["traces"]:
        assert len(t["energies"]) == len(t["states"])  # the cue's energy, then one per sweep


@pytest.mark.slow
def test_export_is_self_describing_with_strict_parity(trained):
    _, meta, out = trained
    art = out / "artifact"
    assert meta.task == "recall" and meta.architecture == "hopfield-pseudo-inverse"
    assert [t.name for t in meta.inputs] == ["state"] and meta.inputs[0].shape == [-1, 784]
    assert [(t.name, t.shape) for t in meta.outputs] == [
        ("next_state", [-1, 784]),
        ("energy", [-1]),
        ("overlaps", [-1, 30]),
    ]
    assert meta.parity.batch_sizes == [1, 8] and meta.parity.max_abs_diff <= 1e-3
    assert meta.architecture_config["rule"] == "pseudo-inverse" and len(meta.labels) == 30
    assert "capacity" not in json.loads((art / "model.json").read_text())["metrics"]  # numbers only
    assert (art / "patterns.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_onnxruntime_restores_a_corrupted_pattern_like_torch_and_rows_ignore_their_batch(trained):
    ckpt, _, out = trained
    model = models.create_model(ckpt["model_name"], models.make_config(ckpt["model_name"], **ckpt["model_config"]))
    model.load_state_dict(ckpt["state_dict"])
    session = ort.InferenceSession(str(out / "artifact" / "model.onnx"), providers=["CPUExecutionProvider"])

    def onnx_sweep(s: np.ndarray):
        return tuple(session.run(None, {"state": s}))

    patterns = ckpt["state_dict"]["patterns"].numpy()
    cues, idx = corrupt(patterns, 0.2, 30, np.random.default_rng(3))
    by_onnx = recall(onnx_sweep, cues, 50)
    by_torch = recall(torch_sweep(model.eval()), cues, 50)
    alone = [recall(onnx_sweep, c[None], 50)[0] for c in cues[:5]]
    for a, b in zip(by_onnx, by_torch, strict=True):
        assert np.array_equal(a.state, b.state) and a.outcome == b.outcome and a.sweeps == b.sweeps
        np.testing.assert_allclose(a.energies, b.energies, rtol=1e-5)
    for a, b in zip(alone, by_onnx, strict=False):
        assert np.array_equal(a.state, b.state) and a.energies == b.energies  # exact fields: batch-independent
    restored = [np.array_equal(r.state, patterns[i]) for r, i in zip(by_onnx, idx, strict=True)]
    assert np.mean(restored) >= 0.9
    assert all(best_match(r.overlaps, 0.9)[0] == i for r, i, ok in zip(by_onnx, idx, restored, strict=True) if ok)


def test_the_served_reading_is_checked_not_defaulted():
    cfg = dataclasses.asdict(models.make_config("hopfield-pseudo-inverse"))
    assert Reading.of(cfg) == Reading(binarize=0.5, match_overlap=0.9, rule="pseudo-inverse")
    wrong = ({"binarize": None}, {"match_overlap": "0.9"}, {"match_overlap": 0.0}, {"binarize": 1.5}, {"rule": 3})
    for broken in wrong:
        with pytest.raises(ValueError, match="architecture config"):
            Reading.of({**cfg, **broken})
    with pytest.raises(ValueError, match="rule"):
        Reading.of({k: v for k, v in cfg.items() if k != "rule"})
