"""Load test of the nnserve /v1 API: one Locust user class per endpoint family, payloads from the served models.

    .venv/bin/python loadtest/run.py                      # what `make loadtest` runs: headless, results folder
    .venv/bin/locust -f loadtest/locustfile.py --host http://127.0.0.1:3000      # web UI

At test start the catalog comes from the server under test (GET /v1/models), so the test drives whatever that
server serves, on any host: each card's task picks the user class, its preprocessing (input_size, channels,
white_on_black) shapes the images, its dataset picks the real samples (loadtest/samples/, made by
make_samples.py), its labels check the answers, its generator info says whether a label may be sent. A family
with no served model (e.g. generators still training) is dropped from the run; nothing here hard-codes a shape.

Every request uses catch_response, so Locust's failure table tells the failure classes apart:
``HTTP 4xx: <status> <code>``, ``HTTP 429 <code>``, ``HTTP 503 <code>``, ``HTTP 504 <code>``,
``HTTP 5xx: <status> <code>``, ``connection error: <exception>``, and ``malformed 200: ...`` for a 200 whose body is
not what the request asked for (wrong count of predictions or samples, unknown labels, ...).

At the end (events.quitting) the run fails, ``environment.process_exit_code = 1``, when
  failure ratio > LOCUST_MAX_FAIL_RATIO (0.01), p95 > LOCUST_MAX_P95_MS (1000) or p99 > LOCUST_MAX_P99_MS (2000),
all over every request; otherwise the exit code is 0, even with failures under the allowed ratio.

StepLoadShape (on unless LOADTEST_SHAPE=none) raises the user count in STEP_COUNT (4) equal steps up to
STEP_USERS (else USERS, else --users, else 8) over DURATION (else --run-time, else 60s). Other settings:
LOADTEST_WAIT_MIN_S / LOADTEST_WAIT_MAX_S think time per user (0.1 / 0.5 s), LOADTEST_PAPER_FRACTION share of
images sent as a person would (dark ink on white, twice the model's input size; 0.25), LOADTEST_DETAIL_JSON
where to write per-step latencies and the threshold verdict (run.py sets it).
"""

from __future__ import annotations

import base64
import io
import logging
import math
import os
import random
import re
import time
from array import array
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import requests
from locust import HttpUser, LoadTestShape, between, events, task
from locust.exception import StopUser
from PIL import Image, ImageOps

log = logging.getLogger("loadtest")
SAMPLES = Path(__file__).resolve().parent / "samples"


# ---- settings --------------------------------------------------------------------------------------------------


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


def parse_duration(text: str | int | float | None, default: float) -> float:
    """'20s', '2m', '1h30m', '90' (seconds) -> seconds."""
    if text is None or str(text).strip() == "":
        return default
    s = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return float(s)
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(h|m|s)", s)
    if not parts or "".join(f"{n}{u}" for n, u in parts) != s.replace(" ", ""):
        raise ValueError(f"cannot read duration {text!r}: use e.g. 20s, 2m, 1h30m or seconds")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


def step_plan(parsed_options: Any = None) -> tuple[int, int, float]:
    """(peak users, steps, duration s) from STEP_USERS/USERS, STEP_COUNT, DURATION, else Locust's own options."""
    users_env = os.environ.get("STEP_USERS") or os.environ.get("USERS")
    users = int(users_env) if users_env else int(getattr(parsed_options, "num_users", None) or 8)
    steps = int(os.environ.get("STEP_COUNT") or 4)
    run_time = getattr(parsed_options, "run_time", None)
    duration = parse_duration(os.environ.get("DURATION") or run_time, 60.0)
    users, steps = max(1, users), max(1, min(steps, max(1, users)))  # no two steps at the same user count
    return users, steps, duration


WAIT = between(env_float("LOADTEST_WAIT_MIN_S", 0.1), env_float("LOADTEST_WAIT_MAX_S", 0.5))
PAPER_FRACTION = env_float("LOADTEST_PAPER_FRACTION", 0.25)


# ---- samples and per-model payloads ----------------------------------------------------------------------------

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

    @classmethod
    def from_card(cls, card: dict[str, Any]) -> GeneratorModel:
        gen = card.get("generator") or {}
        return cls(card["name"], list(card["labels"]), bool(gen.get("conditional", False)))


BUILDERS = {
    "image-classification": ImageModel.from_card,
    "autoencoder": ImageModel.from_card,
    "text-classification": TextModel.from_card,
    "generator": GeneratorModel.from_card,
}
CATALOG: dict[str, list[Any]] = {}  # task -> payload-ready models, read from the host under test
CATALOG_OK = False
CATALOG_HOST: str | None = None


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


