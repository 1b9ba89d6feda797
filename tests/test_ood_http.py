"""Honest answers over HTTP: calibrated probabilities, ood_score and out_of_distribution on every classifier
route (/v1/classify, the upload, /v2 on request, /v1/sentiment), why an answer is flagged (ood_reason, on /v1), a
blank page flagged with a 200, the counter by reason, and what the model saw (include_input)."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
import tritonclient.http as triton
from PIL import Image

from bench.text_ood import judge
from contract.metadata import load_metadata
from contract.text import VOCAB_FILE, Vocab
from contract.text_ood import RARITY, UNKNOWN
from tests.conftest import png_bytes

pytestmark = [pytest.mark.server, pytest.mark.slow]
CNN, LENET, LSTM = "digits-cnn", "digits-lenet5", "synthetic-lstm"
ATTN = "synthetic-attn"  # attention pooling: explained (tests/conftest.py)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def flagged_count(client, model: str, reason: str | None = None) -> float:
    """``model``'s flagged answers counted on /metrics: for ``reason``, or for every reason."""
    text = client.get("/metrics").text
    why = re.escape(reason) if reason else r"[a-z_]+"
    pattern = rf'^nnserve_out_of_distribution_total{{model="{model}",reason="{why}"}} ([0-9.e+]+)$'
    return sum(float(m.group(1)) for m in re.finditer(pattern, text, re.M))


@pytest.fixture(scope="module")
def pages() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    return {
        "blank": jpeg(Image.new("L", (400, 300), 255)),
        "grey 215": jpeg(Image.new("L", (400, 300), 215)),
        "grey 230": png_bytes(np.full((300, 400), 230, dtype=np.uint8)),
        "noise": png_bytes(rng.integers(0, 256, (200, 200), dtype=np.uint8)),
    }


def test_every_prediction_carries_both_fields(client, digits):
    imgs = [b64(png_bytes(digits.images[i, 0])) for i in range(6)]
    for model in (CNN, LENET):
        r = client.post("/v1/classify", json={"model": model, "images": imgs})
        assert r.status_code == 200, r.text
        for p in r.json()["predictions"]:
            assert isinstance(p["out_of_distribution"], bool) and "ood_score" in p
            assert (p["ood_reason"] is not None) is p["out_of_distribution"], p
    cnn = client.post("/v1/classify", json={"model": CNN, "images": imgs}).json()["predictions"]
    assert all(isinstance(p["ood_score"], float) for p in cnn)
    assert sum(p["out_of_distribution"] for p in cnn) <= 1  # its own kind of digit is in distribution
    lenet = client.post("/v1/classify", json={"model": LENET, "images": imgs}).json()["predictions"]
    assert all(p["ood_score"] is None and p["out_of_distribution"] is False for p in lenet)  # not calibrated


def test_a_blank_or_uniform_page_is_a_200_flagged_out_of_distribution(client, pages):
    before, blank = flagged_count(client, CNN), flagged_count(client, CNN, "nothing_written")
    r = client.post("/v1/classify", json={"model": CNN, "images": [b64(b) for b in pages.values()]})
    assert r.status_code == 200, r.text
    for name, p in zip(pages, r.json()["predictions"], strict=True):
        assert p["out_of_distribution"] is True, (name, p)
        assert p["ood_reason"] == ("scattered_marks" if name == "noise" else "nothing_written"), (name, p)
    up = client.post("/v1/classify/upload", data={"model": CNN}, files={"image": ("page.jpg", pages["blank"])})
    assert up.status_code == 200 and up.json()["predictions"][0]["ood_reason"] == "nothing_written"
    assert flagged_count(client, CNN) == before + len(pages) + 1
    assert flagged_count(client, CNN, "nothing_written") == blank + len(pages) - 1 + 1


def test_nothing_written_is_flagged_even_by_an_uncalibrated_model(client, pages):
    """The front door finding no ink is the classifier's business whatever its calibration: digits-lenet5 has no
    OOD score, yet a blank page or uniform paper is flagged (and counted), and so is a page of noise: its
    "ink" is specks scattered over the whole page, unlike any page of writing."""
    before = flagged_count(client, LENET)
    uniform = ["blank", "grey 215", "grey 230"]
    r = client.post("/v1/classify", json={"model": LENET, "images": [b64(pages[k]) for k in [*uniform, "noise"]]})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert [p["out_of_distribution"] for p in preds] == [True, True, True, True], preds
    assert [p["ood_reason"] for p in preds] == ["nothing_written"] * 3 + ["scattered_marks"]
    assert all(p["ood_score"] is None for p in preds)
    up = client.post("/v1/classify/upload", data={"model": LENET}, files={"image": ("page.jpg", pages["blank"])})
    assert up.status_code == 200 and up.json()["predictions"][0]["out_of_distribution"] is True
    assert flagged_count(client, LENET) == before + len(uniform) + 2


