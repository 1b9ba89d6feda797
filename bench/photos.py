"""Real inputs through the real server: every image classifier measured over HTTP on its validation split, clean
and photographed, on the other dataset, and on odd inputs, with default requests (``{"model", "images"}``).

    .venv/bin/python -m bench.photos [--url URL] [--n N] [--json docs/photos.json]

Photos are made by contract/photos.py's EVAL_STYLE (wider ranges than training's TRAIN_STYLE on every axis, with
seeds neither training nor calibration use) from validation images no model was trained on: all of half B by
default, the half that calibration measures on and did not fit its temperature or thresholds on. For each model
it prints accuracy, the expected calibration error of the served scores (15 bins), the share flagged
out_of_distribution, the AUROC of ood_score against the other dataset, and the front door's cost per image
(decode + prepare_image, one thread, in this process); for the digit models also the first 1,000 photos laid on
a table and photographed from further back (``on_table``: the page does not fill the frame), a darker table and
then a white desk (LIGHT_TABLE_STYLE).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from contract.images import decode_image, prepare_image
from contract.metadata import ModelMetadata, load_metadata
from contract.photos import EVAL_STYLE, LIGHT_TABLE_STYLE, TABLE_STYLE, on_table, photograph, render_digit_photo
from export.calibrate import idx_split
from export.evaluate import auroc
from export.odd_images import odd_images, skimage_photo
from export.reliability import ece, ece_floor, halves

REPO = Path(__file__).resolve().parent.parent
OTHER = {"mnist": "fashion-mnist", "fashion-mnist": "mnist"}
SEED = 2027
ON_TABLE = 1000  # digit photos also laid on a table (contract/photos.py: on_table), the first of the photos,
# then the same sheets on a light one (LIGHT_TABLE_STYLE)


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def classify(client: httpx.Client, model: str, blobs: list[bytes]) -> list[dict]:
    """One default request per image (4 in flight), as a user's client sends them."""

    def one(blob: bytes) -> dict:
        r = client.post("/v1/classify", json={"model": model, "images": [base64.b64encode(blob).decode()]})
        r.raise_for_status()
        return r.json()["predictions"][0]

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, blobs))


def _served(preds: list[dict], labels: np.ndarray | None, k: int) -> dict[str, float]:
    scores = np.array([p["ood_score"] if p["ood_score"] is not None else np.nan for p in preds])
    out = {"n": len(preds), "flagged": float(np.mean([p["out_of_distribution"] for p in preds]))}
    if labels is not None:
        probs = np.zeros((len(preds), k))
        for row, p in zip(probs, preds, strict=True):
            row[p["index"]] = p["score"]
            rest = (1 - p["score"]) / (k - 1)  # only the top score matters to ECE's confidence and correctness
            row[row == 0] = rest
        out["accuracy"] = float(np.mean([p["index"] == y for p, y in zip(preds, labels, strict=True)]))
        out["ece"] = ece(probs, labels, answered=np.array([p["index"] for p in preds]))
        out["ece_floor"] = ece_floor(probs)  # what a perfectly calibrated model scores on as many inputs
    out["_scores"] = scores  # type: ignore[assignment]
    return out


def measure(client: httpx.Client, meta: ModelMetadata, data: Path, n: int | None) -> dict:
    images, labels, _, val = idx_split(meta, data / meta.dataset.name)
    half_b = val[halves(len(val))[1]]  # the half the temperature and thresholds were not fitted on
    pick = half_b if n is None else np.random.default_rng(SEED).choice(half_b, min(n, len(half_b)), replace=False)
    rng = np.random.default_rng(SEED + 1)
    pre = meta.image_preprocessing()
    photos = [photograph(images[i, 0], pre.fit, rng, EVAL_STYLE) for i in pick]
    t0 = time.perf_counter()
    for blob in photos[:200]:
        prepare_image(decode_image(blob, max_pixels=1 << 26), pre)
    front_door_ms = (time.perf_counter() - t0) * 1000 / min(200, len(photos))
    other, _, _, other_val = idx_split(meta, data / OTHER[meta.dataset.name], check=False)
    other_pick = np.random.default_rng(SEED + 2).choice(other_val, min(len(pick), len(other_val)), replace=False)
    k = len(meta.labels)
    result = {
        "clean": _served(classify(client, meta.name, [_png(images[i, 0]) for i in pick]), labels[pick], k),
        "photos": _served(classify(client, meta.name, photos), labels[pick], k),
        "other dataset": _served(classify(client, meta.name, [_png(other[i, 0]) for i in other_pick]), None, k),
    }
    if pre.fit == "digit":  # the same photos of a sheet, on a table photographed from further back
        for kind, style in (("photos on a table", TABLE_STYLE), ("photos on a light table", LIGHT_TABLE_STYLE)):
            tables = [on_table(blob, rng, style) for blob in photos[:ON_TABLE]]
            result[kind] = _served(classify(client, meta.name, tables), labels[pick[:ON_TABLE]], k)
    for kind, imgs in odd_images().items():
        result[kind] = _served(classify(client, meta.name, [_jpeg(im) for im in imgs]), None, k)
    clean_scores, other_scores = result["clean"].pop("_scores"), result["other dataset"].pop("_scores")
    for v in result.values():
        v.pop("_scores", None)
    if not np.isnan(clean_scores).any():
        result["other dataset"]["auroc"] = auroc(clean_scores, other_scores)
    result["front door ms per photo"] = front_door_ms  # type: ignore[assignment]
    return result


