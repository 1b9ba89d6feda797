"""/v1/sentiment over real HTTP against a real ``bentoml serve`` with a real ONNX text model."""

from __future__ import annotations

import concurrent.futures as cf
import re

import pytest

from tests.conftest import assert_envelope

pytestmark = [pytest.mark.server, pytest.mark.slow]
MODEL = "synthetic-lstm"


def analyze(client, texts, model=MODEL):
    return client.post("/v1/sentiment", json={"model": model, "texts": texts})


def test_single_and_batch_in_order(client):
    r = analyze(client, ["the movie is brilliant ."])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == MODEL and body["version"] == "1"
    (p,) = body["predictions"]
    assert p["label"] == "positive" and p["score"] == max(p["probs"].values())
    assert set(p["probs"]) == {"negative", "positive"} and sum(p["probs"].values()) == pytest.approx(1, abs=1e-6)
    assert p["tokens"] == p["tokens_read"] == 5 and p["truncated"] is False

    # the synthetic corpus's grammar, with case and punctuation the tokenizer normalises
    texts = [
        "The PLOT is dull, frankly the ending was tedious.",
        "the film is wonderful",
        "THE ENDING IS AWFUL.",
        "The cast is superb , honestly the story was charming .",
    ]
    preds = analyze(client, texts).json()["predictions"]
    assert [q["label"] for q in preds] == ["negative", "positive", "negative", "positive"]


def test_long_text_is_truncated_and_says_so(client):
    long = " ".join(["the film is delightful ,"] * 200)
    (p,) = analyze(client, [long]).json()["predictions"]
    # the text had 1,000 tokens; the model read its first 24 (its max_len)
    assert p["truncated"] is True and p["tokens"] == 1000 and p["tokens_read"] == 24


def test_score_does_not_depend_on_the_batch(client):
    target = "the story was boring , frankly the soundtrack was painful ."
    alone = analyze(client, [target]).json()["predictions"][0]["probs"]
    longs = [" ".join(["all in all the cast was charming"] * k) for k in range(1, 40)]
    in_batch = analyze(client, [*longs[:20], target, *longs[20:]]).json()["predictions"][20]["probs"]

    def one(t):
        return analyze(client, [t]).status_code

    with cf.ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(one, t) for t in longs[:32]]
        concurrent = analyze(client, [target]).json()["predictions"][0]["probs"]
        assert all(f.result() == 200 for f in futures)
    for other in (in_batch, concurrent):
        for label in alone:
            assert other[label] == pytest.approx(alone[label], abs=1e-5)


@pytest.mark.parametrize(
    "text",
    [
        "😀😀😀",
        "很好看的电影",
        "סרט נהדר",
        "ce\u0301le\u0300bre",
        "tab\tand\nnewline",
        "nul\u0000inside",
        "\u202eright-to-left override",
        "a" * 10_000,
    ],
)
def test_odd_unicode_never_fails(client, text):
    r = analyze(client, [text])
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["tokens"] >= 1


@pytest.mark.parametrize(
    ("texts", "status", "code"),
    [
        ([""], 400, "invalid_request"),
        (["   \t\n  "], 400, "invalid_request"),
        (["\u0000\u0001"], 400, "invalid_request"),
        (["\ud7ff\ue000\uffff"], 400, "invalid_request"),  # unassigned and private-use only: no tokens
        ([], 400, "invalid_request"),
        (["fine"] * 65, 400, "invalid_request"),
        (["x" * 10_001], 400, "invalid_request"),
        ("not a list", 400, "invalid_request"),
        ([1, 2], 400, "invalid_request"),
    ],
)
def test_bad_texts_get_the_envelope(client, texts, status, code):
    assert_envelope(analyze(client, texts), status, code)


def test_second_text_empty_names_its_index(client):
    err = assert_envelope(analyze(client, ["good", " "]), 400, "invalid_request")
    assert err["details"] == [{"index": 1}]


def test_unknown_and_wrong_family_models(client):
    assert_envelope(analyze(client, ["hi"], model="nope"), 404, "model_not_found")
    err = assert_envelope(analyze(client, ["hi"], model="digits-cnn"), 404, "model_not_found")
    assert err["details"] == [{"available": [MODEL]}]


def test_non_utf8_body(client):
    body = b'{"model": "synthetic-lstm", "texts": ["\xff\xfe broken"]}'
    r = client.post("/v1/sentiment", content=body, headers={"content-type": "application/json"})
    assert_envelope(r, 400, "invalid_request")


def test_token_histogram_is_exported(client):
    analyze(client, ["the plot is dull ."])
    text = client.get("/metrics").text
    assert re.search(r'^nnserve_text_tokens_count\{model="synthetic-lstm"\} [1-9]', text, re.M)
    assert re.search(r'^nnserve_predictions_total\{label="(positive|negative)",model="synthetic-lstm"\}', text, re.M)
    assert 'code="internal_error"' not in text
