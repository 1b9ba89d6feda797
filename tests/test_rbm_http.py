"""An RBM served as a Gibbs sampler and feature extractor, and the DBN autoencoder served as an autoencoder (issue
19), trained on scikit-learn's digits by their own recipes, exported with parity and served by a real ``bentoml
serve`` beside a small GAN: /v1/generate with steps and a seed (the same images as the chain run in-process on the
artifact), the refusals, /v2's chain runs and features, and the DBN on /v1/reconstruct, /v1/encode and /v2."""

from __future__ import annotations

import base64
import io
import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from contract import gibbs
from contract.images import to_uint8
from contract.metadata import load_metadata
from service.settings import Settings
from tests.conftest import assert_envelope, png_bytes
from tests.server import Server

pytestmark = [pytest.mark.server, pytest.mark.slow]
RBM, DBN, GAN = "digits-rbm", "digits-dbn-ae", "digits-dcgan"
PRE = {"input_size": [28, 28], "channels": 1, "white_on_black": True, "fit": "digit", "mean": [0], "std": [1]}


@pytest.fixture(scope="module")
def served(digits, tmp_path_factory):
    """The three artifacts and a server over them -> (artifact folder, client)."""
    from export.onnx_export import export_checkpoint
    from training.dbn import DBNTrainConfig, train_dbn
    from training.gan import GANTrainConfig, train_gan
    from training.rbm import RBMTrainConfig, train_rbm

    root, runs = tmp_path_factory.mktemp("rbm"), tmp_path_factory.mktemp("rbm-runs")
    ckpts = {
        RBM: train_rbm(digits, RBMTrainConfig(epochs=20, lr=0.05, progress=False, threads=2), {"hidden": 64}, PRE),
        DBN: train_dbn(
            digits,
            DBNTrainConfig(epochs=4, pretrain_epochs=3, progress=False, threads=2),
            {"hidden": [64, 32], "code_size": 8},
            PRE,
        ),
        GAN: train_gan(digits, GANTrainConfig(model="dcgan", epochs=1, progress=False, threads=2),
                       {"width": 8, "latent_dim": 8}, PRE),
    }  # fmt: skip
    for name, ckpt in ckpts.items():
        torch.save(ckpt, runs / f"{name}.pt")
        export_checkpoint(runs / f"{name}.pt", root / name, name=name)
    srv = Server(root, tmp_path_factory.mktemp("rbm-srv") / "serve.log").start()
    with httpx.Client(base_url=srv.url, timeout=60) as client:
        yield root, client
    srv.stop()


