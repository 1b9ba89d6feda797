"""Every request limit is a setting, enforced on /v1 and /v2 with 413/400, and stated in the OpenAPI document;
and no input makes the server fetch a URL (BentoML's image/file inputs would; nnserve does not use them)."""

from __future__ import annotations

import base64
import http.server
import io
import threading
from typing import ClassVar

import httpx
import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from tests.conftest import assert_envelope, png_bytes
from tests.server import Server

pytestmark = [pytest.mark.server, pytest.mark.slow]
LIMITS = {
    "NNSERVE_MAX_IMAGES": "2",
    "NNSERVE_MAX_TEXTS": "2",
    "NNSERVE_MAX_TEXT_CHARS": "40",
    "NNSERVE_TEXT_WINDOWS": "1",
    "NNSERVE_MAX_INFERENCE_ID_CHARS": "16",
    "NNSERVE_MAX_EXPLAIN_CHARS": "50",
    "NNSERVE_MAX_SAMPLES": "3",
    "NNSERVE_MAX_BODY_BYTES": "60000",
    "NNSERVE_MAX_IMAGE_PIXELS": "2000",
    "NNSERVE_MAX_IMAGE_BYTES": "5000",
    "NNSERVE_METRICS_MAX_AGE_S": "30",
    "NNSERVE_RECALL_SWEEPS": "1",
}


@pytest.fixture(scope="module")
def tight(artifact_root, tmp_path_factory):
    srv = Server(artifact_root, tmp_path_factory.mktemp("limits") / "serve.log", **LIMITS).start()
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        yield c
    srv.stop()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def digit() -> bytes:
    return png_bytes(np.random.default_rng(0).integers(0, 255, (28, 28), dtype=np.uint8))


def padded_png(extra: int) -> bytes:
    """A 28x28 PNG made larger by a text chunk (few pixels, many bytes)."""
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "x" * extra)
    buf = io.BytesIO()
    Image.new("L", (28, 28)).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def test_images_per_request(tight):
    ok = tight.post("/v1/classify", json={"model": "digits-cnn", "images": [b64(digit())] * 2})
    assert ok.status_code == 200, ok.text
    for path, model in (("/v1/classify", "digits-cnn"), ("/v1/encode", "digits-ae"), ("/v1/reconstruct", "digits-ae")):
        assert_envelope(tight.post(path, json={"model": model, "images": [b64(digit())] * 3}), 400, "invalid_request")


def test_image_pixels_and_bytes(tight):
    big = png_bytes(np.zeros((50, 50), np.uint8))  # 2,500 pixels
    assert_envelope(
        tight.post("/v1/classify", json={"model": "digits-cnn", "images": [b64(big)]}), 413, "image_too_large"
    )
    upload = tight.post(
        "/v1/classify/upload", files={"image": ("d.png", big, "image/png")}, data={"model": "digits-cnn"}
    )
    assert_envelope(upload, 413, "image_too_large")
    heavy = padded_png(6000)
    assert len(heavy) > 5000
    r = tight.post("/v1/classify", json={"model": "digits-cnn", "images": [b64(heavy)]})
    assert_envelope(r, 413, "image_too_large")
    upload = tight.post(
        "/v1/classify/upload", files={"image": ("d.png", heavy, "image/png")}, data={"model": "digits-cnn"}
    )
    # the limit, not the bytes the route read before it stopped (limit + 1), nor a size it never learnt
    assert assert_envelope(upload, 413, "image_too_large")["message"] == "images[0] is over the limit of 5000 bytes"


