"""``xgbops monitor drift``: compare recent predictions with the training data, then act.

The reference is the rows the model learned from: the dataset minus the holdout, split exactly
as :func:`xgbops.train.train` splits it (same seed). Train and validation rows both shaped the
model (one fits it, one stops it); the holdout is left out so it stays an independent sample of
the training distribution (the tests use it as "live data without drift"). The window is the
prediction history's inputs over the last ``window`` (``settings.history_url``). The predicted
probability is compared with the reference scored by the model version the window used most.

Past the thresholds the check announces the drift through :mod:`xgbops.notify` and, when
``monitoring.drift.retrain_on_drift`` is set, asks the API to retrain (``POST /retrain`` with
the retrain token). Either failing is reported in the outcome, never raised: the report is
already written and shipped by then. The same drift (same features, same model versions) is
announced once per ``monitoring.drift.realert_after`` (:class:`DriftEpisode`), however often the
check runs; a check that finds no drift ends the episode.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import requests

from xgbops import notify
from xgbops.config import Settings, parse_duration
from xgbops.data import load_splits
from xgbops.monitoring import MonitoringError
from xgbops.monitoring.drift import DriftReport, Inputs, build_report
from xgbops.monitoring.events import PredictionEvent, format_time
from xgbops.monitoring.history import read_predictions
from xgbops.monitoring.sinks import ShipResult, Sink
from xgbops.predict import Predictor
from xgbops.tracking import Tracker

#: Seconds to wait for the API's answer to ``POST /retrain``.
RETRAIN_TIMEOUT_S = 10.0


def parse_window(text: str) -> timedelta:
    """``24h``, ``90m``, ``7d``, ``1.5h``, ``2w``, ``3600s`` as a duration.

    Raises:
        MonitoringError: not a positive number followed by one of s, m, h, d, w.
    """
    try:
        return parse_duration(text, "window")
    except ValueError as exc:
        raise MonitoringError(str(exc)) from None


def load_reference(settings: Settings) -> pd.DataFrame:
    """The training reference: the checked dataset minus the holdout (train + validation).

    Raises:
        xgbops.data.DataError, xgbops.data.DataValidationError: the dataset cannot be used.
    """
    splits = load_splits(settings)
    return pd.concat([splits.train, splits.validation])


def window_frame(rows: list[PredictionEvent], settings: Settings) -> pd.DataFrame:
    """The window's inputs, one column per configured feature (absent values missing)."""
    return pd.DataFrame.from_records(
        [row.input for row in rows], columns=settings.dataset.feature_names
    )


@dataclass
class DriftOutcome:
    """What ``xgbops monitor drift`` did: the report, its files, the shipping, the actions."""

    report: DriftReport
    paths: list[Path]
    shipped: ShipResult
    alert: list[str] = field(default_factory=list)
    retrain: str | None = None
    #: Why no alert was sent although drift was found (it was announced recently).
    suppressed: str | None = None


def check_drift(
    settings: Settings,
    window: timedelta,
    sink: Sink,
    now: datetime | None = None,
    tracker: Tracker | None = None,
) -> DriftOutcome:
    """Build the drift report of the last ``window``, write it, ship it, alert, maybe retrain.

    Args:
        settings: dataset, thresholds (``monitoring.drift``), history and registry.
        window: how far back the window reaches from ``now``.
        sink: where the report's events go.
        now: the window's end (default: the current time).
        tracker: the MLflow session used to score the reference (default: a new one).

    Returns:
        The outcome; ``outcome.report.drift_detected`` is the verdict.

    Raises:
        MonitoringError: the history cannot be read, or the sink failed as a whole.
        xgbops.data.DataError, xgbops.data.DataValidationError: the dataset cannot be used.
    """
    end = now or datetime.now(UTC)
    start = end - window
    rows = list(
        read_predictions(
            settings.history_url,
            settings.dataset.target.positive,
            since=start,
            until=end,
            model_name=settings.model_name,
        )
    )
    reference = load_reference(settings)
    versions = Counter(row.model_version for row in rows)
    notes: list[str] = []
    reference_scores = None
    if versions and len(rows) >= settings.monitoring.drift.min_samples:
        version = versions.most_common(1)[0][0]
        reference_scores = _score(settings, reference, version, tracker, notes)
    report = build_report(
        Inputs(
            reference=reference,
            window=window_frame(rows, settings),
            reference_scores=reference_scores,
            window_scores=np.array([row.probability for row in rows], dtype=np.float64),
        ),
        settings.dataset,
        settings.monitoring.drift,
        model_name=settings.model_name,
        model_versions=sorted(versions, key=lambda v: (len(v), v)),
        window=(start, end),
        generated_at=datetime.now(UTC),
    )
    report.notes.extend(notes)
    paths = report.write(settings.reports_path)
    outcome = DriftOutcome(report, paths, sink.ship(report.events()))
    episode = DriftEpisode(alert_state_path(settings))
    if report.status == "no_drift":
        episode.end()
    if not report.drift_detected:
        return outcome
    announced = episode.announced_at(report)
    if announced is not None and end - announced < settings.monitoring.drift.realert_after:
        outcome.suppressed = (
            f"the same drift was announced at {format_time(announced)}; again after "
            f"{settings.monitoring.drift.realert_after} (XGBOPS_MONITORING__DRIFT__REALERT_AFTER)"
        )
        return outcome
    outcome.alert = send_alert(settings, report, paths[1])
    if settings.monitoring.drift.retrain_on_drift:
        outcome.retrain = request_retrain(settings)
    episode.announce(report, end)
    return outcome


