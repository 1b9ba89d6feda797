"""GANs and VAEs: models, training dry runs, WGAN-GP, export parity of generator and encoder, evaluation."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

import models
from contract.metadata import load_metadata
from export.evaluate import generate_images, vae_metrics
from export.frechet import feature_session, frechet_distance
from export.onnx_export import ENCODER_FILE, export_checkpoint
from export.spec import latent_inputs
from training.__main__ import main as train_main
from training.gan import gradient_penalty
from training.vae import kl_divergence

GANS, VAES = models.list_models("gan"), models.list_models("vae")


@pytest.mark.parametrize("name", GANS)
@pytest.mark.parametrize("batch", [1, 3])
def test_gan_shapes_and_range(name, batch):
    model = models.create_model(name, width=8).eval()
    cfg = model.cfg
    labels = torch.arange(batch) % 10 if cfg.num_classes else None
    with torch.no_grad():
        img = model(torch.randn(batch, cfg.latent_dim), labels)
        score = model.discriminator(img, labels)
    assert img.shape == (batch, 1, 28, 28) and float(img.min()) >= 0 and float(img.max()) <= 1
    assert score.shape == (batch,)


def test_conditional_generator_uses_the_label():
    model = models.create_model("cgan", width=8).eval()
    z = torch.randn(1, model.cfg.latent_dim).repeat(2, 1)
    with torch.no_grad():
        a, b = model(z, torch.tensor([0, 1]))
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="needs labels"):
        model(z)


@pytest.mark.parametrize("name", VAES)
def test_vae_shapes(name):
    model = models.create_model(name, latent_dim=4)
    labels = torch.tensor([1, 2]) if model.cfg.num_classes else None
    logits, mu, logvar = model(torch.rand(2, 1, 28, 28), labels)
    assert logits.shape == (2, 1, 28, 28) and mu.shape == logvar.shape == (2, 4)
    model.eval()  # eval decodes the posterior mean: deterministic
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(model(x, labels)[0], model(x, labels)[0])


def test_kl_divergence_closed_form():
    assert float(kl_divergence(torch.zeros(1, 3), torch.zeros(1, 3))) == 0.0
    # KL(N(1, e) || N(0, 1)) per dimension = (1 + e - 1 - 1) / 2
    got = float(kl_divergence(torch.ones(1, 1), torch.ones(1, 1)))
    assert got == pytest.approx((1 + np.e - 1 - 1) / 2)


def test_gradient_penalty_is_zero_for_a_unit_slope_critic():
    class Linear(torch.nn.Module):  # D(x) = <w, x> with |w| = 1 has gradient norm 1 everywhere
        def forward(self, x, labels=None):
            return x.flatten(1)[:, 0]

    real, fake = torch.rand(4, 1, 2, 2), torch.rand(4, 1, 2, 2)
    assert float(gradient_penalty(Linear(), real, fake, None)) == pytest.approx(0.0)


@pytest.mark.parametrize("argv", [["cgan"], ["dcgan", "--gan-loss", "wgan-gp", "--n-critic", "1"], ["vae"], ["cvae"]])
def test_dry_run_writes_checkpoint_samples_and_curves(tmp_path, argv):
    assert train_main([*argv, "--dry-run", "--out", str(tmp_path), "--no-progress"]) == 0
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["family"] in ("gan", "vae")
    assert (tmp_path / "curves.png").stat().st_size > 0 and (tmp_path / "samples" / "epoch_001.png").exists()
    report = json.loads((tmp_path / "metrics.json").read_text())
    row = report["history"][0]
    if ckpt["family"] == "gan":
        assert np.isfinite([row["d_loss"], row["g_loss"]]).all()
    else:
        assert report["metrics"]["val_neg_elbo"] > 0 and report["metrics"]["val_sse"] > 0
    if "wgan-gp" in argv:  # the critic gets a per-sample norm for the gradient penalty
        assert ckpt["model_config"]["critic_norm"] == "layer" and ckpt["train_config"]["gan_loss"] == "wgan-gp"


def test_wgan_gp_refuses_batch_norm_critic(tmp_path):
    argv = ["dcgan", "--gan-loss", "wgan-gp", "--model-arg", 'critic_norm="batch"', "--dry-run", "--no-progress"]
    with pytest.raises(SystemExit, match="critic_norm"):
        train_main([*argv, "--out", str(tmp_path)])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Dry-run checkpoints of a conditional GAN and a conditional VAE, exported."""
    out = {}
    for name in ("cgan", "cvae"):
        d = tmp_path_factory.mktemp(name)
        assert train_main([name, "--dry-run", "--out", str(d / "run"), "--no-progress"]) == 0
        export_checkpoint(d / "run" / "checkpoint.pt", d / "art", name=f"tiny-{name}")
        out[name] = d
    return out


