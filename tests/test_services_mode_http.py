"""NNSERVE_BATCHING=services: the same API with batching in BentoML model services (one hop per request)
gives the same answers as the default in-worker batching."""

from __future__ import annotations

import base64

import httpx
import pytest

from tests.conftest import png_bytes
from tests.server import Server

pytestmark = [pytest.mark.server, pytest.mark.slow]


@pytest.fixture(scope="module")
def services_client(artifact_root, tmp_path_factory):
    srv = Server(artifact_root, tmp_path_factory.mktemp("services") / "serve.log", NNSERVE_BATCHING="services")
    srv.start()
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        yield c
    srv.stop()


def test_same_answers_as_in_worker_batching(services_client, client, digits):
    images = [base64.b64encode(png_bytes(a[0])).decode() for a in digits.images[-8:]]
    requests = [
        ("/v1/classify", {"model": "digits-cnn", "images": images, "top_k": 2}),
        ("/v1/sentiment", {"model": "synthetic-lstm", "texts": ["a great film", "dull and bad"]}),
        # 64 long texts in 8 windows each: 512 rows in one call, over the text batch size (128)
        ("/v1/sentiment", {"model": "synthetic-attn", "texts": ["the film is wonderful , " * 60] * 64}),
        # and explained (16 texts of 170 tokens: 8 windows each, within NNSERVE_MAX_EXPLAIN_CHARS)
        ("/v1/sentiment", {"model": "synthetic-attn", "texts": ["the film is good , " * 34] * 16, "explain": True}),
        ("/v1/encode", {"model": "digits-ae", "images": images[:2]}),
        ("/v1/generate", {"model": "digits-cgan", "n": 3, "seed": 4, "label": 2}),
        ("/v1/interpolate", {"model": "digits-vae", "steps": 3, "images": images[:2]}),
    ]
    for route, body in requests:
        a, b = services_client.post(route, json=body), client.post(route, json=body)
        assert a.status_code == b.status_code == 200, (route, a.text)
        assert a.json() == b.json(), route  # rows do not depend on their batch, so even floats agree


def test_model_cards_report_the_model_services_state(services_client):
    cards = services_client.get("/v1/models").json()["models"]
    assert cards and all(c["ready"] and "CPUExecutionProvider" in c["providers"] for c in cards)
    assert all(c["batching"]["mode"] == "services" and c["batching"]["max_latency_ms"] == 200 for c in cards)
    assert services_client.get("/readyz").status_code == 200


def test_connection_recycling_fails_nothing(services_client, digits):
    """BentoML's client to a model service recycles its connection every 100 requests by default and fails
    the calls in flight; ``runner_connection`` keeps one connection, so 240 concurrent requests all succeed."""
    from concurrent.futures import ThreadPoolExecutor

    body = {"model": "digits-cnn", "images": [base64.b64encode(png_bytes(digits.images[0, 0])).decode()]}
    with ThreadPoolExecutor(24) as pool:
        codes = list(pool.map(lambda _: services_client.post("/v1/classify", json=body).status_code, range(240)))
    assert codes.count(200) == 240, sorted(set(codes))