def pixels(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def generate(client, **body) -> dict:
    r = client.post("/v1/generate", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def in_process(root, n: int, seed: int, steps: int) -> np.ndarray:
    """The chains run on the artifact with onnxruntime here, drawn as contract/gibbs.py draws them -> uint8 pixels."""
    meta = load_metadata(root / RBM)
    g = meta.generator.gibbs
    sess = ort.InferenceSession(str(root / RBM / "model.onnx"), providers=["CPUExecutionProvider"])

    def run(v, u_h, u_v, todo):
        out = sess.run(["v_next", "image"], {"v": v, "u_h": u_h, "u_v": u_v, "steps": todo})
        return out[0], out[1]

    return to_uint8(gibbs.sample(run, n, seed, steps, g.steps_per_run, g.hidden, g.visible))[:, 0]


def test_cards_describe_the_sampler_and_the_dbn(served):
    _, client = served
    cards = {c["name"]: c for c in client.get("/v1/models").json()["models"]}
    rbm = cards[RBM]
    assert rbm["task"] == "generator" and rbm["architecture"] == "rbm" and rbm["labels"] == []
    gen = rbm["generator"]
    assert gen["kind"] == "rbm" and gen["noise"] == "uniform" and not gen["conditional"]
    assert gen["gibbs"] == {"steps_per_run": gibbs.STEPS_PER_RUN, "visible": 784, "hidden": 64, "start": gibbs.START}
    assert [t["name"] for t in rbm["inputs"]] == ["v", "u_h", "u_v", "steps"]
    dbn = cards[DBN]
    assert dbn["task"] == "autoencoder" and dbn["architecture"] == "dbn-autoencoder" and dbn["anomaly"]
    assert dbn["metrics"]["pretrained_val_sse"] > 0 and dbn["metrics"]["pca_val_sse"] > 0


def test_a_seed_and_steps_give_the_same_images_as_the_chain_in_process(served):
    root, client = served
    a = generate(client, model=RBM, n=4, seed=3, steps=25)
    assert a["steps"] == 25 and a["seed"] == 3 and a["labels"] is None and len(a["samples"]) == 4
    assert generate(client, model=RBM, n=4, seed=3, steps=25)["samples"] == a["samples"]
    assert generate(client, model=RBM, n=4, seed=4, steps=25)["samples"] != a["samples"]
    assert generate(client, model=RBM, n=4, seed=3, steps=26)["samples"] != a["samples"]
    assert generate(client, model=RBM, n=2, seed=3, steps=25)["samples"] == a["samples"][:2]  # prefix-stable
    got = np.stack([pixels(s) for s in a["samples"]])
    assert np.array_equal(got, in_process(root, 4, seed=3, steps=25))


def test_steps_default_and_the_default_sampler_output(served):
    _, client = served
    body = generate(client, model=RBM, n=1, seed=0)
    assert body["steps"] == Settings().gibbs_steps
    assert generate(client, model=GAN, n=1, seed=0)["steps"] is None  # a one-pass generator takes none


def test_samples_do_not_depend_on_concurrent_requests(served):
    _, client = served
    alone = generate(client, model=RBM, n=3, seed=11, steps=30)["samples"]
    bodies = [{"model": RBM, "n": 3, "seed": 11 if i % 2 == 0 else 100 + i, "steps": 30 + i % 3} for i in range(12)]
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda b: client.post("/v1/generate", json=b), bodies))
    for b, r in zip(bodies, results, strict=True):
        assert r.status_code == 200, r.text
        assert (r.json()["samples"] == alone) == (b["seed"] == 11 and b["steps"] == 30)


def test_generate_png_and_grid_take_steps(served):
    _, client = served
    r = client.post("/v1/generate/png", json={"model": RBM, "n": 4, "seed": 9, "steps": 12})
    assert r.status_code == 200 and r.headers["x-seed"] == "9"
    grid = generate(client, model=RBM, n=4, seed=9, steps=12, format="grid")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(r.content))), pixels(grid["grid"]))


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/v1/generate", {"model": RBM, "steps": 0}),
        ("/v1/generate", {"model": RBM, "steps": Settings().max_gibbs_steps + 1}),
        ("/v1/generate", {"model": RBM, "steps": 1.5}),
        ("/v1/generate", {"model": RBM, "steps": "10"}),
        ("/v1/generate", {"model": RBM, "label": 1}),
        ("/v1/generate", {"model": GAN, "steps": 10}),
        ("/v1/generate/png", {"model": GAN, "steps": 10}),
        ("/v1/interpolate", {"model": RBM, "steps": 4}),
    ],
)
def test_refusals(served, route, body):
    _, client = served
    assert_envelope(client.post(route, json=body), 400, "invalid_request")


def _tensor(name: str, a: np.ndarray) -> dict:
    dtype = "INT64" if a.dtype == np.int64 else "FP32"
    return {"name": name, "shape": list(a.shape), "datatype": dtype, "data": a.ravel().tolist()}


