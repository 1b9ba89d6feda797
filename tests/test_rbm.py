"""RBMs and the DBN autoencoder: the energy and its CD update, the exported Gibbs chain, chains drawn from a seed,
training dry runs, export parity, the greedy stack unrolled into an autoencoder."""

from __future__ import annotations

import functools
import itertools
import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

import models
from contract import gibbs
from contract.metadata import load_metadata
from export.onnx_export import export_checkpoint
from models.rbm import RBM, GibbsChain, RBMConfig
from training.__main__ import main as train_main
from training.rbm import cd_update_loss, gibbs_samples


def small_rbm(d: int = 6, h: int = 4, seed: int = 0, **kw) -> RBM:
    torch.manual_seed(seed)
    rbm = RBM(RBMConfig(visible=d, hidden=h, init_std=0.5, **kw))
    with torch.no_grad():
        rbm.visible_bias.normal_(0, 0.5)
        rbm.hidden_bias.normal_(0, 0.5)
    return rbm


def test_free_energy_is_minus_log_sum_over_hidden_states():
    rbm = small_rbm()
    v = (torch.rand(3, 6) < 0.5).float()
    states = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)))  # all 16 hidden states (16, H)
    energy = -(v @ rbm.visible_bias)[:, None] - (states @ rbm.hidden_bias)[None] - (v @ rbm.weight) @ states.t()
    want = -torch.logsumexp(-energy, dim=1)
    torch.testing.assert_close(rbm.free_energy(v), want)


def test_gaussian_hidden_units_are_linear():
    rbm = small_rbm(hidden_units="gaussian")
    v = torch.rand(2, 6)
    torch.testing.assert_close(rbm.hidden_mean(v), v @ rbm.weight + rbm.hidden_bias)
    mean, sample = rbm.sample_hidden(v, torch.Generator().manual_seed(0))
    assert not torch.equal(mean, sample)  # unit-variance noise around the mean


def test_cd_update_is_the_difference_of_pairwise_statistics():
    """The free-energy loss's gradient is Hinton's CD rule: -(⟨v p(h|v)ᵀ⟩ at the data - at the chain's end)."""
    rbm = small_rbm()
    v0 = torch.rand(5, 6)
    loss, _ = cd_update_loss(rbm, v0, v0, 1, torch.Generator().manual_seed(1))
    loss.backward()
    with torch.no_grad():  # the same negative phase again, from the same generator state
        gen = torch.Generator().manual_seed(1)
        _, h = rbm.sample_hidden(v0, gen)
        p_v, _ = rbm.sample_visible(h, gen)
        want = -(v0.t() @ rbm.hidden_mean(v0) - p_v.t() @ rbm.hidden_mean(p_v)) / len(v0)
    torch.testing.assert_close(rbm.weight.grad, want)


def test_gibbs_chain_rows_steps_and_features():
    rbm = small_rbm(d=4, h=3, in_channels=1, input_size=2)
    k = 5
    v, u_h, u_v, _ = (torch.from_numpy(a) for a in _chain_inputs(4, k, 3, 4))
    chain = GibbsChain(rbm, k)
    with torch.no_grad():
        still = chain(v, u_h, u_v, torch.zeros(4, dtype=torch.int64))
        full = chain(v, u_h, u_v, torch.full((4,), k))
        two = chain(v, u_h, u_v, torch.full((4,), 2))
        alone = chain(v[1:2], u_h[1:2], u_v[1:2], torch.full((1,), k))
    assert torch.equal(still[0], v) and torch.equal(still[1].flatten(1), v)  # no step: the state, shown as it is
    torch.testing.assert_close(full[2], rbm.hidden_mean(v))  # the features of the input
    assert full[1].shape == (4, 1, 2, 2) and set(full[0].unique().tolist()) <= {0.0, 1.0}
    with torch.no_grad():  # two steps by hand with the same noise
        state = v
        for t in range(2):
            h = (u_h[:, t] < rbm.hidden_mean(state)).float()
            p_v = rbm.visible_mean(h)
            state = (u_v[:, t] < p_v).float()
    assert torch.equal(two[0], state) and torch.equal(two[1].flatten(1), p_v)
    assert torch.equal(alone[0], full[0][1:2])  # a row's run does not depend on the other rows


def _chain_inputs(n: int, k: int, h: int, d: int) -> tuple[np.ndarray, ...]:
    from export.specs.rbm import chain_inputs

    return chain_inputs(n, k, h, d)


