"""``xgbops monitor follow``: the monitoring jobs on their schedules, in one long-running process.

Jenkins' ``monitoring`` job runs them every 30 minutes; without Jenkins (the compose
``monitoring`` profile on its own) this process does, so Kibana fills as the API serves: new
predictions and a machine sample every minute, MLflow's runs every five, a drift check every
thirty (``monitoring.follow``).

A job that fails (Elasticsearch restarting, PostgreSQL not up yet) is reported and tried again at
its next turn: one unreachable service never stops the others, and nothing is lost, because
every job reads a source of truth and ships idempotently. Predictions are shipped from the
watermark minus :data:`SHORT_OVERLAP` and, once an hour, minus the full
:data:`~xgbops.monitoring.sync.WATERMARK_OVERLAP`, which catches the rows the API replays late
after a database outage without re-reading an hour of history every minute. The predictions job
ships the clients' feedback (true labels) too, from its own watermark with the same overlap: a
label whose prediction was stored late is caught the same way. After each round the heartbeat
file is rewritten; the compose healthcheck reads its age.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog

from xgbops.config import Settings
from xgbops.monitoring import MonitoringError, system
from xgbops.monitoring.check import check_drift
from xgbops.monitoring.sinks import ShipResult, Sink
from xgbops.monitoring.sync import (
    WATERMARK_OVERLAP,
    sync_feedback,
    sync_mlflow,
    sync_predictions,
)

log = structlog.get_logger(__name__)

#: How far before the watermark the minute-by-minute prediction shipping starts again.
SHORT_OVERLAP = timedelta(minutes=5)


@dataclass
class Job:
    """A named task, how often it runs, and when it is due next (``clock`` seconds)."""

    name: str
    every: timedelta
    run: Callable[[], str]
    due_at: float = 0.0


@dataclass(frozen=True)
class JobOutcome:
    """What one run of a job did: a line for people, and whether it failed."""

    name: str
    ok: bool
    detail: str
    at: datetime

    def line(self) -> str:
        """``<time> <job>: <detail>`` (``failed:`` when it failed)."""
        status = "" if self.ok else "failed: "
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.name}: {status}{self.detail}"


def monitoring_jobs(
    settings: Settings, sink: Sink, clock: Callable[[], float] = time.monotonic
) -> list[Job]:
    """The four jobs of the Jenkins ``monitoring`` pipeline, on ``monitoring.follow``'s clock."""
    schedule = settings.monitoring.follow
    full_overlap_due = [0.0]

    def predictions() -> str:
        full = clock() >= full_overlap_due[0]
        if full:
            full_overlap_due[0] = clock() + WATERMARK_OVERLAP.total_seconds()
        overlap = WATERMARK_OVERLAP if full else SHORT_OVERLAP
        shipped = sync_predictions(settings, sink, overlap=overlap).result
        labelled = sync_feedback(settings, sink, overlap=overlap).result
        for result in (shipped, labelled):  # both shipped before a refusal fails the job
            _summary(result)
        return f"{shipped.summary()}; feedback: {labelled.counts()}"

    def machine() -> str:
        events = system.sample(settings.project_dir)
        _summary(sink.ship(events))
        return system.summary(events)

    def mlflow() -> str:
        return _summary(sync_mlflow(settings, sink))

    def drift() -> str:
        outcome = check_drift(settings, schedule.drift_window, sink)
        _summary(outcome.shipped)
        alert = "alert sent" if outcome.alert else "no alert"
        report, actions = outcome.report, ["already announced" if outcome.suppressed else alert]
        if outcome.retrain:
            actions.append(f"retrain: {outcome.retrain}")
        return f"{report.status} ({report.window_rows} predictions), {', '.join(actions)}"

    return [
        Job("predictions", schedule.predictions_every, predictions),
        Job("system", schedule.system_every, machine),
        Job("mlflow", schedule.mlflow_every, mlflow),
        Job("drift", schedule.drift_every, drift),
    ]


def run_due(jobs: Sequence[Job], clock: Callable[[], float] = time.monotonic) -> list[JobOutcome]:
    """Run every job that is due, each at most once; a failure is reported, never raised."""
    outcomes = []
    for job in jobs:
        started = clock()
        if started < job.due_at:
            continue
        job.due_at = started + job.every.total_seconds()
        try:
            outcome = JobOutcome(job.name, True, job.run(), datetime.now(UTC))
        # A long-running agent outlives any one failure; the next turn tries again.
        except Exception as exc:  # pylint: disable=broad-exception-caught
            outcome = JobOutcome(job.name, False, f"{type(exc).__name__}: {exc}", datetime.now(UTC))
            log.warning("monitoring.follow.failed", job=job.name, error=outcome.detail)
        outcomes.append(outcome)
    return outcomes


def follow(
    jobs: Sequence[Job],
    heartbeat: Path,
    *,
    rounds: int | None = None,
    report: Callable[[JobOutcome], None] = lambda outcome: None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Run the jobs when due until stopped (or for ``rounds`` rounds); return the failures.

    Args:
        jobs: what to run (see :func:`monitoring_jobs`).
        heartbeat: rewritten after every round with its time and outcomes.
        rounds: stop after this many rounds (default: never).
        report: called with every outcome as it happens.
        clock: monotonic seconds (a test passes a fake one with ``sleep``).
        sleep: waits between rounds.
    """
    failures, done = 0, 0
    while rounds is None or done < rounds:
        outcomes = run_due(jobs, clock)
        for outcome in outcomes:
            report(outcome)
        failures += sum(not outcome.ok for outcome in outcomes)
        write_heartbeat(heartbeat, outcomes)
        done += 1
        if rounds is None or done < rounds:
            sleep(max(0.0, min(job.due_at for job in jobs) - clock()))
    return failures


def heartbeat_path(settings: Settings) -> Path:
    """``<state dir>/monitoring/follow.json``: the last round's time and outcomes."""
    return settings.state_path / "monitoring" / "follow.json"


def write_heartbeat(path: Path, outcomes: Sequence[JobOutcome]) -> None:
    """Replace the heartbeat file (its modification time is what the healthcheck reads)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "at": datetime.now(UTC).isoformat(),
        "ran": [{"job": o.name, "ok": o.ok, "detail": o.detail} for o in outcomes],
    }
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(body, indent=2), encoding="utf-8")
    temporary.replace(path)


def _summary(result: ShipResult) -> str:
    """The sink's counts; refused documents make the job fail (and be retried)."""
    if result.failed:
        first = result.errors[0] if result.errors else "see the sink's log"
        raise MonitoringError(f"{result.summary()}; first refused: {first}")
    return result.summary()
