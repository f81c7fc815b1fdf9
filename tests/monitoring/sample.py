"""One event of every kind with every field filled, for tests that need a complete set."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from xgbops.monitoring import system
from xgbops.monitoring.events import (
    DriftFeatureEvent,
    DriftReportEvent,
    Event,
    FeedbackEvent,
    HoldoutMetrics,
    PredictionEvent,
    TrainingRunEvent,
)


def all_kinds(disk: Path, when: datetime) -> list[Event]:
    """A training run, a prediction and its feedback, a drift report and row, a system sample
    (+ processes)."""
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
    return events + system.sample(disk, measure_seconds=0.01)
