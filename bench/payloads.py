"""The requests the benchmarks send, prebuilt as bytes (request line, headers, JSON body) from the loadtest's
samples: a classify, sentiment or generate request, and a picker cycling through them."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

import numpy as np

from bench.common import SAMPLES

# ---- requests -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """One kind of request: its route, prebuilt request bytes (cycled through) and a key every 200 body has."""

    name: str
    path: str
    requests: tuple[bytes, ...]
    expect: bytes


def _request_bytes(host: str, path: str, body: dict) -> bytes:
    data = json.dumps(body, separators=(",", ":")).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


def classify_kind(host: str, n: int = 64) -> Kind:
    """POST /v1/classify with one real PNG digit per request (loadtest/samples/digits)."""
    files = sorted((SAMPLES / "digits").glob("*.png"))[:n]
    if not files:
        raise SystemExit(f"no PNG digits in {SAMPLES / 'digits'}: run loadtest/make_samples.py")
    reqs = tuple(
        _request_bytes(
            host, "/v1/classify", {"model": "mnist-cnn", "images": [base64.b64encode(f.read_bytes()).decode()]}
        )
        for f in files
    )
    return Kind("classify", "/v1/classify", reqs, b'"predictions"')


def sentiment_kind(host: str) -> Kind:
    """POST /v1/sentiment with one real SST-2 sentence per request (loadtest/samples/sentences.txt)."""
    lines = [s for s in (SAMPLES / "sentences.txt").read_text(encoding="utf-8").splitlines() if s.strip()]
    if not lines:
        raise SystemExit(f"no sentences in {SAMPLES / 'sentences.txt'}: run loadtest/make_samples.py")
    reqs = tuple(_request_bytes(host, "/v1/sentiment", {"model": "sst2-lstm", "texts": [s]}) for s in lines)
    return Kind("sentiment", "/v1/sentiment", reqs, b'"predictions"')


def generate_kind(host: str, n: int = 4) -> Kind:
    """POST /v1/generate: ``n`` samples from mnist-gan (random seed, labels cycled by the server)."""
    return Kind("generate", "/v1/generate", (_request_bytes(host, "/v1/generate", {"model": "mnist-gan", "n": n}),),
                b'"samples"')  # fmt: skip


class Picker:
    """Chooses the next request: kinds by weight (seeded, so a schedule is reproducible), each kind's bodies in
    turn. ``pick()`` -> (kind index, request bytes)."""

    def __init__(self, kinds: list[Kind], weights: list[float] | None = None, seed: int = 0) -> None:
        self.kinds = kinds
        self._next = [0] * len(kinds)
        rng = np.random.default_rng(seed)
        w = np.asarray(weights or [1.0] * len(kinds), dtype=float)
        self._plan = rng.choice(len(kinds), size=65_536, p=w / w.sum()).tolist() if len(kinds) > 1 else [0]
        self._i = 0

    def pick(self) -> tuple[int, bytes]:
        k = self._plan[self._i % len(self._plan)]
        self._i += 1
        reqs = self.kinds[k].requests
        i = self._next[k]
        self._next[k] = i + 1
        return k, reqs[i % len(reqs)]
