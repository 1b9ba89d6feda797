"""The Open Inference Protocol v2 at /v2, driven by the official third-party client (``tritonclient[http]``)
against a real ``bentoml serve``; every answer is checked against the /v1 answer for the same input.

Models: an image classifier, the sentiment LSTM, a conditional GAN and an autoencoder (tests/conftest.py).
"""

from __future__ import annotations

import base64
import io
import json
import struct

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from PIL import Image
from tritonclient.utils import InferenceServerException

import service
from contract.images import decode_image, normalize, prepare_image, to_uint8
from contract.metadata import ModelMetadata
from tests.conftest import png_bytes

pytestmark = [pytest.mark.server, pytest.mark.slow]
CNN, LSTM, GAN, AE = "digits-cnn", "synthetic-lstm", "digits-cgan", "digits-ae"
TEXTS = ["the film is wonderful", "THE ENDING IS AWFUL.", "unknown words only"]  # the synthetic corpus's grammar


@pytest.fixture(scope="module")
def pngs(digits) -> list[bytes]:
    return [png_bytes(np.asarray(a[0])) for a in digits.images[:5]]


def metadata(artifact_root, name: str) -> ModelMetadata:
    return ModelMetadata.model_validate_json((artifact_root / name / "model.json").read_text())


def preprocessed(meta: ModelMetadata, pngs: list[bytes]) -> np.ndarray:
    """The images as the model takes them: the training contract's preprocessing (contract/)."""
    pre = meta.image_preprocessing()
    return np.stack([normalize(prepare_image(decode_image(b, max_pixels=10**6), pre), pre) for b in pngs]).astype(
        np.float32
    )


def softmax(z: np.ndarray, meta: ModelMetadata | None = None) -> np.ndarray:
    """/v1's probabilities from /v2's logits: softmax(logits / T), T the artifact's calibrated temperature."""
    z = z / (meta.calibration.temperature if meta is not None and meta.calibration else 1.0)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


OOD_FLAG = {"name": "out_of_distribution", "datatype": "BOOL", "shape": [-1]}
OOD_REASON = {"name": "ood_reason", "datatype": "BYTES", "shape": [-1]}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# ---- health and metadata ------------------------------------------------------------------------------


def test_server_health_and_metadata(tc, client):
    assert tc.is_server_live() and tc.is_server_ready()
    meta = tc.get_server_metadata()
    assert meta["name"] == "nnserve" and {"binary_tensor_data", "classification"} <= set(meta["extensions"])
    assert meta["version"] == service.__version__
    assert client.get("/v2").json() == meta  # the protocol's URL has no trailing slash
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}


def test_model_metadata_is_the_graphs_tensors(tc, artifact_root):
    for name in (CNN, GAN, AE):
        meta = metadata(artifact_root, name)
        got = tc.get_model_metadata(name)
        assert got["name"] == name and got["versions"] == [meta.version] and got["platform"] == "onnxruntime_onnx"
        want_dtype = {"float32": "FP32", "int64": "INT64"}
        assert got["inputs"] == [
            {"name": t.name, "datatype": want_dtype[t.dtype], "shape": t.shape} for t in meta.inputs
        ]
        flag = [OOD_FLAG, OOD_REASON] if meta.ood is not None else []  # calibrated: the flag and why, beside the score
        assert (
            got["outputs"]
            == [{"name": t.name, "datatype": want_dtype[t.dtype], "shape": t.shape} for t in meta.outputs] + flag
        )
        assert tc.get_model_metadata(name, model_version=meta.version) == got
    text = tc.get_model_metadata(LSTM)  # texts in, tokenised by nnserve with the artifact's vocabulary
    assert text["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert text["outputs"] == [
        {"name": "logits", "datatype": "FP32", "shape": [-1, 2]},
        {"name": "ood_score", "datatype": "FP32", "shape": [-1]},
        OOD_FLAG,
        OOD_REASON,
        {"name": "tokens", "datatype": "INT64", "shape": [-1]},  # how much of each text was read, on request
        {"name": "tokens_read", "datatype": "INT64", "shape": [-1]},
    ]


def test_model_readiness(tc):
    assert tc.is_model_ready(CNN) and tc.is_model_ready(CNN, model_version="1")
    assert not tc.is_model_ready(CNN, model_version="99")
    assert not tc.is_model_ready("no-such-model")


