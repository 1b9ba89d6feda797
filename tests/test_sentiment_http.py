"""/v1/sentiment over real HTTP against a real ``bentoml serve`` with a real ONNX text model."""

from __future__ import annotations

import concurrent.futures as cf
import math
import re

import pytest

from tests.conftest import assert_envelope

pytestmark = [pytest.mark.server, pytest.mark.slow]
MODEL = "synthetic-lstm"
ATTN = "synthetic-attn"  # the same corpus, attention pooling (tests/conftest.py)
QUOTES = str.maketrans({"“": '"', "”": '"', "’": "'"})


def analyze(client, texts, model=MODEL, **extra):
    return client.post("/v1/sentiment", json={"model": model, "texts": texts, **extra})


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


def test_long_text_is_read_in_windows_then_cut_and_says_so(client):
    long = " ".join(["the film is delightful ,"] * 200)
    (p,) = analyze(client, [long]).json()["predictions"]
    # 1,000 tokens; the model reads windows of its max_len (24), 8 of them (NNSERVE_TEXT_WINDOWS)
    assert p["truncated"] is True and p["tokens"] == 1000 and p["tokens_read"] == 192 and p["windows"] == 8


def log_odds(p):
    return math.log(p["probs"]["positive"] / p["probs"]["negative"])


@pytest.mark.parametrize("model", [MODEL, ATTN])
def test_windows_are_combined_by_their_token_counts(client, model):
    """A 60-token review is read as windows of 24, 24 and 12 tokens; its logits are their token-weighted mean,
    so (temperature scaling being linear) its log-odds are the windows' log-odds weighted 24:24:12."""
    neg = " the plot is awful , frankly the ending was tedious ." * 3
    pos = " the movie is brilliant , to be fair the story was charming ." * 3
    end = " i think the soundtrack was wonderful , the cast is superb ."
    tokens = neg.split()[:24] + pos.split()[:24] + end.split()
    assert len(tokens) == 60
    windows = [" ".join(tokens[i : i + 24]) for i in (0, 24, 48)]
    whole = analyze(client, [" ".join(tokens)], model).json()["predictions"][0]
    alone = analyze(client, windows, model).json()["predictions"]
    assert whole["windows"] == 3 and whole["tokens_read"] == whole["tokens"] == 60 and not whole["truncated"]
    assert [a["tokens"] for a in alone] == [24, 24, 12]
    expected = (24 * log_odds(alone[0]) + 24 * log_odds(alone[1]) + 12 * log_odds(alone[2])) / 60
    assert log_odds(whole) == pytest.approx(expected, abs=1e-4)


def test_explain_returns_weights_that_sum_to_one_at_the_right_places(client):
    texts = ["The PLOT is dull, frankly the ending wasn't Tedious!", "“Wonderful” — the cast is superb ."]
    r = analyze(client, texts, ATTN, explain=True)
    assert r.status_code == 200, r.text
    for text, p in zip(texts, r.json()["predictions"], strict=True):
        ex = p["explanation"]
        assert len(ex) == p["tokens_read"] == p["tokens"]
        assert sum(t["weight"] for t in ex) == pytest.approx(1, abs=1e-5)
        assert all(0 <= t["weight"] <= 1 for t in ex)
        for t in ex:  # each span holds the characters its token was made of
            assert text[t["start"] : t["end"]].lower().translate(QUOTES) == t["token"], t
    assert [t["token"] for t in r.json()["predictions"][0]["explanation"]][-4:] == ["was", "n't", "tedious", "!"]
    # without explain, no explanation; the answer is the same
    plain = analyze(client, texts, ATTN).json()["predictions"]
    assert all(q["explanation"] is None for q in plain)
    assert [q["probs"] for q in plain] == [q["probs"] for q in r.json()["predictions"]]


def test_explain_over_windows_still_sums_to_one(client):
    text = " ".join(["the cast is superb , honestly the ending was awful ."] * 6)  # 66 tokens: 3 windows
    (p,) = analyze(client, [text], ATTN, explain=True).json()["predictions"]
    assert p["windows"] == 3 and len(p["explanation"]) == 66
    assert sum(t["weight"] for t in p["explanation"]) == pytest.approx(1, abs=1e-5)
    assert all(text[t["start"] : t["end"]] == t["token"] for t in p["explanation"])


def test_explain_on_a_model_without_attention_is_a_400(client):
    err = assert_envelope(analyze(client, ["a great film"], MODEL, explain=True), 400, "invalid_request")
    assert "attention" in err["message"]
    for loose in ("yes", 1, "true"):  # a sentiment audit's: taken as true
        assert_envelope(analyze(client, ["a great film"], ATTN, explain=loose), 400, "invalid_request")


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
    assert err["details"] == [{"available": sorted([MODEL, ATTN])}]
    # served, for another route: said so, not "no such model is served"
    assert err["message"] == (
        "model 'digits-cnn' is served for the task 'image-classification'; "
        "this route takes 'text-classification' models"
    )


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
