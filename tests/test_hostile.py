"""Hostile and careless clients (issue 14): each way found to make the server answer 500 or leak internals,
kept closed. Fast versions against the shared test server."""

from __future__ import annotations

import base64

import pytest

from tests.conftest import assert_envelope

pytestmark = [pytest.mark.server]
# the stdlib's JSON writes NaN and Infinity; httpx would refuse to, so bodies are sent as raw bytes
ODD_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e400", '"3"', "true", "3.0"]


def post(client, path: str, raw: str):
    return client.post(path, content=raw.encode("utf-8", "surrogatepass"), headers={"content-type": "application/json"})


@pytest.mark.parametrize("value", ODD_NUMBERS)
@pytest.mark.parametrize(
    "path, template",
    [
        ("/v1/classify", '{"model": "digits-cnn", "images": ["%s"], "top_k": VALUE}'),
        ("/v1/generate", '{"model": "digits-cgan", "n": VALUE}'),
        ("/v1/generate", '{"model": "digits-cgan", "seed": VALUE}'),
        ("/v1/generate", '{"model": "digits-cgan", "label": VALUE}'),
        ("/v1/interpolate", '{"model": "digits-vae", "steps": VALUE}'),
    ],
)
def test_odd_json_numbers_are_a_400_naming_the_field(client, digits, path, template, value):
    from tests.conftest import png_bytes

    img = base64.b64encode(png_bytes(digits.images[0, 0])).decode()
    body = template.replace("%s", img).replace("VALUE", value)
    r = post(client, path, body)
    if value == '"3"' and "label" in template:  # a label may be a class name: "3" is one of the digits
        assert r.status_code == 200, r.text
        return
    err = assert_envelope(r, 400, "invalid_request")
    field = template.split("VALUE")[0].rsplit('"', 2)[-2]
    assert err["message"].startswith(field) and "Traceback" not in r.text
    assert value not in err["message"]  # the client's input is not echoed


@pytest.mark.parametrize(
    "path, raw",
    [
        ("/v1/sentiment", '{"model": "synthetic-lstm", "texts": ["\\ud800 the film is good"]}'),
        ("/v1/classify", '{"model": "\\ud800", "images": ["x"]}'),
        ("/v1/generate", '{"model": "digits-cgan", "label": "\\udfff"}'),
    ],
)
def test_lone_surrogates_are_a_400(client, path, raw):
    r = post(client, path, raw)
    err = assert_envelope(r, 400, "invalid_label" if '"label"' in raw else "invalid_request")
    assert "\\ud800" not in err["message"] and len(err["message"]) < 200


def test_v2_odd_bodies_are_the_protocols_400(client):
    for raw in (
        '{"id": "\\ud800", "inputs": []}',
        '{"inputs": NaN}',
        '{"inputs": [{"name": "input", "shape": [1e400]}]}',
    ):
        r = post(client, "/v2/models/digits-cnn/infer", raw)
        assert r.status_code == 400, r.text
        assert set(r.json()) == {"error"} and r.json()["error"].startswith("invalid inference request")