def load_catalog(environment: Any) -> dict[str, list[Any]]:
    """GET /v1/models on the host under test -> payload-ready models per task (recorded as a request)."""
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
                build = BUILDERS.get(card.get("task"))
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


# ---- response checks -------------------------------------------------------------------------------------------


def http_failure(resp: Any) -> str:
    """A non-200 response -> the failure label Locust groups by (status class first)."""
    status = resp.status_code
    if status == 0:
        return f"connection error: {type(resp.error).__name__}"
    code = ""
    try:
        code = str(resp.json()["error"]["code"])
    except Exception:
        code = "no error envelope"
    if status in (429, 503, 504):
        return f"HTTP {status} {code}"
    if 400 <= status < 500:
        return f"HTTP 4xx: {status} {code}"
    if status >= 500:
        return f"HTTP 5xx: {status} {code}"
    return f"HTTP {status} (unexpected) {code}"


class Malformed(Exception):
    pass


def expect(cond: bool, message: str) -> None:
    if not cond:
        raise Malformed(message)


def check(resp: Any, validate: Any) -> None:
    """Mark a catch_response response: non-200 by status class, 200 by what ``validate(body)`` finds."""
    if resp.status_code != 200:
        resp.failure(http_failure(resp))
        return
    try:
        body = resp.json()
    except ValueError:
        resp.failure("malformed 200: body is not JSON")
        return
    try:
        validate(body)
    except Malformed as e:
        resp.failure(f"malformed 200: {e}")
    except (KeyError, TypeError, AttributeError, IndexError) as e:
        resp.failure(f"malformed 200: missing or mistyped field ({type(e).__name__}: {e})")
    else:
        resp.success()


def check_predictions(body: dict[str, Any], model: ImageModel | TextModel, n: int, top_k: int | None) -> None:
    preds = body["predictions"]
    expect(body["model"] == model.name, f"answered for model {body['model']!r}")
    expect(len(preds) == n, f"expected {n} predictions, got {len(preds)}")
    for p in preds:
        expect(p["label"] in model.labels, f"label {p['label']!r} is not one of the model's labels")
        expect(0.0 <= float(p["score"]) <= 1.0, f"score {p['score']} outside [0, 1]")
        if top_k is not None:
            want = min(top_k, len(model.labels))
            expect(len(p["top_k"]) == want, f"expected top_k of {want}, got {len(p['top_k'])}")


# ---- users: one class per endpoint family ----------------------------------------------------------------------


class NNServeUser(HttpUser):
    abstract = True
    wait_time = WAIT
    task_family = ""  # a card task; the class is dropped from the run when the server serves none

    def on_start(self) -> None:
        if not CATALOG.get(self.task_family):
            raise StopUser()

    def model(self) -> Any:
        return random.choice(CATALOG[self.task_family])


class ClassifyJsonUser(NNServeUser):
    """POST /v1/classify: base64 PNGs in JSON, mostly one image, sometimes a batch."""

    weight = 4
    task_family = "image-classification"

    def classify(self, n: int) -> None:
        m: ImageModel = self.model()
        top_k = random.randint(1, 3)
        payload = {"model": m.name, "images": m.b64(n), "top_k": top_k}
        with self.client.post("/v1/classify", json=payload, name="/v1/classify", catch_response=True) as resp:
            check(resp, lambda body: check_predictions(body, m, n, top_k))

    @task(6)
    def one_image(self) -> None:
        self.classify(1)

    @task(3)
    def batch_of_8(self) -> None:
        self.classify(8)

    @task(1)
    def batch_of_32(self) -> None:
        self.classify(32)


class ClassifyUploadUser(NNServeUser):
    """POST /v1/classify/upload: one PNG as a multipart file part, as a browser form sends it."""

    weight = 2
    task_family = "image-classification"

    @task
    def upload(self) -> None:
        m: ImageModel = self.model()
        top_k = random.randint(1, 5)
        files = {"image": ("sample.png", m.blob(), "image/png")}
        data = {"model": m.name, "top_k": str(top_k)}
        with self.client.post(
            "/v1/classify/upload", files=files, data=data, name="/v1/classify/upload", catch_response=True
        ) as resp:
            check(resp, lambda body: check_predictions(body, m, 1, top_k))


