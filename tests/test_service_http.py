"""The /v1 image API over real HTTP against a real ``bentoml serve`` with real ONNX artifacts."""

from __future__ import annotations

import base64
import concurrent.futures as cf
import io
import re
import threading
import time

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from contract.images import normalize, prepare_image
from contract.metadata import FLAGGED_RATIO_MAX, load_metadata
from tests.conftest import MAX_BODY, assert_envelope, png_bytes
from tests.server import client_per_thread
from tests.test_contract import huge_png_header

pytestmark = [pytest.mark.server, pytest.mark.slow]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def held_out(digits):
    """Validation digits (the split training never saw) as (uint8 28x28, label)."""
    from contract.data import stratified_split

    _, val = stratified_split(digits.labels, 0.1, 0)
    return [(digits.images[i, 0], int(digits.labels[i])) for i in val[:64]]


def classify(client, images, model="digits-cnn", top_k=3):
    return client.post("/v1/classify", json={"model": model, "images": images, "top_k": top_k})


# ---- health, cards, docs ------------------------------------------------------------------------


def test_health_and_readiness(client):
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code == 200


def test_model_cards(client):
    r = client.get("/v1/models")
    assert r.status_code == 200
    cards = {c["name"]: c for c in r.json()["models"]}
    assert set(cards) == {
        "digits-cnn",
        "digits-lenet5",
        "synthetic-lstm",
        "synthetic-attn",
        "digits-ae",
        "digits-cgan",
        "digits-vae",
        "digits-hopfield",
    }
    assert cards["digits-ae"]["anomaly"]["percentile"] == 99.0 and cards["digits-cnn"]["anomaly"] is None
    assert cards["synthetic-lstm"]["task"] == "text-classification"
    assert cards["synthetic-lstm"]["batching"]["max_batch_size"] == 128
    card = client.get("/v1/models/digits-cnn").json()
    assert card["ready"] is True and card["labels"] == [str(i) for i in range(10)]
    assert card["batching"] == {"mode": "api", "max_batch_size": 64, "max_latency_ms": None}
    assert "CPUExecutionProvider" in card["providers"]
    assert card["preprocessing"]["white_on_black"] is True and 0 < card["metrics"]["accuracy"] <= 1
    assert re.fullmatch(r"[0-9a-f]{64}", card["onnx_sha256"])
    assert_envelope(client.get("/v1/models/nope"), 404, "model_not_found")


def test_openapi_documents_every_v1_route(client):
    doc = client.get("/docs.json").json()
    for path in (
        "/v1/classify",
        "/v1/classify/upload",
        "/v1/models",
        "/v1/models/{name}",
        "/v1/sentiment",
        "/v1/reconstruct",
        "/v1/encode",
        "/v1/generate",
        "/v1/generate/png",
        "/v1/interpolate",
        "/v1/recall",
    ):
        assert path in doc["paths"], sorted(doc["paths"])
    png = doc["paths"]["/v1/generate/png"]["post"]["responses"]["200"]["content"]
    assert list(png) == ["image/png"]
    upload = doc["paths"]["/v1/classify/upload"]["post"]
    assert "multipart/form-data" in upload["requestBody"]["content"]


# ---- predictions ------------------------------------------------------------------------------------


