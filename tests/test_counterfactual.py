"""Counterfactual rows (training/counterfactual.py): opinion words swapped for their nearest opposite, labels
turned over, and nothing else touched."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from contract.text import PAD, UNK, Vocab
from training.counterfactual import counterparts, turned, vader_lexicon

WORDS = ["good", "bad", "great", "awful", "drill", "not", "superb"]
# 2-d vectors: good/bad close together, great/awful close together, superb far from every negative word
VECTORS = np.array(
    [[1.0, 0.1], [1.0, 0.0], [0.0, 1.0], [0.1, 1.0], [-1.0, 0.0], [-1.0, -1.0], [-1.0, 0.05]], dtype=np.float32
)
LEXICON = {"good": 1.9, "bad": -2.5, "great": 3.1, "awful": -2.0, "superb": 2.9, "meh": -0.3}


def _vocab() -> Vocab:
    return Vocab([PAD, UNK, *WORDS])


def test_vaders_lexicon_rates_plain_words_both_ways():
    lex = vader_lexicon()
    assert len(lex) > 5000
    assert lex["great"] > 2 and lex["terrible"] < -1.5 and "drill" not in lex
    assert all(w.isalpha() and w == w.lower() for w in lex)


def test_each_opinion_word_goes_to_its_nearest_opposite():
    v = _vocab()
    parts = counterparts(v, WORDS, VECTORS, LEXICON, min_rating=1.0, min_cosine=0.4)
    assert parts.pairs(v) == {"good": "bad", "bad": "good", "great": "awful", "awful": "great"}
    assert [v.itos[i] for i in np.flatnonzero(parts.lone)] == ["superb"]  # no negative word near it
    assert parts.record() == {"opinion_words": 5, "with_counterpart": 4}
    ids = torch.arange(len(v))
    kept = ~parts.opinion[ids]
    assert torch.equal(parts.to[ids][kept], ids[kept])  # <pad>, <unk>, drill and not map to themselves


def test_turned_rows_swap_opinion_words_and_labels_and_nothing_else():
    v = _vocab()
    parts = counterparts(v, WORDS, VECTORS, LEXICON)
    s = v.stoi
    ids = torch.tensor(
        [
            [s["not"], s["good"], s["drill"], 0],  # -> not bad drill: label turned
            [s["drill"], s["drill"], 0, 0],  # no opinion word: kept
            [s["great"], s["superb"], 0, 0],  # superb has no counterpart: kept
            [s["awful"], s["bad"], s["drill"], s["drill"]],
        ]
    )
    labels = torch.tensor([0, 1, 1, 0])
    out, y = turned(ids, labels, 1.0, parts, torch.Generator().manual_seed(0))
    assert [v.decode(r.tolist()) for r in out] == [
        ["not", "bad", "drill", PAD],
        ["drill", "drill", PAD, PAD],
        ["great", "superb", PAD, PAD],
        ["great", "good", "drill", "drill"],
    ]
    assert y.tolist() == [1, 1, 1, 1]
    # distillation targets (one-hot label | teachers' probabilities): both halves' classes swap
    targets = torch.tensor([[1.0, 0.0, 0.7, 0.3]] * 4)
    _, t = turned(ids, targets, 1.0, parts, torch.Generator().manual_seed(0))
    assert torch.equal(t[0], targets[0, [1, 0, 3, 2]]) and torch.equal(t[1], targets[1])
    # about as often as asked, and never at chance 0
    many = ids[[0]].repeat(2000, 1)
    _, y2 = turned(many, torch.zeros(2000, dtype=torch.long), 0.3, parts, torch.Generator().manual_seed(1))
    assert 0.26 < y2.float().mean().item() < 0.34
    assert turned(ids, labels, 0.0, parts, torch.Generator())[0] is ids


def test_the_text_recipe_turns_rows_and_records_it(tmp_path):
    from contract.text import TokenizerConfig, tokenize
    from contract.text_data import synthetic_sentiment
    from training.text_classification import TextTrainConfig, train_text

    ds = synthetic_sentiment(200)
    words = sorted({t for text in ds.texts for t in tokenize(text, TokenizerConfig())})
    rng = np.random.default_rng(0)
    vectors = rng.normal(0, 1, size=(len(words), 12)).astype(np.float32)
    # each positive word beside one negative word: "great" sits by "awful" as antonyms do in real vectors
    for good, bad in [("great", "awful"), ("wonderful", "terrible"), ("brilliant", "dull"), ("funny", "boring")]:
        vectors[words.index(bad)] = vectors[words.index(good)] + rng.normal(0, 0.1, 12)
    (tmp_path / "v").mkdir()
    np.save(tmp_path / "v" / "vectors.npy", vectors)
    (tmp_path / "v" / "words.json").write_text(json.dumps(words))
    (tmp_path / "v" / "vectors.json").write_text(json.dumps({"method": "test"}))
    base = TextTrainConfig(epochs=1, progress=False, threads=1, max_len=24, min_freq=1, counterfactual=0.5)
    with pytest.raises(ValueError, match="needs --vectors"):
        train_text(ds, base, {"hidden_size": 8, "embed_dim": 8})
    cfg = TextTrainConfig(**{**base.__dict__, "vectors": str(tmp_path / "v")})
    ckpt = train_text(ds, cfg, {"hidden_size": 8})
    record = ckpt["counterfactual"]
    assert record["chance"] == 0.5 and record["lexicon"] == "vaderSentiment"
    assert record["with_counterpart"] >= 6 and record["opinion_words"] >= record["with_counterpart"]
    with pytest.raises(ValueError, match="'not'"):  # the synthetic reviews never say "not": nothing to write it with
        train_text(ds, TextTrainConfig(**{**cfg.__dict__, "negate": 0.5}), {"hidden_size": 8})
    ds.texts[0] = "not never n't no too a so very that really " + ds.texts[0]
    ckpt = train_text(ds, TextTrainConfig(**{**cfg.__dict__, "negate": 0.5}), {"hidden_size": 8})
    assert ckpt["negated"]["chance"] == 0.5 and ckpt["negated"]["negated_words"] >= 8


def test_negated_rows_put_a_negation_before_their_one_opinion_word_and_turn_the_label():
    from training.counterfactual import FILLERS, NEGATORS, negated, negation

    vocab = Vocab([PAD, UNK, *WORDS, *[w for w in NEGATORS + FILLERS if w not in WORDS]])
    neg = negation(vocab, vader_lexicon())
    ids = {w: i for i, w in enumerate(vocab.itos)}
    rows = [
        [ids["bad"]],  # negative, one opinion word: "not bad", "never so bad", ... positive
        [ids["drill"], ids["great"], ids["drill"]],  # positive: "drill not great drill", ... negative
        [ids["not"], ids["good"]],  # a negation already: its scope is the reader's guess, left alone
        [ids["good"], ids["awful"]],  # two opinion words: left alone
        [ids["bad"]],  # labelled positive against its one word: left alone
        [ids["drill"]],  # no opinion word
    ]
    y = torch.tensor([0, 1, 0, 1, 1, 1])
    written = set()
    for seed in range(40):
        out, y2 = negated(rows, y, 1.0, neg, torch.Generator().manual_seed(seed))
        assert out[2:] == rows[2:] and y2.tolist() == [1, 0, 0, 1, 1, 1]
        for row, before, after in ((out[0], [], [ids["bad"]]), (out[1], [ids["drill"]], [ids["great"], ids["drill"]])):
            inserted = row[len(before) : len(row) - len(after)]
            assert row[: len(before)] == before and row[len(row) - len(after) :] == after
            assert vocab.itos[inserted[0]] in NEGATORS and len(inserted) in (1, 2)
            assert len(inserted) == 1 or vocab.itos[inserted[1]] in FILLERS
            written.add(tuple(vocab.itos[t] for t in inserted))
    assert len({w[0] for w in written}) == len(NEGATORS) and any(len(w) == 2 for w in written)
    assert negated(rows, y, 0.0, neg, torch.Generator())[0] is rows  # off: the batch untouched
    # distillation targets (label one-hot, teachers' probabilities): both halves swap on a negated row; an
    # unlabelled row (no one-hot) is judged by its teachers
    soft = torch.tensor([[1, 0, 0.9, 0.1], [0, 0, 0.2, 0.8], [0, 0, 0.7, 0.3]])
    out, s2 = negated([rows[0], rows[1], rows[1]], soft, 1.0, neg, torch.Generator().manual_seed(0))
    assert torch.allclose(s2, torch.tensor([[0, 1, 0.1, 0.9], [0, 0, 0.8, 0.2], [0, 0, 0.7, 0.3]]))
    assert out[2] == rows[1]  # the teachers say negative, its one word positive: left alone