def alert_state_path(settings: Settings) -> Path:
    """``<state dir>/monitoring/drift-alert.json``: the drift last announced, and when."""
    return settings.state_path / "monitoring" / "drift-alert.json"


class DriftEpisode:
    """The drift last announced: what drifted, for which versions, when (one small JSON file).

    A drift is the same one while the drifted features (and whether the predicted probability
    drifted) and the model versions of the window are unchanged.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    @staticmethod
    def signature(report: DriftReport) -> dict[str, Any]:
        """What makes two drift reports announce the same thing."""
        prediction = report.prediction is not None and report.prediction.drifted
        return {
            "model_name": report.model_name,
            "model_versions": sorted(report.model_versions),
            "features": sorted(report.drifted_features),
            "prediction": prediction,
        }

    def announced_at(self, report: DriftReport) -> datetime | None:
        """When this same drift was announced, if it was (an unreadable file counts as never)."""
        try:
            last = json.loads(self.path.read_text(encoding="utf-8"))
            if last["signature"] == self.signature(report):
                return datetime.fromisoformat(last["announced_at"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return None

    def announce(self, report: DriftReport, at: datetime) -> None:
        """Remember that ``report``'s drift was announced at ``at``."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = {"signature": self.signature(report), "announced_at": at.isoformat()}
        self.path.write_text(json.dumps(body, indent=2), encoding="utf-8")

    def end(self) -> None:
        """A judged window without drift: the next drift is news again."""
        self.path.unlink(missing_ok=True)


def send_alert(settings: Settings, report: DriftReport, text_path: Path) -> list[str]:
    """Announce a drift by email and desktop (:func:`xgbops.notify.send`).

    Returns:
        One line per channel saying what happened.
    """
    links = [notify.Link("report", text_path.as_uri())]
    if settings.monitoring.sink == "elasticsearch":
        links.append(notify.Link("Kibana", settings.monitoring.kibana_url))
    notification = notify.Notification.of_lines(
        f"drift in {settings.model_name}: {', '.join(report.drifted_features) or 'predictions'}",
        report.to_text().splitlines(),
        title="Drift check",
        links=links,
        urgent=True,
    )
    return notify.send(settings, notification).lines()


def request_retrain(settings: Settings) -> str:
    """Ask the API to retrain (``POST <api_url>/retrain``, bearer token); never raises.

    Returns:
        The job id the API accepted, or why nothing was started.
    """
    if settings.retrain_token is None:
        return "not requested: retrain_on_drift is set but XGBOPS_RETRAIN_TOKEN is not"
    url = f"{settings.monitoring.api_url.rstrip('/')}/retrain"
    token = settings.retrain_token.get_secret_value()
    try:
        response = requests.post(
            url, headers={"Authorization": f"Bearer {token}"}, timeout=RETRAIN_TIMEOUT_S
        )
    except requests.RequestException as exc:
        return f"not started: {url} unreachable ({type(exc).__name__})"
    if response.status_code == 202:
        return f"job {response.json().get('job_id')} accepted by {url}"
    return f"not started: {url} answered {response.status_code} {response.text[:200]}"


def _score(
    settings: Settings,
    reference: pd.DataFrame,
    version: str,
    tracker: Tracker | None,
    notes: list[str],
) -> npt.NDArray[np.float64] | None:
    """The reference scored by ``version``; None (and a note) when it cannot be loaded."""
    try:
        model = (tracker or Tracker(settings)).load_model(settings.model_name, version)
    except Exception as exc:  # pylint: disable=broad-exception-caught
        # The probability comparison is one row of the report: a registry problem (MLflow
        # down, version deleted) must not cost the feature rows, so it becomes a note.
        notes.append(f"predicted probability not compared: v{version} not loaded ({exc})")
        return None
    predictor = Predictor(model)
    columns = {
        name: reference[name].to_numpy(dtype=object) for name in model.featurizer.input_names
    }
    return predictor.predict_proba_columns(columns)