def test_classify_png_and_jpeg_matches_in_process_onnxruntime(client, artifact_root, held_out):
    imgs = [png_bytes(a, fmt="PNG" if i % 2 else "JPEG") for i, (a, _) in enumerate(held_out[:16])]
    r = classify(client, [b64(b) for b in imgs], top_k=3)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "digits-cnn" and body["version"] == "1" and len(body["predictions"]) == 16
    meta = load_metadata(artifact_root / "digits-cnn")
    sess = ort.InferenceSession(str(artifact_root / "digits-cnn" / "model.onnx"), providers=["CPUExecutionProvider"])
    x = np.stack(
        [normalize(prepare_image(Image.open(io.BytesIO(b)), meta.preprocessing), meta.preprocessing) for b in imgs]
    )
    logits, scores = sess.run(["logits", "ood_score"], {"input": x})
    assert meta.calibration is not None and meta.ood is not None  # tests/conftest.py calibrates digits-cnn
    # the served probabilities are calibrated: at T, and a flagged answer at T * (score / threshold) ** power
    flagged = scores > meta.ood.threshold
    ratio = np.where(flagged, np.clip(scores / meta.ood.threshold, 1.0, FLAGGED_RATIO_MAX), 1.0)
    z = logits / (meta.calibration.temperature * ratio**meta.calibration.flagged_power)[:, None]
    probs = np.exp(z - z.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    for p, pred, ood in zip(probs, body["predictions"], scores, strict=True):
        assert pred["index"] == int(p.argmax()) and pred["label"] == str(pred["index"])
        assert pred["score"] == pytest.approx(float(p.max()), abs=1e-5)
        assert pred["ood_score"] == pytest.approx(float(ood), rel=1e-5)
        assert pred["out_of_distribution"] is (float(ood) > meta.ood.threshold)
        assert len(pred["top_k"]) == 3 and pred["top_k"][0]["label"] == pred["label"]
        assert [s["score"] for s in pred["top_k"]] == sorted((s["score"] for s in pred["top_k"]), reverse=True)


def test_held_out_digits_are_mostly_right(client, held_out):
    r = classify(client, [b64(png_bytes(a)) for a, _ in held_out])
    assert r.status_code == 200
    acc = np.mean([p["index"] == y for p, (_, y) in zip(r.json()["predictions"], held_out, strict=True)])
    assert acc >= 0.8  # 6 epochs on 1.6k digits; the point is real answers, not the score


def test_black_on_white_photo_style_digits_are_recognised(client, held_out):
    """A dark digit on white paper at another size gives the same answer as MNIST's white-on-black."""
    normal = [b64(png_bytes(a)) for a, _ in held_out[:32]]
    paper = [
        b64(png_bytes(255 - np.asarray(Image.fromarray(a).resize((140, 140), Image.Resampling.BILINEAR))))
        for a, _ in held_out[:32]
    ]
    rgba = []
    for a, _ in held_out[:32]:
        big = np.asarray(Image.fromarray(a).resize((96, 96)))
        px = np.zeros((96, 96, 4), dtype=np.uint8)
        px[..., 3] = big  # black ink on a transparent canvas
        rgba.append(b64(png_bytes(px, "RGBA")))
    labels = [[p["index"] for p in classify(client, imgs).json()["predictions"]] for imgs in (normal, paper, rgba)]
    assert np.mean(np.equal(labels[0], labels[1])) >= 0.9
    assert np.mean(np.equal(labels[0], labels[2])) >= 0.9


def test_top_k_is_capped_at_the_number_of_labels(client, held_out):
    r = classify(client, [b64(png_bytes(held_out[0][0]))], top_k=50)
    assert r.status_code == 200 and len(r.json()["predictions"][0]["top_k"]) == 10
    scores = [s["score"] for s in r.json()["predictions"][0]["top_k"]]
    assert sum(scores) == pytest.approx(1.0, abs=1e-6)


def test_prediction_does_not_depend_on_the_batch(client, held_out):
    """Alone, inside a batch of 64, and among concurrent requests: the same scores."""
    target = b64(png_bytes(held_out[5][0]))
    alone = classify(client, [target], top_k=10).json()["predictions"][0]
    others = [b64(png_bytes(a)) for a, _ in held_out[:63]]
    in_batch = classify(client, [*others[:31], target, *others[31:]], top_k=10).json()["predictions"][31]

    with client_per_thread(str(client.base_url)) as mine, cf.ThreadPoolExecutor(16) as pool:

        def one(img):
            return classify(mine(), [img], top_k=10).json()["predictions"][0]

        futures = [pool.submit(one, img) for img in others[:24]] + [pool.submit(one, target)]
        concurrent = futures[-1].result()
    for other in (in_batch, concurrent):
        assert other["label"] == alone["label"]
        for a, b in zip(alone["top_k"], other["top_k"], strict=True):
            assert a["label"] == b["label"] and a["score"] == pytest.approx(b["score"], abs=1e-5)


def test_concurrent_requests_are_batched(client, server, held_out):
    def batch_hist():
        text = client.get("/metrics").text
        count = sum(
            float(m) for m in re.findall(r'^nnserve_batch_size_count\{model="digits-lenet5"\} (\S+)$', text, re.M)
        )
        total = sum(
            float(m) for m in re.findall(r'^nnserve_batch_size_sum\{model="digits-lenet5"\} (\S+)$', text, re.M)
        )
        return count, total

    c0, s0 = batch_hist()
    imgs = [b64(png_bytes(a)) for a, _ in held_out[:48]]
    start = threading.Barrier(48)

    def send(img: str) -> int:
        # each thread's client opens its connection first and all send together: otherwise making 48 clients
        # and connections spreads the requests out so that none ever meet in the batcher (1 run in 3 here)
        http = mine()
        assert http.get("/livez").status_code == 200
        start.wait(timeout=30)
        return classify(http, [img], model="digits-lenet5").status_code

    with client_per_thread(str(client.base_url)) as mine, cf.ThreadPoolExecutor(48) as pool:
        codes = list(pool.map(send, imgs))
    assert codes == [200] * 48
    c1, s1 = batch_hist()
    assert s1 - s0 == 48  # every image went through the model service
    assert c1 - c0 < 48, "no two requests were ever batched together"


def test_multipart_upload(client, held_out):
    a, _ = held_out[3]
    want = classify(client, [b64(png_bytes(a))], top_k=2).json()["predictions"][0]
    for fmt, mime in (("PNG", "image/png"), ("JPEG", "image/jpeg")):
        files = {"image": (f"digit.{fmt.lower()}", png_bytes(a, fmt=fmt), mime)}
        r = client.post("/v1/classify/upload", files=files, data={"model": "digits-cnn", "top_k": "2"})
        assert r.status_code == 200, r.text
        pred = r.json()["predictions"][0]
        assert len(pred["top_k"]) == 2
        if fmt == "PNG":
            assert pred == want
    r = client.post(
        "/v1/classify/upload", files={"image": ("d.png", png_bytes(a), "image/png")}, data={"model": "digits-lenet5"}
    )
    assert r.status_code == 200 and r.json()["model"] == "digits-lenet5"


# ---- errors: every one an envelope with the right status, never a 500 ------------------------------

GOOD = b64(png_bytes(np.zeros((28, 28), dtype=np.uint8)))


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"model": "digits-cnn", "images": [b64(b"garbage bytes, not an image")]}, 400, "invalid_image"),
        ({"model": "digits-cnn", "images": ["!!!not base64!!!"]}, 400, "invalid_image"),
        ({"model": "digits-cnn", "images": [b64(png_bytes(np.ones((64, 64), np.uint8))[:60])]}, 400, "invalid_image"),
        ({"model": "digits-cnn", "images": [b64(huge_png_header(20000, 20000))]}, 413, "image_too_large"),
        ({"model": "no-such-model", "images": [GOOD]}, 404, "model_not_found"),
        ({"model": "digits-cnn", "images": []}, 400, "invalid_request"),
        ({"model": "digits-cnn", "images": [GOOD] * 65}, 400, "invalid_request"),
        ({"model": "digits-cnn", "images": [GOOD], "top_k": 0}, 400, "invalid_request"),
        ({"model": "digits-cnn", "images": "not a list"}, 400, "invalid_request"),
        ({"model": "digits-cnn"}, 400, "invalid_request"),
        ({"model": "../../etc/passwd", "images": [GOOD]}, 400, "invalid_request"),
        ({"model": "digits-cnn", "images": [GOOD], "unexpected": 1}, 400, "invalid_request"),
    ],
)
def test_bad_requests_get_the_envelope(client, body, status, code):
    assert_envelope(client.post("/v1/classify", json=body), status, code)


