"""Shared fixtures: tiny real artifacts built from scikit-learn's bundled digits (nothing downloaded)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
REPO = Path(__file__).resolve().parent.parent


def png_bytes(a: np.ndarray, mode: str | None = None, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a, mode=mode).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="session")
def digits():
    from contract.data import load_sklearn_digits

    return load_sklearn_digits(28)


@pytest.fixture(scope="session")
def artifact_root(tmp_path_factory, digits) -> Path:
    """Train small real models and export them into one model dir: two digit classifiers (scikit-learn's
    digits), a sentiment LSTM (the synthetic review corpus, max_len 24 so truncation is reachable), a
    digits autoencoder, a conditional GAN, a VAE and a Hopfield network (associative memory).

    They learn their tasks, so HTTP tests can check answers, not just shapes.
    """
    from export.onnx_export import export_checkpoint
    from training.common import TrainConfig
    from training.image_classification import train

    root = tmp_path_factory.mktemp("artifacts")
    runs = tmp_path_factory.mktemp("runs")
    pre = {"input_size": [28, 28], "channels": 1, "white_on_black": True, "fit": "digit", "mean": [0], "std": [1]}
    import torch

    for name, arch, epochs, overrides in (
        ("digits-cnn", "cnn", 6, {"channels": [16, 32, 64]}),
        ("digits-lenet5", "lenet5", 2, {}),
    ):
        cfg = TrainConfig(model=arch, epochs=epochs, batch_size=64, progress=False, threads=2, patience=10)
        ckpt = train(digits, cfg, overrides, pre)
        path = runs / f"{name}.pt"
        torch.save(ckpt, path)
        export_checkpoint(path, root / name, name=name)
        curves(ckpt, root / name)
    calibrate(root / "digits-cnn", digits)  # digits-lenet5 stays uncalibrated: served with T = 1 and no OOD score

    from contract.text_data import synthetic_sentiment
    from training.text_classification import TextTrainConfig, train_text

    cfg = TextTrainConfig(epochs=6, progress=False, threads=2, max_len=24, min_freq=1)
    ckpt = train_text(synthetic_sentiment(1500), cfg, {"hidden_size": 32, "embed_dim": 32})
    torch.save(ckpt, runs / "synthetic-lstm.pt")
    export_checkpoint(runs / "synthetic-lstm.pt", root / "synthetic-lstm", name="synthetic-lstm")
    calibrate_text(root / "synthetic-lstm")
    # the same corpus through attention pooling, its embedding started from word vectors (explanations)
    cfg = TextTrainConfig(epochs=6, progress=False, threads=2, max_len=24, min_freq=1, vectors=str(vectors_of(runs)))
    ckpt = train_text(synthetic_sentiment(1500), cfg, {"hidden_size": 32, "pooling": "attention"})
    torch.save(ckpt, runs / "synthetic-attn.pt")
    export_checkpoint(runs / "synthetic-attn.pt", root / "synthetic-attn", name="synthetic-attn")
    calibrate_text(root / "synthetic-attn")

    from training.autoencoder import AETrainConfig, train_autoencoder

    cfg = AETrainConfig(epochs=4, progress=False, threads=2)
    ckpt = train_autoencoder(digits, cfg, {"hidden": [128, 64], "code_size": 10}, pre)
    torch.save(ckpt, runs / "digits-ae.pt")
    export_checkpoint(runs / "digits-ae.pt", root / "digits-ae", name="digits-ae")

    from training.gan import GANTrainConfig, train_gan
    from training.vae import VAETrainConfig, train_vae

    cfg = GANTrainConfig(model="cgan", epochs=3, progress=False, threads=2)
    ckpt = train_gan(digits, cfg, {"width": 16, "latent_dim": 16}, pre)
    torch.save(ckpt, runs / "digits-cgan.pt")
    export_checkpoint(runs / "digits-cgan.pt", root / "digits-cgan", name="digits-cgan")
    cfg = VAETrainConfig(epochs=6, progress=False, threads=2)
    ckpt = train_vae(digits, cfg, {"latent_dim": 8, "channels": [16, 32], "hidden": 128}, pre)
    torch.save(ckpt, runs / "digits-vae.pt")
    export_checkpoint(runs / "digits-vae.pt", root / "digits-vae", name="digits-vae")

    from training.associative_memory import HopfieldTrainConfig, train_hopfield

    cfg = HopfieldTrainConfig(progress=False, threads=2, trials=20, study=False)  # 30 digits, pseudo-inverse
    torch.save(train_hopfield(digits, cfg, {}, pre), runs / "digits-hopfield.pt")
    export_checkpoint(runs / "digits-hopfield.pt", root / "digits-hopfield", name="digits-hopfield")
    return root


def curves(ckpt: dict, folder: Path) -> None:
    """curves.png in the artifact folder, drawn by the family's recipe as ``python -m training`` draws it beside the
    checkpoint (``make models`` copies it into the artifact, where GET /v1/models/{name}/figures/curves.png serves
    it)."""
    from models import get_entry
    from training.registry import RECIPES

    recipe = RECIPES[get_entry(ckpt["model_name"]).family]
    recipe.plot(ckpt, f"{ckpt['model_name']} on {ckpt['dataset']['name']}", folder / "curves.png")


def letters(n: int, seed: int = 0) -> np.ndarray:
    """n images (n, 1, 28, 28) of printed capital letters: out of distribution for a digit model."""
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    out = np.zeros((n, 1, 28, 28), dtype=np.uint8)
    for i in range(n):
        img = Image.new("L", (14, 14), 0)
        ImageDraw.Draw(img).text((3, 1), str(rng.choice(list("ABEFHKMNRSTWXYZ"))), fill=255)
        out[i, 0, 4:24, 4:24] = np.asarray(img.resize((20, 20), Image.Resampling.BILINEAR))
    return out


def calibrate(model_dir: Path, digits, autoencoder: Path | None = None, sibling: Path | None = None) -> None:
    """export/calibrate.py on a test artifact: temperature and the OOD score, printed letters as the other data
    (with ``autoencoder``, its reconstruction error, with ``sibling``, that classifier's score, candidates)."""
    from contract.data import stratified_split
    from contract.metadata import METADATA_FILE, load_metadata
    from export.calibrate import calibrate_images, image_sets

    meta = load_metadata(model_dir)
    train, val = stratified_split(digits.labels, meta.dataset.val_fraction, meta.dataset.split_seed)
    sets, truth, door = image_sets(meta, digits.images, digits.labels, train, val, letters(100), 40, fitting=True)
    meta = calibrate_images(model_dir, meta, sets, truth, door, autoencoder, sibling)
    (model_dir / METADATA_FILE).write_text(meta.model_dump_json(indent=2) + "\n")


def vectors_of(runs: Path) -> Path:
    """Word vectors for the synthetic corpus in training.word_vectors' layout: random, 16 dimensions (what is
    tested is how they are loaded and kept, not what they mean)."""
    import json

    from contract.text import TokenizerConfig, tokenize
    from contract.text_data import synthetic_sentiment

    words = sorted({t for text in synthetic_sentiment().texts for t in tokenize(text, TokenizerConfig())})
    rng = np.random.default_rng(5)
    vectors = rng.normal(0, 0.3, size=(len(words), 16)).astype(np.float32)
    folder = runs / "vectors"
    folder.mkdir()
    np.save(folder / "vectors.npy", vectors)
    (folder / "words.json").write_text(json.dumps(words))
    (folder / "vectors.json").write_text(json.dumps({"method": "random (tests)"}))
    return folder


def calibrate_text(model_dir: Path) -> None:
    from contract.metadata import METADATA_FILE
    from contract.text_data import synthetic_sentiment
    from export.calibrate import calibrate_texts

    ds = synthetic_sentiment(n=200, seed=11)  # texts the model was not trained on
    meta = calibrate_texts(model_dir, ds.texts, ds.labels)
    (model_dir / METADATA_FILE).write_text(meta.model_dump_json(indent=2) + "\n")


@pytest.fixture(scope="module")
def tc(server):
    """The official Open Inference Protocol client (tritonclient, HTTP) on the shared server."""
    import tritonclient.http as triton

    c = triton.InferenceServerClient(url=server.url.removeprefix("http://"), network_timeout=30.0)
    yield c
    c.close()


MAX_BODY = 3 << 20  # the shared server's body limit, small enough to test cheaply


@pytest.fixture(scope="session")
def server(artifact_root, tmp_path_factory):
    """One real ``bentoml serve`` over the shared artifacts for every HTTP test module."""
    from tests.server import Server

    srv = Server(
        artifact_root,
        tmp_path_factory.mktemp("srv") / "serve.log",
        NNSERVE_MAX_BODY_BYTES=str(MAX_BODY),
        NNSERVE_MAX_LATENCY_MS="500",
    )
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def client(server):
    import httpx

    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def assert_envelope(r, status: int, code: str) -> dict:
    """The response is the /v1 error envelope with this status and code; returns its ``error``."""
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code, body
    return body["error"]