def test_texts_and_characters(tight):
    assert tight.post("/v1/sentiment", json={"model": "synthetic-lstm", "texts": ["a" * 40, "b"]}).status_code == 200
    assert_envelope(
        tight.post("/v1/sentiment", json={"model": "synthetic-lstm", "texts": ["a"] * 3}), 400, "invalid_request"
    )
    assert_envelope(
        tight.post("/v1/sentiment", json={"model": "synthetic-lstm", "texts": ["a" * 41]}), 400, "invalid_request"
    )
    explain = {"model": "synthetic-attn", "explain": True}
    assert tight.post("/v1/sentiment", json={**explain, "texts": ["a good film " * 3, "b" * 10]}).status_code == 200
    err = assert_envelope(
        tight.post("/v1/sentiment", json={**explain, "texts": ["a" * 40, "b" * 11]}), 400, "invalid_request"
    )
    assert "explain" in err["message"]
    assert (
        tight.post("/v1/sentiment", json={"model": "synthetic-attn", "texts": ["a" * 40, "b" * 11]}).status_code == 200
    )
    # 40 tokens, one window of the model's 24 read (NNSERVE_TEXT_WINDOWS=1): cut, and said so
    (p,) = tight.post("/v1/sentiment", json={"model": "synthetic-lstm", "texts": ["!" * 40]}).json()["predictions"]
    assert (p["tokens"], p["tokens_read"], p["windows"], p["truncated"]) == (40, 24, 1, True)
    text = {"name": "text", "datatype": "BYTES"}
    v2 = "/v2/models/synthetic-lstm/infer"
    one = {**text, "shape": [1], "data": ["good"]}
    assert tight.post(v2, json={"id": "x" * 16, "inputs": [one]}).json()["id"] == "x" * 16
    r = tight.post(v2, json={"id": "x" * 17, "inputs": [one]})
    assert r.status_code == 400 and "id" in r.json()["error"]
    assert tight.post(v2, json={"inputs": [{**text, "shape": [2], "data": ["good", "a" * 40]}]}).status_code == 200
    r = tight.post(v2, json={"inputs": [{**text, "shape": [3], "data": ["a", "b", "c"]}]})
    assert r.status_code == 400 and "rows per request" in r.json()["error"]
    r = tight.post(v2, json={"inputs": [{**text, "shape": [1], "data": ["a" * 41]}]})
    assert r.status_code == 400 and "40 characters" in r.json()["error"]


def test_samples_per_request(tight):
    assert tight.post("/v1/generate", json={"model": "digits-cgan", "n": 3}).status_code == 200
    assert_envelope(tight.post("/v1/generate", json={"model": "digits-cgan", "n": 4}), 400, "invalid_request")
    assert_envelope(tight.post("/v1/generate/png", json={"model": "digits-cgan", "n": 4}), 400, "invalid_request")
    r = tight.post("/v1/interpolate", json={"model": "digits-vae", "steps": 4, "seed_a": 1, "seed_b": 2})
    assert_envelope(r, 400, "invalid_request")
    z = {"name": "z", "datatype": "FP32", "shape": [4, 16], "data": [0.0] * 64}
    y = {"name": "labels", "datatype": "INT64", "shape": [4], "data": [0] * 4}
    r = tight.post("/v2/models/digits-cgan/infer", json={"inputs": [z, y]})
    assert r.status_code == 400 and "rows per request" in r.json()["error"]


def test_body_size_on_both_apis(tight):
    body = {"model": "digits-cnn", "images": ["A" * 61000]}
    assert_envelope(tight.post("/v1/classify", json=body), 413, "payload_too_large")
    x = {"name": "input", "datatype": "FP32", "shape": [1, 1, 28, 28], "data": [0.5] * 784}
    r = tight.post("/v2/models/digits-cnn/infer", json={"inputs": [x], "parameters": {"note": "x" * 61000}})
    assert r.status_code == 413 and set(r.json()) == {"error"}, r.text

    def chunks():  # no Content-Length: the limit holds on the bytes received
        for _ in range(8):
            yield b"x" * 10000

    r = tight.post("/v2/models/digits-cnn/infer", content=chunks())
    assert r.status_code == 413 and set(r.json()) == {"error"}, r.text


