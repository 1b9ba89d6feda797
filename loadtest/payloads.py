"""Payloads for the load test: the served models' cards (GET /v1/models on the host under test) become
payload-ready models per task, with real samples (loadtest/samples/) shaped by each card's preprocessing.
Imported by locustfile.py as a sibling module (Locust puts the locustfile's folder on sys.path)."""

from __future__ import annotations

import base64
import io
import logging
import os
import random
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from PIL import Image, ImageOps

log = logging.getLogger("loadtest")
SAMPLES = Path(__file__).resolve().parent / "samples"


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


def parse_duration(text: str | int | float | None, default: float) -> float:
    """'20s', '2m', '1h30m', '90' (seconds) -> seconds; ``default`` for nothing; ValueError for anything else
    (the Locust file and loadtest/run.py read DURATION alike)."""
    s = "" if text is None else str(text).strip().lower().replace(" ", "")
    if not s:
        return default
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return float(s)
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|m|s)", s)
    if not parts or "".join(n + u for n, u in parts) != s:
        raise ValueError(f"cannot read duration {text!r}: use e.g. 20s, 2m, 1h30m or seconds")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


PAPER_FRACTION = env_float("LOADTEST_PAPER_FRACTION", 0.25)


IMAGE_SETS = {"mnist": "digits", "fashion-mnist": "fashion"}  # a card's dataset -> samples/<folder>
TEXT_SETS = {"sst2": "sentences.txt", "imdb": "reviews.txt"}


def _image_set(dataset: str) -> list[Image.Image]:
    folder = IMAGE_SETS.get(dataset) or ("fashion" if "fashion" in dataset else "digits")
    paths = sorted((SAMPLES / folder).glob("*.png"))
    if not paths:
        raise FileNotFoundError(f"no sample images in {SAMPLES / folder}: run loadtest/make_samples.py")
    out = []
    for p in paths:
        with Image.open(p) as im:
            out.append(im.convert("L"))
    return out


def _text_set(dataset: str) -> list[str]:
    path = SAMPLES / (TEXT_SETS.get(dataset) or ("reviews.txt" if "imdb" in dataset else "sentences.txt"))
    texts = [t for t in path.read_text(encoding="utf-8").split("\n") if t.strip()]
    if not texts:
        raise FileNotFoundError(f"no sample texts in {path}: run loadtest/make_samples.py")
    return texts


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _fit(img: Image.Image, size: tuple[int, int], channels: int) -> Image.Image:
    """A white-on-black sample -> size (w, h) and the model's colour mode."""
    if img.size != size:
        img = img.resize(size, Image.Resampling.BILINEAR)
    return img.convert("L" if channels == 1 else "RGB")


@dataclass
class ImageModel:
    """An image-in model (classifier or autoencoder): encoded samples at its input size, in its polarity."""

    name: str
    labels: list[str]
    native: list[bytes]  # the model's own input size and pixel convention
    paper: list[bytes]  # as a person would send: dark ink on white, twice the input size
    native_b64: list[str] = field(init=False)
    paper_b64: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.native_b64 = [base64.b64encode(b).decode() for b in self.native]
        self.paper_b64 = [base64.b64encode(b).decode() for b in self.paper]

    @classmethod
    def from_card(cls, card: dict[str, Any]) -> ImageModel:
        pre = card["preprocessing"]
        h, w = (int(v) for v in pre["input_size"])
        channels = int(pre["channels"])
        samples = _image_set(str(card.get("dataset", "")))
        native, paper = [], []
        for img in samples:
            on_black = img if pre.get("white_on_black", True) else ImageOps.invert(img)
            native.append(_png(_fit(on_black, (w, h), channels)))
            paper.append(_png(_fit(ImageOps.invert(img), (2 * w, 2 * h), channels)))
        return cls(card["name"], list(card["labels"]), native, paper)

    def pick(self, n: int) -> tuple[list[int], bool]:
        paper = random.random() < PAPER_FRACTION
        return random.choices(range(len(self.native)), k=n), paper

    def b64(self, n: int) -> list[str]:
        idx, paper = self.pick(n)
        pool = self.paper_b64 if paper else self.native_b64
        return [pool[i] for i in idx]

    def blob(self) -> bytes:
        idx, paper = self.pick(1)
        return (self.paper if paper else self.native)[idx[0]]


@dataclass
class TextModel:
    name: str
    labels: list[str]
    texts: list[str]

    @classmethod
    def from_card(cls, card: dict[str, Any]) -> TextModel:
        return cls(card["name"], list(card["labels"]), _text_set(str(card.get("dataset", ""))))


@dataclass
class GeneratorModel:
    name: str
    labels: list[str]
    conditional: bool
    extra: dict[str, Any] = field(default_factory=dict)  # fields this generator's requests carry

    # a Gibbs sampler's request costs its steps (1,000 by default, ~0.45 s for 16 samples): the load test asks for
    # GIBBS_STEPS so an RBM weighs about what a one-pass generator does (its cost is in the README)
    GIBBS_STEPS = 20

    @classmethod
    def from_card(cls, card: dict[str, Any]) -> GeneratorModel:
        gen = card.get("generator") or {}
        extra = {"steps": cls.GIBBS_STEPS} if gen.get("gibbs") else {}
        return cls(card["name"], list(card["labels"]), bool(gen.get("conditional", False)), extra)


def _fire(environment: Any, name: str, start: float, length: int, exc: Exception | None) -> None:
    environment.events.request.fire(
        request_type="GET",
        name=name,
        response_time=(time.perf_counter() - start) * 1000.0,
        response_length=length,
        exception=exc,
        context={},
    )


class CatalogError(Exception):
    pass


def load_catalog(environment: Any, builders: dict[str, Any]) -> dict[str, list[Any]]:
    """GET /v1/models on the host under test -> payload-ready models per task (recorded as a request), each
    built by ``builders[task]`` (the user classes' payload builders)."""
    host = (environment.host or "").rstrip("/")
    if not host:
        raise CatalogError("no host: pass --host or set HOST")
    last: Exception | None = None
    for attempt in range(3):
        start = time.perf_counter()
        try:
            resp = requests.get(f"{host}/v1/models", timeout=10)
        except requests.RequestException as e:
            last = CatalogError(f"connection error: {type(e).__name__}")
            _fire(environment, "/v1/models", start, 0, last)
            if attempt < 2:
                time.sleep(1.0 + attempt)
            continue
        if resp.status_code != 200:
            last = CatalogError(f"HTTP {resp.status_code}")
            _fire(environment, "/v1/models", start, len(resp.content), last)
            if attempt < 2:
                time.sleep(1.0 + attempt)
            continue
        try:
            cards = resp.json()["models"]
            catalog: dict[str, list[Any]] = defaultdict(list)
            for card in cards:
                build = builders.get(card.get("task"))
                if build is None:
                    log.warning("model %s: task %r is not load-tested", card.get("name"), card.get("task"))
                    continue
                if not card.get("ready", True):
                    log.warning("model %s is served but not ready: its requests will likely fail", card["name"])
                catalog[card["task"]].append(build(card))
        except (ValueError, KeyError, TypeError) as e:
            err = CatalogError(f"malformed 200: unreadable model cards ({type(e).__name__}: {e})")
            _fire(environment, "/v1/models", start, len(resp.content), err)
            raise err from None
        if not catalog:
            err = CatalogError("malformed 200: no model the load test can drive")
            _fire(environment, "/v1/models", start, len(resp.content), err)
            raise err
        _fire(environment, "/v1/models", start, len(resp.content), None)
        return dict(catalog)
    raise last or CatalogError("no catalog")
