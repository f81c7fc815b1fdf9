"""The service's Prometheus metrics (one set of names for both apps), and a JSON summary.

Under gunicorn every worker is a process; with ``PROMETHEUS_MULTIPROC_DIR`` set (the gunicorn
config does it) prometheus-client keeps the samples in files there and ``/metrics`` aggregates
all workers, whichever worker answers the scrape. What is shared by every worker (the spool
folder, the drift job's latest report) is read when ``/metrics`` is scraped instead
(:func:`watch`), so it is never stale and never counted twice.

The names, labels and meaning of every metric are documented in
``docs/operations/observability.md``; the alert and recording rules in ``monitoring/prometheus``
depend on them, so a rename is a breaking change (``tests/api/test_metrics.py`` pins them).
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

# No ``*_created`` series: the multi-process collector (gunicorn) has none, so without them
# both apps expose the same series (and Prometheus has no use for them before 3.x).
disable_created_metrics()  # type: ignore[no-untyped-call]

CONTENT_TYPE = CONTENT_TYPE_LATEST
#: The OpenAPI description of what ``GET /metrics`` answers, for both documents.
OPENAPI_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Prometheus text exposition format (" + CONTENT_TYPE + ")",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
}
#: Request latency buckets (seconds): fine below 10 ms, where a /predict answers, so the SLO's
#: 25 ms threshold and p50/p95/p99 are read off real bucket edges rather than interpolated.
LATENCY_BUCKETS = (
    0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
)  # fmt: skip
#: Predicted-probability buckets: tenths, enough to see the score distribution move.
SCORE_BUCKETS = tuple(round(step / 10, 1) for step in range(1, 11))
#: The arm of a prediction while no rollout runs (the rollout labels the challenger's).
CHAMPION_ARM = "champion"

REQUESTS = Counter(
    "xgbops_http_requests_total",
    "HTTP requests by endpoint (route template), method and status.",
    ["endpoint", "method", "status"],
)
LATENCY = Histogram(
    "xgbops_http_request_duration_seconds",
    "Time to answer, by endpoint (route template).",
    ["endpoint"],
    buckets=LATENCY_BUCKETS,
)
PREDICTIONS = Counter(
    "xgbops_predictions_total",
    "Records scored, by predicted label, model version and rollout arm.",
    ["label", "model_version", "arm"],
)
SCORES = Histogram(
    "xgbops_prediction_score",
    "Predicted probability of the positive label, by model version and rollout arm.",
    ["model_version", "arm"],
    buckets=SCORE_BUCKETS,
)
MODEL_INFO = Gauge(
    "xgbops_model_info",
    "The model each live worker serves (value 1; a replaced one 0).",
    ["model_name", "model_version", "run_id"],
    multiprocess_mode="liveall",
)
DATABASE_ERRORS = Counter(
    "xgbops_database_errors_total",
    "Failed history database operations (write, read, ping).",
    ["operation"],
)
RETRAIN_JOBS = Counter(
    "xgbops_retrain_jobs_total",
    "Retraining jobs by status reached (queued, succeeded, failed).",
    ["status"],
)
ROLLOUT_OUTCOMES = Counter(
    "xgbops_rollout_outcomes_total",
    "Labelled predictions by rollout arm and whether the predicted label was right.",
    ["arm", "outcome"],
)

ROLLOUT_SHARE = Gauge(
    "xgbops_rollout_share_percent",
    "The rollout's mode (label) and share of traffic in percent, per live worker.",
    ["mode"],
    multiprocess_mode="liveall",
)
CHALLENGER_FAILURES = Counter(
    "xgbops_rollout_challenger_failures_total",
    "Challenger scorings that failed, by where: answer (the champion answered instead), "
    "shadow, or dropped (a shadow not scored: the worker's shadow queue was full).",
    ["stage"],
)
ROLLOUT_STOPS = Counter(
    "xgbops_rollout_guard_stops_total",
    "Rollouts the guard stopped, by reason (worse, failures, latency).",
    ["reason"],
)


#: The unlabelled gauges: (name, help, multiprocess mode). They are made on first use, not at
#: import: an unlabelled metric opens its sample file at once, and gunicorn's master imports
#: this module before the metrics folder exists (and empties it before forking workers).
_GAUGES = {
    "in_flight": (
        "xgbops_http_requests_in_flight",
        "Requests being answered now, across workers.",
        "livesum",
    ),
    "queued": (
        "xgbops_history_queued_records",
        "Prediction records waiting in the write-behind queues, across workers.",
        "livesum",
    ),
    "database_up": (
        "xgbops_history_database_up",
        "Whether the history database answered the last attempt (lowest across workers).",
        "livemin",
    ),
}


@functools.cache
def _gauge(key: str) -> Gauge:
    name, documentation, mode = _GAUGES[key]
    return Gauge(name, documentation, multiprocess_mode=mode)  # type: ignore[arg-type]


_FLASK_PARAMETER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def endpoint_label(route: str) -> str:
    """The route template in one spelling for both apps: Flask's ``/retrain/<job_id>`` (or
    ``<string:job_id>``) becomes FastAPI's ``/retrain/{job_id}``."""
    return _FLASK_PARAMETER.sub(r"{\1}", route)


