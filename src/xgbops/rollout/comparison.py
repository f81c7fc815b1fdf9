"""The live comparison of a rollout's two arms, read from the prediction history.

Two designs, two sets of tests (:mod:`xgbops.rollout.stats`):

- **shadow** scores the same requests with both models, so the samples are *paired*: the error
  rates are compared with McNemar's test (only the requests the two models judge differently
  carry information about which is better) and the AUCs with DeLong's test for correlated
  curves; the agreement rate says how often the challenger would have answered the same.
- **canary** and **ab** answer each request with one model, so the samples are *independent*:
  a two-proportion z-test with Newcombe's interval for the error rates, and DeLong's variances
  added for the AUCs.

The error rate (the share of labelled predictions whose served label was wrong) is the
decision metric: it is what a client of the label experiences, and a proportion has exact,
well-understood tests. AUC, log loss and calibration are reported beside it, for a person.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import Engine, and_, select

from xgbops.config import RolloutSettings, Settings
from xgbops.rollout import stats
from xgbops.rollout.state import CHALLENGER, CHAMPION, RolloutState
from xgbops.tables import prediction_feedback, predictions

#: Rows read per arm at most (the newest): enough for tight intervals, bounded memory.
ROW_LIMIT = 200_000


@dataclass
class ArmData:
    """One arm's predictions of the rollout: scores, served labels, latency and true labels."""

    version: str | None
    probabilities: np.ndarray[Any, Any]
    served: np.ndarray[Any, Any]  # served label, as text
    latency_ms: np.ndarray[Any, Any]
    actual: np.ndarray[Any, Any]  # true label as text, "" where none came

    @property
    def labelled(self) -> np.ndarray[Any, Any]:
        """Which predictions have a true label."""
        return np.asarray(self.actual != "", dtype=bool)


@dataclass
class LiveData:
    """Both arms; ``paired`` when the challenger shadowed the champion's requests (row i of
    each arm is the same request)."""

    champion: ArmData
    challenger: ArmData
    paired: bool
    positive_label: str


def live_report(settings: Settings, engine: Engine, state: RolloutState) -> dict[str, Any]:
    """:func:`compare` of the rollout's live data (:func:`read_live`).

    Raises:
        sqlalchemy.exc.SQLAlchemyError: the history cannot be read.
    """
    data = read_live(engine, state, settings.dataset.target.positive)
    return compare(data, state, settings.rollout)


def read_live(engine: Engine, state: RolloutState, positive_label: str) -> LiveData:
    """The rollout's predictions since it started, with their labels where clients sent them.

    Raises:
        sqlalchemy.exc.SQLAlchemyError: the history cannot be read.
    """
    since = _parse(state.started_at)
    if state.mode == "shadow" or _has_shadows(engine, state, since):
        return _paired(engine, state, since, positive_label)
    return LiveData(
        _served(engine, CHAMPION, state.champion_version, since),
        _served(engine, CHALLENGER, state.challenger_version, since),
        paired=False,
        positive_label=positive_label,
    )


def _has_shadows(engine: Engine, state: RolloutState, since: datetime) -> bool:
    query = (
        select(predictions.c.id)
        .where(
            predictions.c.shadow_of.is_not(None),
            predictions.c.model_version == str(state.challenger_version),
            predictions.c.created_at >= since,
        )
        .limit(1)
    )
    with engine.connect() as connection:
        return connection.execute(query).first() is not None


def _scored(table: Any) -> tuple[Any, ...]:
    """What an arm's summary reads of a prediction: probability, served label, latency."""
    return table.c.probability, table.c.label, table.c.latency_ms


#: The true label of a served prediction, when its client sent one.
_FEEDBACK_OF_SERVED = prediction_feedback.c.prediction_id == predictions.c.id


