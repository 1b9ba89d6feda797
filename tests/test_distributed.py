"""Training on two processes under torchrun (DistributedDataParallel, gloo on loopback) against one process, and
resuming a run from the state it writes after every epoch.

The model and data have no randomness beyond the seed (an MLP without dropout on scikit-learn's digits, no
augmentation), so the two-process run must take the one-process run's steps. Tolerances, from float32 sums in
another order (measured: 1e-6 relative on the losses, 4e-7 of the largest weight): each global batch's loss
within 1e-5 relative, each weight tensor within 1e-5 of its largest magnitude. The global batch of 49 does not
divide by 2 (shares of 25 and 24 rows: the loss weighting), and the 1618 training rows leave a last batch of 1
(rank 1's share is empty: it runs one row weighted 0). The peak learning rate is 0.02: at the default 0.05 the
one-row steps throw the run about (validation loss 14.6 after the first epoch) and the differences grow to 1e-4
relative by the fourth.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import REPO
from training import distributed
from training.__main__ import RECIPES
from training.__main__ import main as train_main

pytestmark = pytest.mark.slow

TORCHRUN = Path(sys.executable).with_name("torchrun")


def flags(augment: str = "none", dropout: float = 0.0) -> list[str]:
    return ["mlp", "--data", "sklearn-digits", "--epochs", "4", "--batch-size", "49", "--lr", "0.02",
            "--augment", augment, "--model-arg", "hidden=[64,64]", "--model-arg", f"dropout={dropout}",
            "--threads", "1", "--seed", "3", "--no-progress"]  # fmt: skip


RUN = flags()
RTOL = 1e-5


def torchrun(*args: str) -> None:
    """``torchrun --standalone --nproc_per_node 2 -m training ...`` as a real subprocess (gloo on loopback)."""
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", "-m", "training", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def load(folder: Path) -> dict:
    return torch.load(folder / "checkpoint.pt", weights_only=True)


def assert_same_training(got: dict, want: dict) -> None:
    """Every step's loss and the final weights, within the stated tolerances."""
    assert [r["epoch"] for r in got["history"]] == [r["epoch"] for r in want["history"]] == [1, 2, 3, 4]
    for g, w in zip(got["history"], want["history"], strict=True):
        assert len(g["step_loss"]) == len(w["step_loss"]) == 34
        np.testing.assert_allclose(g["step_loss"], w["step_loss"], rtol=RTOL)
        np.testing.assert_allclose(g["val_loss"], w["val_loss"], rtol=RTOL)
    assert list(got["state_dict"]) == list(want["state_dict"])  # no DDP "module." prefix
    for k, w in want["state_dict"].items():
        assert (got["state_dict"][k] - w).abs().max() <= RTOL * w.abs().max(), k


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("one")
    assert train_main([*RUN, "--out", str(out)]) == 0
    return load(out)


