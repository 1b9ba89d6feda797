"""Extract the small set of real inputs the load test sends into loadtest/samples/ (run once; output is committed).

    .venv/bin/python loadtest/make_samples.py [--data ../shared/data] [--out loadtest/samples]

- digits/*.png   64 MNIST images, 28x28 8-bit grayscale, white on black, named <train index>_<label>.png
- fashion/*.png  64 Fashion-MNIST images, the same, named <train index>_<label index>.png
- sentences.txt  200 SST-2 whole sentences (one per line, the corpus' PTB tokenisation kept)
- reviews.txt    50 IMDB reviews (one per line, HTML line breaks kept as in the corpus)

Every item comes from the *validation* split the shipped models were evaluated on (the same deterministic
split functions training uses, with split seed 0 and validation fraction 0.1), stratified over the labels,
so the load test never sends a model its own training data. Deterministic: the same data give the same files.

Only torch-free modules are imported (contract.data, contract.text_data and contract.text use numpy, PIL and
pydantic); the script checks that torch was not pulled in.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from contract.data import read_idx, stratified_split  # noqa: E402
from contract.text import TokenizerConfig  # noqa: E402
from contract.text_data import load_table, split  # noqa: E402


def pick_stratified(labels: np.ndarray, pool: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n indices from ``pool``, round-robin over the classes (so every class is represented), in a fixed order."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels[pool])
    queues = [list(rng.permutation(pool[labels[pool] == c])) for c in classes]
    out: list[int] = []
    while len(out) < n and any(queues):
        for q in queues:
            if q and len(out) < n:
                out.append(int(q.pop()))
    return np.asarray(sorted(out))


def write_images(root: Path, out: Path, n: int, seed: int, val_fraction: float) -> int:
    images = read_idx(root / "train-images-idx3-ubyte.gz")
    labels = read_idx(root / "train-labels-idx1-ubyte.gz").astype(np.int64)
    _, val = stratified_split(labels, val_fraction, seed)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    chosen = pick_stratified(labels, val, n, seed)
    for i in chosen:
        Image.fromarray(images[i], "L").save(out / f"{i:05d}_{labels[i]}.png", optimize=True)
    return len(chosen)


def write_lines(path: Path, texts: list[str]) -> None:
    clean = [" ".join(t.split()) for t in texts]  # one per line: no newline, tab or trailing space inside
    path.write_text("\n".join(clean) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--out", type=Path, default=ROOT / "loadtest" / "samples")
    p.add_argument("--images", type=int, default=64, help="images per dataset")
    p.add_argument("--sentences", type=int, default=200)
    p.add_argument("--reviews", type=int, default=50)
    p.add_argument("--max-review-chars", type=int, default=4000, help="skip longer reviews (keeps the files small)")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.1)
    a = p.parse_args(argv)

    n_digits = write_images(a.data / "mnist", a.out / "digits", a.images, a.split_seed, a.val_fraction)
    n_fashion = write_images(a.data / "fashion-mnist", a.out / "fashion", a.images, a.split_seed, a.val_fraction)

    tok = TokenizerConfig()
    sst = load_table(a.data / "sentiment" / "sst2" / "train.tsv", name="sst2")
    _, val = split(sst, "sentences", a.val_fraction, a.split_seed, tok)
    chosen = pick_stratified(sst.labels, val, a.sentences, a.split_seed)
    write_lines(a.out / "sentences.txt", [sst.texts[i] for i in chosen])

    imdb = load_table(a.data / "sentiment" / "imdb" / "train.csv", name="imdb")
    _, val = split(imdb, "random", a.val_fraction, a.split_seed, tok)
    val = np.asarray([i for i in val if len(imdb.texts[i]) <= a.max_review_chars])
    chosen_reviews = pick_stratified(imdb.labels, val, a.reviews, a.split_seed)
    write_lines(a.out / "reviews.txt", [imdb.texts[i] for i in chosen_reviews])

    assert "torch" not in sys.modules, "make_samples must stay torch-free"
    total = sum(f.stat().st_size for f in a.out.rglob("*") if f.is_file())
    print(
        f"{a.out}: {n_digits} digits, {n_fashion} garments, {len(chosen)} sentences, "
        f"{len(chosen_reviews)} reviews; {total / 1024:.0f} KiB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
