"""What the heaviest legal requests of every kind leave resident in a running nnserve (docs/DEPLOY.md's memory
limit): the supervisor's and each worker's RSS after start and after each round of 64 texts of 10,000 characters
to each text model, 16 photos of 25 megapixels, 64 images to four classifiers, 64 samples and 64 reconstructions.

    .venv/bin/python -m bench.memory --port 3000 [--rounds 3]

The server must run on this host (its processes are read from /proc: the one listening on --port, and its
children).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from PIL import Image

TEXT_MODELS = ["sst2-gru-distilled", "sst2-gru", "sst2-lstm", "sst2-lstm-max", "imdb-lstm"]
CLASSIFIERS = ["fashion-resnet", "fashion-cnn", "mnist-cnn", "mnist-lenet5"]


def post(url: str, path: str, body: dict) -> int:
    req = urllib.request.Request(url + path, json.dumps(body).encode(), {"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def resident(port: int) -> list[int]:
    """RSS in MiB of the process serving ``port`` (the supervisor) and of its children (the workers)."""
    pids = subprocess.run(["pgrep", "-f", "--", f"--port {port}"], capture_output=True, text=True).stdout.split()
    root = min(int(p) for p in pids)  # bentoml serve itself, started before anything it spawns
    children = Path(f"/proc/{root}/task/{root}/children").read_text().split()
    out = []
    for pid in [root, *map(int, children)]:
        status = Path(f"/proc/{pid}/status").read_text()
        out.append(int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))) // 1024)
    return out


def b64(img: Image.Image, fmt: str) -> str:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return base64.b64encode(buf.getvalue()).decode()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=3000)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    url = f"http://127.0.0.1:{args.port}"
    photo = b64(Image.linear_gradient("L").resize((5000, 5000)).convert("RGB"), "JPEG")
    page = b64(Image.new("L", (300, 300), 230), "PNG")
    review = ("The plot meanders but the performances are wonderful and the score is lovely. " * 130)[:10000]
    print(f"after start: supervisor, workers {resident(args.port)} MiB")
    for r in range(args.rounds):
        codes = [post(url, "/v1/sentiment", {"model": m, "texts": [review] * 64}) for m in TEXT_MODELS]
        codes.append(post(url, "/v1/classify", {"model": "mnist-cnn", "images": [photo] * 16}))
        codes += [post(url, "/v1/classify", {"model": m, "images": [page] * 64}) for m in CLASSIFIERS]
        codes.append(post(url, "/v1/generate", {"model": "mnist-gan", "n": 64}))
        codes.append(post(url, "/v1/reconstruct", {"model": "mnist-ae", "images": [page] * 64}))
        print(f"round {r + 1} (statuses {sorted(set(codes))}): supervisor, workers {resident(args.port)} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
