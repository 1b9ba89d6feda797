"""/v1/generate, /v1/generate/png and /v1/interpolate over real HTTP against a real ``bentoml serve``
with a real conditional GAN and a real VAE (trained briefly on scikit-learn's digits, exported to ONNX)."""

from __future__ import annotations

import base64
import io
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from tests.conftest import assert_envelope, png_bytes

pytestmark = [pytest.mark.server, pytest.mark.slow]
GAN, VAE = "digits-cgan", "digits-vae"


def pixels(b64: str) -> np.ndarray:
    img = Image.open(io.BytesIO(base64.b64decode(b64)))
    assert img.format == "PNG"
    return np.asarray(img)


def generate(client, **body) -> dict:
    r = client.post("/v1/generate", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_generate_returns_pngs_and_echoes_the_request(client):
    body = generate(client, model=GAN, n=5, seed=42, label=7)
    assert body["model"] == GAN and body["version"] == "1" and body["seed"] == 42 and body["grid"] is None
    assert body["labels"] == ["7"] * 5 and len(body["samples"]) == 5
    for s in body["samples"]:
        a = pixels(s)
        assert a.shape == (28, 28) and a.dtype == np.uint8


def test_same_seed_same_images_and_rows_are_prefix_stable(client):
    a = generate(client, model=GAN, n=6, seed=5, label=3)
    b = generate(client, model=GAN, n=6, seed=5, label=3)
    c = generate(client, model=GAN, n=6, seed=6, label=3)
    two = generate(client, model=GAN, n=2, seed=5, label=3)
    assert a["samples"] == b["samples"] and a["samples"] != c["samples"]
    assert two["samples"] == a["samples"][:2]  # sample i depends on the seed and i only


def test_samples_do_not_depend_on_concurrent_requests(client):
    """Requests are batched together in the generator service; each one's images stay the same."""
    alone = generate(client, model=VAE, n=3, seed=11)["samples"]
    bodies = [{"model": VAE, "n": 3, "seed": 11 if i % 2 == 0 else 100 + i} for i in range(16)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda b: client.post("/v1/generate", json=b), bodies))
    assert all(r.status_code == 200 for r in results)
    for i, r in enumerate(results):
        assert (r.json()["samples"] == alone) == (i % 2 == 0)


def test_omitted_seed_is_drawn_and_echoed(client):
    first = generate(client, model=VAE, n=2)
    assert isinstance(first["seed"], int) and first["labels"] is None
    again = generate(client, model=VAE, n=2, seed=first["seed"])
    assert again["samples"] == first["samples"]


def test_labels_by_index_or_name_and_cycling_when_omitted(client):
    by_index = generate(client, model=GAN, n=3, seed=1, label=4)
    by_name = generate(client, model=GAN, n=3, seed=1, label="4")
    assert by_index["samples"] == by_name["samples"]
    cycled = generate(client, model=GAN, n=12, seed=1)
    assert cycled["labels"] == [str(i % 10) for i in range(12)]
    assert cycled["samples"][4] != by_index["samples"][0] or cycled["samples"][:1] != by_index["samples"][:1]
    other = generate(client, model=GAN, n=3, seed=1, label=5)
    assert other["samples"] != by_index["samples"]  # the label conditions the image


def test_grid_format(client):
    body = generate(client, model=GAN, n=10, seed=3, label=1, format="grid")
    assert body["samples"] == [] and body["labels"] == ["1"] * 10
    grid = pixels(body["grid"])
    assert grid.shape == (2 + 3 * 30, 2 + 4 * 30)  # ceil(sqrt(10)) = 4 columns, 3 rows, cells of 28 + 2 px
    first = pixels(generate(client, model=GAN, n=1, seed=3, label=1)["samples"][0])
    assert np.array_equal(grid[2:30, 2:30], first)


def test_generate_png_returns_image_bytes(client):
    r = client.post("/v1/generate/png", json={"model": GAN, "n": 4, "seed": 9, "label": 2})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.headers["x-seed"] == "9"
    img = np.asarray(Image.open(io.BytesIO(r.content)))
    grid = pixels(generate(client, model=GAN, n=4, seed=9, label=2, format="grid")["grid"])
    assert np.array_equal(img, grid)
    assert_envelope(client.post("/v1/generate/png", json={"model": GAN, "n": 4, "label": 10}), 400, "invalid_label")
    assert_envelope(client.post("/v1/generate/png", json={"model": GAN, "n": 65}), 400, "invalid_request")
    assert_envelope(client.post("/v1/generate/png", content=b"{", headers={"content-type": "application/json"}), 400,
                    "invalid_request")  # fmt: skip


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"model": GAN, "n": 2, "label": 10}, 400, "invalid_label"),
        ({"model": GAN, "n": 2, "label": -1}, 400, "invalid_label"),
        ({"model": GAN, "n": 2, "label": "cat"}, 400, "invalid_label"),
        ({"model": GAN, "n": 2, "label": True}, 400, "invalid_request"),
        ({"model": GAN, "n": 2, "label": 1.5}, 400, "invalid_request"),
        ({"model": VAE, "n": 2, "label": 1}, 400, "invalid_request"),
        ({"model": GAN, "n": 0}, 400, "invalid_request"),
        ({"model": GAN, "n": 65}, 400, "invalid_request"),
        ({"model": GAN, "n": 2, "seed": -1}, 400, "invalid_request"),
        ({"model": GAN, "n": 2, "seed": 2**63}, 400, "invalid_request"),
        ({"model": GAN, "n": 2, "format": "gif"}, 400, "invalid_request"),
        ({"model": GAN, "n": 2, "extra": 1}, 400, "invalid_request"),
        ({"model": "nope", "n": 2}, 404, "model_not_found"),
        ({"model": "digits-cnn", "n": 2}, 404, "model_not_found"),
    ],
)
def test_generate_rejects_bad_requests(client, body, status, code):
    err = assert_envelope(client.post("/v1/generate", json=body), status, code)
    if code == "invalid_label":
        assert err["details"] == [{"labels": [str(i) for i in range(10)]}]