def test_a_webp_is_read_as_the_same_png_is(client, digits):
    pngs = [png_bytes(digits.images[i, 0]) for i in range(3)]
    webps = []
    for p in pngs:
        buf = io.BytesIO()
        Image.open(io.BytesIO(p)).save(buf, format="WEBP", lossless=True)
        webps.append(buf.getvalue())
    a, b = (classify(client, [b64(x) for x in blobs]) for blobs in (pngs, webps))
    assert a.status_code == b.status_code == 200, b.text
    assert a.json()["predictions"] == b.json()["predictions"]


def test_gif_is_unsupported_media(client):
    buf = io.BytesIO()
    Image.new("L", (28, 28)).save(buf, format="GIF")
    err = assert_envelope(classify(client, [b64(buf.getvalue())]), 415, "unsupported_media_type")
    assert err["details"] == [{"index": 0}]


def test_heic_is_unsupported_media_not_a_broken_file(client):
    """Pillow does not identify HEIF (an iPhone's photos): its ISO-BMFF brand says what it is."""
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\0" * 200
    err = assert_envelope(classify(client, [b64(heic)]), 415, "unsupported_media_type")
    assert "HEIF" in err["message"]
    assert_envelope(classify(client, [b64(b"\x00\x00\x00\x18ftypzzzz" + b"\0" * 200)]), 400, "invalid_image")