def test_two_processes_train_as_one(tmp_path, one_process):
    torchrun(*RUN, "--out", str(tmp_path / "two"))
    two = load(tmp_path / "two")
    assert two["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert one_process["distributed"] == {"world_size": 1, "backend": None}
    n_train = one_process["dataset"]["n_train"]
    for row in two["history"]:  # each rank trained on its own share of each batch, 1618 rows in all
        assert row["rows_per_rank"] == [33 * 25 + 1, 33 * 24] and n_train == 1618  # 33 batches of 49, then 1 row
    assert_same_training(two, one_process)

    from export.onnx_export import export_checkpoint  # the artifact is today's: export reads it, parity passes

    meta = export_checkpoint(tmp_path / "two" / "checkpoint.pt", tmp_path / "artifact", name="ddp-mlp")
    assert meta.architecture == "mlp" and (tmp_path / "artifact" / "model.onnx").exists()


def test_a_stopped_two_process_run_resumes_on_two_or_on_one(tmp_path, one_process):
    part = tmp_path / "part"
    torchrun(*RUN, "--out", str(part), "--stop-after", "2")
    assert not (part / "checkpoint.pt").exists()  # a stopped run leaves its state, not an artifact
    state = torch.load(part / "state.pt", weights_only=True)
    assert (state["epoch"], state["world_size"], len(state["rng"])) == (2, 2, 2)
    assert not any(k.startswith("module.") for k in state["model"])

    torchrun(*RUN, "--out", str(tmp_path / "two"), "--resume", str(part / "state.pt"))
    assert_same_training(load(tmp_path / "two"), one_process)
    assert train_main([*RUN, "--out", str(tmp_path / "one"), "--resume", str(part / "state.pt")]) == 0
    assert_same_training(load(tmp_path / "one"), one_process)


def test_resume_continues_exactly_with_augmentation_and_dropout(tmp_path):
    """One process, the same thread count: 2 epochs + 2 resumed are bitwise the 4 straight ones (the augmentation's
    generator replayed, dropout's global stream restored)."""
    run = flags(augment="digits", dropout=0.2)
    assert train_main([*run, "--out", str(tmp_path / "straight")]) == 0
    assert train_main([*run, "--out", str(tmp_path / "part"), "--stop-after", "2"]) == 0
    assert not (tmp_path / "part" / "checkpoint.pt").exists()
    assert train_main([*run, "--out", str(tmp_path / "part"), "--resume", str(tmp_path / "part" / "state.pt")]) == 0
    straight, resumed = load(tmp_path / "straight"), load(tmp_path / "part")
    assert [r["step_loss"] for r in resumed["history"]] == [r["step_loss"] for r in straight["history"]]
    assert all(torch.equal(resumed["state_dict"][k], v) for k, v in straight["state_dict"].items())


def test_resume_refuses_another_configuration(tmp_path):
    assert train_main([*RUN, "--out", str(tmp_path), "--stop-after", "1"]) == 0
    with pytest.raises(SystemExit, match=r"another configuration \(lr: 0.02 -> 0.1\)"):
        train_main([*RUN, "--out", str(tmp_path), "--lr", "0.1", "--resume", str(tmp_path / "state.pt")])


def test_resume_refuses_another_model_or_other_data(tmp_path):
    """The state keeps the model's tensor shapes and the recipe's record of its data (digests, labels,
    preprocessing): a training audit resumed at another --size, and on another folder of as many classes, without
    a word, and on one of more classes with a traceback."""
    assert train_main([*RUN, "--out", str(tmp_path), "--stop-after", "1"]) == 0
    state = str(tmp_path / "state.pt")
    wider = [a if a != "hidden=[64,64]" else "hidden=[32,32]" for a in RUN]
    with pytest.raises(SystemExit, match=r"holds another model \(its tensors' shapes differ\)"):
        train_main([*wider, "--out", str(tmp_path), "--resume", state])
    with pytest.raises(SystemExit, match="holds another model"):  # another input size: other first-layer shapes
        train_main([*RUN, "--size", "20", "--out", str(tmp_path), "--resume", state])
    folder = tmp_path / "pictures"
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (folder / c).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)).save(folder / c / f"{i}.png")
    cnn = ["cnn", "--data", str(folder), "--epochs", "2", "--batch-size", "8", "--threads", "1", "--no-progress"]
    assert train_main([*cnn, "--out", str(tmp_path / "cnn"), "--stop-after", "1"]) == 0
    Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)).save(folder / "a" / "new.png")
    with pytest.raises(SystemExit, match=r"reading other data \(sha256 differ\)"):
        train_main([*cnn, "--out", str(tmp_path / "cnn"), "--resume", str(tmp_path / "cnn" / "state.pt")])


OWN_LOOPS = sorted(family for family, recipe in RECIPES.items() if recipe.own_loop)
MODEL_OF = {"gan": "cgan", "rbm": "rbm", "dbn": "dbn-autoencoder", "associative-memory": "hopfield-hebbian"}


def test_the_recipes_with_their_own_loops_are_named():
    assert sorted(MODEL_OF) == OWN_LOOPS


@pytest.mark.parametrize("family", OWN_LOOPS)
def test_a_recipe_with_its_own_loop_refuses_torchrun_and_resume(tmp_path, monkeypatch, family):
    """Before joining any process group: N processes would otherwise train N copies."""
    args = [MODEL_OF[family], "--dry-run", "--out", str(tmp_path)]
    with pytest.raises(SystemExit, match="trains in one process"):
        train_main([*args, "--resume", str(tmp_path / "state.pt")])
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit, match="not torchrun"):
        train_main(args)
    assert not any(tmp_path.iterdir())


def test_word_vectors_refuse_torchrun(monkeypatch, tmp_path):
    from training.word_vectors import main as word_vectors_main

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit, match="gensim's Word2Vec parallelises with its own --workers"):
        word_vectors_main(["--unsup", str(tmp_path / "unsup.csv.gz")])


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_shares_partition_every_batch_contiguously(world_size):
    for n in range(0, 50):
        shares = [distributed.share(n, r, world_size) for r in range(world_size)]
        assert [i for s in shares for i in range(n)[s]] == list(range(n))
        sizes = [s.stop - s.start for s in shares]
        assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
