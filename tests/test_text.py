"""Tokenizer, vocabulary, padding/batch invariance, text export parity and the text training CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

import models
from contract.metadata import ModelMetadata, sha256_file
from contract.text import (
    MAX_MARKS,
    PAD,
    UNK,
    TokenizerConfig,
    Vocab,
    combine_windows,
    encode_text,
    encode_windows,
    stream_safe,
    tokenize,
    tokenize_spans,
)
from contract.text_data import load_table, phrase_split, split, synthetic_sentiment, text_validation
from export.__main__ import main as export_main
from training.__main__ import main as train_main

TOK = TokenizerConfig(max_len=8)
TEXT_MODELS = models.list_models("text-classification")


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("I didn't love it—it's <b>GREAT</b>!!", ["i", "did", "n't", "love", "it", "—", "it", "'s", "great", "!", "!"]),
        ("it 's a charming journey . ", ["it", "'s", "a", "charming", "journey", "."]),  # SST-2's own form
        ("do n't", ["do", "n't"]),
        ("don't", ["do", "n't"]),
        ("can't won't", ["ca", "n't", "wo", "n't"]),
        ("“Smart” quotes ‘too’", ['"', "smart", '"', "quotes", "'", "too", "'"]),
        ("ｆｕｌｌｗｉｄｔｈ ＡＢＣ", ["fullwidth", "abc"]),  # NFKC
        ("emoji 😀 CJK 很好 RTL שלום", ["emoji", "😀", "cjk", "很好", "rtl", "שלום"]),
        ("nul\x00byte\x85next", ["nul", "byte", "next"]),
        ("", []),
        (" \t\n ", []),
        # a sentiment audit's (2026-12-06): "<3 ... >" was taken for a tag and its words dropped (a review read as
        # its first sentence, negative, flipped); marks left unjoined split a word into letters and marks
        ("kidding <3 it was brilliant >.<", ["kidding", "<", "3", "it", "was", "brilliant", ">", ".", "<"]),
        ("worth it -> <br />buy", ["worth", "it", "-", ">", "buy"]),
        ("g\u0332r\u0332e\u0332a\u0332t\u0332 s\u0336o\u0336", ["great", "so"]),  # underlined, struck through
        ("LOVED İT ❤\ufe0f 5\u20e3", ["loved", "it", "❤", "5"]),  # İ lowercased, a variation selector, a keycap
    ],
)
def test_tokenize(text, tokens):
    assert tokenize(text, TOK) == tokens


def test_combining_marks_normalise_to_one_token():
    assert tokenize("cafe\u0301", TOK) == tokenize("café", TOK) == ["café"]


def test_vocab_roundtrip_and_unknowns(tmp_path):
    v = Vocab.build([["a", "b", "a"], ["a", "c", "b"]], min_freq=2, max_size=10)
    assert v.itos == [PAD, UNK, "a", "b"]
    assert v.encode(["a", "zzz", "b"]) == [2, 1, 3]
    v.save(tmp_path / "v.json")
    assert Vocab.load(tmp_path / "v.json").itos == v.itos
    assert len(Vocab.build([["x"] * 5, ["y"] * 4, ["z"] * 3], min_freq=1, max_size=4)) == 4
    with pytest.raises(ValueError):
        Vocab(["a", PAD, UNK])


def test_tokenizer_and_vocab_round_trip():
    """Text -> tokens -> ids -> tokens is lossless for known tokens, and re-tokenising the tokens is stable."""
    texts = ["It's a GREAT film, isn't it?", "“Dull” — and 2 hours long...", "do n't miss it !"]
    token_lists = [tokenize(t, TokenizerConfig()) for t in texts]
    v = Vocab.build(token_lists, min_freq=1)
    for tokens in token_lists:
        assert v.decode(v.encode(tokens)) == tokens
        assert tokenize(" ".join(tokens), TokenizerConfig()) == tokens  # PTB output is a fixed point
    assert v.decode(v.encode(["never-seen"])) == [UNK]


def test_encode_truncates_and_says_so():
    v = Vocab.build([["w"]], min_freq=1)
    ids, n, truncated = encode_text(" ".join(["w"] * 20), TOK, v)
    assert len(ids) == 8 and n == 20 and truncated
    assert encode_text("w w", TOK, v) == ([2, 2], 2, False)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("pooling", ["max", "mean", "last"])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_padding_and_batch_do_not_change_the_result(cell, pooling, bidirectional):
    torch.manual_seed(0)
    m = models.create_model(
        "rnn-classifier", vocab_size=50, cell=cell, pooling=pooling, num_layers=2, bidirectional=bidirectional
    ).eval()
    lengths = torch.tensor([20, 5, 1, 13])
    short = torch.randint(2, 50, (4, 20))
    long = torch.randint(0, 50, (4, 200))  # garbage beyond each length
    long[:, :20] = short
    with torch.no_grad():
        a = m(short, lengths)
        b = m(long, lengths)
        alone = torch.cat([m(short[i : i + 1, : lengths[i]], lengths[i : i + 1]) for i in range(4)])
    assert torch.equal(a, b)  # padding to 20 or to 200 tokens: bit-identical
    torch.testing.assert_close(a, alone, rtol=0, atol=1e-6)


def test_phrase_split_keeps_pieces_of_validation_sentences_out_of_training():
    texts = [
        "a great film .",
        "great film",
        "a great",
        "the plot is thin and slow .",
        "thin and slow",
        "slow",
        "an unrelated phrase",
        "it works well enough !",
        "works well",
    ] * 3
    tr, va = phrase_split(texts, 0.34, 0, TokenizerConfig(max_len=64))
    val_tokens = [tokenize(texts[i], TokenizerConfig()) for i in va]
    spans = {tuple(t[a:b]) for t in val_tokens for a in range(len(t)) for b in range(a + 1, len(t) + 1)}
    assert len(va) >= 1
    assert all(tuple(tokenize(texts[i], TokenizerConfig())) not in spans for i in tr)
    # validation holds whole sentences only: none of them lies inside a longer row
    train_text = "\n".join(" " + " ".join(tokenize(t, TokenizerConfig())) + " " for t in texts)
    for i in va:
        assert train_text.count(" " + " ".join(val_tokens[list(va).index(i)]) + " ") == texts.count(texts[i])


def test_table_reader(tmp_path):
    p = tmp_path / "reviews.csv"
    p.write_text('review,stars\n"good, really good",pos\nbad,neg\n"so ""bad""",neg\n', encoding="utf-8")
    ds = load_table(p, name="csv", text_column="review", label_column="stars")
    assert ds.texts == ["good, really good", "bad", 'so "bad"'] and ds.label_names == ["neg", "pos"]
    assert ds.labels.tolist() == [1, 0, 0]
    t = tmp_path / "sst.tsv"
    t.write_text("sentence\tlabel\nit 's `` fine '' \t1\nbad \t0\n", encoding="utf-8")
    ds = load_table(t, name="sst2")
    assert ds.texts[0] == "it 's `` fine '' " and ds.label_names == ["negative", "positive"]
    with pytest.raises(ValueError, match="needs columns"):
        load_table(p, name="csv")