# ---- inference equals /v1 -----------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_image_classifier_equals_v1(tc, client, artifact_root, pngs, binary):
    meta = metadata(artifact_root, CNN)
    x = preprocessed(meta, pngs)
    inp = triton.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = triton.InferRequestedOutput("logits", binary_data=binary)
    result = tc.infer(CNN, [inp], outputs=[out], request_id="req-7")
    logits = result.as_numpy("logits")
    assert logits.shape == (5, 10) and logits.dtype == np.float32
    assert result.get_response()["id"] == "req-7" and result.get_response()["model_version"] == meta.version

    v1 = client.post("/v1/classify", json={"model": CNN, "images": [b64(p) for p in pngs], "top_k": 10}).json()
    probs = softmax(logits.astype(np.float64), meta)
    for p, pred in zip(probs, v1["predictions"], strict=True):
        assert meta.labels[int(p.argmax())] == pred["label"]
        for entry in pred["top_k"]:
            assert p[meta.labels.index(entry["label"])] == pytest.approx(entry["score"], abs=1e-6)


def test_classification_extension(tc, artifact_root, pngs):
    meta = metadata(artifact_root, CNN)
    x = preprocessed(meta, pngs)
    inp = triton.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    plain = tc.infer(CNN, [inp]).as_numpy("logits")  # no outputs named: all of them, binary
    top = tc.infer(CNN, [inp], outputs=[triton.InferRequestedOutput("logits", class_count=3)]).as_numpy("logits")
    assert top.shape == (5, 3)
    for row, logits in zip(top, plain, strict=True):
        entries = [e.decode().split(":") for e in row]
        assert [int(i) for _, i, _ in entries] == list(np.argsort(-logits, kind="stable")[:3])
        assert [lbl for _, _, lbl in entries] == [meta.labels[int(i)] for _, i, _ in entries]
        assert [float(v) for v, _, _ in entries] == pytest.approx(
            [float(logits[int(i)]) for _, i, _ in entries], abs=1e-5
        )


def test_sentiment_equals_v1(tc, client, artifact_root):
    inp = triton.InferInput("text", [len(TEXTS)], "BYTES")
    inp.set_data_from_numpy(np.array([t.encode() for t in TEXTS], dtype=np.object_))
    logits = tc.infer(LSTM, [inp]).as_numpy("logits")
    v1 = client.post("/v1/sentiment", json={"model": LSTM, "texts": TEXTS}).json()
    meta = metadata(artifact_root, LSTM)
    probs = softmax(logits.astype(np.float64), meta)
    for p, pred in zip(probs, v1["predictions"], strict=True):
        assert pred["probs"]["positive"] == pytest.approx(p[1], abs=1e-6)
    assert v1["predictions"][0]["label"] == "positive" and v1["predictions"][1]["label"] == "negative"
    # a text without one known word carries no evidence: 1/K on /v1, logits of 0 on /v2 (they were the graph's
    # reading of a row of <unk>, which the README's softmax turned into a confident answer)
    assert v1["predictions"][2]["probs"] == {"negative": 0.5, "positive": 0.5} and logits[2].tolist() == [0.0, 0.0]

    # the same in plain JSON, with the protocol's own request shape
    body = {"inputs": [{"name": "text", "shape": [len(TEXTS)], "datatype": "BYTES", "data": TEXTS}]}
    r = client.post(f"/v2/models/{LSTM}/infer", json=body)
    assert r.status_code == 200, r.text
    (out,) = r.json()["outputs"]
    assert out["name"] == "logits" and out["shape"] == [3, 2] and out["datatype"] == "FP32"
    assert np.allclose(np.asarray(out["data"]).reshape(3, 2), logits, atol=1e-6)


def test_sentiment_counts_tokens_as_v1(tc, client):
    """How much of each text was read, on request: /v1's tokens and tokens_read, so a client of /v2 too can tell
    a long review read in part (max_len 24, 8 windows: 192 tokens at most) from one read whole."""
    texts = [*TEXTS, "the film is wonderful . " * 60, ""]
    v1 = client.post("/v1/sentiment", json={"model": LSTM, "texts": texts[:-1]}).json()["predictions"]
    assert v1[3]["truncated"] and v1[3]["tokens_read"] < v1[3]["tokens"]
    inp = triton.InferInput("text", [len(texts)], "BYTES")
    inp.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=np.object_))
    asked = [triton.InferRequestedOutput(n) for n in ("tokens", "tokens_read", "logits")]
    r = tc.infer(LSTM, [inp], outputs=asked)
    assert r.as_numpy("tokens").tolist()[:-1] == [p["tokens"] for p in v1]
    assert r.as_numpy("tokens_read").tolist()[:-1] == [p["tokens_read"] for p in v1]
    assert r.as_numpy("tokens").dtype == np.int64 and r.as_numpy("logits").shape == (len(texts), 2)
    # an empty text (served on /v2, a 400 on /v1) has no token, and none is read
    assert (r.as_numpy("tokens")[-1], r.as_numpy("tokens_read")[-1]) == (0, 0)
    assert {o["name"] for o in client.get(f"/v2/models/{LSTM}").json()["outputs"]} >= {"tokens", "tokens_read"}
    # not asked for, not sent
    assert [o.get("name") for o in tc.infer(LSTM, [inp]).get_response()["outputs"]] == ["logits"]


