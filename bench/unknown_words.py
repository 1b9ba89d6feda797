"""Does a fallback for unknown words pay? (issue 17: "subword or character fallback for unknown words if it pays")

    .venv/bin/python -m bench.unknown_words artifacts/sst2-gru-distilled artifacts/imdb-lstm

The text models' word rows are fixed Word2Vec vectors, so an unknown word can be read as a known word of the same
stem without retraining. ``StemmingVocab`` tries, for a word the vocabulary lacks, its elongations shortened
("sooo" -> "soo", "so") and its suffixes stripped (-ies -> -y, -ably -> -able, -ing, -ed, -s, -ly, ...; never a
prefix: "un-" would flip a word's sense), and takes the first known one. Printed per model, on its recorded
validation split and on the out-of-domain stand-in (bench/data/reviews-out-of-domain.tsv): the share of tokens
unknown, the share the fallback reads, and the accuracy with and without it.
"""

from __future__ import annotations

import argparse
import csv
import re
from pathlib import Path

import numpy as np
import onnxruntime as ort

from contract.metadata import ONNX_FILE, load_metadata
from contract.text import UNK_ID, Vocab, text_logits
from contract.text_data import text_validation

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "sentiment"
SUFFIXES = [
    ("iest", "y"), ("ier", "y"), ("ies", "y"), ("ied", "y"), ("ily", "y"), ("ably", "able"), ("ibly", "ible"),
    ("ness", ""), ("ment", ""), ("ingly", ""), ("edly", ""), ("ing", "e"), ("ing", ""), ("ed", "e"), ("ed", ""),
    ("es", ""), ("s", ""), ("est", ""), ("er", ""), ("ly", ""), ("y", ""),
]  # fmt: skip


def stems(word: str) -> list[str]:
    """Known-word candidates for ``word``, most specific first."""
    out = []
    if re.search(r"(.)\1\1", word):
        out += [re.sub(r"(.)\1{2,}", r"\1\1", word), re.sub(r"(.)\1{2,}", r"\1", word)]
        word = out[0]
    for suffix, repl in SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            stem = word[: -len(suffix)] + repl
            out.append(stem)
            if not repl and len(stem) >= 4 and stem[-1] == stem[-2]:  # "cancelling" -> "cancell" -> "cancel"
                out.append(stem[:-1])
    return out


class StemmingVocab(Vocab):
    """A vocabulary that reads an unknown word as its first known stem; counts what it saw."""

    def __init__(self, itos: list[str]) -> None:
        super().__init__(itos)
        self.tokens = self.unknown = self.read = 0
        self.fallback = True

    def encode(self, tokens: list[str]) -> list[int]:
        ids = []
        for t in tokens:
            i = self.stoi.get(t)
            if i is None:
                self.unknown += 1
                known = [self.stoi[s] for s in stems(t) if s in self.stoi] if self.fallback else []
                self.read += bool(known)
                i = known[0] if known else UNK_ID
            ids.append(i)
        self.tokens += len(tokens)
        return ids


def _validation(folder: Path) -> tuple[list[str], np.ndarray]:
    meta = load_metadata(folder)
    return text_validation(meta, DATA / ("sst2/train.tsv" if meta.dataset.name.startswith("sst") else "imdb/train.csv"))


def _stand_in() -> tuple[list[str], np.ndarray]:
    with open(REPO / "bench" / "data" / "reviews-out-of-domain.tsv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r["sentence"] for r in rows], np.asarray([int(r["label"]) for r in rows])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", type=Path, nargs="+", help="exported text classifiers")
    args = p.parse_args(argv)
    print("| model | texts | tokens unknown | read by the fallback | accuracy without → with |")
    print("|---|---|---:|---:|---|")
    for folder in args.models:
        meta = load_metadata(folder)
        pre = meta.text_preprocessing()
        sess = ort.InferenceSession(str(folder / ONNX_FILE), providers=["CPUExecutionProvider"])
        for name, (texts, labels) in (("validation", _validation(folder)), ("out-of-domain stand-in", _stand_in())):
            acc = []
            for fallback in (False, True):
                vocab = StemmingVocab(Vocab.load(folder / pre.vocab_file).itos)
                vocab.fallback = fallback
                z = text_logits(sess, texts, pre.tokenizer, vocab)
                acc.append(float((z.argmax(1) == labels).mean()))
            print(
                f"| `{folder.name}` | {name} ({len(texts)}) | {vocab.unknown / vocab.tokens:.2%} | "
                f"{vocab.read / vocab.tokens:.2%} | {acc[0]:.2%} → {acc[1]:.2%} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
