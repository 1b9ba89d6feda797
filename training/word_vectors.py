"""python -m training.word_vectors: Word2Vec (Mikolov et al. 2013) word vectors for the text classifiers.

Skip-gram with negative sampling (gensim) over unlabelled movie reviews and the *training side* of the labelled
corpora (the validation texts of SST-2's phrase split and IMDB's split are left out, so validation words are as
new to the vectors as the official test set's), tokenised exactly as the classifiers tokenise:

    python -m training.word_vectors --unsup ../shared/data/sentiment/imdb/unsup.csv.gz \\
        --labelled ../shared/data/sentiment/imdb/train.csv ../shared/data/sentiment/sst2/train.tsv \\
        --out runs/word2vec

writes ``vectors.npy`` (float32, one row per word, most frequent first), ``words.json`` and ``vectors.json``
(parameters, corpus hashes, nearest neighbours of a few probe words). ``python -m training rnn-classifier
--vectors runs/word2vec`` starts the embedding from them (see ``load_vectors`` and ``init_embedding``).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from contract.metadata import sha256_file
from contract.text import PAD, UNK, TokenizerConfig, Vocab, tokenize
from contract.text_data import PRESETS, load_table, preset_for, sentence_rows, split

log = logging.getLogger("training.word_vectors")
PROBES = ("good", "terrible", "boring", "masterpiece", "funny", "actor", "delicious", "n't")
VECTORS, WORDS, INFO = "vectors.npy", "words.json", "vectors.json"
# the Makefile's corpus (the unlabelled reviews, IMDB's and SST-2's training sides) as tokenised when the shipped
# text models' vectors were built (corpus_sha256). A change of its tokens changes every vector (gensim draws from
# one random stream) and so every text model: a tokenizer change that alters it needs make vectors and the text
# models rebuilt, and this digest updated (tests/test_word_vectors.py checks it; 2026-12-06's went unnoticed)
SHIPPED_CORPUS_SHA256 = "859ea8d9a1daeb13"


@dataclass(frozen=True)
class Word2VecConfig:
    vector_size: int = 100
    window: int = 5
    min_count: int = 5
    negative: int = 5
    sg: int = 1  # 1 skip-gram, 0 CBOW
    epochs: int = 5
    max_words: int = 30_000  # the most frequent words kept (the embedding's rows)
    seed: int = 0
    workers: int = 1  # more threads train faster but not reproducibly (gensim's own caveat): one keeps it exact


def unsup_texts(path: Path) -> list[str]:
    """The unlabelled reviews: a gzipped CSV with a ``text`` column."""
    csv.field_size_limit(sys.maxsize)
    with gzip.open(path, "rb") as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as f:
        return [row["text"] for row in csv.DictReader(f)]


def training_texts(path: Path, val_fraction: float, split_seed: int) -> list[str]:
    """The training side of a labelled file's split (the classifiers' own split, so no validation text)."""
    name = preset_for(path)
    ds = load_table(path, name=name)
    tok = TokenizerConfig(max_len=PRESETS[name].max_len)
    train, _ = split(ds, PRESETS[name].split, val_fraction, split_seed, tok)
    if PRESETS[name].split == "sentences":  # phrase-level rows (SST-2): keep the sentences, rows in no other row
        train = train[sentence_rows([tuple(tokenize(ds.texts[i], tok)) for i in train])]
    return [ds.texts[i] for i in train]


def corpus(
    unsup: Path, labelled: list[Path], val_fraction: float, split_seed: int, limit: int | None = None
) -> tuple[list[list[str]], dict[str, dict]]:
    """-> the tokenised sentences the vectors learn from, and where they came from (name -> texts, sha256)."""
    texts = unsup_texts(unsup)[:limit]
    sources: dict[str, dict] = {unsup.name: {"texts": len(texts), "sha256": sha256_file(unsup)}}
    for path in labelled:
        more = training_texts(path, val_fraction, split_seed)
        sources[path.name] = {"texts": len(more), "sha256": sha256_file(path), "side": "training split only"}
        texts += more
    tok = TokenizerConfig()
    return [tokenize(t, tok) for t in texts], sources


def corpus_sha256(sentences: list[list[str]]) -> str:
    """The sentences' digest: the first 16 hex digits of the sha256 of them, one per line, tokens joined by spaces."""
    h = hashlib.sha256()
    for tokens in sentences:
        h.update(" ".join(tokens).encode("utf-8") + b"\n")
    return h.hexdigest()[:16]