def test_parameter_maps_are_bounded_as_over_grpc(client, pngs, artifact_root):
    """64 entries a parameters map, names of 256 characters, as gRPC's: 999,000 entries took a second to
    validate (a limits audit)."""
    x = preprocessed(metadata(artifact_root, CNN), pngs[:1])
    inp = {"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}
    for where in ("request", "input", "output"):
        for n, status in ((64, 200), (65, 400)):
            params = {f"k{i}": i for i in range(n)}
            body = {"inputs": [{**inp, "parameters": params} if where == "input" else inp]}
            body |= {"parameters": params} if where == "request" else {}
            body |= {"outputs": [{"name": "logits", "parameters": params}]} if where == "output" else {}
            r = client.post(f"/v2/models/{CNN}/infer", json=body)
            assert r.status_code == status and ("64" in r.json()["error"] if status == 400 else True), (where, r.text)
    r = client.post(f"/v2/models/{CNN}/infer", json={"inputs": [inp], "parameters": {"k" * 257: 1}})
    assert r.status_code == 400 and "256" in r.json()["error"], r.text


def test_generator_equals_v1(tc, client, artifact_root):
    """The same latents as /v1/generate's seed (numpy's default_rng) give the same images."""
    meta = metadata(artifact_root, GAN)
    assert meta.generator is not None
    seed, n, label = 1234, 6, 3
    z = np.random.default_rng(seed).standard_normal((n, meta.generator.latent_dim), dtype=np.float32)
    zi = triton.InferInput("z", list(z.shape), "FP32")
    zi.set_data_from_numpy(z)
    yi = triton.InferInput("labels", [n], "INT64")
    yi.set_data_from_numpy(np.full(n, label, dtype=np.int64))
    images = tc.infer(GAN, [zi, yi]).as_numpy("image")
    assert images.shape == (n, 1, 28, 28) and images.min() >= 0.0 and images.max() <= 1.0

    v1 = client.post("/v1/generate", json={"model": GAN, "n": n, "seed": seed, "label": label}).json()
    for img, sample in zip(images, v1["samples"], strict=True):
        png = np.asarray(Image.open(io.BytesIO(base64.b64decode(sample))))
        assert np.array_equal(np.asarray(to_uint8(img))[0], png)


def test_autoencoder_equals_v1(tc, client, artifact_root, pngs):
    meta = metadata(artifact_root, AE)
    x = preprocessed(meta, pngs[:3])
    inp = triton.InferInput(meta.inputs[0].name, list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = tc.infer(AE, [inp])
    codes = result.as_numpy("code")
    v1 = client.post("/v1/encode", json={"model": AE, "images": [b64(p) for p in pngs[:3]]}).json()
    assert np.allclose(codes, np.asarray(v1["codes"]), atol=1e-5)
    recon = client.post("/v1/reconstruct", json={"model": AE, "images": [b64(p) for p in pngs[:3]]}).json()
    errors = ((result.as_numpy("reconstruction") - x) ** 2).reshape(3, -1).sum(axis=1)
    assert errors == pytest.approx([r["error"] for r in recon["results"]], rel=1e-4)


# ---- errors: the protocol's shape, never a 500 ------------------------------------------------------


def oip_error(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"]
    return body["error"]


def infer_json(client, model: str, inputs: list[dict], **extra) -> httpx.Response:
    return client.post(f"/v2/models/{model}/infer", json={"inputs": inputs, **extra})


def test_errors_are_the_protocols_shape(client, artifact_root):
    ok = {"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [0.0] * 784}
    assert "no model named" in oip_error(infer_json(client, "nope", [ok]), 404)
    assert "no version" in oip_error(client.post(f"/v2/models/{CNN}/versions/9/infer", json={"inputs": [ok]}), 404)
    assert oip_error(client.get("/v2/nothing/here"), 404)
    cases = [
        ([{**ok, "datatype": "INT64"}], "is FP32, not INT64"),
        ([{**ok, "shape": [1, 28, 28]}], "has shape"),
        ([{**ok, "shape": [1, 1, 28, 27]}], "has shape"),
        ([{**ok, "data": [0.0] * 783}], "needs 784 values"),
        ([{**ok, "data": ["x"] * 784}], "must be numbers"),
        ([{**ok, "name": "pixels"}], "takes inputs"),
        ([ok, ok], "takes inputs"),
        ([{**ok, "shape": [0, 1, 28, 28], "data": []}], "rows per request"),
        ([{**ok, "shape": [65, 1, 28, 28], "data": [0.0] * 784 * 65}], "rows per request"),
        ([{k: v for k, v in ok.items() if k != "data"}], "neither data nor binary_data_size"),
    ]
    for inputs, message in cases:
        assert message in oip_error(infer_json(client, CNN, inputs), 400), inputs
    assert "not" in oip_error(infer_json(client, CNN, [ok], outputs=[{"name": "probs"}]), 400)
    twice = [{"name": "logits", "parameters": {"classification": 2}}, {"name": "logits"}]
    assert "more than once" in oip_error(infer_json(client, CNN, [ok], outputs=twice), 400)
    assert "more than the shape" in oip_error(infer_json(client, CNN, [{**ok, "data": [0.0] * 785}]), 400)
    assert "classification" in oip_error(
        infer_json(client, AE, [{**ok}], outputs=[{"name": "code", "parameters": {"classification": 2}}]), 400
    )
    bad_json = client.post(
        f"/v2/models/{CNN}/infer", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert "invalid inference request" in oip_error(bad_json, 400)
    assert oip_error(client.post(f"/v2/models/{CNN}/infer", json={"inputs": []}), 400)


def test_value_errors(client):
    nan = {"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [0.0] * 783 + [1e39]}
    assert oip_error(infer_json(client, CNN, [nan]), 400)  # 1e39 is inf in float32
    # a protocol audit's (2026-12-06): finite inputs of 1e38 make the graph's logits and score NaN, and NaN above
    # the threshold is false: a confident "3" unflagged, and the top k of NaN logits was served
    huge = {**nan, "data": [0.0] + [1e38] * 783}
    flags = [{"name": "out_of_distribution"}, {"name": "ood_score", "parameters": {"binary_data": True}}]
    r = infer_json(client, CNN, [huge], outputs=flags)
    assert r.status_code == 200, r.text
    header = json.loads(r.content[: int(r.headers["inference-header-content-length"])])
    assert header["outputs"][0]["data"] == [True]
    assert np.isnan(np.frombuffer(r.content[-4:], dtype="<f4")).all()
    top = [{"name": "logits", "parameters": {"classification": 2}}]
    assert "not finite" in oip_error(infer_json(client, CNN, [huge], outputs=top), 400)
    as_number = [{"name": "logits", "parameters": {"classification": 2.0}}]  # the protocol's $number
    r = infer_json(client, CNN, [{**nan, "data": [0.0] * 784}], outputs=as_number)
    assert len(r.json()["outputs"][0]["data"]) == 2
    z = {"name": "z", "shape": [1, 16], "datatype": "FP32", "data": [0.0] * 16}
    y = {"name": "labels", "shape": [1], "datatype": "INT64", "data": [10]}
    assert "not a class index" in oip_error(infer_json(client, GAN, [z, y]), 400)
    y_huge = {**y, "data": [2**70]}
    assert oip_error(infer_json(client, GAN, [z, y_huge]), 400)
    nested = {"name": "text", "shape": [1], "datatype": "BYTES", "data": [[[[[[[[[[["deep"]]]]]]]]]]]}
    assert "nested" in oip_error(infer_json(client, LSTM, [nested]), 400)
    ragged = {"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [[0.5] * 700, [[0.1] * 84]]}
    assert "regular" in oip_error(infer_json(client, CNN, [ragged]), 400)  # a protocol audit's: it was served
    deep = {**ragged, "data": [[[0.5] * 392, [0.5] * 392], [[0.5] * 784]]}  # siblings alike, cousins not
    assert "regular" in oip_error(infer_json(client, CNN, [{**deep, "shape": [2, 1, 28, 28]}]), 400)
    # flat data is checked by its values' types, nested data after flattening: JSON's true, null, strings and
    # objects are no numbers, and an INT64 tensor takes no fractions
    pixels = {"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32"}
    for odd in (True, None, "0.5", {"v": 1}):
        for data in ([0.0] * 783 + [odd], [[0.0] * 783 + [odd]]):
            assert "must be numbers" in oip_error(infer_json(client, CNN, [{**pixels, "data": data}]), 400), odd
    assert "INT64 data must be integers" in oip_error(infer_json(client, GAN, [z, {**y, "data": [1.5]}]), 400)
    rows = [[[[float(v) / 784 for v in range(r * 28, r * 28 + 28)] for r in range(28)]]]
    flat = [v for row in rows[0][0] for v in row]
    by_rows, by_flat = (infer_json(client, CNN, [{**pixels, "data": d}]) for d in (rows, flat))
    assert by_rows.status_code == by_flat.status_code == 200
    assert by_rows.json()["outputs"] == by_flat.json()["outputs"]


def test_binary_framing_errors(client):
    header = json.dumps(
        {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 9}}]}
    ).encode()
    element = struct.pack("<I", 5) + b"great"
    url = f"/v2/models/{LSTM}/infer"
    good = client.post(url, content=header + element, headers={"Inference-Header-Content-Length": str(len(header))})
    assert good.status_code == 200, good.text  # no outputs named: all of them, as JSON
    cases = [
        (header + element[:-1], str(len(header))),  # binary_data_size does not fit
        (header + element + b"x", str(len(header))),  # bytes after the last input
        (header + element, str(len(header) + 100)),  # header length beyond the body
        (header + element, "twelve"),
    ]
    for body, length in cases:
        oip_error(client.post(url, content=body, headers={"Inference-Header-Content-Length": length}), 400)
    for odd in ("²".encode("latin-1"), b"9" * 5000):  # isdigit() is true for "²"; int() refuses 4,301+ digits
        oip_error(client.post(url, content=header + element, headers={"Inference-Header-Content-Length": odd}), 400)
    # a protocol audit's: sent twice with different values, the first was taken; the same value twice is one
    for second in (str(len(header) + 1), str(len(header))):
        twice = [("Inference-Header-Content-Length", str(len(header))), ("Inference-Header-Content-Length", second)]
        r = client.post(url, content=header + element, headers=twice)
        assert r.status_code == (200 if second == str(len(header)) else 400), r.text
    many = json.dumps(
        {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 4000}}]}
    ).encode()
    r = client.post(url, content=many + b"\x00" * 4000, headers={"Inference-Header-Content-Length": str(len(many))})
    assert "more than the shape's 1 elements" in oip_error(r, 400)
    short = json.dumps(
        {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 3}}]}
    ).encode()
    r = client.post(url, content=short + b"\x09\x00\x00", headers={"Inference-Header-Content-Length": str(len(short))})
    assert "truncated" in oip_error(r, 400)
    both = json.dumps(  # data and binary data for one input: Triton refuses it; which would the model get?
        {
            "inputs": [
                {
                    "name": "text",
                    "shape": [1],
                    "datatype": "BYTES",
                    "data": ["awful"],
                    "parameters": {"binary_data_size": 9},
                }
            ]
        }
    ).encode()
    r = client.post(url, content=both + element, headers={"Inference-Header-Content-Length": str(len(both))})
    assert "both data and binary_data_size" in oip_error(r, 400)