def v2_infer(client, model: str, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    r = client.post(f"/v2/models/{model}/infer", json={"inputs": [_tensor(k, v) for k, v in tensors.items()]})
    assert r.status_code == 200, r.text
    return {o["name"]: np.asarray(o["data"], dtype=np.float32).reshape(o["shape"]) for o in r.json()["outputs"]}


def test_v2_runs_the_chain_and_gives_the_features(served, digits):
    root, client = served
    k = gibbs.STEPS_PER_RUN
    x = (digits.images[:3, 0].reshape(3, -1) / 255.0).astype(np.float32)
    rng = np.random.default_rng(0)
    feed = {
        "v": x,
        "u_h": rng.random((3, k, 64), dtype=np.float32),
        "u_v": rng.random((3, k, 784), dtype=np.float32),
        "steps": np.array([0, 3, k], dtype=np.int64),
    }
    got = v2_infer(client, RBM, feed)
    sess = ort.InferenceSession(str(root / RBM / "model.onnx"), providers=["CPUExecutionProvider"])
    want = dict(zip(["v_next", "image", "hidden"], sess.run(None, feed), strict=True))
    assert set(got) == set(want)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], atol=1e-6)
    assert np.array_equal(got["v_next"][0], x[0])  # steps 0: the state is kept, 'hidden' is p(h | v)
    assert got["hidden"].shape == (3, 64) and got["hidden"].min() >= 0 and got["hidden"].max() <= 1
    for steps in (-5, k + 1, 10**6):  # the graph would clamp them silently: the client is told instead
        odd = {**feed, "steps": np.array([0, steps, k], dtype=np.int64)}
        r = client.post(f"/v2/models/{RBM}/infer", json={"inputs": [_tensor(n, v) for n, v in odd.items()]})
        assert r.status_code == 400 and f"steps {steps} is not 0-{k}" in r.json()["error"], r.text


def test_the_dbn_reconstructs_and_encodes_like_the_artifact(served, digits):
    root, client = served
    images = [base64.b64encode(png_bytes(digits.images[i, 0])).decode() for i in range(-4, 0)]
    r = client.post("/v1/reconstruct", json={"model": DBN, "images": images})
    assert r.status_code == 200, r.text
    sess = ort.InferenceSession(str(root / DBN / "model.onnx"), providers=["CPUExecutionProvider"])
    x = (digits.images[-4:] / 255.0).astype(np.float32)
    codes, recon = sess.run(["code", "reconstruction"], {"input": x})
    errors = ((recon - x) ** 2).reshape(4, -1).sum(1)
    np.testing.assert_allclose([res["error"] for res in r.json()["results"]], errors, rtol=1e-3, atol=1e-3)
    enc = client.post("/v1/encode", json={"model": DBN, "images": images}).json()["codes"]
    np.testing.assert_allclose(enc, codes, atol=1e-4)
    out = v2_infer(client, DBN, {"input": x})
    np.testing.assert_allclose(out["code"], codes, atol=1e-5)


def test_rbm_samples_are_counted(served):
    _, client = served

    def counter() -> float:
        m = re.search(rf'^nnserve_generated_samples_total{{model="{RBM}"}} (\S+)$', client.get("/metrics").text, re.M)
        return float(m.group(1)) if m else 0.0

    before = counter()
    generate(client, model=RBM, n=5, seed=1, steps=3)
    assert counter() == before + 5


def test_a_request_of_many_gibbs_runs_counts_once_in_the_statistics(served):
    """25 steps are 3 runs of the graph (K = 10): Triton's statistics count one request, and 3 executions of its
    2 rows (inference_count is the rows the graph ran)."""
    _, client = served

    def stats() -> dict:
        (entry,) = client.get(f"/v2/models/{RBM}/stats").json()["model_stats"]
        return entry

    before = stats()
    generate(client, model=RBM, n=2, seed=4, steps=25)
    after = stats()
    assert after["inference_stats"]["success"]["count"] == before["inference_stats"]["success"]["count"] + 1
    assert after["inference_count"] == before["inference_count"] + 2 * 3
    assert after["execution_count"] - before["execution_count"] == 3
