"""What real Open Inference Protocol clients trip on (issue 18's conformance list), against a real server:
HEAD on the read routes, Allow on a 405, narrower integers for an INT64 input, and an id on every response."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as triton

from tests.test_oip_http import GAN, LSTM, metadata

pytestmark = [pytest.mark.server, pytest.mark.slow]
READ_ROUTES = ["/v2", "/v2/health/live", "/v2/health/ready", f"/v2/models/{GAN}", f"/v2/models/{GAN}/ready"]


@pytest.mark.parametrize("path", READ_ROUTES)
def test_head_answers_as_get_without_a_body(client, path):
    get, head = client.get(path), client.head(path)
    assert get.status_code == head.status_code == 200 and get.content and head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]


def test_a_405_says_which_methods_are_allowed(client):
    r = client.post("/v2/health/live")
    assert r.status_code == 405 and set(r.json()) == {"error"}
    assert {m.strip() for m in r.headers["allow"].split(",")} == {"GET", "HEAD"}
    r = client.get(f"/v2/models/{GAN}/infer")
    assert r.status_code == 405 and r.headers["allow"] == "POST"


@pytest.mark.parametrize("datatype", ["INT32", "INT16", "UINT8"])
@pytest.mark.parametrize("binary", [False, True])
def test_narrower_integers_are_widened_for_an_int64_input(tc, artifact_root, datatype, binary):
    meta = metadata(artifact_root, GAN)
    assert meta.generator is not None
    z = np.random.default_rng(7).standard_normal((4, meta.generator.latent_dim), dtype=np.float32)
    images = {}
    for dt in ("INT64", datatype):
        zi, yi = triton.InferInput("z", list(z.shape), "FP32"), triton.InferInput("labels", [4], dt)
        zi.set_data_from_numpy(z, binary_data=binary)
        yi.set_data_from_numpy(np.array([0, 3, 5, 9], dtype=triton.triton_to_np_dtype(dt)), binary_data=binary)
        images[dt] = tc.infer(GAN, [zi, yi]).as_numpy("image")
    np.testing.assert_array_equal(images[datatype], images["INT64"])


def test_wider_or_other_types_are_still_refused(client):
    z = {"name": "z", "shape": [1, 16], "datatype": "FP32", "data": [0.0] * 16}
    for y in (
        {"name": "labels", "shape": [1], "datatype": "UINT64", "data": [1]},
        {"name": "labels", "shape": [1], "datatype": "FP32", "data": [1.0]},
        {"name": "labels", "shape": [1], "datatype": "INT32", "data": [2**40]},  # not an INT32 value
    ):
        r = client.post(f"/v2/models/{GAN}/infer", json={"inputs": [z, y]})
        assert r.status_code == 400 and set(r.json()) == {"error"}, (y, r.text)


@pytest.mark.parametrize("dim", [1.0, "1", True])
def test_a_shape_is_integers_not_what_pydantic_would_coerce(client, dim):
    text = {"name": "text", "shape": [dim], "datatype": "BYTES", "data": ["the film is wonderful"]}
    r = client.post(f"/v2/models/{LSTM}/infer", json={"inputs": [text]})
    assert r.status_code == 400 and "shape" in r.json()["error"], r.text


def test_every_response_has_an_id(client):
    text = {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["the film is wonderful"]}
    r = client.post(f"/v2/models/{LSTM}/infer", json={"inputs": [text]})
    assert r.status_code == 200 and r.json()["id"] == r.headers["x-request-id"]  # none sent: the request's own
    r = client.post(f"/v2/models/{LSTM}/infer", json={"id": "trace-42", "inputs": [text]})
    assert r.json()["id"] == "trace-42"
    long_id = "00-" + "ab" * 500  # longer than the 256 characters once allowed (NNSERVE_MAX_INFERENCE_ID_CHARS)
    assert client.post(f"/v2/models/{LSTM}/infer", json={"id": long_id, "inputs": [text]}).json()["id"] == long_id


def test_a_trailing_slash_is_the_same_route_never_a_redirect(client):
    text = {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["the film is wonderful"]}
    body = {"id": "1", "inputs": [text]}
    plain = client.post(f"/v2/models/{LSTM}/infer", json=body)
    slash = client.post(f"/v2/models/{LSTM}/infer/", json=body)
    assert slash.status_code == 200 and slash.json() == plain.json()
    bad = client.post(f"/v2/models/{LSTM}/infer/", json={"inputs": "no"})  # the full stack, not the lane
    assert bad.status_code == 400 and set(bad.json()) == {"error"}
    for path in ("/v2/health/live/", f"/v2/models/{LSTM}/", f"/v2/models/{LSTM}/ready/"):
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 200 and r.json() == client.get(path.rstrip("/")).json(), path


def test_an_empty_text_in_a_batch_is_answered_and_flagged_not_a_failed_request(client):
    data = ["the film is wonderful", "   ", "", "the film is wonderful"]
    text = {"name": "text", "shape": [4], "datatype": "BYTES", "data": data}
    outputs = [{"name": "logits"}, {"name": "ood_score"}, {"name": "out_of_distribution"}, {"name": "ood_reason"}]
    r = client.post(f"/v2/models/{LSTM}/infer", json={"inputs": [text], "outputs": outputs})
    assert r.status_code == 200, r.text
    out = {o["name"]: o["data"] for o in r.json()["outputs"]}
    assert out["ood_score"][1] == out["ood_score"][2] > 1 and out["out_of_distribution"] == [False, True, True, False]
    assert out["ood_reason"] == ["", "no_known_word", "no_known_word", ""]  # /v1's reason; empty: not flagged
    assert out["logits"][:2] == out["logits"][6:8]  # the texts around them are answered as if alone
    # /v1 names the empty text instead: its answers are per text, so it can say which one
    r = client.post("/v1/sentiment", json={"model": LSTM, "texts": data[:2]})
    assert r.status_code == 400 and r.json()["error"]["details"] == [{"index": 1}]