@pytest.fixture(scope="module")
def text_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("text-ckpt")
    assert (
        train_main(
            [
                "rnn-classifier",
                "--data",
                "synthetic",
                "--epochs",
                "4",
                "--out",
                str(out),
                "--no-progress",
                "--model-arg",
                "hidden_size=32",
                "--model-arg",
                "embed_dim=32",
            ]
        )
        == 0
    )
    return out / "checkpoint.pt"


@pytest.mark.parametrize("model", TEXT_MODELS)
def test_text_dry_run(tmp_path, model):
    assert train_main([model, "--dry-run", "--out", str(tmp_path), "--no-progress"]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["dataset"]["name"] == "synthetic-sentiment"


def test_text_export_parity_and_metadata(tmp_path, text_checkpoint):
    assert export_main([str(text_checkpoint), "--out", str(tmp_path / "t"), "--dry-run"]) == 0
    meta = ModelMetadata.model_validate_json((tmp_path / "t" / "model.json").read_text())
    pre = meta.text_preprocessing()
    assert meta.task == "text-classification" and meta.labels == ["negative", "positive"]
    assert [i.name for i in meta.inputs] == ["ids", "lengths"] and meta.inputs[0].shape == [-1, -1]
    assert pre.vocab_sha256 == sha256_file(tmp_path / "t" / "vocab.json")
    assert meta.parity.seq_lens == [7, 64] and meta.parity.max_abs_diff <= 1e-5
    assert "vectors_sha256" not in meta.training  # a random start names no vectors (tests/test_word_vectors.py)
    vocab = Vocab.load(tmp_path / "t" / "vocab.json")
    assert len(vocab) == pre.vocab_size

    sess = ort.InferenceSession(str(tmp_path / "t" / "model.onnx"), providers=["CPUExecutionProvider"])
    ds = synthetic_sentiment(40, seed=9)
    seqs = [encode_text(t, pre.tokenizer, vocab)[0] for t in ds.texts]
    lens = np.array([len(s) for s in seqs])
    ids = np.zeros((len(seqs), 300), dtype=np.int64)  # padded far beyond the longest
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
    padded = sess.run(None, {"ids": ids, "lengths": lens})[0]
    tight = sess.run(None, {"ids": ids[:, : lens.max()], "lengths": lens})[0]
    np.testing.assert_allclose(padded, tight, rtol=0, atol=1e-6)
    assert (padded.argmax(1) == ds.labels).mean() >= 0.9  # the synthetic task is learnt


def test_repeated_exports_keep_the_sequence_axis_dynamic(tmp_path, text_checkpoint):
    """torch fills aten.lstm's dispatch cache on the first trace; later exports must not bake in a length."""
    import onnx

    for i in range(2):
        assert export_main([str(text_checkpoint), "--out", str(tmp_path / str(i)), "--dry-run"]) == 0
        graph = onnx.load(str(tmp_path / str(i) / "model.onnx")).graph
        dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
        assert all(isinstance(d, str) for d in dims), dims


DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "sentiment"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"the shared sentiment data is not at {DATA}")