def test_data_urls_in_any_case_and_with_parameters(client, digits):
    png = b64(png_bytes(digits.images[0, 0]))
    want = classify(client, [png]).json()["predictions"]
    for url in (
        f"data:image/png;base64,{png}",
        f"DATA:image/png;base64,{png}",
        f"data:image/png;name={'x' * 150};base64,{png}",
        base64.encodebytes(base64.b64decode(png)).decode(),  # MIME's lines of 76 (GNU base64 without -w0)
        base64.encodebytes(base64.b64decode(png)).decode().replace("\n", "\r\n"),
        # an image audit's, each a 400 before 2026-12-07: spaces around, inside, tabs and lone CRs; the URL-safe
        # alphabet, padded or not; standard base64 without its padding
        f" {png}\n",
        f"data:image/png;base64, {png[:40]} {png[40:80]}\t{png[80:]}",
        base64.encodebytes(base64.b64decode(png)).decode().replace("\n", "\r"),
        base64.urlsafe_b64encode(base64.b64decode(png)).decode(),
        base64.urlsafe_b64encode(base64.b64decode(png)).decode().rstrip("="),
        png.rstrip("="),
    ):
        r = classify(client, [url])
        assert r.status_code == 200 and r.json()["predictions"] == want, (url[:40], r.text)
    for bad in ("abcde", "@@@@", png[:-2] + "*="):  # no base64 of any bytes: still a 400
        assert "not valid base64" in assert_envelope(classify(client, [bad]), 400, "invalid_image")["message"]


def test_malformed_json_and_wrong_media_types(client):
    r = client.post("/v1/classify", content=b'{"images": [', headers={"content-type": "application/json"})
    assert_envelope(r, 400, "invalid_request")
    r = client.post("/v1/classify", content=b"hello", headers={"content-type": "text/plain"})
    assert_envelope(r, 415, "unsupported_media_type")
    r = client.post("/v1/classify/upload", json={"image": GOOD})
    assert_envelope(r, 415, "unsupported_media_type")
    # an observability audit's (2026-12-07): a 15 KB media type came back whole in the message
    for route in ("/v1/classify", "/v1/classify/upload"):
        r = client.post(route, content=b"x", headers={"content-type": "text/" + "x" * 15_000})
        assert len(assert_envelope(r, 415, "unsupported_media_type")["message"]) < 300


@pytest.mark.parametrize("ctype", ["image/png", "image/jpeg", "application/octet-stream", "multipart/form-data"])
def test_a_raw_image_body_is_pointed_to_the_upload_route(client, ctype):
    r = client.post("/v1/classify", content=base64.b64decode(GOOD), headers={"content-type": ctype})
    assert "/v1/classify/upload" in assert_envelope(r, 415, "unsupported_media_type")["message"]


def test_a_raw_image_body_on_another_image_route_is_told_where_images_go(client):
    for path in ("/v1/reconstruct", "/v1/encode", "/v1/interpolate", "/v1/recall"):
        r = client.post(path, content=base64.b64decode(GOOD), headers={"content-type": "image/png"})
        message = assert_envelope(r, 415, "unsupported_media_type")["message"]
        assert "'images'" in message and "upload" not in message, (path, message)
    r = client.post("/v1/sentiment", content=base64.b64decode(GOOD), headers={"content-type": "image/png"})
    assert "images" not in assert_envelope(r, 415, "unsupported_media_type")["message"]  # it takes no images