def test_generator_export_metadata(exported):
    meta = load_metadata(exported["cgan"] / "art")
    assert meta.task == "generator" and meta.generator is not None
    assert meta.generator.kind == "gan" and meta.generator.conditional and meta.generator.encoder is None
    assert [t.name for t in meta.inputs] == ["z", "labels"] and meta.outputs[0].shape == [-1, 1, 28, 28]
    assert meta.labels == [str(i) for i in range(10)] and meta.parity.max_abs_diff <= 1e-4
    vae = load_metadata(exported["cvae"] / "art")
    assert vae.generator is not None and vae.generator.kind == "vae" and vae.generator.encoder is not None
    assert vae.generator.encoder.file == ENCODER_FILE and (exported["cvae"] / "art" / ENCODER_FILE).is_file()
    assert [t.name for t in vae.generator.encoder.outputs] == ["mu", "logvar"]


@pytest.mark.parametrize("name", ["cgan", "cvae"])
@pytest.mark.parametrize("batch", [1, 5, 64])
def test_generator_parity_at_any_batch(exported, name, batch):
    """onnxruntime equals torch on the generator (and the VAE's encoder) at batch sizes export never saw."""
    from export.onnx_export import load_checkpoint

    _, model = load_checkpoint(exported[name] / "run" / "checkpoint.pt")
    art = exported[name] / "art"
    meta = load_metadata(art)
    z, labels = latent_inputs(meta.generator.latent_dim, 10, batch, seed=batch)
    sess = ort.InferenceSession(str(art / "model.onnx"), providers=["CPUExecutionProvider"])
    (got,) = sess.run(["image"], {"z": z, "labels": labels})
    with torch.no_grad():
        gen = model.decode if name == "cvae" else model
        want = gen(torch.from_numpy(z), torch.from_numpy(labels)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    if name == "cvae":
        x = np.random.default_rng(batch).random((batch, 1, 28, 28), dtype=np.float32)
        enc = ort.InferenceSession(str(art / ENCODER_FILE), providers=["CPUExecutionProvider"])
        mu, logvar = enc.run(["mu", "logvar"], {"image": x, "labels": labels})
        with torch.no_grad():
            t_mu, t_logvar = model.encode(torch.from_numpy(x), torch.from_numpy(labels))
        np.testing.assert_allclose(mu, t_mu.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(logvar, t_logvar.numpy(), rtol=1e-4, atol=1e-5)


def test_rows_do_not_depend_on_their_batch(exported):
    """A sample is a function of its own z and label: the same row alone and inside a batch of 64 agree."""
    art = exported["cgan"] / "art"
    sess = ort.InferenceSession(str(art / "model.onnx"), providers=["CPUExecutionProvider"])
    z, labels = latent_inputs(load_metadata(art).generator.latent_dim, 10, 64, seed=3)
    batch = sess.run(["image"], {"z": z, "labels": labels})[0]
    alone = sess.run(["image"], {"z": z[5:6], "labels": labels[5:6]})[0]
    np.testing.assert_allclose(alone[0], batch[5], rtol=0, atol=1e-6)


def test_generate_images_is_seeded(exported):
    art = exported["cgan"] / "art"
    meta = load_metadata(art)
    a, labels = generate_images(art, meta, 12, seed=7)
    b, _ = generate_images(art, meta, 12, seed=7)
    c, _ = generate_images(art, meta, 12, seed=8)
    assert a.dtype == np.uint8 and a.shape == (12, 1, 28, 28) and np.array_equal(a, b) and not np.array_equal(a, c)
    assert labels is not None and labels.tolist() == [i % 10 for i in range(12)]


def test_vae_metrics_match_training(exported, digits):
    """The exported encoder/decoder reproduce the -ELBO and squared error that training measured."""
    from contract.data import stratified_split

    art = exported["cvae"] / "art"
    meta = load_metadata(art)
    _, val = stratified_split(digits.labels, meta.dataset.val_fraction, meta.dataset.split_seed)
    val = val[:128]  # the dry run validates on its first batch
    m = vae_metrics(art, meta, digits.images[val, 0], digits.labels[val].astype(np.int64))
    assert m["val_sse"] == pytest.approx(meta.metrics["val_sse"], rel=1e-3)
    # a different ε than training's, so only close: -ELBO is dominated by the reconstruction term
    assert m["val_neg_elbo"] == pytest.approx(meta.metrics["val_neg_elbo"], rel=0.02)


def test_frechet_distance():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4000, 3)), rng.normal(size=(4000, 3))
    a -= a.mean(0)  # centred, so scaling leaves the mean at 0
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(a, b) < 0.02  # same distribution: only sampling noise
    # shifted by 2 along one axis: |mu1 - mu2|^2 = 4; scaled by 3: the trace term (3 - 1)^2 per axis
    assert frechet_distance(a, a + np.array([2.0, 0, 0])) == pytest.approx(4.0, rel=1e-6)
    assert frechet_distance(a, 3 * a) == pytest.approx(4 * np.trace(np.cov(a, rowvar=False)), rel=1e-6)


def test_feature_session_reads_penultimate_layer(artifact_root, digits):
    sess, name = feature_session(artifact_root / "digits-cnn")
    x = (digits.images[:4] / 255.0).astype(np.float32)
    logits, feats = sess.run(["logits", name], {"input": x})
    assert logits.shape == (4, 10) and feats.ndim == 2 and feats.shape[0] == 4 and feats.shape[1] > 10