def test_windows_cover_the_text_in_order_up_to_the_cap():
    v = Vocab([PAD, UNK, "w", "x"])
    tok = TokenizerConfig(max_len=4)
    windows, n, _ = encode_windows("w x " * 5, tok, v, max_windows=8)  # 10 tokens
    assert n == 10 and windows == [[2, 3, 2, 3], [2, 3, 2, 3], [2, 3]]
    windows, n, evidence = encode_windows("w x " * 5, tok, v, max_windows=2)
    assert n == 10 and sum(map(len, windows)) == 8  # the rest is cut, and the caller can tell
    assert evidence.tolist() == [2, 3] * 4  # what was read
    assert encode_windows("  ", tok, v)[:2] == ([], 0)
    logits = np.array([[0.0, 4.0], [2.0, 0.0], [1.0, 1.0]], dtype=np.float32)  # a text of 2 windows, one of 1
    np.testing.assert_allclose(combine_windows(logits, [[3, 1], [5]]), [[0.5, 3.0], [1.0, 1.0]])


def test_unknown_symbols_are_no_evidence_of_another_language():
    """A sentiment audit's (2026-12-06): "Loved it 😍😍😍🔥🔥" read as 5 unknown tokens of 7 was flagged out of
    distribution by both default models, as were 11 of 11 English reviews with emoji, stars or a keycap, by
    imdb-lstm. The out-of-distribution score reads the ids but those of unknown symbols; the graph reads all."""
    v = Vocab([PAD, UNK, "loved", "it", "!", "★"])
    windows, n, evidence = encode_windows("Loved it 😍😍🔥 ! ★ zzyzx 42", TokenizerConfig(), v)
    assert windows == [[2, 3, 1, 1, 1, 4, 5, 1, 1]] and n == 9
    assert evidence.tolist() == [2, 3, 4, 5, 1, 1]  # known symbols and an unknown word or number stay
    assert encode_windows("😍🔥", TokenizerConfig(), v).evidence.size == 0


@pytest.mark.parametrize(
    "text",
    [
        "I didn't love it—it's <b>GREAT</b>!!",
        "“Quoted” ‘single’ ``tex'' and rock'n'roll",
        "ﬁne ﬁlm, İstanbul'S best, Straße",
        "ce\u0301le\u0300bre \u0000nul\u0085next",
        "ＦＵＬＬ width <a href='x'>link</a> y'all can't",
        "ｶﾞｲﾄﾞ good film",  # half-width katakana: the voicing mark joins the character before it
        "‹" + "İ" * 120 + "> good film",  # lowercasing lengthens İ: done after the tag is stripped, as tokenize does
        "goo" + "\u0301\u0316" * 3000 + "d good",  # marks past the 30th of a run dropped (once hours of CPU)
        "a" + "\u0f73" * 500 + " fine ｶ" + "\uff9e" * 100,  # marks hidden in a decomposition count too
        "The food was g\u0332r\u0332e\u0332a\u0332t\u0332, İNCREDİBLE ❤\ufe0f <3 it >.<",  # marks dropped
    ],
)
def test_token_spans_point_at_the_characters_of_each_token(text):
    spans = tokenize_spans(text, TokenizerConfig())
    assert [t for t, _, _ in spans] == tokenize(text, TokenizerConfig())
    for token, a, b in spans:
        assert a is not None and b is not None and 0 <= a < b <= len(text)
        assert token in tokenize(text[a:b], TokenizerConfig())  # the span holds what its token was made of


