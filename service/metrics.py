"""nnserve_* Prometheus series (module level, bounded labels: model, endpoint route, code)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

_FAST = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

INFERENCE_SECONDS = Histogram("nnserve_inference_seconds", "onnxruntime run time per batch", ["model"], buckets=_FAST)
PREPROCESS_SECONDS = Histogram(
    "nnserve_preprocess_seconds", "decode + resize + normalise time per image", ["model"], buckets=_FAST
)
BATCH_SIZE = Histogram(
    "nnserve_batch_size",
    "items per onnxruntime run (after adaptive batching)",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
PREDICTIONS = Counter("nnserve_predictions_total", "top-1 predictions per label", ["model", "label"])
ERRORS = Counter("nnserve_errors_total", "/v1 and /v2 failures by endpoint and error code", ["endpoint", "code"])
TOKENS = Histogram(
    "nnserve_text_tokens",
    "tokens per text after tokenisation (before truncation)",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048),
)
ANOMALIES = Counter("nnserve_anomalies_total", "autoencoder inputs over their anomaly threshold", ["model"])
OUT_OF_DISTRIBUTION = Counter(
    "nnserve_out_of_distribution_total", "classifier inputs flagged out of distribution", ["model"]
)
GENERATED = Counter("nnserve_generated_samples_total", "images produced by generators (samples and frames)", ["model"])