@pytest.mark.parametrize(
    ("kind", "reason"),
    [("grass", "scattered_marks"), ("print", "printed_text"), ("dot", "dot"), ("number", "several_characters")],
)
def test_a_scene_is_flagged_by_the_front_door_calibrated_or_not(client, artifact_root, digits, kind, reason):
    """A photograph of grass read as pen strokes is texture over the whole page, a photographed page of print
    (contract/ink.py: ROW_RUNS) crowded as no digit is, a tap of the pen on the pad a dot (contract/ink.py:
    is_dot), two digits side by side several characters (contract/ink.py: characters): flagged by both digit
    models, the calibrated one with its ood_score raised to at least the threshold, and counted, with that
    reason."""
    from export.odd_images import skimage_photo
    from tests.test_ink import PARAGRAPH, _number, _pad_drawing, _printed

    if kind == "number":
        scene = jpeg(_number(digits, 2, 6))
    elif kind == "dot":
        buf = io.BytesIO()
        _pad_drawing(lambda d: d.ellipse((129, 129, 151, 151), fill=17)).save(buf, "PNG")
        scene = buf.getvalue()
    else:
        scene = jpeg(skimage_photo("grass.png") if kind == "grass" else _printed(18, PARAGRAPH))
    threshold = load_metadata(artifact_root / CNN).ood.threshold
    for model in (CNN, LENET):
        before = flagged_count(client, model, reason)
        r = client.post("/v1/classify", json={"model": model, "images": [b64(scene)]})
        assert r.status_code == 200, r.text
        (p,) = r.json()["predictions"]
        assert p["out_of_distribution"] is True and p["ood_reason"] == reason, p
        assert (p["ood_score"] > threshold) if model == CNN else p["ood_score"] is None
        assert flagged_count(client, model, reason) == before + 1


def test_a_page_more_vivid_than_paper_is_flagged(client, digits):
    """The service hands the front door the photo's colour: a digit on an orange page (a scene's colour: a retina,
    a cat's fur) is flagged by both digit models and counted, while the same photo in grey, an ordinary digit
    on grey paper, is read as one."""
    digit = np.asarray(Image.fromarray(digits.images[2, 0]).resize((110, 110), Image.Resampling.BICUBIC)) / 255.0
    cover = np.zeros((200, 200))
    cover[40:150, 45:155] = digit
    orange = np.array([225.0, 115.0, 50.0]) * (1 - cover[..., None]) + 20.0 * cover[..., None]
    photo = Image.fromarray(orange.astype(np.uint8), "RGB")
    for model in (CNN, LENET):
        before = flagged_count(client, model)
        r = client.post(
            "/v1/classify", json={"model": model, "images": [b64(jpeg(photo)), b64(jpeg(photo.convert("L")))]}
        )
        assert r.status_code == 200, r.text
        vivid, grey = r.json()["predictions"]
        assert vivid["out_of_distribution"] is True and grey["out_of_distribution"] is False, (vivid, grey)
        assert vivid["ood_reason"] == "vivid_colours" and grey["ood_reason"] is None
        assert flagged_count(client, model) == before + 1


def test_include_input_returns_what_the_model_saw(client, artifact_root, digits):
    meta = load_metadata(artifact_root / CNN)
    digit = digits.images[3, 0]
    big = Image.fromarray(255 - digit).resize((140, 140))  # dark on white, 5x: the front door fits it back
    body = {"model": CNN, "images": [b64(png_bytes(np.asarray(big)))], "include_input": True}
    r = client.post("/v1/classify", json=body)
    (p,) = r.json()["predictions"]
    seen = Image.open(io.BytesIO(base64.b64decode(p["input"])))
    assert seen.size == tuple(meta.image_preprocessing().input_size) and seen.mode == "L"
    a = np.asarray(seen, dtype=np.float64)
    assert np.corrcoef(a.ravel(), digit.astype(np.float64).ravel())[0, 1] > 0.8  # white on black again
    plain = client.post("/v1/classify", json={"model": CNN, "images": [b64(png_bytes(digit))]}).json()
    assert plain["predictions"][0]["input"] is None


