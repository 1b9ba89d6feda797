"""Outlier exposure (training/outliers.py): the synthetic outliers, their pool, the loss, beside a teacher's, and dry
runs."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from contract.metadata import ImagePreprocessing
from training.__main__ import main as train_main
from training.common import classification_loss
from training.distillation import distillation_loss
from training.image_classification import distilled_targets
from training.outliers import ENERGY_MARGINS, OUTLIER, outlier_exposure_loss, outlier_pool, synthetic_thing

ROOT = Path(__file__).resolve().parents[1]
ART, MNIST = ROOT / "artifacts", ROOT.parent / "shared" / "data" / "mnist"
PRE = ImagePreprocessing(input_size=(28, 28), channels=1, mean=[0.1], std=[0.3], white_on_black=True, fit="digit")


def test_synthetic_things_are_bright_shapes_on_black_and_the_same_for_a_seed():
    a = np.stack([synthetic_thing(np.random.default_rng(7)) for _ in range(2)])
    assert np.array_equal(a[0], a[1])
    things = np.stack([synthetic_thing(np.random.default_rng(s)) for s in range(200)])
    assert things.shape == (200, 28, 28) and things.dtype == np.uint8
    assert (things.reshape(200, -1).max(1) > 60).mean() > 0.95  # something shows in almost every one
    corners = things[:, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert np.median(corners) < 10  # a thing in the middle of a black field, mostly
    assert len({t.tobytes() for t in things}) == 200


def test_outlier_pool_is_half_as_made_and_half_read_from_photos_and_is_cached(tmp_path, monkeypatch):
    from training import photo_data

    monkeypatch.setattr(photo_data, "CACHE", tmp_path / "cache")
    pool = outlier_pool(PRE, 12, seed=3, workers=1)
    assert pool.shape == (12, 1, 28, 28) and pool.dtype == np.uint8
    rng = np.random.default_rng(3)
    made = np.stack([synthetic_thing(rng) for _ in range(12)])
    assert np.array_equal(pool[:6, 0], made[:6])  # the first half as made
    assert not any(np.array_equal(pool[i, 0], made[i]) for i in range(6, 12))  # the rest, read from photos
    assert len(list((tmp_path / "cache").iterdir())) == 1
    assert np.array_equal(outlier_pool(PRE, 12, seed=3, workers=1), pool)


def test_the_loss_adds_the_outliers_distance_from_uniform_to_the_classes_loss():
    logits = torch.tensor([[4.0, 0.0, 0.0], [0.0, 3.0, 0.0], [2.0, -1.0, 0.5], [0.0, 0.0, 0.0]], requires_grad=True)
    y = torch.tensor([0, 2, OUTLIER, OUTLIER])
    loss, metric = outlier_exposure_loss(0.5, classification_loss())(logits, y)
    ce = torch.nn.functional.cross_entropy(logits[:2], y[:2])
    uniform = -torch.log_softmax(logits[2:], 1).mean(1).mean()
    assert loss.item() == pytest.approx((ce + 0.5 * uniform).item())
    assert metric == pytest.approx(1 * 4 / 2)  # one of the two classed rows right, counted over all four
    loss.backward()
    assert logits.grad is not None and torch.allclose(logits.grad[3], torch.zeros(3))  # already unsure: no push
    assert logits.grad[2, 0] > 0 > logits.grad[2, 1]  # a confident outlier is pushed towards uniform


def test_dry_run_with_outliers_in_the_batches(tmp_path, monkeypatch):
    from training import photo_data

    monkeypatch.setattr(photo_data, "CACHE", tmp_path / "cache")
    out = tmp_path / "run"
    assert train_main(["cnn", "--dry-run", "--outliers", "0.5", "--threads", "1", "--out", str(out)]) == 0
    cfg = json.loads((out / "metrics.json").read_text())["train_config"]
    assert cfg["outliers"] == 0.5 and cfg["outlier_weight"] == 0.5
    assert any(p.name.startswith("outliers-") for p in (tmp_path / "cache").iterdir())


def test_a_share_of_outliers_alone_costs_their_term_only():
    logits = torch.tensor([[2.0, -1.0, 0.5]], requires_grad=True)
    loss, metric = outlier_exposure_loss(0.5, classification_loss())(logits, torch.tensor([OUTLIER]))
    assert torch.isfinite(loss) and loss.item() == pytest.approx(0.5 * -torch.log_softmax(logits, 1).mean().item())
    assert metric == 0.0


def test_with_teachers_an_outlier_row_of_the_targets_gets_the_uniform_term_and_the_rest_hintons_loss():
    logits = torch.tensor([[4.0, 0.0, 0.0], [0.0, 3.0, 0.0], [2.0, -1.0, 0.5]], requires_grad=True)
    hinton = distillation_loss(0.5, 2.0)
    soft = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]])
    y = torch.cat([torch.cat([torch.eye(3)[[0, 1]], soft], 1), torch.full((1, 6), float(OUTLIER))])
    loss, metric = outlier_exposure_loss(0.5, hinton)(logits, y)
    digits, _ = hinton(logits[:2], y[:2])
    uniform = -torch.log_softmax(logits[2:], 1).mean()
    assert loss.item() == pytest.approx((digits + 0.5 * uniform).item())
    assert metric == pytest.approx(2 * 3 / 2)


def test_distilled_targets_ask_the_teachers_about_the_digits_only():
    class Teacher:  # a stand-in for ImageTeacher: what it was asked, and a fixed answer
        share = 1.0

        def __init__(self) -> None:
            self.asked: list[np.ndarray] = []

        def probs(self, pixels: np.ndarray) -> np.ndarray:
            self.asked.append(pixels)
            return np.tile(np.float32([0.1, 0.9]), (len(pixels), 1))

    x = torch.arange(4, dtype=torch.float32)[:, None, None, None].expand(4, 1, 2, 2)
    agree, teacher = [0, 0], Teacher()
    y = distilled_targets([teacher], x, torch.tensor([1, 0, OUTLIER, OUTLIER]), 2, agree)
    assert [a[:, 0, 0, 0].tolist() for a in teacher.asked] == [[0.0, 1.0]]  # the two digits, not the outliers
    assert torch.allclose(y, torch.tensor([[0, 1, 0.1, 0.9], [1, 0, 0.1, 0.9], [OUTLIER] * 4, [OUTLIER] * 4]))
    assert agree == [1, 2]  # the teacher's top class is the first row's label, not the second's


@pytest.mark.skipif(not MNIST.is_dir(), reason=f"the shared MNIST data is not at {MNIST}")
def test_a_dry_run_with_outliers_and_a_teacher_records_both(tmp_path, monkeypatch):
    from training import photo_data

    monkeypatch.setattr(photo_data, "CACHE", tmp_path / "cache")
    out = tmp_path / "run"
    argv = ["cnn", "--dry-run", "--outliers", "0.5", "--teacher", str(ART / "mnist-cnn"), "--threads", "1"]
    assert train_main([*argv, "--data", str(MNIST), "--out", str(out)]) == 0
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    assert ckpt["distillation"]["teachers"][0]["model"] == "mnist-cnn"
    assert ckpt["distillation"]["teachers_agree_with_labels"] > 0.8  # asked about digits; outliers would lower it
    assert json.loads((out / "metrics.json").read_text())["train_config"]["outliers"] == 0.5


def test_the_energy_term_moves_only_the_rows_on_the_wrong_side_of_their_margin():
    m_in, m_out = ENERGY_MARGINS
    # digits: sure (energy about -20, under m_in) and unsure (-log 3); outliers: the same two
    logits = torch.tensor([[20.0, 0.0, 0.0], [0.0, 0.0, 0.0], [20.0, 0.0, 0.0], [0.0, 0.0, 0.0]], requires_grad=True)
    y = torch.tensor([0, 1, OUTLIER, OUTLIER])
    loss, _ = outlier_exposure_loss(0.1, classification_loss(), "energy")(logits, y)
    energy = -torch.logsumexp(logits.detach(), 1)
    ce = torch.nn.functional.cross_entropy(logits[:2].detach(), y[:2])
    hinges = (energy[1] - m_in) ** 2 / 2 + (m_out - energy[2]) ** 2 / 2  # each a mean over two rows, one of them 0
    assert loss.item() == pytest.approx((ce + 0.1 * hinges).item(), rel=1e-5)
    loss.backward()
    assert logits.grad is not None and torch.allclose(logits.grad[3], torch.zeros(3))  # an unsure outlier: left alone
    assert logits.grad[2, 0] > 0  # a sure outlier: its top logit pushed down (its energy up)
    with pytest.raises(ValueError, match="outlier loss"):
        outlier_exposure_loss(0.1, classification_loss(), "bogus")