def test_spans_that_would_hold_other_tokens_are_none():
    """A review's fuzzing (2026-12-06): a half-width voicing mark and an accent after a letter normalise as a
    whole text otherwise than cluster by cluster; the places then held 'K' for the token 'ḱ' (the counts agreed).
    Such a text's spans are None, never another token's characters."""
    spans = tokenize_spans("Kﾞ\u0301 good", TokenizerConfig())
    assert [t for t, _, _ in spans] == tokenize("Kﾞ\u0301 good", TokenizerConfig())
    assert all(a is None and b is None for _, a, b in spans)


def test_combining_marks_past_the_stream_safe_limit_are_dropped():
    cfg = TokenizerConfig()
    long = "e" + "\u0301" * 10_000 + " good"
    assert tokenize(long, cfg) == tokenize("e" + "\u0301" * MAX_MARKS + " good", cfg)
    assert stream_safe(long) == "e" + "\u0301" * MAX_MARKS + " good" and stream_safe("ok") == "ok"
    spans = tokenize_spans(long, cfg)
    assert spans[-1] == ("good", 10_002, 10_006) and spans[-2][2] == 10_001  # the dropped marks join the last kept
    assert tokenize("naïve café " * 3, cfg) == ["naïve", "café"] * 3  # ordinary accents untouched


@needs_data
def test_token_spans_agree_with_the_tokenizer_on_the_corpora():
    texts = load_table(DATA / "sst2" / "train.tsv", name="sst2").texts[::7]
    texts += load_table(DATA / "imdb" / "train.csv", name="imdb").texts[::25]
    cfg = TokenizerConfig()
    for text in texts:
        spans = tokenize_spans(text, cfg)
        assert all(a is not None for _, a, _ in spans), text
        assert all(t in tokenize(text[a:b], cfg) for t, a, b in spans), text  # ("¾" makes three tokens)
        starts = [a for _, a, _ in spans]
        assert starts == sorted(starts), text


@needs_data
def test_sst2_validation_holds_whole_sentences_no_training_row_lies_in():
    ds = load_table(DATA / "sst2" / "train.tsv", name="sst2")
    cfg = TokenizerConfig(max_len=64)
    tr, va = phrase_split(ds.texts, 0.1, 0, cfg)
    assert 600 <= len(va) <= 800 and len(set(tr) & set(va)) == 0
    val = [" " + " ".join(tokenize(ds.texts[i], cfg)) + " " for i in va]
    train = [" " + " ".join(tokenize(ds.texts[i], cfg)) + " " for i in tr]
    joined_val, joined_train = "\n".join(val), "\n".join(train)
    assert not any(t in joined_val for t in train)  # no training phrase inside a validation sentence
    assert not any(v in joined_train for v in val)  # no validation sentence inside a training row


@needs_data
def test_imdb_split_keeps_each_repeated_review_on_one_side():
    ds = load_table(DATA / "imdb" / "train.csv", name="imdb")
    tr, va = split(ds, "random", 0.1, 0, TokenizerConfig())
    assert len(tr) + len(va) == len({t.strip() for t in ds.texts}) == len(ds.texts) - 96
    assert not {ds.texts[i].strip() for i in tr} & {ds.texts[i].strip() for i in va}


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("r.csv", "text,label\ngood,pos\nno label here\n", "line 3: 1 fields, the header has 2"),
        ("r.csv", "text,label\ngood,pos\nokay,\n", "line 3: no label"),
        (
            "r.csv",
            'text,label\ngood,pos\n"so good,pos\nbad,neg\nmeh,neg\n',
            "line 3: 1 fields, the header has 2 (the row runs to line 5: does a quote on line 3 close?)",
        ),
        ("r.csv", 'text,label\n"good\nreally",pos\nokay,\n', "line 4: no label"),  # a text over lines counts its lines
        ("r.tsv", 'text\tlabel\ngood\tpos\n"a\ttab"\tneg\n', "line 3: 3 fields, the header has 2 (a TSV is read"),
        ("r.csv", "text,label\ngood,pos\nfine,pos\n", "two or more labels"),
        ("r.csv", b"text,label\ngood,pos\ncaf\xe9,neg\n", "line 3 holds byte b'\\xe9', not UTF-8 text; save it"),
    ],
)
def test_a_careless_table_is_refused_naming_its_line(tmp_path, name, content, message):
    """A new user's table once trained on: a missing label crashed deep inside, an empty label became a class,
    a quoted tab in a TSV made a class of half a text, one label trained a model that always says it; a byte
    that is not UTF-8 (a Latin-1 file) was a traceback."""
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ValueError, match=re.escape(message)):
        load_table(p, name="csv")