class SentimentUser(NNServeUser):
    """POST /v1/sentiment: real SST-2 sentences for SST-2 models, real IMDB reviews for IMDB models."""

    weight = 3
    task_family = "text-classification"

    def analyze(self, n: int) -> None:
        m: TextModel = self.model()
        payload = {"model": m.name, "texts": random.choices(m.texts, k=n)}
        with self.client.post("/v1/sentiment", json=payload, name="/v1/sentiment", catch_response=True) as resp:
            check(resp, lambda body: check_predictions(body, m, n, None))

    @task(5)
    def one_text(self) -> None:
        self.analyze(1)

    @task(2)
    def batch_of_16(self) -> None:
        self.analyze(16)


class ReconstructUser(NNServeUser):
    """POST /v1/reconstruct: autoencoders, digits or garments as the model was trained on."""

    weight = 2
    task_family = "autoencoder"

    def reconstruct(self, n: int) -> None:
        m: ImageModel = self.model()
        payload = {"model": m.name, "images": m.b64(n)}

        def validate(body: dict[str, Any]) -> None:
            results = body["results"]
            expect(body["model"] == m.name, f"answered for model {body['model']!r}")
            expect(len(results) == n, f"expected {n} reconstructions, got {len(results)}")
            for r in results:
                expect(isinstance(r["reconstruction"], str) and len(r["reconstruction"]) > 0, "empty reconstruction")
                expect(float(r["error"]) >= 0.0, f"negative error {r['error']}")
                expect(isinstance(r["anomaly"], bool), "anomaly is not a boolean")

        with self.client.post("/v1/reconstruct", json=payload, name="/v1/reconstruct", catch_response=True) as resp:
            check(resp, validate)

    @task(3)
    def one_image(self) -> None:
        self.reconstruct(1)

    @task(1)
    def batch_of_8(self) -> None:
        self.reconstruct(8)


class GenerateUser(NNServeUser):
    """POST /v1/generate: a seed always, a label for conditional generators (by name, or none: cycle classes)."""

    weight = 1
    task_family = "generator"

    def generate(self, n: int) -> None:
        m: GeneratorModel = self.model()
        seed = random.randrange(2**31)
        payload: dict[str, Any] = {"model": m.name, "n": n, "seed": seed}
        label = random.choice([*m.labels, None]) if m.conditional else None
        if label is not None:
            payload["label"] = label

        def validate(body: dict[str, Any]) -> None:
            samples = body["samples"]
            expect(body["model"] == m.name, f"answered for model {body['model']!r}")
            expect(len(samples) == n, f"expected {n} samples, got {len(samples)}")
            expect(all(isinstance(s, str) and s for s in samples), "empty sample")
            expect(body["seed"] == seed, f"seed {body['seed']} is not the one sent ({seed})")
            if m.conditional:
                want = [label] * n if label is not None else [m.labels[i % len(m.labels)] for i in range(n)]
                expect(body["labels"] == want, "labels are not the ones asked for")
            else:
                expect(body.get("labels") is None, "an unconditional generator answered labels")

        with self.client.post("/v1/generate", json=payload, name="/v1/generate", catch_response=True) as resp:
            check(resp, validate)

    @task(3)
    def four(self) -> None:
        self.generate(4)

    @task(1)
    def sixteen(self) -> None:
        self.generate(16)


USER_CLASSES = [ClassifyJsonUser, ClassifyUploadUser, SentimentUser, ReconstructUser, GenerateUser]


# ---- load shape ------------------------------------------------------------------------------------------------


