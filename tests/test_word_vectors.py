"""Word vectors (training.word_vectors, gensim), the text models' embedding started from them, and --keep."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from contract.metadata import load_metadata, sha256_file
from contract.text import PAD, UNK, TokenizerConfig, tokenize
from contract.text_data import synthetic_sentiment
from export.onnx_export import export_checkpoint
from training.text_classification import TextTrainConfig, train_text
from training.word_vectors import SHIPPED_CORPUS_SHA256, corpus, corpus_sha256, load_vectors
from training.word_vectors import main as vectors_main

UNSUP = Path(__file__).resolve().parents[2] / "shared" / "data" / "sentiment" / "imdb" / "unsup.csv.gz"


@pytest.mark.skipif(not UNSUP.is_file(), reason=f"the unlabelled reviews are not at {UNSUP}")
def test_word2vec_on_unlabelled_reviews(tmp_path):
    out = tmp_path / "w2v"
    argv = ["--unsup", str(UNSUP), "--limit", "400", "--epochs", "2", "--min-count", "3", "--vector-size", "24"]
    assert vectors_main([*argv, "--max-words", "2000", "--out", str(out)]) == 0
    words, vectors, info = load_vectors(out)
    assert vectors.shape == (len(words), 24) and 500 < len(words) <= 2000 and np.isfinite(vectors).all()
    assert words[0] == "the" and set(words[1:3]) == {",", "."}  # most frequent first, tokenised as served
    assert "n't" in words and "don't" not in words
    assert info["sources"]["unsup.csv.gz"]["texts"] == 400 and "good" in info["neighbours"]
    # one worker and a stable hash: a second run, in another process, gives the same vectors bit for bit
    again = tmp_path / "again"
    run = [sys.executable, "-m", "training.word_vectors", *argv, "--max-words", "2000", "--out", str(again)]
    subprocess.run(run, check=True, capture_output=True, cwd=Path(__file__).resolve().parents[1])
    np.testing.assert_array_equal(np.load(again / "vectors.npy"), vectors)


def small_vectors(folder: Path, extra: list[str]) -> tuple[list[str], np.ndarray]:
    words = sorted({t for text in synthetic_sentiment().texts for t in tokenize(text, TokenizerConfig())})
    words = [w for w in words if w != "boring"] + extra  # one training word without a vector
    vectors = np.random.default_rng(1).normal(0, 0.5, size=(len(words), 12)).astype(np.float32)
    folder.mkdir()
    np.save(folder / "vectors.npy", vectors)
    (folder / "words.json").write_text(json.dumps(words))
    (folder / "vectors.json").write_text(json.dumps({"method": "test"}))
    return words, vectors


@pytest.mark.parametrize("frozen", [True, False])
def test_embedding_starts_from_the_vectors(tmp_path, frozen):
    words, vectors = small_vectors(tmp_path / "v", extra=["splendid", "dreadful"])
    cfg = TextTrainConfig(epochs=2, progress=False, threads=1, max_len=24, min_freq=1)
    cfg = TextTrainConfig(**{**cfg.__dict__, "vectors": str(tmp_path / "v"), "freeze_vectors": frozen})
    ckpt = train_text(synthetic_sentiment(200), cfg, {"hidden_size": 16})
    vocab, weight = ckpt["vocab"], ckpt["state_dict"]["embed.weight"].numpy()
    assert ckpt["model_config"]["embed_dim"] == 12 and weight.shape == (len(vocab), 12)
    assert {"splendid", "dreadful"} <= set(vocab)  # the vocabulary grows to what the vectors cover
    index = {w: i for i, w in enumerate(words)}
    have = [i for i, w in enumerate(vocab) if w in index]
    expected = vectors[[index[vocab[i]] for i in have]]
    assert ckpt["embedding"]["rows_from_vectors"] == len(have) and ckpt["embedding"]["frozen"] is frozen
    assert "boring" in vocab and "boring" not in index  # a training word without a vector gets a row of its own
    if frozen:  # the vectors' rows are exactly as given, and the card names the vectors by their file's sha256
        np.testing.assert_array_equal(weight[have], expected)
        torch.save(ckpt, tmp_path / "checkpoint.pt")
        meta = export_checkpoint(tmp_path / "checkpoint.pt", tmp_path / "art", name="with-vectors")
        assert meta.training["vectors_sha256"] == sha256_file(tmp_path / "v" / "vectors.npy")
        assert load_metadata(tmp_path / "art").training["vectors_sha256"] == meta.training["vectors_sha256"]
    else:
        assert not np.allclose(weight[have], expected) and np.allclose(weight[have], expected, atol=0.5)
    np.testing.assert_array_equal(weight[vocab.index(PAD)], 0)
    assert vocab.index(UNK) == 1


@pytest.mark.parametrize("keep", ["best", "last"])
def test_keep_last_keeps_the_final_epoch(keep):
    cfg = TextTrainConfig(epochs=3, progress=False, threads=1, max_len=24, min_freq=1, patience=8, keep=keep)
    ckpt = train_text(synthetic_sentiment(300), cfg, {"hidden_size": 8, "embed_dim": 8})
    losses = [row["val_loss"] for row in ckpt["history"]]
    chosen = 3 if keep == "last" else 1 + int(np.argmin(losses))
    assert ckpt["metrics"]["best_epoch"] == chosen
    assert ckpt["metrics"]["val_loss"] == pytest.approx(losses[chosen - 1], rel=1e-6)


def test_fixed_vectors_refuse_weight_decay(tmp_path):
    """Decay moves every row whatever its gradient, so it would move the fixed ones."""
    small_vectors(tmp_path / "v", extra=[])
    cfg = TextTrainConfig(epochs=1, progress=False, threads=1, max_len=24, min_freq=1, weight_decay=0.01)
    cfg = TextTrainConfig(**{**cfg.__dict__, "vectors": str(tmp_path / "v")})
    with pytest.raises(ValueError, match="weight-decay"):
        train_text(synthetic_sentiment(100), cfg, {"hidden_size": 8})


SST2 = UNSUP.parents[1] / "sst2" / "train.tsv"
IMDB = UNSUP.parent / "train.csv"


@pytest.mark.slow
@pytest.mark.skipif(not all(p.is_file() for p in (UNSUP, IMDB, SST2)), reason="no sentiment data in ../shared/data")
def test_the_vectors_corpus_tokenises_as_when_the_shipped_text_models_were_built():
    """make vectors' corpus, tokenised today, is the one the shipped vectors came from: a tokenizer change that
    alters it changes every vector and so every text model, and on 2026-12-06 went unnoticed until a rebuild of
    sst2-gru read a point more of validation than its artifact (about 30 s)."""
    sentences, sources = corpus(UNSUP, [IMDB, SST2], val_fraction=0.1, split_seed=0)  # the Makefile's vectors line
    assert [s["texts"] for s in sources.values()] == [49_730, 22_414, 6_194]
    assert corpus_sha256(sentences) == SHIPPED_CORPUS_SHA256, (
        "the tokenizer reads the word vectors' corpus otherwise: run make vectors, rebuild the text models "
        "(make models' sentiment lines), then set training.word_vectors.SHIPPED_CORPUS_SHA256"
    )
