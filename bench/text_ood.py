"""What the text models' out-of-distribution score flags on held-out text (contract/text_ood.py)

    .venv/bin/python -m bench.text_ood artifacts/sst2-gru-distilled artifacts/imdb-lstm

Two files the score was never fitted or chosen on: bench/data/reviews-other-languages.tsv (150 reviews in 15
languages, to be flagged) and bench/data/reviews-out-of-domain.tsv (300 English reviews of products and places,
not to be flagged). Printed per model as a markdown table: how many of each are flagged, by the served score and
by the unknown-token share alone, and the other-language reviews let through.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from contract.metadata import load_metadata
from contract.text import Vocab, encode_windows
from contract.text_ood import UNKNOWN, text_ood_score, unknown_share

DATA = Path(__file__).resolve().parent / "data"


def rows(name: str) -> list[dict[str, str]]:
    with open(DATA / name, encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def judge(folder: Path, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> per text: the ``ood_score`` the artifact in ``folder`` serves, whether the service flags it, and whether
    the unknown-token share alone would."""
    meta = load_metadata(folder)
    pre = meta.text_preprocessing()
    vocab = Vocab.load(folder / pre.vocab_file)
    if meta.ood is None:
        raise SystemExit(f"{folder}: not calibrated (python -m export.calibrate)")
    ids = [encode_windows(t, pre.tokenizer, vocab).evidence for t in texts]
    scores = np.array([text_ood_score(x, len(vocab), meta.ood) for x in ids])
    limit = meta.ood.scaling[UNKNOWN][1] if meta.ood.scaling else meta.ood.threshold
    return scores, scores > meta.ood.threshold, np.array([unknown_share(x, len(vocab)) > limit for x in ids])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.text_ood", description=__doc__.split("\n\n")[0])
    p.add_argument("artifacts", type=Path, nargs="+")
    args = p.parse_args(argv)
    foreign, english = rows("reviews-other-languages.tsv"), [r["sentence"] for r in rows("reviews-out-of-domain.tsv")]
    print("| model | other languages flagged (share alone) | English of other domains flagged (share alone) |")
    print("|---|---|---|")
    missed = {}
    for folder in args.artifacts:
        _, f, f0 = judge(folder, [r["text"] for r in foreign])
        _, e, e0 = judge(folder, english)
        print(f"| `{folder.name}` | {f.sum()} / {len(f)} ({f0.sum()}) | {e.sum()} / {len(e)} ({e0.sum()}) |")
        missed[folder.name] = [f"{r['language']}: {r['text']}" for r, hit in zip(foreign, f, strict=True) if not hit]
    for name, texts in missed.items():
        print(f"\n{name} lets through: " + ("; ".join(texts) or "none"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
