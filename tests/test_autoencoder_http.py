"""/v1/reconstruct and /v1/encode over real HTTP against a real ``bentoml serve`` with a real ONNX autoencoder."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from contract.metadata import load_metadata
from tests.conftest import assert_envelope, png_bytes

pytestmark = [pytest.mark.server, pytest.mark.slow]
MODEL = "digits-ae"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def digit_pngs(digits):
    return [b64(png_bytes(a[0])) for a in digits.images[-16:]]


def test_reconstruct(client, artifact_root, digit_pngs):
    r = client.post("/v1/reconstruct", json={"model": MODEL, "images": digit_pngs[:4]})
    assert r.status_code == 200, r.text
    body = r.json()
    meta = load_metadata(artifact_root / MODEL)
    assert body["threshold"] == pytest.approx(meta.anomaly.threshold) and len(body["results"]) == 4
    for res in body["results"]:
        img = Image.open(io.BytesIO(base64.b64decode(res["reconstruction"])))
        assert img.format == "PNG" and img.size == (28, 28) and img.mode == "L"
        assert res["error"] >= 0 and res["anomaly"] == (res["error"] > body["threshold"])
        assert res["anomaly_reason"] == ("unlike_training_data" if res["anomaly"] else None)


def test_noise_is_an_anomaly_and_digits_mostly_are_not(client, digit_pngs):
    noise = b64(png_bytes(np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)))
    results = client.post("/v1/reconstruct", json={"model": MODEL, "images": [noise, *digit_pngs]}).json()["results"]
    assert results[0]["anomaly"] is True
    assert results[0]["error"] > max(r["error"] for r in results[1:])
    assert sum(r["anomaly"] for r in results[1:]) <= 2


def test_encode(client, digit_pngs):
    r = client.post("/v1/encode", json={"model": MODEL, "images": digit_pngs[:3]})
    assert r.status_code == 200, r.text
    codes = r.json()["codes"]
    assert len(codes) == 3 and all(len(c) == 10 for c in codes)
    again = client.post("/v1/encode", json={"model": MODEL, "images": digit_pngs[2:3]}).json()["codes"][0]
    assert np.allclose(again, codes[2], atol=1e-5)  # the code does not depend on the batch


@pytest.mark.parametrize("route", ["/v1/reconstruct", "/v1/encode"])
@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"model": "nope", "images": ["aGk="]}, 404, "model_not_found"),
        ({"model": "digits-cnn", "images": ["aGk="]}, 404, "model_not_found"),
        ({"model": MODEL, "images": []}, 400, "invalid_request"),
        ({"model": MODEL, "images": [b64(b"not an image")]}, 400, "invalid_image"),
        ({"model": MODEL, "images": ["x"] * 65}, 400, "invalid_request"),
    ],
)
def test_errors(client, route, body, status, code):
    assert_envelope(client.post(route, json=body), status, code)


def test_anomaly_counter(client):
    text = client.get("/metrics").text
    assert re.search(r'^nnserve_anomalies_total\{model="digits-ae",reason="[a-z_]+"\} [1-9]', text, re.M)


def test_a_blank_page_is_an_anomaly(client, digit_pngs):
    pages = []
    for level in (255, 215, 0):  # white paper, grey paper, a black field
        buf = io.BytesIO()
        Image.new("L", (280, 280), level).save(buf, format="PNG")
        pages.append(b64(buf.getvalue()))
    body = client.post("/v1/reconstruct", json={"model": MODEL, "images": [*pages, digit_pngs[0]]}).json()
    assert [r["anomaly"] for r in body["results"][:3]] == [True] * 3  # nothing written: the front door's verdict
    assert [r["anomaly_reason"] for r in body["results"][:3]] == ["nothing_written"] * 3
    assert body["results"][3]["anomaly"] == (body["results"][3]["error"] > body["threshold"])  # a digit: its error


@pytest.mark.parametrize("level", [255, 215, 0])
def test_the_shipped_autoencoder_reconstructs_a_blank_page_well_and_flags_it_by_the_front_doors_verdict(level):
    """Why the flag takes the front door's verdict: ``mnist-ae`` reconstructs an empty field almost perfectly."""
    import onnxruntime as ort

    from contract.images import normalize, read

    art = Path(__file__).resolve().parents[1] / "artifacts" / "mnist-ae"
    meta = load_metadata(art)
    reading = read(Image.new("L", (280, 280), level), meta.image_preprocessing())
    x = normalize(reading.pixels[None], meta.image_preprocessing())
    (recon,) = ort.InferenceSession(str(art / "model.onnx")).run(["reconstruction"], {meta.inputs[0].name: x})
    error = float(((recon - x) ** 2).sum())
    assert error < meta.anomaly.threshold / 10  # the error alone says "typical"
    assert meta.anomaly_answer(error, reading.oddness, x[0])
    assert not meta.anomaly_answer(error, None, x[0] + np.eye(28, dtype=np.float32))  # ink, a low error: typical
    assert meta.anomaly_answer(error, 1.5, x[0] + np.eye(28, dtype=np.float32))  # a page unlike a digit's: flagged