def figure(client: httpx.Client, path: Path) -> None:
    """A picture of honest answers, from the running service: photos and odd inputs, what the model saw
    (include_input), the answer, its calibrated confidence and the out-of-distribution score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.datasets import load_sample_images

    images, labels, _, val = idx_split(
        load_metadata(REPO / "artifacts" / "mnist-cnn"), REPO.parent / "shared" / "data" / "mnist"
    )
    rng = np.random.default_rng(11)
    picks = [int(val[np.flatnonzero(labels[val] == d)[0]]) for d in (3, 5, 8)]
    cases = [("examples/digit-4-photo.jpg", (REPO / "examples" / "digit-4-photo.jpg").read_bytes(), "mnist-cnn")]
    cases += [
        (f"photo of a {labels[i]}", render_digit_photo(images[i, 0], rng, EVAL_STYLE), "mnist-cnn") for i in picks
    ]
    on_desk = on_table(render_digit_photo(images[picks[1], 0], rng, EVAL_STYLE), rng)
    cases += [(f"a {labels[picks[1]]} on a desk", on_desk, "mnist-cnn")]
    cases += [
        ("examples/sneaker-photo.jpg", (REPO / "examples" / "sneaker-photo.jpg").read_bytes(), "fashion-cnn"),
        ("grey paper", _jpeg(Image.new("L", (300, 300), 215)), "mnist-cnn"),
        ("a natural photograph", _jpeg(Image.fromarray(load_sample_images().images[1])), "mnist-cnn"),
        ("a cup on a table", _jpeg(skimage_photo("coffee.png")), "fashion-cnn"),
    ]
    fig, axes = plt.subplots(2, len(cases), figsize=(2.1 * len(cases), 4.9))
    for col, (title, blob, model) in enumerate(cases):
        body = {"model": model, "images": [base64.b64encode(blob).decode()], "include_input": True}
        p = client.post("/v1/classify", json=body).json()["predictions"][0]
        seen = Image.open(io.BytesIO(base64.b64decode(p["input"])))
        axes[0, col].imshow(Image.open(io.BytesIO(blob)).convert("RGB"))
        axes[0, col].set_title(title, fontsize=8)
        axes[1, col].imshow(seen, cmap="gray", vmin=0, vmax=255)
        verdict = "OUT OF DISTRIBUTION" if p["out_of_distribution"] else "in distribution"
        axes[1, col].set_title(
            f"{model}: {p['label']} ({p['score']:.0%})\nood_score {p['ood_score']:.2f}\n{verdict}", fontsize=8
        )
        for ax in axes[:, col]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("sent", fontsize=9)
    axes[1, 0].set_ylabel("what the model saw", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", help="a running server (default: start one over artifacts/)")
    p.add_argument("--artifacts", type=Path, default=REPO / "artifacts")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--n", type=int, help="validation images per set (default: all of half B, about 3,000)")
    p.add_argument("--json", type=Path)
    p.add_argument("--figure", type=Path, help="also draw docs/photos.png: inputs, what the model saw, answers")
    p.add_argument("--figure-only", action="store_true")
    args = p.parse_args(argv)
    server = None
    if args.url is None:
        from tests.server import Server

        server = Server(args.artifacts, Path(tempfile.mkdtemp()) / "serve.log").start()
        args.url = server.url
    report = {}
    try:
        with httpx.Client(base_url=args.url, timeout=60) as client:
            if args.figure:
                figure(client, args.figure)
            cards = [] if args.figure_only else client.get("/v1/models").json()["models"]
            for card in cards:
                if card["task"] != "image-classification":
                    continue
                meta = load_metadata(args.artifacts / card["name"])
                report[card["name"]] = measure(client, meta, args.data, args.n)
                print(card["name"], json.dumps(report[card["name"]], indent=1), flush=True)
    finally:
        if server is not None:
            server.stop()
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(
        "\n| model | clean acc | photo acc | ECE clean / photos (floor) | flagged clean / photos / other | "
        "AUROC other | odd inputs flagged | front door ms/photo |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, r in report.items():
        odd = [
            v["flagged"]
            for key, v in r.items()
            if isinstance(v, dict) and "accuracy" not in v and key != "other dataset"
        ]
        print(
            f"| `{name}` | {r['clean']['accuracy']:.2%} | {r['photos']['accuracy']:.2%} | "
            f"{r['clean']['ece']:.2%} / {r['photos']['ece']:.2%} ({r['clean']['ece_floor']:.2%} / "
            f"{r['photos']['ece_floor']:.2%}) | {r['clean']['flagged']:.1%} / "
            f"{r['photos']['flagged']:.1%} / {r['other dataset']['flagged']:.1%} | "
            f"{r['other dataset'].get('auroc', float('nan')):.4f} | {min(odd):.0%}–{max(odd):.0%} | "
            f"{r['front door ms per photo']:.1f} |"
        )
    tables = [(name, kind, r[kind]) for name, r in report.items() for kind in r if kind.startswith("photos on a")]
    if tables:
        print("\n| model | photos | accuracy | ECE (floor) | flagged |\n|---|---|---|---|---|")
        for name, kind, t in tables:
            where = kind.removeprefix("photos ")
            print(
                f"| `{name}` | {where} | {t['accuracy']:.2%} | {t['ece']:.2%} ({t['ece_floor']:.2%}) | "
                f"{t['flagged']:.1%} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
