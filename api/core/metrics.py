"""Request and prediction metrics: Prometheus text for scrapers, a JSON summary for people.

Under gunicorn every worker is a process; with ``PROMETHEUS_MULTIPROC_DIR`` set (the gunicorn
config does it) prometheus-client keeps the samples in files there and ``/metrics`` aggregates
all workers, whichever worker answers the scrape.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

CONTENT_TYPE = CONTENT_TYPE_LATEST
#: The OpenAPI description of what ``GET /metrics`` answers, for both documents.
OPENAPI_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Prometheus text exposition format (" + CONTENT_TYPE + ")",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
}
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

REQUESTS = Counter(
    "xgbops_http_requests_total",
    "HTTP requests by endpoint, method and status.",
    ["endpoint", "method", "status"],
)
LATENCY = Histogram(
    "xgbops_http_request_duration_seconds",
    "Time to answer, by endpoint.",
    ["endpoint"],
    buckets=LATENCY_BUCKETS,
)
PREDICTIONS = Counter(
    "xgbops_predictions_total",
    "Records scored, by predicted label and model version.",
    ["label", "model_version"],
)
MODEL_INFO = Gauge(
    "xgbops_model_info",
    "The model each live worker serves (value 1).",
    ["model_name", "model_version"],
    multiprocess_mode="liveall",
)


def observe_request(endpoint: str, method: str, status: int, seconds: float) -> None:
    """Count one answered request and its latency."""
    REQUESTS.labels(endpoint, method, str(status)).inc()
    LATENCY.labels(endpoint).observe(seconds)


def observe_predictions(labels: list[str], model_version: str) -> None:
    """Count scored records by label."""
    for label in set(labels):
        PREDICTIONS.labels(label, model_version).inc(labels.count(label))


#: The (model name, version) this process reported as served, if any.
_served: list[tuple[str, str]] = []


def set_model(name: str, version: str) -> None:
    """Record which model this worker serves: its series is 1, the one it replaced 0.

    Multi-process samples cannot be removed (prometheus-client only warns and keeps them), so
    a replaced version stays listed with value 0: ``xgbops_model_info == 1`` is what is served.
    Called on every scoring request; a no-op unless the model changed.
    """
    if _served == [(name, version)]:
        return
    for previous in _served:
        if previous != (name, version):
            MODEL_INFO.labels(*previous).set(0)
    MODEL_INFO.labels(name, version).set(1)
    _served[:] = [(name, version)]


def _registry() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


def render() -> bytes:
    """Prometheus text exposition of every worker's metrics."""
    return bytes(generate_latest(_registry()))


def summary(positive_label: str | None) -> dict[str, Any]:
    """Request count, error rate, latency percentiles and positive rate, across workers."""
    total = errors = 0.0
    buckets: dict[float, float] = {}
    by_label: dict[str, float] = {}
    for metric in _registry().collect():
        for sample in metric.samples:
            if sample.name == "xgbops_http_requests_total":
                total += sample.value
                if sample.labels["status"][0] in "45":
                    errors += sample.value
            elif sample.name == "xgbops_http_request_duration_seconds_bucket":
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
            elif sample.name == "xgbops_predictions_total":
                label = sample.labels["label"]
                by_label[label] = by_label.get(label, 0.0) + sample.value
    scored = sum(by_label.values())
    return {
        "requests": int(total),
        "error_rate": errors / total if total else 0.0,
        "latency_ms": {f"p{q}": _percentile(buckets, q / 100) for q in (50, 90, 99)},
        "predictions": int(scored),
        "positive_rate": (by_label.get(positive_label or "", 0.0) / scored) if scored else None,
    }


def _percentile(buckets: dict[float, float], quantile: float) -> float | None:
    """Estimate a latency percentile (ms) from cumulative histogram buckets, as PromQL does."""
    ordered = sorted(buckets.items())
    if not ordered or ordered[-1][1] == 0:
        return None
    target = quantile * ordered[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= target:
            if bound == float("inf"):
                return round(lower_bound * 1000, 3)
            share = (target - lower_count) / (count - lower_count) if count > lower_count else 1.0
            return round((lower_bound + (bound - lower_bound) * share) * 1000, 3)
        lower_bound, lower_count = bound, count
    return round(lower_bound * 1000, 3)  # pragma: no cover - +Inf always holds the total