def _served(engine: Engine, arm: str, version: str | None, since: datetime) -> ArmData:
    """The predictions ``arm`` answered (not its shadows), newest first."""
    query = (
        select(*_scored(predictions), prediction_feedback.c.label)
        .select_from(predictions.outerjoin(prediction_feedback, _FEEDBACK_OF_SERVED))
        .where(
            predictions.c.arm == arm,
            predictions.c.shadow_of.is_(None),
            predictions.c.model_version == str(version),
            predictions.c.created_at >= since,
        )
        .order_by(predictions.c.created_at.desc())
        .limit(ROW_LIMIT)
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return _arm(version, rows)


def _paired(engine: Engine, state: RolloutState, since: datetime, positive: str) -> LiveData:
    """Shadow pairs: each challenger shadow joined to the champion prediction it shadowed."""
    shadow = predictions.alias("shadow")  # Core's alias: the serving image loads no ORM
    query = (
        select(*_scored(predictions), prediction_feedback.c.label, *_scored(shadow))
        .select_from(
            shadow.join(predictions, predictions.c.id == shadow.c.shadow_of).outerjoin(
                prediction_feedback, _FEEDBACK_OF_SERVED
            )
        )
        .where(
            and_(
                shadow.c.model_version == str(state.challenger_version),
                shadow.c.created_at >= since,
            )
        )
        .order_by(shadow.c.created_at.desc())
        .limit(ROW_LIMIT)
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    champion = _arm(state.champion_version, [row[:4] for row in rows])
    challenger = _arm(state.challenger_version, [(*row[4:7], row[3]) for row in rows])
    return LiveData(champion, challenger, paired=True, positive_label=positive)


def _arm(version: str | None, rows: Any) -> ArmData:
    columns = list(zip(*rows)) if rows else [(), (), (), ()]
    return ArmData(
        version=version,
        probabilities=np.asarray(columns[0], dtype=float),
        served=np.asarray(columns[1], dtype=object),
        latency_ms=np.asarray(columns[2], dtype=float),
        actual=np.asarray([label or "" for label in columns[3]], dtype=object),
    )


def compare(data: LiveData, state: RolloutState, settings: RolloutSettings) -> dict[str, Any]:
    """The comparison report (``GET /rollout``, ``xgbops rollout status``): per arm, the tests
    between them, and the verdict the evidence supports."""
    confidence = settings.confidence
    arms = {
        CHAMPION: _summary(data.champion, data.positive_label, confidence),
        CHALLENGER: _summary(data.challenger, data.positive_label, confidence),
    }
    tests = _tests(data, confidence)
    agreement = None
    if data.paired and len(data.champion.served):
        agreement = stats.agreement_rate(
            list(data.champion.served), list(data.challenger.served)
        ).to_dict()
    report = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "state": state.to_dict(),
        "paired": data.paired,
        "arms": arms,
        "agreement": agreement,
        "tests": tests,
    }
    report["verdict"] = verdict(report, state, settings)
    plain: dict[str, Any] = _plain(report)
    return plain


def _summary(arm: ArmData, positive: str, confidence: float) -> dict[str, Any]:
    labelled = arm.labelled
    y_true = (arm.actual[labelled] == positive).astype(int)
    scores = arm.probabilities[labelled]
    wrong = int((arm.served[labelled] != arm.actual[labelled]).sum())
    n = int(labelled.sum())
    summary: dict[str, Any] = {
        "version": arm.version,
        "requests": int(len(arm.probabilities)),
        "labelled": n,
        "error_rate": None,
        "auc": None,
        "log_loss": None,
        "brier": None,
        "ece": None,
        "mean_probability": _mean(arm.probabilities),
        "latency_ms": {
            "p50": _percentile(arm.latency_ms, 50),
            "p95": _percentile(arm.latency_ms, 95),
        },
    }
    if n:
        summary["error_rate"] = stats.wilson_interval(wrong, n, confidence).to_dict()
        summary["log_loss"] = stats.log_loss(y_true, scores)
        summary["brier"] = stats.brier_score(y_true, scores)
        summary["ece"] = stats.calibration(y_true, scores).ece
        if 0 < y_true.sum() < n:
            summary["auc"] = stats.auc_interval(y_true, scores, confidence).to_dict()
    return summary


def _tests(data: LiveData, confidence: float) -> dict[str, Any]:
    champion, challenger, positive = data.champion, data.challenger, data.positive_label
    tests: dict[str, Any] = {"error_rate": None, "auc": None, "score_shift": None}
    if len(champion.probabilities) and len(challenger.probabilities):
        tests["score_shift"] = stats.score_shift(
            champion.probabilities, challenger.probabilities
        ).to_dict()
    if data.paired:
        labelled = champion.labelled
        if labelled.any():
            right_a = champion.served[labelled] == champion.actual[labelled]
            right_b = challenger.served[labelled] == challenger.actual[labelled]
            tests["error_rate"] = stats.mcnemar_test(
                int((right_a & ~right_b).sum()),
                int((~right_a & right_b).sum()),
                int(labelled.sum()),
                confidence,
            ).to_dict()
            y_true = (champion.actual[labelled] == positive).astype(int)
            if 0 < y_true.sum() < len(y_true):
                tests["auc"] = stats.delong_paired(
                    y_true,
                    champion.probabilities[labelled],
                    challenger.probabilities[labelled],
                    confidence,
                ).to_dict()
        return tests
    a, b = champion.labelled, challenger.labelled
    if a.any() and b.any():
        tests["error_rate"] = stats.two_proportion_test(
            int((champion.served[a] != champion.actual[a]).sum()),
            int(a.sum()),
            int((challenger.served[b] != challenger.actual[b]).sum()),
            int(b.sum()),
            confidence,
        ).to_dict()
        y_a = (champion.actual[a] == positive).astype(int)
        y_b = (challenger.actual[b] == positive).astype(int)
        if 0 < y_a.sum() < len(y_a) and 0 < y_b.sum() < len(y_b):
            tests["auc"] = stats.delong_unpaired(
                y_a, champion.probabilities[a], y_b, challenger.probabilities[b], confidence
            ).to_dict()
    return tests


def verdict(
    report: dict[str, Any], state: RolloutState, settings: RolloutSettings
) -> dict[str, str]:
    """What the live evidence supports: ``rollback`` when the challenger's error rate is
    significantly worse (one-sided, ``guard.alpha``) or the guard already stopped it;
    ``promote`` when it is non-inferior (the upper bound of the difference is under
    ``non_inferiority_margin``) on at least ``min_labelled`` labels per arm; else ``waiting``."""
    decision, reason = "waiting", "no rollout has started"
    test = report["tests"].get("error_rate") or {}
    labelled = min(arm["labelled"] for arm in report["arms"].values())
    margin = settings.non_inferiority_margin
    if state.ended_by is not None:
        decision = "promote" if state.ended_by == "promote" else "rollback"
        reason = f"{'done' if decision == 'promote' else 'stopped'}: {state.stopped_reason}"
    elif state.challenger_version is None:
        pass
    elif _below(test.get("p_worse"), settings.guard.alpha):
        decision = "rollback"
        reason = (
            f"the challenger's error rate is higher by {test['difference']:.4f} "
            f"(p = {test['p_worse']:.2g} < {settings.guard.alpha}, {test['method']})"
        )
    elif labelled < settings.min_labelled or test.get("high") is None:
        reason = f"{labelled} of {settings.min_labelled} labelled predictions per arm"
    elif _below(test["high"], margin):
        decision = "promote"
        reason = (
            f"non-inferior: the error rate difference is at most {test['high']:.4f} "
            f"(< {margin}) at {settings.confidence:.0%} confidence"
        )
    else:
        reason = (
            f"not yet shown non-inferior: the difference may be up to {test['high']:.4f} "
            f"(margin {margin})"
        )
    return {"decision": decision, "reason": reason}


def _below(value: float | None, bound: float) -> bool:
    """``value < bound``; an undefined statistic (None) is no evidence either way."""
    return value is not None and value < bound


def _mean(values: np.ndarray[Any, Any]) -> float | None:
    return float(values.mean()) if len(values) else None


def _percentile(values: np.ndarray[Any, Any], q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def _parse(moment: str | None) -> datetime:
    if not moment:
        return datetime.fromtimestamp(0, UTC)
    parsed = datetime.fromisoformat(moment)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _plain(value: Any) -> Any:
    """The report as JSON-ready values: NaN (an undefined statistic) becomes None."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
