"""All service settings: one pydantic-settings class, environment prefix ``NNSERVE_``, built lazily."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from contract.metadata import MODEL_NAME
from contract.text import DEFAULT_WINDOWS

REPO_ROOT = Path(__file__).resolve().parent.parent
# PIL.Image.MAX_IMAGE_PIXELS: contract.images.decode_image refuses an image over it as a decompression bomb
PILLOW_MAX_PIXELS = 89_478_485


class VersionPolicy(BaseModel):
    """Which versions of a model are served (Triton's version_policy): the newest ``latest`` or the ``specific``
    ones listed."""

    model_config = ConfigDict(extra="forbid")

    latest: int | None = Field(None, ge=1)
    specific: list[str] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _one_kind(self) -> VersionPolicy:
        if self.latest is not None and self.specific is not None:
            raise ValueError("a version policy is 'latest' or 'specific', not both")
        return self

    def pick(self, versions: list[str]) -> list[str]:
        """The versions to serve among those on disk (sorted oldest first)."""
        if self.specific is not None:
            return [v for v in versions if v in self.specific]
        return versions[-(self.latest or 1) :]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NNSERVE_", extra="ignore")

    model_dir: Path = Field(REPO_ROOT / "artifacts", description="folder of <name>/model.onnx + model.json")
    models: list[Annotated[str, Field(pattern=MODEL_NAME)]] = Field(
        default_factory=list, description="names to serve (folders of model_dir); empty: every model in model_dir"
    )

    # adaptive batching in the model service (BentoML's defaults, 100 / 60000 ms, are never relied on)
    max_batch_size: int = Field(64, ge=2, le=4096, description="image rows per batch")
    text_max_batch_size: int = Field(128, ge=2, le=4096, description="texts per batch (the LSTM gains most)")
    max_latency_ms: int = Field(
        200, ge=1, description="'services' batching: BentoML's batcher's latency budget before it answers 503"
    )
    batching: Literal["api", "services"] = Field(
        "api",
        description="where adaptive batching runs: 'api' in each API worker (service/batching.py, no hop between "
        "processes) or 'services' in BentoML model services (one internal HTTP hop per request)",
    )
    max_queue_rows: int = Field(4096, ge=1, description="'api' batching: rows waiting per family before 503")
    gc_freeze: bool = Field(
        True,
        description="move everything allocated at start-up out of the garbage collector's view (gc.freeze), "
        "so its full collections stop scanning BentoML's and the models' objects (PERF-NOTES: 100-170 ms pauses)",
    )
    trace_v1: bool = Field(False, description="keep BentoML's OpenTelemetry spans on /v1 and /v2 requests (costly)")
    model_workers: int = Field(1, ge=1)
    api_workers: int = Field(2, ge=1, description="API worker processes (2 measured best on 2 cores)")
    decode_threads: int = Field(
        2, ge=1, le=64, description="threads per API worker that decode and prepare images, off the event loop"
    )
    inline_batch_ms: float = Field(
        2.0,
        ge=0,
        le=100,
        description="'api' batching: a batch expected (from the model's recent batches) to take at most this long "
        "runs on the event loop instead of the batcher's thread (the hop costs more than a small model's run); 0: "
        "always on the thread",
    )
    inline_decode_bytes: int = Field(
        32 << 10,
        ge=0,
        description="a request's PNG images of at most this many bytes in all, each of the model's input size by "
        "its header, are decoded on the event loop instead of the decode threads; 0: always in the threads",
    )
    ort_intra_op_threads: int = Field(1, ge=0, description="per onnxruntime session; 0 lets onnxruntime choose")

    skip_bad_artifacts: bool = Field(
        False,
        description="a missing, corrupt or inconsistent artifact is reported not ready and the others serve; "
        "by default it stops start-up with a message naming the file",
    )
    max_figure_bytes: int = Field(
        2 << 20, ge=1, description="bytes per figure (a PNG beside model.onnx) read at load; a larger one is not served"
    )
    max_figures: int = Field(
        32, ge=0, le=1024, description="figures per version read at load, the first by name (a folder of thousands of "
        "PNGs is not read whole)"
    )  # fmt: skip
    prepare_timeout_s: float = Field(
        120.0, gt=0, le=3600, description="a repository load: the time every API worker has to read and warm up the "
        "new versions before the load is aborted everywhere"
    )  # fmt: skip
    max_metadata_bytes: int = Field(
        1 << 20, ge=1024, description="bytes of an artifact's model.json read at most; a larger one is not served"
    )

    # access
    api_key: SecretStr | None = Field(
        None, description="when set, /v1 and /v2 need it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
    )

    @model_validator(mode="after")
    def _defaults_within_limits(self) -> Settings:
        """A default a request gets must be one it may ask for (it was cut to the limit, unlike what /docs said)."""
        for default, limit in (("gibbs_steps", "max_gibbs_steps"), ("recall_sweeps", "max_recall_sweeps")):
            if getattr(self, default) > getattr(self, limit):
                raise ValueError(
                    f"NNSERVE_{default.upper()} ({getattr(self, default)}) is over NNSERVE_{limit.upper()} "
                    f"({getattr(self, limit)})"
                )
        if self.model_control != "none" and self.batching != "api":  # it started, then refused every load (an audit's)
            raise ValueError(
                f"NNSERVE_MODEL_CONTROL={self.model_control} needs NNSERVE_BATCHING=api (the repository replaces the "
                "models each API worker runs)"
            )
        return self

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_is_no_key(cls, v: object) -> object:
        """A blank key is no key; a key read from a file keeps no trailing newline (HTTP strips a header's
        whitespace, so no client could send it)."""
        return (v.strip() or None) if isinstance(v, str) else v

    metrics_require_key: bool = Field(False, description="with an API key set, /metrics needs it too")
    metrics_max_age_s: float = Field(
        1.0,
        ge=0,
        le=60,
        description="/metrics is rendered at most once this often per worker, and served from that (0: never)",
    )

    # request limits
    max_images: int = Field(64, ge=1, le=4096, description="images per request (any image endpoint)")
    max_image_bytes: int = Field(8 << 20, ge=1, description="encoded bytes per image")
    max_image_pixels: int = Field(  # Pillow refuses more as a decompression bomb, whatever this says
        25_000_000, ge=1, le=PILLOW_MAX_PIXELS, description="width x height per image, read from the header"
    )
    max_image_side: int = Field(
        10_000, ge=1, description="width or height per image, read from the header (a 1 x 25,000,000 strip is none)"
    )
    max_jpeg_scans: int = Field(
        100, ge=1, description="scans per JPEG, counted before decoding (a progressive JPEG has about 10)"
    )
    max_texts: int = Field(64, ge=1, le=4096, description="texts per sentiment request")
    max_text_chars: int = Field(10_000, ge=1, description="characters per text")
    max_explain_chars: int = Field(
        20_000, ge=1, description="characters of text per sentiment request with explain (finding token places)"
    )
    text_windows: int = Field(
        DEFAULT_WINDOWS, ge=1, le=64, description="windows of a model's max_len tokens read per text; the rest is cut"
    )
    max_samples: int = Field(64, ge=2, le=1024, description="generated samples or interpolation frames per request")
    gibbs_steps: int = Field(
        1000, ge=1, description="Gibbs samplers (an RBM): steps of each chain when /v1/generate names no 'steps'"
    )
    max_gibbs_steps: int = Field(2000, ge=1, description="Gibbs samplers: steps of each chain a request may ask for")
    max_recall_inputs: int = Field(
        64, ge=1, le=4096, description="images or ±1 states per /v1/recall request (rows per /v2 request)"
    )
    recall_sweeps: int = Field(
        50, ge=1, description="associative memories: sweep limit when /v1/recall names no max_sweeps, and on /v2"
    )
    max_recall_sweeps: int = Field(500, ge=1, description="associative memories: the sweep limit a request may ask for")
    max_body_bytes: int = Field(64 << 20, ge=1, description="request body size")
    request_timeout_s: int = Field(30, ge=1, description="seconds from a request's admission to its answer (504)")
    body_timeout_s: float = Field(
        10.0, gt=0, le=600, description="seconds a client has to send its whole request body (408, connection closed)"
    )
    max_body_in_flight: int = Field(
        64 << 20,
        ge=1,
        description="bytes of request bodies one API worker holds at once (as received); a new upload that does "
        "not fit gets 503 + Retry-After before it is read; bodies of at most 1/64 of it may use a further quarter",
    )
    head_timeout_s: float = Field(
        10.0, gt=0, le=600, description="seconds a client has to send a request's line and headers (408, closed)"
    )
    max_head_bytes: int = Field(16 * 1024, ge=1024, description="bytes of a request's line and headers (431, closed)")
    write_timeout_s: float = Field(
        10.0,
        gt=0,
        le=600,
        description="seconds an answer may wait for a client that reads none of it (the socket's buffers full) "
        "before the connection is dropped, freeing what the request held",
    )
    keep_alive_s: float = Field(5.0, gt=0, le=600, description="seconds an idle kept-alive connection stays open")
    max_connections: int = Field(
        2048,
        ge=1,
        description="open connections per API worker; past it the one idle longest is closed (503 if none is idle)",
    )
    max_inference_id_chars: int = Field(
        4096, ge=1, description="characters of a /v2 inference request's id (echoed in its answer; trace ids run long)"
    )
    max_json_items: int = Field(
        1_000_000,
        ge=1,
        description="array items and object members of a JSON body, counted before parsing as its commas plus "
        "one (an upper bound)",
    )
    drain_s: float = Field(
        5.0,
        ge=0,
        le=300,
        description="graceful shutdown: seconds between SIGTERM and closing the listener, during which readiness "
        "is false and requests are still served (then requests in flight finish)",
    )
    max_concurrency: int = Field(256, ge=1, description="in-flight API requests (split among API workers) before 429")
    version_policy: dict[str, VersionPolicy] = Field(
        default_factory=dict,
        description="JSON, per model name: {'latest': N} or {'specific': ['1', '3']} versions to serve; a model "
        "without an entry serves its newest version",
    )
    model_control: Literal["none", "explicit", "poll"] = Field(
        "none",
        description="'explicit': the repository API loads and unloads models (hot swap); 'poll': the model folder "
        "is watched and changed models are reloaded; 'none': the models of the start are served until the end",
    )
    repository_open: bool = Field(
        False, description="serve the repository API without NNSERVE_API_KEY (off: it needs the key)"
    )
    repository_poll_s: float = Field(5.0, gt=0, le=3600, description="'poll' model control: seconds between scans")
    grpc_port: int = Field(
        8001, ge=0, le=65535, description="the Open Inference Protocol over gRPC (service/oip_grpc.py); 0 turns it off"
    )
    grpc_host: str | None = Field(
        None, description="address the gRPC listener binds; unset: the HTTP listener's (bentoml serve --host)"
    )


# NNSERVE_ variables read elsewhere (tests/test_ui.py, deploy/test-deploy.sh): not settings, not typos
OTHER_VARIABLES = frozenset({"NNSERVE_UI_SHOTS", "NNSERVE_DOCKER_STATE"})


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process; a bad one stops it with one line naming the variable (SystemExit), not a
    traceback through BentoML's command line naming pydantic's field."""
    try:
        return Settings()
    except (ValidationError, SettingsError) as e:
        raise SystemExit(f"nnserve: {settings_error(e)}") from None


def settings_error(e: ValidationError | SettingsError) -> str:
    """A settings failure as one line: each variable, the value given and the rule it breaks."""
    if isinstance(e, SettingsError):  # a JSON-valued setting that is not JSON
        m = re.search(r'field "(\w+)"', str(e))
        name = f"NNSERVE_{m.group(1).upper()}" if m else "a NNSERVE_ setting"
        return f"{name} is not valid JSON (for example NNSERVE_MODELS='[\"mnist-cnn\"]')"
    parts = []
    for err in e.errors():
        loc = [str(x) for x in err["loc"]]
        name = f"NNSERVE_{loc[0].upper()}" + (f" ({'.'.join(loc[1:])})" if len(loc) > 1 else "") if loc else "settings"
        given = f"={str(err['input'])[:60]!r}" if len(loc) == 1 and isinstance(err.get("input"), str) else ""
        parts.append(f"{name}{given}: {err['msg']}")
    return "; ".join(parts)


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """One line per NNSERVE_ variable that names no setting (a typo is otherwise silently ignored)."""
    known = {f"NNSERVE_{name.upper()}" for name in Settings.model_fields} | OTHER_VARIABLES
    out = []
    for name in sorted(k for k in environ if k.startswith("NNSERVE_") and k not in known):
        close = difflib.get_close_matches(name, known, n=1)
        out.append(f"{name} is no setting and is ignored" + (f"; did you mean {close[0]}?" if close else ""))
    return out