def test_v2_returns_the_score_and_flag_when_asked(client, server, digits, pages, artifact_root):
    meta = load_metadata(artifact_root / CNN)
    imgs = [png_bytes(digits.images[i, 0]) for i in range(3)]
    v1 = client.post("/v1/classify", json={"model": CNN, "images": [b64(b) for b in imgs] + [b64(pages["blank"])]})
    from tests.test_oip_http import preprocessed

    x = preprocessed(meta, [*imgs, pages["blank"]])
    tc = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    inp = triton.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    plain = tc.infer(CNN, [inp])
    assert [o["name"] for o in plain.get_response()["outputs"]] == ["logits"]  # the extras only on request
    extras = ("logits", "ood_score", "out_of_distribution", "ood_reason")
    asked = tc.infer(CNN, [inp], outputs=[triton.InferRequestedOutput(n) for n in extras])
    scores, flags = asked.as_numpy("ood_score"), asked.as_numpy("out_of_distribution")
    assert flags.dtype == np.bool_ and list(flags) == [p["out_of_distribution"] for p in v1.json()["predictions"]]
    why = [p["ood_reason"] or "" for p in v1.json()["predictions"]]
    assert [w.decode() for w in asked.as_numpy("ood_reason")] == why and why[-1] == "nothing_written"
    assert scores == pytest.approx([p["ood_score"] for p in v1.json()["predictions"]], rel=1e-5)
    assert flags[-1]  # the blank page, answered as on /v1: logits of 0, softmax 1/K
    assert asked.as_numpy("logits")[-1].tolist() == [0.0] * 10 and v1.json()["predictions"][-1]["score"] == 0.1
    tc.close()


def test_sentiment_flags_text_made_of_unknown_words(client, artifact_root):
    texts = ["the film is wonderful", "xqzv blorptik fnargle wubwub zzzkt", "Ce film est une merveille absolue."]
    before = flagged_count(client, LSTM)
    r = client.post("/v1/sentiment", json={"model": LSTM, "texts": texts})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert [p["out_of_distribution"] for p in preds] == [False, True, True]
    assert [p["ood_reason"] for p in preds] == [None, "unknown_words", "unknown_words"]  # its words, not "none known"
    meta = load_metadata(artifact_root / LSTM)
    assert meta.ood is not None and set(meta.ood.scaling) == {UNKNOWN, RARITY} and meta.ood.threshold == 1
    want, _, _ = judge(artifact_root / LSTM, texts)  # the contract's score, computed in process
    assert [p["ood_score"] for p in preds] == pytest.approx(want.tolist(), abs=1e-9)
    assert preds[1]["ood_score"] >= 1 / meta.ood.scaling[UNKNOWN][1]  # every token unknown
    assert flagged_count(client, LSTM) == before + 2
    # no word the model knows: no evidence for either label, so 1/K each (as a blank page), not the graph's
    # answer to a row of <unk>; a text with a known word keeps its answer
    assert set(preds[1]["probs"].values()) == {0.5} and preds[1]["score"] == 0.5
    assert max(preds[0]["probs"].values()) > 0.5
    # emoji and stars the vocabulary lacks are no evidence of another language: the score reads the words alone
    # (a sentiment audit's: an English review with five emoji was flagged), while the graph reads every token
    r = client.post("/v1/sentiment", json={"model": LSTM, "texts": [texts[0] + " 😍😍😍🔥🔥 ★★★★★"]})
    (decorated,) = r.json()["predictions"]
    assert decorated["ood_score"] == pytest.approx(preds[0]["ood_score"], abs=1e-9)
    assert decorated["out_of_distribution"] is False and decorated["tokens"] == 14


def test_a_text_of_punctuation_and_function_words_carries_no_evidence(client, tc, artifact_root):
    """ "...", "the", "the is ." are known tokens but no words (contract.text.is_word): answered 1/K and flagged
    on /v1 (the counter moves) and on /v2, and explained by no weights; "the cast is superb ." keeps its answer."""
    vocab = Vocab.load(artifact_root / ATTN / VOCAB_FILE)
    assert {".", "the", "is"} <= set(vocab.stoi)  # known tokens: the unknown share does not flag these
    texts = ["...", "the", "the is .", "the cast is superb ."]
    before = flagged_count(client, ATTN)
    r = client.post("/v1/sentiment", json={"model": ATTN, "texts": texts, "explain": True})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert [p["out_of_distribution"] for p in preds[:3]] == [True] * 3
    assert [p["ood_reason"] for p in preds[:3]] == ["no_known_word"] * 3
    assert all(set(p["probs"].values()) == {0.5} and p["explanation"] == [] for p in preds[:3])
    assert max(preds[3]["probs"].values()) > 0.5 and sum(t["weight"] for t in preds[3]["explanation"]) > 0.99
    assert flagged_count(client, ATTN) == before + 3 + preds[3]["out_of_distribution"]
    inp = triton.InferInput("text", [len(texts)], "BYTES")
    inp.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object), binary_data=False)
    out = tc.infer(ATTN, [inp], outputs=[triton.InferRequestedOutput(n) for n in ("logits", "out_of_distribution")])
    assert out.as_numpy("out_of_distribution")[:3].all() and not out.as_numpy("logits")[:3].any()
    # emoji alone are no words, known or not: no word of meaning, not "words the model does not know"
    r = client.post("/v1/sentiment", json={"model": ATTN, "texts": ["👍👍", "xqzv"]})
    assert [p["ood_reason"] for p in r.json()["predictions"]] == ["no_known_word", "unknown_words"]
