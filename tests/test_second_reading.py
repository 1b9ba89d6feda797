"""A photo of pen strokes that the model flags is read a second time at the other polarity, and that reading is
kept when the model finds it typical (contract.images: read, second_reading_kept; the service's classify route):
the rule, the forced polarity, the shipped digit models on examples/digit-8-shadow.jpg (a shadow along one side
makes the page's polarity fit take the paper for the ink), and the answer over HTTP."""

from __future__ import annotations

import base64
import io

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from contract.images import SECOND_READING, Reading, decode_image, normalize, read, second_reading_kept
from contract.metadata import ImagePreprocessing, ModelMetadata, load_metadata
from export.odd_images import skimage_photo
from tests.conftest import REPO, png_bytes
from tests.test_ood_http import flagged_count

DIGIT = ImagePreprocessing(input_size=(28, 28), channels=1, mean=[0.13], std=[0.31], white_on_black=True, fit="digit")
GARMENT = DIGIT.model_copy(update={"fit": "contain"})
SHADOWED = REPO / "examples" / "digit-8-shadow.jpg"
MODELS = ("mnist-cnn", "mnist-lenet5")


@pytest.mark.parametrize(
    ("threshold", "score", "flagged", "kept"),
    [
        (2.0, 0.9, False, True),
        (2.0, 2.0 * SECOND_READING, False, True),
        (2.0, 1.1, False, False),  # not flagged, but not typical either
        (2.0, 0.5, True, False),  # flagged by the front door (blank, or unlike any page) whatever its score
        (2.0, None, False, False),
        (None, 0.1, False, False),  # an uncalibrated model has no score to judge a reading by
        (0.0, 0.0, False, False),
    ],
)
def test_the_second_reading_is_kept_only_when_the_model_finds_it_typical(threshold, score, flagged, kept):
    assert second_reading_kept(threshold, score, flagged) is kept


def test_a_forced_polarity_reads_the_page_that_way(digits):
    """Dark strokes on light paper: the page's own polarity is dark ink, the same as forcing it; forced the other
    way, the paper around the strokes is read as the ink. Images taken as they are, and product photos, have no
    polarity to turn over."""
    two = digits.images[int(np.flatnonzero(digits.labels == 2)[0]), 0]
    grain = np.random.default_rng(0).normal(0, 3, (160, 160))  # a photo's: a flat canvas is read once
    page = 200 - np.asarray(Image.fromarray(two).resize((160, 160))) * 0.6 + grain
    page = Image.fromarray(np.clip(page, 0, 255).astype(np.uint8))
    own, dark, light = read(page, DIGIT), read(page, DIGIT, True), read(page, DIGIT, False)
    assert own.dark_ink is True and dark.dark_ink is True and light.dark_ink is False
    np.testing.assert_array_equal(own.pixels, dark.pixels)
    assert not np.array_equal(own.pixels, light.pixels)
    assert read(Image.fromarray(two), DIGIT).dark_ink is None
    assert read(page, GARMENT).dark_ink is None and read(page, GARMENT, True).dark_ink is None


def graph_answer(meta: ModelMetadata, sess: ort.InferenceSession, reading: Reading) -> tuple[int, float, bool]:
    """(label index, served score, flagged) of one reading, as the service computes them."""
    assert meta.ood is not None and meta.ood.output is not None
    logits, score = sess.run(
        [meta.outputs[0].name, meta.ood.output], {meta.inputs[0].name: normalize(reading.pixels[None], DIGIT)}
    )
    served, flagged = meta.ood_answer(float(score[0]), reading.oddness, reading.pixels)
    assert served is not None
    return int(logits[0].argmax()), served, flagged


@pytest.mark.parametrize("model", MODELS)
def test_the_shipped_digit_models_read_the_shadowed_photo_twice(model):
    """examples/digit-8-shadow.jpg: read at the polarity its page's fit decides, the paper beside the shadow is
    the ink, and the model flags it (and misreads it); at the other polarity it reads the 8, well under its
    threshold, and that reading is kept."""
    folder = REPO / "artifacts" / model
    meta = load_metadata(folder)
    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    img = decode_image(SHADOWED.read_bytes(), max_pixels=1 << 24)
    first = read(img, meta.image_preprocessing())
    assert first.dark_ink is False
    label, _, flagged = graph_answer(meta, sess, first)
    assert flagged and meta.labels[label] != "8"
    second = read(img, meta.image_preprocessing(), not first.dark_ink)
    label, score, flagged = graph_answer(meta, sess, second)
    assert meta.labels[label] == "8" and second_reading_kept(meta.ood.threshold if meta.ood else None, score, flagged)


def test_the_shipped_models_take_a_second_reading_where_it_mends_more_than_it_breaks():
    """export/second_reading.py's decision, in model.json with the counts it was made on: every digit model takes
    one (the RBF network since 2026-12-04: 7 mended, 2 broken with the reconstruction error in its score, 10 and 0
    with mnist-cnn's score as well; 5 and 5, no better than chance, with the distance to its nearest centre); the
    garment models read no pen strokes."""
    for name in ("mnist-cnn", "mnist-lenet5", "mnist-mlp", "mnist-rbf"):
        ood = load_metadata(REPO / "artifacts" / name).ood
        assert ood is not None and ood.second_reading, name
        assert ood.figures["second_reading_mended"] > ood.figures["second_reading_broke"], name
    for name in ("fashion-cnn", "fashion-resnet"):
        ood = load_metadata(REPO / "artifacts" / name).ood
        assert ood is not None and not ood.second_reading