def test_chains_from_a_seed_are_prefix_stable_and_split_into_runs():
    assert gibbs.runs(25, 10) == [10, 10, 5] and gibbs.runs(10, 10) == [10] and gibbs.runs(1, 10) == [1]
    calls: list[int] = []

    def run(v, u_h, u_v, steps):
        calls.append(int(steps[0]))
        return 1 - v, (v + u_h[:, :, :1].sum(1) + u_v[:, -1, :1]).reshape(len(v), 1, 1, -1)

    five = gibbs.sample(run, 5, seed=3, steps=23, k=10, hidden=2, visible=4)
    two = gibbs.sample(run, 2, seed=3, steps=23, k=10, hidden=2, visible=4)
    other = gibbs.sample(run, 2, seed=4, steps=23, k=10, hidden=2, visible=4)
    assert calls == [10, 10, 3] * 3
    assert np.array_equal(five[:2], two) and not np.array_equal(two, other)
    with pytest.raises(ValueError):
        gibbs.sample(run, 1, seed=0, steps=0, k=10, hidden=2, visible=4)


@pytest.mark.parametrize("threads", [1, 2])
def test_the_shipped_rbms_chains_do_not_depend_on_the_batch(threads):
    """The service batches chains with other requests' rows; a chain must not change with its batch's size. At the
    shipped size (784 x 500) onnxruntime's GEMM picks other kernels for one row than for many (MLAS), and a last-bit
    difference in p(h | v) flips a unit where u sits on it, after which the chains part: checked, not assumed."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "artifacts" / "mnist-rbm"
    g = load_metadata(path).generator
    assert g is not None and g.gibbs is not None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path / "model.onnx"), options, providers=["CPUExecutionProvider"])

    def run(v, u_h, u_v, steps):
        nxt, image, _ = session.run(None, {"v": v, "u_h": u_h, "u_v": u_v, "steps": steps})
        return nxt, image

    chain = functools.partial(gibbs.sample, run, steps=60, k=g.gibbs.steps_per_run, hidden=g.gibbs.hidden)
    for seed in (0, 1):
        alone = chain(1, seed, visible=g.gibbs.visible)
        for n in (2, 9, 64):
            assert np.array_equal(chain(n, seed, visible=g.gibbs.visible)[:1], alone), (seed, n)


@pytest.mark.parametrize("argv", [["rbm"], ["rbm", "--no-persistent", "--cd-k", "2"]])
def test_rbm_dry_run_exports_with_parity_and_samples_like_torch(tmp_path, argv):
    assert train_main([*argv, "--dry-run", "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ckpt["family"] == "rbm" and ckpt["metrics"]["val_sse"] > 0
    assert (tmp_path / "run" / "curves.png").exists() and (tmp_path / "run" / "samples" / "epoch_001.png").exists()
    assert ckpt["train_config"]["persistent"] == ("--no-persistent" not in argv)
    meta = export_checkpoint(tmp_path / "run" / "checkpoint.pt", tmp_path / "art", name="m")
    assert meta.task == "generator" and meta.parity.max_abs_diff < 1e-4 and meta.labels == []
    gen = meta.generator
    assert gen is not None and gen.kind == "rbm" and gen.noise == "uniform" and gen.gibbs is not None
    assert (gen.gibbs.visible, gen.gibbs.hidden, gen.gibbs.steps_per_run) == (784, 500, gibbs.STEPS_PER_RUN)
    assert [t.name for t in meta.inputs] == ["v", "u_h", "u_v", "steps"]
    assert [t.name for t in meta.outputs] == ["v_next", "image", "hidden"]

    sess = ort.InferenceSession(str(tmp_path / "art" / "model.onnx"), providers=["CPUExecutionProvider"])

    def run(v, u_h, u_v, steps):
        out = sess.run(["v_next", "image"], {"v": v, "u_h": u_h, "u_v": u_v, "steps": steps})
        return out[0], out[1]

    onnx_images = gibbs.sample(run, 6, seed=7, steps=25, k=gen.gibbs.steps_per_run, hidden=500, visible=784)
    rbm = models.create_model("rbm", models.make_config("rbm", **ckpt["model_config"]))
    rbm.load_state_dict(ckpt["state_dict"])
    np.testing.assert_allclose(onnx_images, gibbs_samples(rbm.eval(), 6, seed=7, steps=25), atol=1e-5)


def test_dbn_dry_run_pretrains_unrolls_and_exports_as_an_autoencoder(tmp_path):
    argv = ["dbn-autoencoder", "--dry-run", "--out", str(tmp_path / "run"), "--no-progress"]
    assert train_main(argv) == 0
    report = json.loads((tmp_path / "run" / "metrics.json").read_text())
    m = report["metrics"]
    assert m["val_sse"] > 0 and m["pretrained_val_sse"] > 0 and m["pca_val_sse"] > 0
    assert all(f"rbm{i}_val_sse" in m for i in range(1, 5))
    assert (tmp_path / "run" / "pretraining.png").exists() and (tmp_path / "run" / "curves.png").exists()
    meta = export_checkpoint(tmp_path / "run" / "checkpoint.pt", tmp_path / "art", name="m")
    assert meta.task == "autoencoder" and meta.architecture == "dbn-autoencoder"
    assert [t.name for t in meta.outputs] == ["code", "reconstruction"] and meta.outputs[0].shape == [-1, 30]
    assert meta.anomaly is not None and load_metadata(tmp_path / "art").anomaly == meta.anomaly


def test_unrolled_stack_recognises_and_generates_with_the_rbms():
    dbn = models.create_model("dbn-autoencoder", hidden=[8, 6], code_size=3, input_size=4)
    cfgs = dbn.rbm_configs()
    assert [(c.visible, c.hidden, c.hidden_units) for c in cfgs] == [
        (16, 8, "binary"), (8, 6, "binary"), (6, 3, "gaussian")
    ]  # fmt: skip
    rbms = [small_rbm(c.visible, c.hidden, seed=i, hidden_units=c.hidden_units) for i, c in enumerate(cfgs)]
    dbn.unroll(rbms)
    x = torch.rand(2, 1, 4, 4)
    with torch.no_grad():
        h = x.flatten(1)
        for rbm in rbms:
            h = rbm.hidden_mean(h)  # the encoder is the stack's recognition pass
        code, recon = dbn(x)
        torch.testing.assert_close(code, h)
        down = code
        for rbm in reversed(rbms):
            down = rbm.visible_mean(down)  # the decoder is the stack's generative pass
        torch.testing.assert_close(recon, down.view_as(x))


def test_pretraining_lowers_each_rbms_reconstruction_error(digits):
    """A few CD epochs on scikit-learn's digits: each layer's reconstruction error falls, and the unrolled stack
    already reconstructs before any fine-tuning better than it did untrained."""
    from training.dbn import DBNTrainConfig, pretrain

    x = torch.from_numpy(digits.images[:600]).float().flatten(1) / 255.0
    dbn = models.create_model("dbn-autoencoder", hidden=[64, 32], code_size=8)
    cfg = DBNTrainConfig(pretrain_epochs=4, progress=False)
    with torch.no_grad():
        before = float(((dbn(x[500:].view(-1, 1, 28, 28))[1].flatten(1) - x[500:]) ** 2).sum(1).mean())
    rbms, curves = pretrain(x[:500], x[500:], dbn, cfg, torch.Generator().manual_seed(0))
    for name, rows in curves.items():
        assert rows[-1]["val_sse"] < rows[0]["val_sse"], (name, [r["val_sse"] for r in rows])
    dbn.unroll(rbms)
    with torch.no_grad():
        after = float(((dbn(x[500:].view(-1, 1, 28, 28))[1].flatten(1) - x[500:]) ** 2).sum(1).mean())
    assert after < before


def test_evaluate_draws_the_services_chains_in_any_chunks(tmp_path, digits):
    from export.evaluate import generate_images, gibbs_metrics

    assert train_main(["rbm", "--dry-run", "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    export_checkpoint(tmp_path / "run" / "checkpoint.pt", tmp_path / "art", name="m")
    meta = load_metadata(tmp_path / "art")
    chunked, labels = generate_images(tmp_path / "art", meta, 7, seed=2, batch=3, steps=12)
    whole, _ = generate_images(tmp_path / "art", meta, 7, seed=2, steps=12)
    other, _ = generate_images(tmp_path / "art", meta, 7, seed=3, steps=12)
    assert labels is None and chunked.dtype == np.uint8 and chunked.shape == (7, 1, 28, 28)
    assert np.array_equal(chunked, whole) and not np.array_equal(whole, other)
    m = gibbs_metrics(tmp_path / "art", meta, digits.images[:20, 0])
    assert m == gibbs_metrics(tmp_path / "art", meta, digits.images[:20, 0]) and m["val_sse_one_gibbs_step"] > 0
