"""One event of every kind with every field filled, for tests that need a complete set."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from xgbops.monitoring import system
from xgbops.monitoring.events import (
    DriftFeatureEvent,
    DriftReportEvent,
    Event,
    FeedbackEvent,
    HoldoutMetrics,
    PredictionEvent,
    RolloutDecisionEvent,
    TrainingRunEvent,
    rollout_events,
)


def all_kinds(disk: Path, when: datetime) -> list[Event]:
    """A training run, a prediction and its feedback, a drift report and row, a rollout report's
    two arms and a decision, a system sample (+ processes)."""
    report_id = f"report-{when:%Y%m%d%H%M%S%f}"
    events: list[Event] = [
        TrainingRunEvent(
            timestamp=when,
            run_id=f"run-{when:%Y%m%d%H%M%S%f}",
            run_name="churn-xgboost-test",
            experiment="xgbops",
            status="FINISHED",
            end_time=when + timedelta(seconds=3),
            registered=True,
            model_name="churn-xgboost",
            model_version="1",
            version_number=1,
            champion=True,
            aliases=["champion"],
            metrics=HoldoutMetrics(**{name: 0.5 for name in HoldoutMetrics.model_fields}),
            promotion_metric="roc_auc",
            promotion_score=0.5,
            promotion_decision="promoted",
            duration_seconds=3.0,
            best_iteration=10,
            dataset="churn",
            dataset_sha256="0" * 64,
            git_commit="1" * 40,
            params={"xgb_max_depth": "5"},
        ),
        PredictionEvent(
            timestamp=when,
            prediction_id=f"{when:%Y%m%d%H%M%S%f}".ljust(32, "0"),
            model_name="churn-xgboost",
            model_version="1",
            probability=0.8,
            label="yes",
            positive=1,
            latency_ms=2.0,
            request_id="req",
            input={"state": "KS", "account_length": 128, "total_day_minutes": 265.1},
        ),
        FeedbackEvent(
            timestamp=when + timedelta(minutes=5),
            prediction_id=f"{when:%Y%m%d%H%M%S%f}".ljust(32, "0"),
            model_name="churn-xgboost",
            model_version="1",
            predicted_label="yes",
            actual_label="no",
            correct=0,
            probability=0.8,
            predicted_at=when,
            request_id="feedback-req",
        ),
        DriftReportEvent(
            timestamp=when,
            report_id=report_id,
            model_name="churn-xgboost",
            model_versions=["1"],
            status="drift",
            drift_detected=True,
            window_hours=24.0,
            window_start=when - timedelta(hours=24),
            window_end=when,
            reference_rows=4000,
            window_rows=150,
            features_checked=19,
            features_drifted=1,
            drifted_features=["total_day_minutes"],
            max_psi=3.0,
            prediction_psi=0.3,
            prediction_p_value=0.001,
            prediction_drifted=True,
            psi_threshold=0.2,
            p_value_threshold=0.01,
            min_samples=100,
        ),
        DriftFeatureEvent(
            timestamp=when,
            report_id=report_id,
            model_name="churn-xgboost",
            feature="total_day_minutes",
            feature_type="numeric",
            psi=3.0,
            test="ks",
            statistic=0.7,
            p_value=1e-30,
            psi_drifted=True,
            test_drifted=True,
            drifted=True,
            reference_rows=4000,
            window_rows=150,
            reference_missing_share=0.0,
            window_missing_share=0.0,
            reference_mean=180.0,
            window_mean=280.0,
        ),
    ]
    events += rollout_events(rollout_report(when, paired=True))
    events.append(RolloutDecisionEvent.from_decision(rollout_decision(when)))
    return events + system.sample(disk, measure_seconds=0.01)


def rollout_report(
    when: datetime,
    *,
    paired: bool = False,
    labelled: bool = True,
    rollout_id: str = "a1b2c3",
    decision: str = "waiting",
    challenger_error_rate: float = 0.15,
) -> dict[str, Any]:
    """A rollout comparison report of the shape :mod:`xgbops.rollout` builds, made at ``when``
    (an ISO text with its offset, as the rollout writes it). Shadow mode when ``paired``
    (agreement filled), canary at 20 % otherwise; without ``labelled``, every metric that needs
    labels is null, as before the first feedback."""

    def interval(estimate: float, width: float) -> dict[str, float] | None:
        if not labelled:
            return None
        return {"estimate": estimate, "low": estimate - width, "high": estimate + width}

    def arm(version: str, requests: int, error_rate: float, auc: float) -> dict[str, Any]:
        return {
            "version": version,
            "requests": requests,
            "labelled": requests // 2 if labelled else 0,
            "error_rate": interval(error_rate, 0.02),
            "auc": interval(auc, 0.03),
            "log_loss": 0.35 if labelled else None,
            "brier": 0.10 if labelled else None,
            "ece": 0.03 if labelled else None,
            "mean_probability": 0.22,
            "latency_ms": {"p50": 1.2, "p95": 3.4},
        }

    def test(difference: float) -> dict[str, Any] | None:
        if not labelled:
            return None
        return {
            "method": "two-proportion z",
            "difference": difference,
            "low": difference - 0.02,
            "high": difference + 0.02,
            "statistic": 1.1,
            "p_value": 0.27,
            "p_worse": 0.13,
        }

    mode, share = ("shadow", 100.0) if paired else ("canary", 20.0)
    return {
        "model_name": "churn-xgboost",
        "generated_at": when.isoformat(),
        "state": {
            "mode": mode,
            "share": share,
            "champion_version": "1",
            "challenger_version": "2",
            "started_at": (when - timedelta(hours=1)).isoformat(),
            "rollout_id": rollout_id,
            "stopped_reason": None,
        },
        "paired": paired,
        "arms": {
            "champion": arm("1", 1600, 0.12, 0.81),
            "challenger": arm("2", 1600 if paired else 400, challenger_error_rate, 0.79),
        },
        "agreement": {"estimate": 0.93, "low": 0.91, "high": 0.95} if paired else None,
        "tests": {"error_rate": test(0.03), "auc": test(-0.02), "score_shift": test(0.01)},
        "verdict": {"decision": decision, "reason": "too few labelled predictions yet"},
    }


def rollout_decision(when: datetime, action: str = "start", **changes: Any) -> dict[str, Any]:
    """A rollout decision of the shape :mod:`xgbops.rollout` records, taken at ``when``."""
    return {
        "at": when.isoformat(),
        "model_name": "churn-xgboost",
        "rollout_id": "a1b2c3",
        "action": action,
        "mode": "canary",
        "share": 20.0,
        "champion_version": "1",
        "challenger_version": "2",
        "reason": "a new version to try",
        "actor": "alice",
        **changes,
    }
