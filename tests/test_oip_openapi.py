"""Conformance with the Open Inference Protocol's own published OpenAPI documents, by schemathesis, against a real
server (issue 18). tests/test_openapi_fuzz.py checks nnserve's own document (/v1 and the rest it serves); this
file checks /v2 against what the protocol publishes, the document a KServe or Triton client is written against.

The documents come from a maintained package (tests/oip_document.py says which and why): the data plane and the
model-repository extension. Before the run the test changes only what it must, each listed here:

* the paths the protocol does not define are left out: ``infer_stream``, ``generate`` and ``generate_stream``
  (the publisher's own extensions; nnserve answers them 404);
* ``TensorData``'s ``{"type": "bytes"}`` (not a JSON Schema type) becomes the protocol document's definition,
  an array whose items are numbers, strings, booleans or arrays again.

Requests are steered as in tests/test_openapi_fuzz.py: the document cannot know which models are served or
what fits them, so a case hook lets Hypothesis put a served model's name and version in the path and, for
inference, a request that fits that model's inputs (built from its /v2 metadata) in the body, or keep what was
generated. Every response must be no 5xx, have a documented status (or one listed below, which the protocol's
document leaves out), a documented content type and a body that matches the documented schema.
"""

from __future__ import annotations

import copy

import httpx
import hypothesis
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests import oip_document
from tests.fuzzing import hypothesis_settings, node_id_for_schemathesis, schemathesis_config  # noqa: F401 (autouse)
from tests.server import Server

pytestmark = [pytest.mark.server, pytest.mark.slow]

SEED = 20_261_201
MAX_EXAMPLES = 40
NOT_THE_PROTOCOL = ("/infer_stream", "/generate", "/generate_stream")

# statuses the protocol's documents leave out, which nnserve answers and the protocol's prose allows ("an error
# status"); any other undocumented status fails the test
UNDOCUMENTED = {
    400: "a body the document's own schema refuses (the repository index documents 200 only)",
    404: "a model or version that is not served (the ready routes document 200 only)",
    413: "a body over NNSERVE_MAX_BODY_BYTES",
    415: "a body that is not JSON (or the binary tensor extension)",
    429: "no concurrency slot free",
    503: "draining or the model's queue is full",
}


def documented_or_listed_status(ctx, response, case):
    """status_code_conformance, except for the statuses in UNDOCUMENTED."""
    if response.status_code == 400 and not case.operation.body:
        return status_code_conformance(ctx, response, case)  # a request without a body has no body to refuse
    if response.status_code in UNDOCUMENTED:
        return None
    return status_code_conformance(ctx, response, case)


CHECKS = [not_a_server_error, documented_or_listed_status, content_type_conformance, response_schema_conformance]


def prepared(document: dict) -> dict:
    """The document with the two changes the module docstring lists, and nothing else."""
    doc = copy.deepcopy(document)
    doc["paths"] = {p: v for p, v in doc["paths"].items() if not p.endswith(NOT_THE_PROTOCOL)}
    schemas = doc.get("components", {}).get("schemas", {})
    if "TensorData" in schemas:
        schemas["TensorData"] = {
            "type": "array",
            "items": {
                "anyOf": [
                    {"$ref": "#/components/schemas/TensorData"},
                    {"type": "number"},
                    {"type": "string"},
                    {"type": "boolean"},
                ]
            },
        }
    return doc


def fitting_request(meta: dict, rows: int = 2) -> dict:
    """An inference request that fits a model's /v2 metadata: each input with ``rows`` rows, every free dimension
    1 after the batch, harmless values of the input's datatype."""
    inputs = []
    for t in meta["inputs"]:
        shape = [rows] + [d if d > 0 else 1 for d in t["shape"][1:]]
        n = 1
        for d in shape:
            n *= d
        value = {"BYTES": "a quietly wonderful film", "FP32": 0.25, "BOOL": True}.get(t["datatype"], 1)
        inputs.append({"name": t["name"], "shape": shape, "datatype": t["datatype"], "data": [value] * n})
    return {"inputs": inputs}


def _steer(models: dict[str, dict]):
    """A ``flatmap_case`` hook: a case keeps what was generated, or names a served model and version in its path
    (keeping its generated body, so a real model meets bad requests), or does that and, for inference, carries a
    request that fits the model."""
    names = sorted(models)

    def steer(context, case):
        params = case.path_parameters or {}
        if "model_name" not in params:
            return st.just(case)

        def apply(choice):
            how, name = choice
            if how == "generated":
                return case
            case.path_parameters = {**params, "model_name": name}
            if "model_version" in params:
                case.path_parameters["model_version"] = models[name]["versions"][-1]
            if how == "fit" and case.operation.path.endswith("/infer"):
                case.body = fitting_request(models[name])
            return case

        how = st.sampled_from(["generated", "name", "fit", "fit"])
        return st.tuples(how, st.sampled_from(names)).map(apply)

    return steer


def _schema(document: str, url: str):
    config = schemathesis_config(SEED, MAX_EXAMPLES)
    schema = schemathesis.openapi.from_dict(prepared(oip_document.load(document)), config=config)
    schema.config.update(base_url=url)
    models = {}
    for card in httpx.get(f"{url}/v1/models", timeout=10).json()["models"]:
        models[card["name"]] = httpx.get(f"{url}/v2/models/{card['name']}", timeout=10).json()
    schema.hook("flatmap_case")(_steer(models))
    return schema


@pytest.fixture(scope="module")
def dataplane_schema(server):
    return _schema("dataplane", server.url)


@pytest.fixture(scope="module")
def repository_schema(artifact_root, tmp_path_factory):
    """The repository extension needs a server that lets clients load and unload (its own: the fuzz unloads)."""
    srv = Server(
        artifact_root,
        tmp_path_factory.mktemp("oip-repository") / "serve.log",
        NNSERVE_MODEL_CONTROL="explicit",
        NNSERVE_REPOSITORY_OPEN="true",
    )
    srv.start()
    yield _schema("repository", srv.url)
    srv.stop()


dataplane = schemathesis.pytest.from_fixture("dataplane_schema")
repository = schemathesis.pytest.from_fixture("repository_schema")


@dataplane.parametrize()
@hypothesis_settings(MAX_EXAMPLES, suppress=list(hypothesis.HealthCheck))
def test_the_data_plane_answers_as_the_protocol_documents(case):
    case.call_and_validate(checks=CHECKS, timeout=30)


@repository.parametrize()
@hypothesis_settings(MAX_EXAMPLES, suppress=list(hypothesis.HealthCheck))
def test_the_repository_extension_answers_as_the_protocol_documents(case):
    case.call_and_validate(checks=CHECKS, timeout=60)


def test_the_document_is_the_protocol_s():
    """A guard on the source: the pinned package's data plane is the protocol's 2.0 document with its routes."""
    doc = oip_document.load("dataplane")
    assert doc["info"]["title"] == "Data Plane" and doc["info"]["version"] == "2.0"
    paths = set(prepared(doc)["paths"])
    assert {"/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/{model_name}/infer"} <= paths
    assert "/v2/models/{model_name}/versions/{model_version}/infer" in paths
