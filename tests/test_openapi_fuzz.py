"""Property-based fuzzing of every operation in the live server's own OpenAPI document (schemathesis).

The schema is loaded from the running ``bentoml serve`` (``/docs.json``), so what is checked is what clients
are told. For every operation, schemathesis sends valid and invalid requests (its examples, coverage and
fuzzing phases) and each response must:

* never be a 5xx (``not_a_server_error``),
* have a documented status code (``status_code_conformance``),
* have a documented content type (``content_type_conformance``),
* match the documented body schema for that status (``response_schema_conformance``).

Requests are steered, not faked: the document cannot say which model names are served or that an image
string must be a base64 PNG, so a body hook lets Hypothesis choose, per request, between the generated value
and a served model name / real digit images. Without it every POST ends in 404 or 400 and no success body is
ever validated. The run is reproducible: a fixed seed, derandomized Hypothesis, no example database.

A second run fuzzes a server started with ``NNSERVE_API_KEY`` (and ``NNSERVE_METRICS_REQUIRE_KEY``) without
sending the key: its 401 envelopes must be documented too.
"""

from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import png_bytes
from tests.fuzzing import hypothesis_settings, node_id_for_schemathesis, schemathesis_config  # noqa: F401 (autouse)
from tests.server import Server

pytestmark = [pytest.mark.server, pytest.mark.slow]

SEED = 20_251_122
MAX_EXAMPLES = 25
KEYED_MAX_EXAMPLES = 5  # every /v1 answer is the same 401 without the key
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


# which family of models a route serves, by the route's path after its version prefix ("/v1/classify" ->
# "classify"); a route missing here is steered with every served model's name
TASK_OF_ROUTE = {
    "classify": "image-classification",
    "classify/upload": "image-classification",
    "sentiment": "text-classification",
    "reconstruct": "autoencoder",
    "encode": "autoencoder",
    "generate": "generator",
    "generate/png": "generator",
    "interpolate": "generator",
    "recall": "recall",
}


_ABSENT = object()


def _steer_body(served: dict[str, list[str]], images: list[bytes]):
    """A ``flatmap_body`` hook: a JSON or form body keeps its generated fields, except that Hypothesis may swap
    ``model`` for the name of a served model of the route's family and ``images`` for as many real encoded digits
    (each 3 times in 4), and the upload's ``image`` file for a real PNG or JPEG (8 times in 9)."""
    b64 = [base64.b64encode(b).decode() for b in images]
    every = sorted(n for names in served.values() for n in names)

    def steer(context, body):
        if not isinstance(body, dict):
            return st.just(body)
        parts = {}
        route = context.operation.path.split("/", 2)[-1]
        if isinstance(body.get("model"), str) or ("model" not in body and route in TASK_OF_ROUTE):
            # an absent model means the route's default name, which no test artifact has
            names = served.get(TASK_OF_ROUTE.get(route, ""), every)
            parts["model"] = st.sampled_from([*names, *names, *names, body.get("model", _ABSENT)])
        if isinstance(body.get("images"), list) and body["images"]:
            n = len(body["images"])
            real = st.lists(st.sampled_from(b64), min_size=n, max_size=n)
            parts["images"] = st.sampled_from([True, True, True, False]).flatmap(
                lambda swap: real if swap else st.just(body["images"])
            )
        if "image" in body:
            parts["image"] = st.sampled_from([*images, body["image"]])
        return st.fixed_dictionaries(parts).map(
            lambda new: {k: v for k, v in {**body, **new}.items() if v is not _ABSENT}
        )

    return steer


def _steer_name(served: dict[str, list[str]]):
    """A ``flatmap_path_parameters`` hook: ``{name}`` may be a served model's name, so a card is fetched too, and
    ``{figure}`` the training curves (curves.png), so a figure is too."""
    every = sorted(n for names in served.values() for n in names)

    def steer(context, params):
        if not isinstance(params, dict) or not isinstance(params.get("name"), str):
            return st.just(params)
        names = st.sampled_from([*every, params["name"]])
        if not isinstance(params.get("figure"), str):
            return names.map(lambda name: {**params, "name": name})
        figures = st.sampled_from(["curves.png", params["figure"]])
        return st.tuples(names, figures).map(lambda nf: {**params, "name": nf[0], "figure": nf[1]})

    return steer


def _load(url: str, max_examples: int):
    config = schemathesis_config(SEED, max_examples, suppress=["too_slow"])
    schema = schemathesis.openapi.from_url(f"{url}/docs.json", config=config, timeout=10)
    schema.config.update(base_url=url)
    return schema


@pytest.fixture(scope="module")
def api_schema(server, digits):
    """The shared server's OpenAPI document (no API key), loaded once the server is up, with the steering hooks."""
    schema = _load(server.url, MAX_EXAMPLES)
    served: dict[str, list[str]] = {}
    for card in httpx.get(f"{server.url}/v1/models", timeout=10).json()["models"]:
        served.setdefault(card["task"], []).append(card["name"])
    digit_images = [
        png_bytes(np.asarray(a[0]), fmt="PNG" if i % 2 else "JPEG") for i, a in enumerate(digits.images[:8])
    ]
    schema.hook("flatmap_body")(_steer_body(served, digit_images))
    schema.hook("flatmap_path_parameters")(_steer_name(served))
    return schema


@pytest.fixture(scope="module")
def keyed_schema(artifact_root, tmp_path_factory):
    """The document of a server that requires an API key (on /metrics too); requests are sent without it."""
    srv = Server(
        artifact_root,
        tmp_path_factory.mktemp("fuzz-keyed") / "serve.log",
        NNSERVE_API_KEY="fuzz-key",
        NNSERVE_METRICS_REQUIRE_KEY="true",
        NNSERVE_MODELS='["synthetic-lstm"]',
    )
    srv.start()
    yield _load(srv.url, KEYED_MAX_EXAMPLES)
    srv.stop()


schema = schemathesis.pytest.from_fixture("api_schema")
keyed = schemathesis.pytest.from_fixture("keyed_schema")


@schema.parametrize()
@hypothesis_settings(MAX_EXAMPLES)
def test_every_operation_conforms_to_its_openapi_document(case):
    case.call_and_validate(checks=CHECKS, timeout=30)


@keyed.parametrize()
@hypothesis_settings(KEYED_MAX_EXAMPLES)
def test_without_the_api_key_every_operation_still_answers_as_documented(case):
    case.call_and_validate(checks=CHECKS, timeout=30)