def test_client_raises_the_servers_message(tc):
    inp = triton.InferInput("input", [1, 1, 28, 28], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 1, 28, 28), dtype=np.float32))
    with pytest.raises(InferenceServerException) as e:
        tc.infer("no-such-model", [inp])
    assert e.value.status() == "404" and "no model named" in e.value.message()


def test_errors_are_counted_under_their_own_code_and_the_code_header_stays_inside(client):
    r = client.post(
        "/v2/models/no-such-model/infer",
        json={"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [0]}]},
    )
    assert r.status_code == 404 and "x-nnserve-error-code" not in r.headers
    metrics = client.get("/metrics").text
    assert 'nnserve_errors_total{code="model_not_found",endpoint="/v2/models/{name}/infer"}' in metrics


def test_v2_errors_name_v2s_input_and_say_what_is_wrong(client):
    """A protocol audit: a number too large for FP32 was called "not finite", and /v2's text errors named /v1's
    field (texts[0])."""
    x = [1e300] + [0.0] * 783
    err = oip_error(
        infer_json(client, CNN, [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": x}]), 400
    )
    assert err == "input 'input': a value is out of FP32's range"
    long = {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a" * 10_001]}
    assert oip_error(infer_json(client, LSTM, [long]), 400) == "text[0] is over 10000 characters"