class StepLoadShape(LoadTestShape):
    """STEP_COUNT equal steps of users up to STEP_USERS over DURATION, e.g. 8 users, 4 steps: 2, 4, 6, 8."""

    abstract = os.environ.get("LOADTEST_SHAPE", "step").strip().lower() in ("none", "off", "0", "false")
    use_common_options = True  # reads --users / --run-time when the env vars are not set

    def tick(self) -> tuple[int, float] | None:
        env = self.runner.environment if self.runner else None
        if env is not None and not CATALOG_OK and env.host == CATALOG_HOST:
            return None  # nothing to drive on this host: end now (the failed GET /v1/models is in the stats)
        parsed = env.parsed_options if env is not None else None
        users, steps, duration = step_plan(parsed)
        t = self.get_run_time()
        if t >= duration:
            return None
        step = min(steps, int(t // (duration / steps)) + 1)
        n = math.ceil(users * step / steps)
        RECORDER.step_to(n)
        return n, 100.0


# ---- per-step recording and thresholds -------------------------------------------------------------------------


class StepRecorder:
    """Every request's latency keyed by (the step's user count, endpoint), and how long each step lasted:
    exact per-step percentiles and req/s (Locust's history CSV only has percentiles over a rolling window)."""

    def __init__(self) -> None:
        self.times: dict[tuple[int, str], array] = defaultdict(lambda: array("f"))
        self.failures: dict[tuple[int, str], int] = defaultdict(int)
        self.seconds: dict[int, float] = defaultdict(float)  # time spent at each user count
        self.current: tuple[int, float] | None = None  # (user count, since)
        self.seen: dict[int, list[float]] = {}  # first and last request time per user count

    def step_to(self, users: int) -> None:
        """The target user count changed (0: the test stopped)."""
        if self.current is not None and self.current[0] == users:
            return
        now = time.monotonic()
        if self.current is not None:
            self.seconds[self.current[0]] += now - self.current[1]
        self.current = (users, now) if users > 0 else None

    def add(self, users: int, name: str, ms: float, failed: bool) -> None:
        self.times[(users, name)].append(ms)
        if failed:
            self.failures[(users, name)] += 1
        now = time.monotonic()
        self.seen.setdefault(users, [now, now])[1] = now

    @staticmethod
    def _stats(times: np.ndarray, failures: int, seconds: float) -> dict[str, Any]:
        p50, p95, p99 = (float(v) for v in np.percentile(times, [50, 95, 99])) if len(times) else (0.0, 0.0, 0.0)
        return {
            "requests": len(times),
            "failures": failures,
            "rps": round(len(times) / seconds, 2) if seconds > 0 else 0.0,
            "p50_ms": round(p50, 1),
            "p95_ms": round(p95, 1),
            "p99_ms": round(p99, 1),
            "avg_ms": round(float(times.mean()), 1) if len(times) else 0.0,
        }

    def steps(self) -> list[dict[str, Any]]:
        self.step_to(0)
        out = []
        for users in sorted(u for u in self.seen if u > 0):
            first, last = self.seen[users]
            seconds = self.seconds.get(users) or max(last - first, 1e-9)
            names = sorted(n for u, n in self.times if u == users)
            all_times = np.concatenate([np.asarray(self.times[(users, n)], dtype=np.float64) for n in names])
            step = {
                "users": users,
                "seconds": round(seconds, 2),
                **self._stats(all_times, sum(self.failures[(users, n)] for n in names), seconds),
            }
            step["endpoints"] = {
                n: self._stats(np.asarray(self.times[(users, n)], dtype=np.float64), self.failures[(users, n)], seconds)
                for n in names
            }
            out.append(step)
        return out


RECORDER = StepRecorder()


_ENV: dict[str, Any] = {}


@events.request.add_listener
def _record(request_type: str, name: str, response_time: float, exception: Exception | None, **kw: Any) -> None:
    RECORDER.add(_target_users(), name, float(response_time or 0.0), exception is not None)


def _target_users() -> int:
    """The user count the runner is at or ramping to (0 before the test starts)."""
    env = _ENV.get("environment")
    runner = env.runner if env is not None else None
    if runner is None or runner.state in ("ready", "stopped"):
        return 0
    return int(getattr(runner, "target_user_count", None) or runner.user_count)


@events.spawning_complete.add_listener
def _on_spawned(user_count: int, **kw: Any) -> None:
    RECORDER.step_to(user_count)


@events.test_stopping.add_listener
def _on_stopping(**kw: Any) -> None:
    RECORDER.step_to(0)


def ensure_catalog(environment: Any) -> bool:
    """Read the catalog of the host under test once; keep the user classes whose family has a served model."""
    global CATALOG, CATALOG_OK, CATALOG_HOST
    if CATALOG_OK and environment.host == CATALOG_HOST:
        return True
    CATALOG_HOST = environment.host
    try:
        CATALOG, CATALOG_OK = load_catalog(environment), True
    except CatalogError as e:
        CATALOG, CATALOG_OK = {}, False
        log.error("loadtest: cannot read the served models from %s/v1/models: %s", environment.host, e)
        return False
    for task_name, models in sorted(CATALOG.items()):
        log.info("loadtest: %s -> %s", task_name, ", ".join(m.name for m in models))
    keep = [u for u in environment.user_classes if CATALOG.get(getattr(u, "task_family", ""))]
    dropped = [u.__name__ for u in environment.user_classes if u not in keep]
    if dropped:
        log.warning("loadtest: no served model for %s: those users are skipped", ", ".join(dropped))
    environment.user_classes[:] = keep
    return True


@events.init.add_listener
def _on_init(environment: Any, **kw: Any) -> None:
    """Read the catalog before the first step starts (a step that outlasted it would restart the test)."""
    _ENV["environment"] = environment
    if environment.host:
        ensure_catalog(environment)


@events.test_start.add_listener
def _on_test_start(environment: Any, **kw: Any) -> None:
    """A host changed in the web UI, or a run without the shape: read its catalog; stop at once without one."""
    _ENV["environment"] = environment
    if environment.shape_class is None and environment.runner is not None:
        RECORDER.step_to(environment.runner.target_user_count or 0)
    if not ensure_catalog(environment) and environment.runner is not None:
        import gevent

        gevent.spawn_later(0.1, environment.runner.quit)


def thresholds(environment: Any) -> dict[str, Any]:
    total = environment.stats.total
    limits = {
        "fail_ratio": env_float("LOCUST_MAX_FAIL_RATIO", 0.01),
        "p95_ms": env_float("LOCUST_MAX_P95_MS", 1000.0),
        "p99_ms": env_float("LOCUST_MAX_P99_MS", 2000.0),
    }
    measured = {
        "fail_ratio": total.fail_ratio,
        "p95_ms": float(total.get_response_time_percentile(0.95) or 0.0),
        "p99_ms": float(total.get_response_time_percentile(0.99) or 0.0),
    }
    env_names = {"fail_ratio": "LOCUST_MAX_FAIL_RATIO", "p95_ms": "LOCUST_MAX_P95_MS", "p99_ms": "LOCUST_MAX_P99_MS"}
    failed = [f"{k} {measured[k]:.4g} > {limits[k]:.4g} ({env_names[k]})" for k in limits if measured[k] > limits[k]]
    if total.num_requests == 0:
        failed.append("no request was made")
    if not CATALOG_OK:
        failed.append("the served models could not be read (GET /v1/models)")
    exceptions = len(environment.runner.exceptions) if environment.runner is not None else 0
    if exceptions:
        failed.append(f"{exceptions} distinct exception(s) in the locustfile's users")
    return {"limits": limits, "measured": measured, "failed": failed, "passed": not failed}


def final_stats(environment: Any) -> dict[str, Any]:
    """Locust's own final numbers (its CSVs are rewritten once a second, so they can miss the last second)."""
    from locust.stats import StatsError

    def entry(e: Any) -> dict[str, Any]:
        return {
            "requests": e.num_requests,
            "failures": e.num_failures,
            "fail_ratio": round(e.fail_ratio, 6),
            "rps": round(e.total_rps, 2),
            "p50_ms": e.get_response_time_percentile(0.5),
            "p95_ms": e.get_response_time_percentile(0.95),
            "p99_ms": e.get_response_time_percentile(0.99),
            "avg_ms": round(e.avg_response_time, 1),
            "max_ms": round(e.max_response_time or 0.0, 1),
        }

    stats = environment.stats
    return {
        "total": entry(stats.total),
        "endpoints": {e.name: entry(e) for e in sorted(stats.entries.values(), key=lambda e: e.name)},
        "failures": [
            {"endpoint": err.name, "error": StatsError.parse_error(err.error), "count": err.occurrences}
            for err in stats.errors.values()
        ],
    }


@events.quitting.add_listener
def _on_quitting(environment: Any, **kw: Any) -> None:
    verdict = thresholds(environment)
    m, lim = verdict["measured"], verdict["limits"]
    line = (
        f"fail ratio {m['fail_ratio']:.4f} (max {lim['fail_ratio']:g}), "
        f"p95 {m['p95_ms']:.0f} ms (max {lim['p95_ms']:g}), p99 {m['p99_ms']:.0f} ms (max {lim['p99_ms']:g})"
    )
    if verdict["passed"]:
        log.info("loadtest: thresholds passed: %s", line)
        environment.process_exit_code = 0
    else:
        for f in verdict["failed"]:
            log.error("loadtest: THRESHOLD FAILED: %s", f)
        log.error("loadtest: %s", line)
        environment.process_exit_code = 1
    detail = os.environ.get("LOADTEST_DETAIL_JSON")
    if detail:
        import json

        Path(detail).parent.mkdir(parents=True, exist_ok=True)
        Path(detail).write_text(
            json.dumps(
                {
                    "thresholds": verdict,
                    "catalog": {t: [mm.name for mm in ms] for t, ms in CATALOG.items()},
                    "user_classes": [u.__name__ for u in environment.user_classes],
                    "final": final_stats(environment),
                    "steps": RECORDER.steps(),
                },
                indent=2,
            )
        )