def test_body_over_the_limit_is_413(client):
    big = "A" * (MAX_BODY + 10)
    assert_envelope(classify(client, [big]), 413, "payload_too_large")

    def chunks():  # no content-length: the limit is enforced while reading
        for _ in range(8):
            yield b"x" * (MAX_BODY // 4)

    r = client.post("/v1/classify", content=chunks(), headers={"content-type": "application/json"})
    assert_envelope(r, 413, "payload_too_large")


def test_upload_errors(client):
    assert_envelope(
        client.post("/v1/classify/upload", data={"model": "digits-cnn"}, files={"other": ("x", b"y", "text/plain")}),
        400,
        "invalid_request",
    )
    # a URL given as the image field is refused, never fetched
    r = client.post("/v1/classify/upload", files={"image": (None, "http://127.0.0.1:1/x.png")})
    assert_envelope(r, 400, "invalid_request")
    r = client.post(
        "/v1/classify/upload", files={"image": ("x.png", b"not an image", "image/png")}, data={"model": "digits-cnn"}
    )
    assert_envelope(r, 400, "invalid_image")
    r = client.post(
        "/v1/classify/upload",
        files={"image": ("x.png", png_bytes(np.zeros((8, 8), np.uint8)), "image/png")},
        data={"model": "nope"},
    )
    assert_envelope(r, 404, "model_not_found")
    small = ("x.png", png_bytes(np.zeros((8, 8), np.uint8)), "image/png")
    r = client.post("/v1/classify/upload", files={"image": small}, data={"model": "digits-cnn", "top_k": "many"})
    assert_envelope(r, 400, "invalid_request")
    # two image parts: not the last one answered and the others dropped
    r = client.post("/v1/classify/upload", files=[("image", small), ("image", small)], data={"model": "digits-cnn"})
    assert "one image" in assert_envelope(r, 400, "invalid_request")["message"]


def test_unknown_route_and_method_get_the_envelope(client):
    assert_envelope(client.get("/v1/nothing-here"), 404, "not_found")
    assert client.get("/v1/classify").status_code in (404, 405)
    assert "error" in client.get("/v1/classify").json()


def test_server_survived_and_metrics_are_exported(client):
    assert client.get("/readyz").status_code == 200
    text = client.get("/metrics").text
    for series in (
        "nnserve_inference_seconds_count",
        "nnserve_preprocess_seconds_count",
        "nnserve_batch_size_count",
        "nnserve_predictions_total",
        "nnserve_errors_total",
    ):
        assert re.search(rf'^{series}\{{.*model="digits-cnn"|^{series}\{{.*code=', text, re.M), series
    assert re.search(r'^nnserve_errors_total\{code="invalid_image",endpoint="/v1/classify"\} [1-9]', text, re.M)
    name_route = r'^nnserve_errors_total\{code="model_not_found",endpoint="/v1/models/\{name\}"\}'
    assert re.search(name_route, text, re.M)
    assert "bentoml_service_request_total" in text or "bentoml_api_server_request_total" in text
    assert not re.search(r'code="internal_error"', text)


def test_sustained_concurrency_has_no_failures(client, held_out):
    """Well past BentoML's default of recycling the inter-service connection every 100 requests."""
    imgs = [b64(png_bytes(a)) for a, _ in held_out[:8]]
    with client_per_thread(str(client.base_url)) as mine, cf.ThreadPoolExecutor(24) as pool:
        codes = list(pool.map(lambda i: classify(mine(), [imgs[i % 8]], model="digits-lenet5").status_code, range(240)))
    assert codes.count(200) == 240, {c: codes.count(c) for c in set(codes)}


def test_root_and_docs_pages_are_nnserves_own_and_load_nothing_from_elsewhere(client):
    from service import __version__

    root = client.get("/")
    assert root.status_code == 200 and root.headers["content-type"].startswith("text/html")
    assert "<title>nnserve</title>" in root.text and __version__ in root.text
    for link in ('href="docs"', 'href="docs.json"', 'href="metrics"', 'href="v1/models"'):
        assert link in root.text
    docs = client.get("/docs")
    assert docs.status_code == 200 and "SwaggerUIBundle" in docs.text
    for page in (root.text, docs.text):
        assert not re.search(r"(src|href)=\"(https?:)?//", page), "a page loads something from another host"
    for asset in re.findall(r"(?:src|href)=\"(static_content/[^\"]+)\"", docs.text):
        assert client.get(f"/{asset}").status_code == 200, asset
    assert client.head("/").status_code == 200


@pytest.mark.parametrize("path", ["/v1/models", "/v1/models/digits-cnn", "/v1/models/digits-cnn/figures/curves.png"])
def test_head_on_a_v1_read_route_answers_as_its_get(client, path):
    """HEAD was a 405 on /v1 (it is served on /v2): a client's or a proxy's cheap probe of a card or a figure."""
    get, head = client.get(path), client.head(path)
    assert get.status_code == head.status_code == 200 and get.content and head.content == b""
    for header in ("content-type", "content-length", "etag"):
        assert head.headers.get(header) == get.headers.get(header), header
    r = client.delete(path)
    assert r.status_code == 405 and {m.strip() for m in r.headers["allow"].split(",")} == {"GET", "HEAD"}


def test_every_operation_id_is_unique(client):
    """A GET route also answers HEAD, and FastAPI gave both operations one id (OpenAPI: ids are unique)."""
    doc = client.get("/docs.json").json()
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values() if "operationId" in op]
    assert len(ids) == len(set(ids)) and any(i.endswith("_head") for i in ids)