def observe_request(endpoint: str, method: str, status: int, seconds: float) -> None:
    """Count one answered request and its latency."""
    endpoint = endpoint_label(endpoint)
    REQUESTS.labels(endpoint, method, str(status)).inc()
    LATENCY.labels(endpoint).observe(seconds)


def track_in_flight_wsgi(app: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a WSGI app so ``xgbops_http_requests_in_flight`` counts the requests it is answering."""

    def wrapped(environ: dict[str, Any], start_response: Any) -> Any:
        _gauge("in_flight").inc()
        try:
            return app(environ, start_response)
        finally:
            _gauge("in_flight").dec()

    return wrapped


class TrackInFlight:
    """ASGI middleware: ``xgbops_http_requests_in_flight`` counts HTTP requests being answered."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        _gauge("in_flight").inc()
        try:
            await self.app(scope, receive, send)
        finally:
            _gauge("in_flight").dec()


#: Up to this many scores, each is observed on its own (see observe_predictions).
FEW_SCORES = 8


def observe_predictions(
    labels: list[str],
    model_version: str,
    scores: Sequence[float] | np.ndarray[Any, Any] = (),
    arm: str = CHAMPION_ARM,
) -> None:
    """Count scored records by label, and their scores in :data:`SCORES`.

    The scores of a batch are binned with numpy and added per bucket: 10,000 ``observe()``
    calls would cost a 10,000-record batch about as much as scoring it.
    """
    for label in set(labels):
        PREDICTIONS.labels(label, model_version, arm).inc(labels.count(label))
    values = np.asarray(scores, dtype=np.float64)
    if values.size > FEW_SCORES:
        _observe_many(SCORES.labels(model_version, arm), values)
    elif values.size:  # a request or two: binning arrays costs more than observing each
        child = SCORES.labels(model_version, arm)
        for value in values.tolist():
            child.observe(value)


def _observe_many(child: Histogram, values: np.ndarray[Any, Any]) -> None:
    """What ``child.observe(v)`` for every ``v`` does, in one pass per bucket.

    Uses the child's bucket values (``_buckets``, ``_sum``, ``_upper_bounds``), which
    prometheus-client has kept since 0.4; ``tests/api/test_metrics.py`` compares the result
    with ``observe()`` one by one, so a change there fails a test rather than the numbers.
    """
    bounds = np.asarray(child._upper_bounds, dtype=np.float64)  # pylint: disable=protected-access
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    for bucket, count in zip(child._buckets, counts.tolist()):  # pylint: disable=protected-access
        if count:
            bucket.inc(count)
    child._sum.inc(float(values.sum()))  # pylint: disable=protected-access


def observe_outcome(arm: str, correct: bool) -> None:
    """Count a labelled prediction of ``arm`` (called by the rollout's live comparison)."""
    ROLLOUT_OUTCOMES.labels(arm, "correct" if correct else "incorrect").inc()


def set_rollout(mode: str, share: float) -> None:
    """Record the rollout this worker applies: its mode's series holds the share, the others 0."""
    for known in ("off", "shadow", "canary", "ab"):
        ROLLOUT_SHARE.labels(known).set(share if known == mode else 0)


def observe_challenger_failure(stage: str) -> None:
    """Count a challenger scoring that failed at ``stage`` (answer or shadow)."""
    CHALLENGER_FAILURES.labels(stage).inc()


def observe_shadow_dropped(records: int) -> None:
    """Count records whose shadow scoring was dropped (the queue was full)."""
    CHALLENGER_FAILURES.labels("dropped").inc(records)


def observe_guard_stop(reason: str) -> None:
    """Count a rollout the guard stopped."""
    ROLLOUT_STOPS.labels(reason).inc()


def observe_queue(records: int) -> None:
    """Record this worker's write-behind queue length (the history writer, every cycle)."""
    _gauge("queued").set(records)


def observe_database(ok: bool, operation: str) -> None:
    """Record whether the history database answered ``operation`` (write, read, ping)."""
    _gauge("database_up").set(1 if ok else 0)
    if not ok:
        DATABASE_ERRORS.labels(operation).inc()


def observe_retrain(status: str) -> None:
    """Count a retraining job reaching ``status`` (queued, succeeded, failed)."""
    RETRAIN_JOBS.labels(status).inc()


#: The (model name, version) this process reported as served, if any.
_served: list[tuple[str, str, str]] = []


def set_model(name: str, version: str, run_id: str = "") -> None:
    """Record which model this worker serves: its series is 1, the one it replaced 0.

    Multi-process samples cannot be removed (prometheus-client only warns and keeps them), so
    a replaced version stays listed with value 0: ``xgbops_model_info == 1`` is what is served.
    Called on every scoring request; a no-op unless the model changed.
    """
    if _served == [(name, version, run_id)]:
        return
    for previous in _served:
        MODEL_INFO.labels(*previous).set(0)
    MODEL_INFO.labels(name, version, run_id).set(1)
    _served[:] = [(name, version, run_id)]


@dataclass(frozen=True)
class _Shared:
    """What every worker sees alike, read at scrape time: the spool folder and the drift report."""

    spool_dir: Path | None = None
    drift_report: Path | None = None


_shared: list[_Shared] = [_Shared()]
#: Spool files still to be written to the database (journals of living workers are not: what
#: they hold is on its way; see ``api.core.history.spool``).
_SPOOL_GLOBS = ("spool-*.jsonl", "replay-*.jsonl")


def watch(spool_dir: Path | None = None, drift_report: Path | None = None) -> None:
    """Expose the spool folder's size and the drift job's latest report (``reports/drift.json``)
    at every scrape; called once per process by the service."""
    _shared[0] = _Shared(spool_dir, drift_report)
    # Known label values start at 0, so "no job yet" is a zero on the dashboards and in
    # increase(), not a missing series (Prometheus' advice for counters with labels).
    for status in ("queued", "succeeded", "failed"):
        RETRAIN_JOBS.labels(status)
    for arm in ("champion", "challenger"):
        for outcome in ("correct", "incorrect"):
            ROLLOUT_OUTCOMES.labels(arm, outcome)
    for reason in ("worse", "failures", "latency"):
        ROLLOUT_STOPS.labels(reason)
    for stage in ("answer", "shadow", "dropped"):
        CHALLENGER_FAILURES.labels(stage)


class _SharedCollector(Collector):
    """Scrape-time gauges of :class:`_Shared` (a custom collector: no worker owns them)."""

    def collect(self) -> Iterator[Metric]:
        shared = _shared[0]
        if shared.spool_dir is not None:
            spool = GaugeMetricFamily(
                "xgbops_history_spool_bytes",
                "Bytes of prediction records spooled on disk, waiting for the database.",
            )
            spool.add_metric([], float(_spool_bytes(shared.spool_dir)))
            yield spool
        if shared.drift_report is not None:
            yield from _drift_metrics(shared.drift_report)


def _spool_bytes(folder: Path) -> int:
    total = 0
    for pattern in _SPOOL_GLOBS:
        for path in folder.glob(pattern):
            try:
                total += path.stat().st_size
            except FileNotFoundError:
                continue  # replayed and deleted meanwhile
    return total


def _drift_metrics(path: Path) -> Iterable[Metric]:
    """The latest drift report as gauges; nothing when the job has not run (or wrote garbage)."""
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        generated = datetime.fromisoformat(report["generated_at"]).timestamp()
        features = [
            (str(row["feature"]), float(row["psi"]), bool(row["drifted"]))
            for row in report["features"]
        ]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    psi = GaugeMetricFamily(
        "xgbops_drift_psi",
        "Population stability index of each feature in the latest drift report.",
        labels=["feature"],
    )
    drifted = GaugeMetricFamily(
        "xgbops_drift_detected",
        "1 when the latest drift report judged the feature drifted (PSI and test), else 0.",
        labels=["feature"],
    )
    for feature, value, verdict in features:
        psi.add_metric([feature], value)
        drifted.add_metric([feature], 1.0 if verdict else 0.0)
    stamp = GaugeMetricFamily(
        "xgbops_drift_report_timestamp_seconds",
        "When the latest drift report was generated (Unix time).",
    )
    stamp.add_metric([], generated)
    return [psi, drifted, stamp]


def _registry() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


def render() -> bytes:
    """Prometheus text exposition of every worker's metrics and the shared gauges."""
    shared = CollectorRegistry(auto_describe=False)
    shared.register(_SharedCollector())
    return bytes(generate_latest(_registry())) + bytes(generate_latest(shared))


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
