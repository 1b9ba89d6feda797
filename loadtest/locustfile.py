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

import logging
import math
import os
import random
import sys
from pathlib import Path
from typing import Any

from locust import HttpUser, LoadTestShape, between, events, task
from locust.exception import StopUser

sys.path.insert(0, str(Path(__file__).resolve().parent))  # its siblings, wherever Locust runs it from
from payloads import CatalogError, GeneratorModel, ImageModel, TextModel, env_float, load_catalog, parse_duration
from recall_payloads import RecallModel
from recording import StepRecorder, final_stats, thresholds

log = logging.getLogger("loadtest")


# ---- settings --------------------------------------------------------------------------------------------------


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


CATALOG: dict[str, list[Any]] = {}  # task -> payload-ready models, read from the host under test
CATALOG_OK = False
CATALOG_HOST: str | None = None


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


class Malformed(ValueError):  # a payload builder's own checks raise ValueError (recall_payloads.py)
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
    except ValueError as e:
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
    build_model: Any = None  # model card -> the payload-ready model its requests draw from (loadtest/payloads.py)

    def on_start(self) -> None:
        if not CATALOG.get(self.task_family):
            raise StopUser()

    def model(self) -> Any:
        return random.choice(CATALOG[self.task_family])


class ClassifyJsonUser(NNServeUser):
    """POST /v1/classify: base64 PNGs in JSON, mostly one image, sometimes a batch."""

    weight = 4
    task_family = "image-classification"
    build_model = staticmethod(ImageModel.from_card)

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
    build_model = staticmethod(ImageModel.from_card)

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
    build_model = staticmethod(TextModel.from_card)

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
    build_model = staticmethod(ImageModel.from_card)

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
    build_model = staticmethod(GeneratorModel.from_card)

    def generate(self, n: int) -> None:
        m: GeneratorModel = self.model()
        seed = random.randrange(2**31)
        payload: dict[str, Any] = {"model": m.name, "n": n, "seed": seed, **m.extra}
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


class RecallUser(NNServeUser):
    """POST /v1/recall: associative memories, cued with digit images or ±1 states 10-30 % flipped; some batches."""

    weight = 1
    task_family = "recall"
    build_model = staticmethod(RecallModel.from_card)

    @task
    def recall(self) -> None:
        m: RecallModel = self.model()
        n = random.choice((1, 1, 1, 8))
        with self.client.post("/v1/recall", json=m.payload(n), name="/v1/recall", catch_response=True) as resp:
            check(resp, lambda body: m.validate(body, n))


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
        builders = {u.task_family: u.build_model for u in environment.user_classes if getattr(u, "build_model", None)}
        CATALOG, CATALOG_OK = load_catalog(environment, builders), True
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


@events.quitting.add_listener
def _on_quitting(environment: Any, **kw: Any) -> None:
    verdict = thresholds(environment, CATALOG_OK)
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