def test_a_page_of_print_is_not_read_a_second_time():
    """Print is print at either polarity (contract/ink.py: Ink.printed), so a page of it is read once, and every
    shipped digit model flags it. Turned over, the scanned page's paper between its letters (scikit-image's
    page.png) is what the RBF network took for a digit, under its threshold, until it borrowed mnist-cnn's score
    (2026-12-04): now every digit model flags that reading too."""
    for name in ("mnist-cnn", "mnist-lenet5", "mnist-mlp", "mnist-rbf"):
        folder = REPO / "artifacts" / name
        meta = load_metadata(folder)
        sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
        first = read(skimage_photo("page.png"), meta.image_preprocessing())
        assert first.dark_ink is None and graph_answer(meta, sess, first)[2], name
        turned = read(skimage_photo("page.png"), meta.image_preprocessing(), False)
        assert turned.oddness is not None and turned.oddness < 1 and graph_answer(meta, sess, turned)[2], name


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """The shipped digit models, and mnist-cnn once more as ``mnist-cnn-once``, its second reading turned off."""
    import shutil

    from contract.metadata import METADATA_FILE
    from tests.server import Server

    root = tmp_path_factory.mktemp("second")
    for name in MODELS:
        shutil.copytree(REPO / "artifacts" / name, root / name)
    once = load_metadata(root / "mnist-cnn")
    assert once.ood is not None
    once.name, once.ood.second_reading = "mnist-cnn-once", False
    shutil.copytree(root / "mnist-cnn", root / once.name)
    (root / once.name / METADATA_FILE).write_text(once.model_dump_json())
    srv = Server(root, root / "serve.log").start()
    yield srv
    srv.stop()


@pytest.mark.server
@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_the_served_answer_is_the_kept_reading(shipped, model):
    """Over HTTP, the JSON route and the upload: the shadowed 8 is answered from its second reading (an 8, not
    flagged, and the input the model saw is that reading, which differs from the first), and not counted as out
    of distribution; a natural photograph, whose second reading the model flags too, keeps its first answer:
    flagged, and counted once."""
    import httpx

    meta = load_metadata(REPO / "artifacts" / model)
    img = decode_image(SHADOWED.read_bytes(), max_pixels=1 << 24)
    first = read(img, meta.image_preprocessing())
    with httpx.Client(base_url=shipped.url, timeout=30) as client:
        before = flagged_count(client, model)
        body = {"model": model, "images": [base64.b64encode(SHADOWED.read_bytes()).decode()], "include_input": True}
        r = client.post("/v1/classify", json=body)
        assert r.status_code == 200, r.text
        (p,) = r.json()["predictions"]
        assert p["label"] == "8" and p["out_of_distribution"] is False and p["ood_score"] < meta.ood.threshold
        saw = np.asarray(Image.open(io.BytesIO(base64.b64decode(p["input"]))))
        second = read(img, meta.image_preprocessing(), not first.dark_ink)
        assert np.abs(saw.astype(int) - second.pixels[0]).max() <= 1
        assert np.abs(saw.astype(int) - first.pixels[0]).max() > 100
        files = {"image": ("shadow.jpg", SHADOWED.read_bytes(), "image/jpeg")}
        up = client.post("/v1/classify/upload", files=files, data={"model": model, "top_k": "1"})
        assert up.status_code == 200 and up.json()["predictions"][0]["label"] == "8"
        assert flagged_count(client, model) == before

        scene = png_bytes(np.asarray(skimage_photo("chelsea.png").convert("L")))
        body = {"model": model, "images": [base64.b64encode(scene).decode()]}
        (p,) = client.post("/v1/classify", json=body).json()["predictions"]
        assert p["out_of_distribution"] is True
        assert flagged_count(client, model) == before + 1


@pytest.mark.server
@pytest.mark.slow
def test_a_model_without_a_second_reading_answers_from_the_first(shipped):
    """The same graph with ``second_reading`` off: the shadowed 8 is answered from its first reading, flagged."""
    import httpx

    body = {"model": "mnist-cnn-once", "images": [base64.b64encode(SHADOWED.read_bytes()).decode()]}
    r = httpx.post(f"{shipped.url}/v1/classify", json=body, timeout=30)
    assert r.status_code == 200, r.text
    (p,) = r.json()["predictions"]
    assert p["label"] != "8" and p["out_of_distribution"] is True


def test_a_small_data_set_is_photographed_in_as_many_chunks_as_it_fills(artifact_root, digits, tmp_path):
    """Calibrating a digit model trained on a small IDX set (74 validation photos on half A) raised "74 images in
    chunks of 500 need 1 seeds": the seeds were drawn for 3,000 photos whatever the set held (a user audit)."""
    import shutil

    from export.second_reading import decide

    shutil.copytree(artifact_root / "digits-cnn", tmp_path / "m")
    meta = load_metadata(tmp_path / "m")
    assert meta.ood is not None and meta.image_preprocessing().fit == "digit"
    decide(tmp_path / "m", meta, digits.images, digits.labels, np.arange(74))
    assert meta.ood.second_reading in (True, False) and meta.ood.figures["second_reading_photos_read_twice"] >= 0
