"""Write the example inputs the README uses (run once; the output is committed).

    .venv/bin/python examples/make_examples.py [--data ../shared/data] [--out examples]

Every image comes from the *validation* split the shipped models were measured on (split seed 0, fraction
0.1, as their model.json records), so no example is a model's own training data:

- digit-7.png        an MNIST digit as the dataset stores it: 28x28, white ink on black
- digit-2-drawn.png  a digit as a canvas drawing gives it: dark ink on white, 140x140
- digit-4-photo.jpg  a digit written on grey paper and photographed with a phone (contract/photos.py):
                     uneven light, blur, sensor noise, JPEG
- digit-8-shadow.jpg a digit photographed with a shadow along one side, as the evaluation's photos are
                     (EVAL_STYLE): the page's polarity fit reads its paper as the ink, so the model flags that
                     reading and the service reads the photo a second time at the other polarity
- digit-noisy.png    an MNIST digit with 30 % of its pixels zeroed (the masking noise mnist-dae undoes)
- number-47-drawn.png a 4 and a 7 written side by side, dark ink on white (a number where one digit is asked
                     for: flagged out of distribution)
- sneaker-photo.jpg  a Fashion-MNIST sneaker as a colour product photo on a light background
- reviews.txt        reviews written for these examples, one per line (not from any dataset)

Deterministic: the same data give the same files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.pairs import pair  # noqa: E402
from contract.data import read_idx, stratified_split  # noqa: E402
from contract.photos import EVAL_STYLE, render_digit_photo, render_product_photo  # noqa: E402

REVIEWS = [
    "A gorgeous, witty, seductive movie.",
    "It never finds its footing.",
    "The battery died after two days and support never answered my emails.",
    "Great little cafe: friendly staff, excellent coffee and the croissants are worth the queue.",
    # longer than sst2-lstm's 64-token window: the answer says how much of it was read
    "I went in expecting very little, and for the first half hour that is exactly what I got: a slow opening, "
    "a hero who mumbles, and a plot that takes its time to show up. Then something changes. The second act "
    "is tense, funny and surprisingly moving, the score finally earns its place, and the last twenty minutes "
    "are as good as anything I have seen in a cinema this year. Stay for the ending.",
]


def validation(root: Path) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(root / "train-images-idx3-ubyte.gz")
    labels = read_idx(root / "train-labels-idx1-ubyte.gz").astype(np.int64)
    _, val = stratified_split(labels, 0.1, 0)
    return images[val], labels[val]


def first(labels: np.ndarray, label: int, skip: int = 0) -> int:
    return int(np.flatnonzero(labels == label)[skip])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--out", type=Path, default=ROOT / "examples")
    args = p.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    digits, digit_labels = validation(args.data / "mnist")
    Image.fromarray(digits[first(digit_labels, 7, skip=2)]).save(out / "digit-7.png")
    drawn = Image.fromarray(255 - digits[first(digit_labels, 2)]).resize((140, 140), Image.Resampling.BILINEAR)
    drawn.save(out / "digit-2-drawn.png")
    rng = np.random.default_rng(2026)
    (out / "digit-4-photo.jpg").write_bytes(render_digit_photo(digits[first(digit_labels, 4)], rng))
    shadowed = 1179  # the validation digit and seed: found by searching for a photo both digit models misread at first
    (out / "digit-8-shadow.jpg").write_bytes(
        render_digit_photo(digits[shadowed], np.random.default_rng(shadowed), EVAL_STYLE)
    )
    noisy = digits[first(digit_labels, 3)].copy()
    noisy[np.random.default_rng(3).random(noisy.shape) < 0.3] = 0
    Image.fromarray(noisy).save(out / "digit-noisy.png")
    # a pair the front door let through before it judged characters side by side: mnist-cnn answered "4", unflagged
    number = pair(digits[first(digit_labels, 4, skip=4)], digits[first(digit_labels, 7, skip=5)], 4)
    Image.fromarray(255 - number).resize((200, 200), Image.Resampling.BILINEAR).save(out / "number-47-drawn.png")

    items, item_labels = validation(args.data / "fashion-mnist")
    sneaker = items[first(item_labels, 7)]  # class 7: Sneaker
    (out / "sneaker-photo.jpg").write_bytes(render_product_photo(sneaker, np.random.default_rng(7), (40, 70, 160)))

    (out / "reviews.txt").write_text("\n".join(REVIEWS) + "\n")
    for f in sorted(out.iterdir()):
        if f.suffix in {".png", ".jpg", ".txt"}:
            print(f"{f.relative_to(ROOT) if f.is_relative_to(ROOT) else f}: {f.stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