def test_a_spreadsheets_byte_order_mark_and_rows_without_text(tmp_path, caplog):
    """Excel's "CSV UTF-8" starts with a byte-order mark, which made the first column '\\ufefftext' and the
    table refused; a row with no text was trained on with its label, though the service answers no empty text."""
    p = tmp_path / "r.csv"
    p.write_bytes("\ufefftext,label\ngood,pos\n,neg\n  ,pos\nbad,neg\n".encode())
    with caplog.at_level("WARNING"):
        ds = load_table(p, name="csv")
    assert ds.texts == ["good", "bad"] and ds.labels.tolist() == [1, 0]
    assert "2 rows with no text left out (line 3 ...)" in caplog.text


def test_a_preset_is_chosen_by_a_folder_or_stem_named_for_it_not_a_word_inside_a_name():
    from contract.text_data import preset_for

    assert preset_for(Path("data/sentiment/sst2/train.tsv")) == "sst2" and preset_for(Path("a/imdb/x.csv")) == "imdb"
    assert preset_for(Path("crosstab_reviews.csv")) == preset_for(Path("not_imdb/reviews.csv")) == "csv"
    assert preset_for(Path("home/imdb/work/reviews.csv")) == "csv" and preset_for(Path("imdb/unsup.csv.gz")) == "imdb"


def test_a_row_that_holds_no_word_is_left_out_not_trained_as_an_unknown_word(tmp_path, caplog):
    """A review of markup alone ("<br /><br />") was trained as one <unk> with its label: every unknown word then
    leaned to that label (a training audit's). Punctuation and emoji are words to the tokenizer, and stay."""
    rows = [(f"a fine good film number {i}", "pos") for i in range(20)] + [
        (f"a bad dull film {i}", "neg") for i in range(20)
    ]
    rows += [("<br />" * (i + 2), "neg") for i in range(12)] + [(":)", "pos"), ("!!!", "neg")]  # distinct: no duplicate
    p = tmp_path / "r.csv"
    p.write_text("text,label\n" + "".join(f'"{t}",{y}\n' for t, y in rows), encoding="utf-8")
    argv = ["rnn-classifier", "--data", str(p), "--epochs", "1", "--no-progress", "--model-arg", "hidden_size=8"]
    assert train_main([*argv, "--model-arg", "embed_dim=8", "--out", str(tmp_path / "run")]) == 0
    left_out = re.findall(r"(\d+) (?:training|validation) rows hold no word and are left out, e.g. '<br", caplog.text)
    assert sum(map(int, left_out)) == 12, caplog.text
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert ckpt["metrics"]["n_train"] + ckpt["metrics"]["n_val"] == 42, ckpt["metrics"]
    assert export_main([str(tmp_path / "run" / "checkpoint.pt"), "--out", str(tmp_path / "art")]) == 0
    texts, _ = text_validation(ModelMetadata.model_validate_json((tmp_path / "art" / "model.json").read_text()), p)
    assert len(texts) == ckpt["metrics"]["n_val"] and "<br />" not in "".join(texts)  # calibration's rows: the same
    p.write_text("text,label\n" + "".join(f"{'<br />' * (i + 1)},{'pos' if i % 2 else 'neg'}\n" for i in range(10)))
    with pytest.raises(SystemExit, match="no training row holds a word"):
        train_main([*argv, "--out", str(tmp_path / "none")])


def test_a_header_naming_a_column_twice_is_refused_not_read_as_its_last(tmp_path):
    """A CLI audit's: 'text,label,label' trained on the second label column, silently."""
    p = tmp_path / "r.csv"
    p.write_text("text,label,label\n" + "".join(f"review {i},pos,{'new' if i % 2 else 'old'}\n" for i in range(30)))
    with pytest.raises(ValueError, match="names column 'label' more than once"):
        load_table(p, name="csv")


def test_the_fast_path_of_stream_safe_keeps_the_bound():
    """``_all_kept`` (a review's): a run at the bound is read by ``_kept``, not waved through: "ǖ" ends in two
    marks, so 29 more make a run of 31, and the last is dropped, as before the fast path; 28 more pass whole."""
    from contract.text import MAX_MARKS, _all_kept, stream_safe

    over, at = "ǖ" + "\u0308" * 29, "ǖ" + "\u0308" * 28
    assert MAX_MARKS == 30 and not _all_kept(over) and _all_kept(at)
    assert stream_safe(over) == over[:-1] and stream_safe(at) == at
    many = "".join(chr(c) for c in range(0x300, 0x370)) * 100  # every kind counted once at most, then False
    assert not _all_kept(many) and len(stream_safe(many)) < len(many)
