"""The classic canon's classifiers (issue 19): the MLP, the RBF network and the pre-activation ResNet, trained
on scikit-learn's digits by the image-classification family's own recipe, exported with parity and served by a
real ``bentoml serve`` beside nothing else: their cards, /v1 answers equal to in-process onnxruntime on the
same preprocessing, /v2 through tritonclient equal to /v1, and the RBF network's start from the data."""

from __future__ import annotations

import base64
import io

import numpy as np
import onnxruntime as ort
import pytest
import torch
import tritonclient.http as triton
from PIL import Image

import models
from contract.data import stratified_split
from contract.images import normalize, prepare_image
from contract.metadata import load_metadata
from tests.conftest import png_bytes
from tests.server import Server

pytestmark = [pytest.mark.server, pytest.mark.slow]

# name -> (architecture, epochs, small overrides); each learns the digits in seconds
CLASSIC = {
    "digits-mlp": ("mlp", 12, {"hidden": [128, 64]}),
    "digits-rbf": ("rbf", 12, {"centres": 120}),
    "digits-resnet": ("resnet", 6, {"widths": [8, 16, 16], "blocks": 1}),
}


@pytest.fixture(scope="module")
def classic(digits, tmp_path_factory):
    """The three artifacts and a server over them."""
    from export.onnx_export import export_checkpoint
    from training.common import TrainConfig
    from training.image_classification import train

    root, runs = tmp_path_factory.mktemp("classic"), tmp_path_factory.mktemp("classic-runs")
    pre = {"input_size": [28, 28], "channels": 1, "white_on_black": True, "fit": "digit", "mean": [0], "std": [1]}
    for name, (arch, epochs, overrides) in CLASSIC.items():
        cfg = TrainConfig(model=arch, epochs=epochs, batch_size=64, progress=False, threads=2, patience=10)
        torch.save(train(digits, cfg, overrides, pre), runs / f"{name}.pt")
        export_checkpoint(runs / f"{name}.pt", root / name, name=name)  # raises on a parity failure
    srv = Server(root, tmp_path_factory.mktemp("classic-srv") / "serve.log")
    srv.start()
    yield root, srv
    srv.stop()


@pytest.fixture(scope="module")
def held_out(digits):
    _, val = stratified_split(digits.labels, 0.1, 0)
    return [(digits.images[i, 0], int(digits.labels[i])) for i in val[:48]]


def test_cards_name_each_architecture_with_its_parameters(classic):
    import httpx

    _, srv = classic
    cards = {c["name"]: c for c in httpx.get(f"{srv.url}/v1/models", timeout=10).json()["models"]}
    assert set(cards) == set(CLASSIC)
    for name, (arch, _, overrides) in CLASSIC.items():
        card = cards[name]
        assert card["architecture"] == arch and card["task"] == "image-classification"
        module = models.create_model(arch, models.make_config(arch, **overrides))
        assert card["parameters"] == sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", list(CLASSIC))
def test_v1_answers_equal_onnxruntime_and_mostly_right(classic, held_out, name):
    import httpx

    root, srv = classic
    images = [base64.b64encode(png_bytes(a)).decode() for a, _ in held_out]
    r = httpx.post(f"{srv.url}/v1/classify", json={"model": name, "images": images, "top_k": 10}, timeout=30)
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    acc = np.mean([p["index"] == y for p, (_, y) in zip(preds, held_out, strict=True)])
    assert acc >= 0.7, acc  # a few epochs on 1.6k digits: real answers, not a score

    meta = load_metadata(root / name)
    sess = ort.InferenceSession(str(root / name / "model.onnx"), providers=["CPUExecutionProvider"])
    pre = meta.preprocessing
    assert pre is not None
    x = np.stack([normalize(prepare_image(Image.fromarray(a), pre), pre) for a, _ in held_out])
    logits = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    assert [p["index"] for p in preds] == logits.argmax(1).tolist()


@pytest.mark.parametrize("name", list(CLASSIC))
def test_v2_through_tritonclient_equals_v1(classic, held_out, name):
    import httpx

    root, srv = classic
    images = [png_bytes(a) for a, _ in held_out[:8]]
    v1 = httpx.post(
        f"{srv.url}/v1/classify",
        json={"model": name, "images": [base64.b64encode(b).decode() for b in images], "top_k": 1},
        timeout=30,
    ).json()["predictions"]
    pre = load_metadata(root / name).preprocessing
    assert pre is not None
    x = np.stack([normalize(prepare_image(Image.open(io.BytesIO(b)), pre), pre) for b in images])
    client = triton.InferenceServerClient(srv.url.removeprefix("http://"))
    inp = triton.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    logits = client.infer(name, [inp]).as_numpy("logits")
    assert logits.shape == (8, 10) and logits.argmax(1).tolist() == [p["index"] for p in v1]


def test_the_rbf_network_starts_from_k_means_centres_and_least_squares(digits):
    """Before any gradient step the RBF network already classifies: its centres are k-means centres of the
    training images, its widths their spread, its output layer the least-squares fit (Moody & Darken 1989)."""
    cfg = models.make_config("rbf", centres=60)
    net = models.create_model("rbf", cfg)
    train, val = stratified_split(digits.labels, 0.2, 0)
    x = torch.from_numpy(digits.images).float() / 255.0
    y = torch.from_numpy(digits.labels)
    net.init_from_data(x[train], y[train], torch.Generator().manual_seed(0))
    with torch.no_grad():
        acc = (net(x[val]).argmax(1) == y[val]).float().mean().item()
        d = torch.cdist(x[train].flatten(1), net.centres)  # each centre sits among the images it stands for
    assert acc >= 0.8, acc
    assert torch.isfinite(net.log_sigma).all() and (net.log_sigma.exp() > 0.05).all()
    assert (d.min(0).values < d.mean()).all()