def test_openapi_document_carries_the_package_version(client):
    from service import __version__
    from service.openapi import DESCRIPTION

    info = client.get("/docs.json").json()["info"]
    assert info == {"title": "nnserve", "version": __version__, "description": DESCRIPTION}


def test_a_request_without_a_model_is_the_routes_default_or_the_one_model_of_its_task(client, digits):
    """A server of a user's own models: its only autoencoder answers a request that names none (the route's
    default, mnist-ae, is not served), as does an upload; where several models of a task are served and the
    default is not, the 404 names them; a model sent by name is never replaced."""
    png = png_bytes(digits.images[0, 0])
    image = base64.b64encode(png).decode()
    r = client.post("/v1/reconstruct", json={"images": [image]})
    assert r.status_code == 200 and r.json()["model"] == "digits-ae"
    assert_envelope(
        client.post("/v1/reconstruct", json={"model": "mnist-ae", "images": [image]}), 404, "model_not_found"
    )
    served = {m["name"] for m in client.get("/v1/models").json()["models"] if m["task"] == "image-classification"}
    assert len(served) > 1
    err = assert_envelope(client.post("/v1/classify", json={"images": [image]}), 404, "model_not_found")
    assert set(err["details"][0]["available"]) == served
    assert "the request names no model, and this route's default 'mnist-cnn' is not served" in err["message"]
    r = client.post("/v1/classify/upload", files={"image": ("d.png", png, "image/png")})
    assert "names no model" in assert_envelope(r, 404, "model_not_found")["message"]


def test_a_photo_shrunk_to_the_input_size_is_counted_once(client):
    """A 28 x 28 PNG of grey paper beside one in MNIST's look: the loop finds the photo and the pool reads both;
    nnserve_preprocess_seconds counts each image once (it counted the first twice: a review)."""

    def count() -> float:
        time.sleep(1.2)  # the metrics page is rendered at most once a second per worker
        text = client.get("/metrics").text
        m = re.search(r'^nnserve_preprocess_seconds_count\{model="digits-cnn"\} (\S+)', text, re.M)
        return float(m.group(1)) if m else 0.0

    digit = np.zeros((28, 28), dtype=np.uint8)
    digit[6:22, 12:16] = 255
    pngs = [png_bytes(digit), png_bytes(np.clip(200 - digit.astype(int), 0, 255).astype(np.uint8))]
    before = count()
    body = {"model": "digits-cnn", "images": [base64.b64encode(p).decode() for p in pngs]}
    assert client.post("/v1/classify", json=body).status_code == 200
    assert count() - before == 2