def train_vectors(sentences: list[list[str]], cfg: Word2VecConfig) -> tuple[list[str], np.ndarray]:
    from gensim.models import Word2Vec

    model = Word2Vec(
        sentences=sentences,
        vector_size=cfg.vector_size,
        window=cfg.window,
        min_count=cfg.min_count,
        negative=cfg.negative,
        sg=cfg.sg,
        epochs=cfg.epochs,
        seed=cfg.seed,
        workers=cfg.workers,
        max_final_vocab=cfg.max_words,
    )
    words = list(model.wv.index_to_key[: cfg.max_words])  # most frequent first
    return words, np.asarray(model.wv[words], dtype=np.float32)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Each row scaled to length 1 (a zero row stays zero), so that a product of rows is their cosine."""
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-8)


def neighbours(words: list[str], vectors: np.ndarray, probes: tuple[str, ...], k: int = 6) -> dict[str, list[str]]:
    index = {w: i for i, w in enumerate(words)}
    unit = unit_rows(vectors)
    out = {}
    for w in probes:
        if w in index:
            sims = unit @ unit[index[w]]
            out[w] = [words[j] for j in np.argsort(-sims)[1 : k + 1]]
    return out


def load_vectors(folder: Path) -> tuple[list[str], np.ndarray, dict]:
    """-> (words, vectors (V, D) float32, the builder's record)."""
    words = json.loads((folder / WORDS).read_text(encoding="utf-8"))
    vectors = np.load(folder / VECTORS)
    if vectors.shape[0] != len(words):
        raise ValueError(f"{folder}: {len(words)} words but {vectors.shape[0]} vectors")
    return words, vectors, json.loads((folder / INFO).read_text(encoding="utf-8"))


def merged_vocab(own: Vocab, words: list[str], max_size: int) -> Vocab:
    """The training texts' vocabulary, then the vectors' words it lacks (most frequent first), up to max_size."""
    seen = set(own.itos)
    extra = [w for w in words if w not in seen]
    return Vocab([*own.itos, *extra][: max(max_size, len(own))])


def init_embedding(vocab: Vocab, words: list[str], vectors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(len(vocab), D) rows: the word's vector where it has one; others drawn with the vectors' own spread;
    <pad> and <unk> zero. Returns the matrix and sets nothing else."""
    index = {w: i for i, w in enumerate(words)}
    std = float(vectors.std())
    out = rng.normal(0.0, std, size=(len(vocab), vectors.shape[1])).astype(np.float32)
    for i, w in enumerate(vocab.itos):
        if w in index:
            out[i] = vectors[index[w]]
    out[vocab.stoi[PAD]] = 0.0
    out[vocab.stoi[UNK]] = 0.0
    return out


def main(argv: list[str] | None = None) -> int:
    d = Word2VecConfig()
    p = argparse.ArgumentParser(
        prog="python -m training.word_vectors",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--unsup", type=Path, required=True, help="unlabelled reviews (unsup.csv.gz)")
    p.add_argument("--labelled", type=Path, nargs="*", default=[], help="labelled files: their training side")
    p.add_argument("--val-fraction", type=float, default=0.1, help="the classifiers' split (to leave out)")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/word2vec"))
    for f, v in asdict(d).items():
        p.add_argument("--" + f.replace("_", "-"), type=type(v), default=v)
    p.add_argument("--limit", type=int, default=None, help="only the first N unlabelled reviews (tests)")
    args = p.parse_args(argv)
    from training.distributed import env_world_size

    if env_world_size() > 1:  # N copies of the same vectors, not a faster run
        raise SystemExit(
            "python -m training.word_vectors runs in one process: gensim's Word2Vec parallelises with its own "
            "--workers threads (not reproducibly), not with torchrun's processes"
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = Word2VecConfig(**{f: getattr(args, f) for f in asdict(d)})
    t0 = time.perf_counter()
    sentences, sources = corpus(args.unsup, args.labelled, args.val_fraction, args.split_seed, args.limit)
    n_tokens = sum(map(len, sentences))
    digest = corpus_sha256(sentences)
    seconds = time.perf_counter() - t0
    log.info("corpus: %d texts, %d tokens, sha256 %s (%.0f s)", len(sentences), n_tokens, digest, seconds)
    if args.limit is None and digest != SHIPPED_CORPUS_SHA256:
        log.warning("not the corpus the shipped text models' vectors came from (%s)", SHIPPED_CORPUS_SHA256)
    words, vectors = train_vectors(sentences, cfg)
    probes = neighbours(words, vectors, PROBES)
    for w, ns in probes.items():
        log.info("%-12s %s", w, ", ".join(ns))
    args.out.mkdir(parents=True, exist_ok=True)
    np.save(args.out / VECTORS, vectors)
    (args.out / WORDS).write_text(json.dumps(words, ensure_ascii=False) + "\n", encoding="utf-8")
    info = {
        "method": "word2vec " + ("skip-gram" if cfg.sg else "CBOW") + ", negative sampling (gensim)",
        "config": asdict(cfg),
        "sources": sources,
        "tokens": n_tokens,
        "corpus_sha256": digest,
        "words": len(words),
        "neighbours": probes,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    (args.out / INFO).write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    log.info("%d words x %d dims -> %s (%.0f s)", len(words), vectors.shape[1], args.out, info["seconds"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