def interpolate(client, **body) -> dict:
    r = client.post("/v1/interpolate", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_interpolate_between_seeds_starts_and_ends_at_their_samples(client):
    body = interpolate(client, model=VAE, steps=6, seed_a=1, seed_b=2)
    assert body["seed_a"] == 1 and body["seed_b"] == 2 and len(body["frames"]) == 6 and body["grid"] is None
    assert body["frames"][0] == generate(client, model=VAE, n=1, seed=1)["samples"][0]
    assert body["frames"][-1] == generate(client, model=VAE, n=1, seed=2)["samples"][0]
    linear = interpolate(client, model=VAE, steps=6, seed_a=1, seed_b=2, method="linear")
    assert linear["frames"][0] == body["frames"][0] and linear["frames"][-1] == body["frames"][-1]
    assert linear["frames"][2:4] != body["frames"][2:4]  # slerp and a straight line part in between


def test_interpolate_conditional_needs_a_label(client):
    assert_envelope(client.post("/v1/interpolate", json={"model": GAN, "steps": 3}), 400, "invalid_request")
    body = interpolate(client, model=GAN, steps=3, seed_a=1, seed_b=2, label=8, format="grid")
    assert body["label"] == "8" and body["frames"] == []
    assert pixels(body["grid"]).shape == (30 + 2, 2 + 3 * 30)  # one row of three frames


def test_interpolate_between_images_through_the_encoder(client, digits):
    images = [base64.b64encode(png_bytes(digits.images[i, 0])).decode() for i in (0, 1)]
    body = interpolate(client, model=VAE, steps=4, images=images)
    assert body["seed_a"] is None and body["seed_b"] is None and len(body["frames"]) == 4
    assert body["frames"][0] != body["frames"][-1]
    again = interpolate(client, model=VAE, steps=4, images=images)
    assert again["frames"] == body["frames"]  # the posterior mean: deterministic
    bad = [{"model": VAE, "images": images, "seed_a": 1}, {"model": GAN, "images": images, "label": 1}]
    for b in bad:
        assert_envelope(client.post("/v1/interpolate", json=b), 400, "invalid_request")
    assert_envelope(client.post("/v1/interpolate", json={"model": VAE, "images": images[:1]}), 400, "invalid_request")
    r = client.post("/v1/interpolate", json={"model": VAE, "images": [images[0], "not base64!"]})
    assert_envelope(r, 400, "invalid_image")


@pytest.mark.parametrize("steps", [1, 65])
def test_interpolate_step_limits(client, steps):
    assert_envelope(client.post("/v1/interpolate", json={"model": VAE, "steps": steps}), 400, "invalid_request")


def test_generator_endpoints_take_json_only(client):
    for route in ("/v1/generate", "/v1/interpolate", "/v1/generate/png"):
        r = client.post(route, content=b"n=1", headers={"content-type": "text/plain"})
        assert_envelope(r, 415, "unsupported_media_type")


def _counter(client, model: str) -> float:
    text = client.get("/metrics").text
    m = re.search(rf'^nnserve_generated_samples_total{{model="{model}"}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def test_generated_samples_are_counted(client):
    before = _counter(client, GAN)
    generate(client, model=GAN, n=7, seed=1)
    interpolate(client, model=GAN, steps=3, label=0)
    assert _counter(client, GAN) == before + 10


def test_model_cards_describe_generators(client):
    vae = client.get(f"/v1/models/{VAE}").json()
    assert vae["task"] == "generator" and vae["ready"] and vae["labels"] == []
    gen = vae["generator"]
    assert gen["kind"] == "vae" and not gen["conditional"] and gen["encoder"]["outputs"][0]["name"] == "mu"
    assert gen["value_range"] == [0.0, 1.0] and gen["noise"] == "standard-normal"
    gan = client.get(f"/v1/models/{GAN}").json()
    assert gan["generator"]["conditional"] and gan["labels"] == [str(i) for i in range(10)]
    assert [i["name"] for i in gan["inputs"]] == ["z", "labels"]