def test_the_openapi_document_states_the_limits(tight):
    schemas = tight.get("/docs.json").json()["components"]["schemas"]
    assert schemas["ClassifyImagesRequest"]["properties"]["images"]["maxItems"] == 2
    texts = schemas["AnalyzeSentimentRequest"]["properties"]["texts"]
    assert texts["maxItems"] == 2 and texts["items"]["maxLength"] == 40
    assert schemas["GenerateRequest"]["properties"]["n"]["maximum"] == 3


class _Recorder(http.server.BaseHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        _Recorder.hits.append(self.path)
        self.send_response(200)
        self.send_header("content-type", "image/png")
        body = png_bytes(np.zeros((28, 28), np.uint8))
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_no_input_makes_the_server_fetch_a_url(tight):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/digit.png"
    try:
        assert_envelope(tight.post("/v1/classify", json={"model": "digits-cnn", "images": [url]}), 400, "invalid_image")
        r = tight.post("/v1/classify/upload", files={"image": (None, url)}, data={"model": "digits-cnn"})
        assert_envelope(r, 400, "invalid_request")
        r = tight.post("/v1/classify/upload", data={"model": "digits-cnn", "image": url})
        assert_envelope(r, 415, "unsupported_media_type")
        r = tight.post("/v1/interpolate", json={"model": "digits-vae", "images": [url, url]})
        assert_envelope(r, 400, "invalid_image")
        text = {"name": "text", "datatype": "BYTES", "shape": [1], "data": [url]}  # read as words, not fetched
        assert tight.post("/v2/models/synthetic-lstm/infer", json={"inputs": [text]}).status_code == 200
        # and the document offers no URL-typed input anywhere
        assert '"format":"uri"' not in tight.get("/docs.json").text.replace(" ", "")
    finally:
        httpd.shutdown()
    assert _Recorder.hits == []


def test_the_metrics_page_is_rendered_at_most_once_per_max_age(tight):
    first = tight.get("/metrics")  # one keep-alive connection: one worker, whose render is kept 30 s
    for _ in range(3):
        assert_envelope(tight.post("/v1/classify", json={"model": "digits-cnn", "images": []}), 400, "invalid_request")
    again = tight.get("/metrics", params={"name[]": "nnserve_errors_total"})  # a filter is no render of its own
    assert first.status_code == again.status_code == 200 and "nnserve_errors_total" in first.text
    assert again.text == first.text  # the counters moved; the page served is the kept one


def test_recall_stops_at_the_sweep_limit_unless_the_request_names_one(tight, artifact_root):
    """NNSERVE_RECALL_SWEEPS: a /v1/recall naming no max_sweeps runs at most that many sweeps."""
    from tests.test_recall_http import MODEL, flipped

    cue = flipped(np.where(np.arange(784) % 3 == 0, 1, -1), 0.3, seed=1)
    r = tight.post("/v1/recall", json={"model": MODEL, "states": [cue]})
    assert r.status_code == 200, r.text
    assert (r.json()["results"][0]["sweeps"], r.json()["results"][0]["outcome"]) == (1, "max-sweeps")
    r = tight.post("/v1/recall", json={"model": MODEL, "states": [cue], "max_sweeps": 20})
    assert r.json()["results"][0]["sweeps"] > 1


def test_an_upload_form_of_too_many_parts_is_a_400(client):
    """Starlette's multipart bounds (1,000 fields, 1,000 files), the README's limits table: a clear 400 in the
    envelope, not a 500, for parts beside the one image."""
    files = [("image", ("d.png", digit(), "image/png"))]
    r = client.post("/v1/classify/upload", files=files, data={f"f{i}": "1" for i in range(1001)})
    assert "Maximum number of fields is 1000" in assert_envelope(r, 400, "invalid_request")["message"]
    many = files + [(f"x{i}", ("a.png", b"x", "image/png")) for i in range(1001)]
    r = client.post("/v1/classify/upload", files=many)
    assert "Maximum number of files is 1000" in assert_envelope(r, 400, "invalid_request")["message"]
