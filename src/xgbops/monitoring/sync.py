"""Backfill the sink from the sources of truth: MLflow (training runs) and the prediction history
(predictions, and the true labels clients report for them).

All are safe to re-run: events carry deterministic ids (see :mod:`xgbops.monitoring.events`).
A training run is re-shipped whole each time, so its ``champion`` flag follows the alias. The
prediction history is shipped from a watermark (the newest ``created_at`` shipped without
error, per sink) minus :data:`WATERMARK_OVERLAP`: rows the API replays late from its spool
after a database outage still fall inside the overlap, and rows shipped twice are only counted
as already shipped. The feedback has its own watermark, on ``received_at``: a label is shipped
joined with its prediction, so a label whose prediction is stored late (buffered, or replayed
from the spool) is skipped at first and picked up by a later run, inside the same overlap; a
label shipped again, or corrected, overwrites its one document. ``everything=True`` ignores the
watermark (after a long outage, or a new cluster).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from xgbops.config import Settings
from xgbops.monitoring import MonitoringError
from xgbops.monitoring.events import (
    METRIC_NAMES,
    Event,
    HoldoutMetrics,
    RolloutDecisionEvent,
    TrainingRunEvent,
    rollout_events,
)
from xgbops.monitoring.history import read_feedback, read_predictions
from xgbops.monitoring.sinks import ShipResult, Sink, open_sink
from xgbops.champion import CHAMPION_ALIAS
from xgbops.tracking import RunInfo, Tracker, VersionInfo

#: How far before the watermark each incremental shipping starts again.
WATERMARK_OVERLAP = timedelta(hours=1)
_PREDICTIONS = "predictions"
_FEEDBACK = "feedback"


def training_run_events(
    settings: Settings, tracker: Tracker | None = None, run_ids: Iterable[str] | None = None
) -> list[TrainingRunEvent]:
    """One event per run of the experiment, joined with the version it registered, if any.

    Args:
        settings: experiment, model name and the default promotion metric.
        tracker: the MLflow session (default: a new one).
        run_ids: only these runs (default: every run).
    """
    tracker = tracker or Tracker(settings)
    versions = {v.run_id: v for v in tracker.versions(settings.model_name)}
    wanted = None if run_ids is None else set(run_ids)
    return [
        _run_event(run, versions.get(run.run_id), settings)
        for run in tracker.runs()
        if wanted is None or run.run_id in wanted
    ]


def sync_mlflow(
    settings: Settings,
    sink: Sink,
    tracker: Tracker | None = None,
    run_ids: Iterable[str] | None = None,
) -> ShipResult:
    """Ship every run (or ``run_ids``) of the experiment as training-run events.

    Returns:
        The sink's counts: on a re-run, every run is ``updated`` (overwritten), none duplicated.
    """
    return sink.ship(training_run_events(settings, tracker, run_ids))


@dataclass(frozen=True)
class PredictionSync:
    """What :func:`sync_predictions` (or :func:`sync_feedback`) shipped: counts, where it
    started, the new watermark."""

    result: ShipResult
    since: datetime | None
    watermark: datetime | None


def sync_predictions(
    settings: Settings,
    sink: Sink,
    since: datetime | None = None,
    everything: bool = False,
    overlap: timedelta = WATERMARK_OVERLAP,
) -> PredictionSync:
    """Ship the prediction history from ``since`` (default: the sink's watermark minus
    ``overlap``; the whole history when ``everything`` or on the first run).

    The watermark moves only when nothing failed, so refused rows are retried next time.

    Raises:
        MonitoringError: the history cannot be read, or the sink failed as a whole.
    """
    positive = settings.dataset.target.positive
    return _ship_from_watermark(
        settings,
        sink,
        _PREDICTIONS,
        lambda start: read_predictions(settings.history_url, positive, since=start),
        since=since,
        everything=everything,
        overlap=overlap,
    )


def sync_feedback(
    settings: Settings,
    sink: Sink,
    since: datetime | None = None,
    everything: bool = False,
    overlap: timedelta = WATERMARK_OVERLAP,
) -> PredictionSync:
    """Ship the labels clients reported, each joined with its prediction, from ``since``
    (default: the sink's feedback watermark minus ``overlap``; all of them when ``everything``
    or on the first run).

    The watermark is the newest ``received_at`` shipped without error. A label whose
    prediction is not stored yet is not read, so it does not move the watermark; it is shipped
    by the first run after its prediction is stored, as long as its ``received_at`` is still
    inside the overlap. Labels are shipped with ``index``: a re-read overwrites (``updated``),
    and a corrected label replaces the first.

    Raises:
        MonitoringError: the history cannot be read, or the sink failed as a whole.
    """
    return _ship_from_watermark(
        settings,
        sink,
        _FEEDBACK,
        lambda start: read_feedback(settings.history_url, since=start),
        since=since,
        everything=everything,
        overlap=overlap,
    )


def _ship_from_watermark(
    settings: Settings,
    sink: Sink,
    stream: str,
    read: Callable[[datetime | None], Iterable[Event]],
    *,
    since: datetime | None,
    everything: bool,
    overlap: timedelta,
) -> PredictionSync:
    """Ship what ``read`` yields (oldest first) from ``since``, else the watermark of
    ``stream`` in this sink minus ``overlap``; move the watermark if nothing failed."""
    key = f"{sink.target}|{stream}"
    marks = _read_watermarks(settings)
    if since is None and not everything and key in marks:
        since = datetime.fromisoformat(marks[key]) - overlap
    newest: list[datetime] = []

    def events() -> Iterator[Event]:
        for event in read(since):
            newest[:] = [event.timestamp]
            yield event

    result = sink.ship(events())
    watermark = newest[0] if newest else None
    if watermark is not None and result.failed == 0:
        previous = marks.get(key)
        if previous is None or datetime.fromisoformat(previous) < watermark:
            marks[key] = watermark.isoformat()
            _write_watermarks(settings, marks)
    return PredictionSync(result, since, watermark)


def watermark_path(settings: Settings) -> Path:
    """Where the per-sink watermarks are kept: ``<state dir>/monitoring/watermarks.json``."""
    return settings.state_path / "monitoring" / "watermarks.json"


def _read_watermarks(settings: Settings) -> dict[str, str]:
    try:
        content = json.loads(watermark_path(settings).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return {str(k): str(v) for k, v in content.items()} if isinstance(content, dict) else {}


def _write_watermarks(settings: Settings, marks: dict[str, str]) -> None:
    path = watermark_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(json.dumps(marks, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(partial, path)


def _run_event(run: RunInfo, version: VersionInfo | None, settings: Settings) -> TrainingRunEvent:
    metrics = HoldoutMetrics.from_run(run.metrics)
    promotion_metric = (
        run.params.get("promotion_metric")
        or run.tags.get("promotion.metric")
        or settings.train.promotion.metric
    )
    score = getattr(metrics, promotion_metric) if promotion_metric in METRIC_NAMES else None
    duration = run.metrics.get("duration_seconds")
    if duration is None and run.end_time_ms is not None:
        duration = (run.end_time_ms - run.start_time_ms) / 1000
    best = run.metrics.get("best_iteration")
    return TrainingRunEvent(
        timestamp=_from_ms(run.start_time_ms),
        run_id=run.run_id,
        run_name=run.run_name,
        experiment=settings.experiment_name,
        status=run.status,
        end_time=None if run.end_time_ms is None else _from_ms(run.end_time_ms),
        registered=version is not None,
        model_name=None if version is None else version.name,
        model_version=None if version is None else version.version,
        version_number=None if version is None else int(version.version),
        champion=version is not None and CHAMPION_ALIAS in version.aliases,
        aliases=[] if version is None else list(version.aliases),
        metrics=metrics,
        promotion_metric=promotion_metric,
        promotion_score=score,
        promotion_decision=run.tags.get("promotion.decision"),
        duration_seconds=duration,
        best_iteration=None if best is None else int(best),
        dataset=run.tags.get("xgbops.dataset") or run.params.get("dataset"),
        dataset_sha256=run.tags.get("xgbops.dataset_sha256"),
        git_commit=run.tags.get("mlflow.source.git.commit"),
        params=dict(run.params),
    )


def _from_ms(milliseconds: int) -> datetime:
    return datetime.fromtimestamp(milliseconds / 1000, UTC)


def ship_training(
    settings: Settings, tracker: Tracker, run_id: str, replaced_version: str | None = None
) -> ShipResult:
    """Ship a finished training run, and the run of the champion it replaced (whose
    ``champion`` flag just turned false), to the configured sink. Called by ``train``.

    Raises:
        MonitoringError: the sink is misconfigured or failed as a whole.
    """
    run_ids = [run_id]
    if replaced_version is not None:
        run_ids.append(tracker.version(settings.model_name, version=replaced_version).run_id)
    sink = open_sink(settings)
    try:
        return sync_mlflow(settings, sink, tracker, run_ids)
    finally:
        sink.close()


def ship_rollout(
    settings: Settings, report: Mapping[str, Any], decisions: Sequence[Mapping[str, Any]] = ()
) -> int:
    """Ship a rollout comparison report (one document per arm) and decisions to the configured
    sink. Called by the rollout each time it compares the arms or decides.

    The documents' ids derive from the report's time and the decisions' own fields, so a report
    or decision shipped again is counted as already shipped, never stored twice.

    Args:
        settings: the sink (``monitoring.sink``) and where it lives; its model is the report's
            when the report does not name one (the comparison only knows the arms' versions).
        report: the live comparison (the dict :mod:`xgbops.rollout` builds).
        decisions: decision dicts (start, mode, promote, rollback, guard_stop).

    Returns:
        How many documents are new in the sink (0 when all of them were shipped before).

    Raises:
        KeyError: the report has no ``state``, ``arms`` (or one of them) or ``verdict``.
        pydantic.ValidationError: a value of the report or a decision is missing or wrong.
        MonitoringError: the sink is misconfigured, failed as a whole, or refused a document.
    """
    events: list[Event] = [*rollout_events({"model_name": settings.model_name, **report})]
    events += [RolloutDecisionEvent.from_decision(decision) for decision in decisions]
    sink = open_sink(settings)
    try:
        result = sink.ship(events)
    finally:
        sink.close()
    if result.failed:
        refused = "; ".join(str(error) for error in result.errors)
        raise MonitoringError(f"{result.summary()}: {refused}")
    return result.created
