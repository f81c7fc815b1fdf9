"""Events: deterministic ids and indices, one text form of time, JSON documents."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from xgbops.monitoring.events import (
    EVENT_TYPES,
    FeedbackEvent,
    HoldoutMetrics,
    PredictionEvent,
    TrainingRunEvent,
    stable_id,
)


def _prediction(**changes):
    values = {
        "timestamp": datetime(2025, 3, 31, 23, 30, tzinfo=UTC),
        "prediction_id": "a" * 32,
        "model_name": "churn-xgboost",
        "model_version": "3",
        "probability": 0.25,
        "label": "no",
        "positive": 0,
        "input": {"state": "KS", "account_length": 128},
    }
    return PredictionEvent(**{**values, **changes})


def test_the_same_fact_gets_the_same_id_and_index_every_time():
    first, again = _prediction(), _prediction()
    assert (first.doc_id, first.index("xgbops")) == (again.doc_id, again.index("xgbops"))
    assert first.doc_id == "a" * 32


def test_time_series_indices_are_monthly_and_follow_the_event_time_in_utc():
    # 00:30 on April 1st at UTC+2 is still March 31st in UTC: the March index.
    local = datetime(2025, 4, 1, 0, 30, tzinfo=timezone(timedelta(hours=2)))
    assert _prediction(timestamp=local).index("xgbops") == "xgbops-predictions-2025.03.01"
    assert _prediction(timestamp=datetime(2025, 4, 1, 0, 30, tzinfo=UTC)).index("p") == (
        "p-predictions-2025.04.01"
    )


def test_a_naive_time_is_taken_as_utc():
    naive = _prediction(timestamp=datetime(2025, 3, 31, 23, 30))
    assert naive.to_document()["@timestamp"] == "2025-03-31T23:30:00.000000Z"
    assert naive.doc_id == _prediction().doc_id


def test_training_runs_live_in_one_index_and_are_overwritable_state():
    run = TrainingRunEvent(
        timestamp=datetime(2025, 1, 1, tzinfo=UTC),
        run_id="r1",
        run_name="run",
        experiment="xgbops",
        status="FINISHED",
        registered=False,
        champion=False,
        metrics=HoldoutMetrics.from_run({"holdout_roc_auc": 0.91, "train_auc": 0.99}),
    )
    assert run.index("xgbops") == "xgbops-training-runs"
    assert not run.IMMUTABLE and _prediction().IMMUTABLE
    document = run.to_document()
    assert document["metrics"]["roc_auc"] == 0.91
    assert document["metrics"]["accuracy"] is None
    assert document["event_type"] == "training-runs"


def test_documents_are_plain_json_with_fixed_width_times():
    document = _prediction(timestamp=datetime(2025, 1, 2, 3, 4, 5, 7, tzinfo=UTC)).to_document()
    assert json.loads(json.dumps(document)) == document
    assert document["@timestamp"] == "2025-01-02T03:04:05.000007Z"
    assert document["input"] == {"state": "KS", "account_length": 128.0}


def test_an_event_refuses_fields_it_does_not_declare():
    with pytest.raises(ValidationError):
        _prediction(unexpected="x")
    with pytest.raises(ValidationError):
        _prediction(positive=2)


def test_stable_ids_depend_only_on_their_parts():
    assert stable_id("m", 1) == stable_id("m", "1")
    assert stable_id("m", 1) != stable_id("m", 2)
    assert len(stable_id("x")) == 32


def test_every_kind_has_its_own_class():
    assert sorted(EVENT_TYPES) == sorted(
        [
            "training-runs",
            "predictions",
            "feedback",
            "drift-reports",
            "drift-features",
            "system",
            "processes",
            "rollout",
            "decisions",
        ]
    )
    assert all(cls.KIND == kind for kind, cls in EVENT_TYPES.items())


def _feedback(**changes):
    values = {
        "timestamp": datetime(2025, 4, 2, 8, 0, tzinfo=UTC),
        "prediction_id": "b" * 32,
        "model_name": "churn-xgboost",
        "model_version": "3",
        "predicted_label": "no",
        "actual_label": "yes",
        "correct": 0,
        "probability": 0.25,
        "predicted_at": datetime(2025, 3, 31, 23, 30, tzinfo=UTC),
        "request_id": "fb-1",
    }
    return FeedbackEvent(**{**values, **changes})


def test_feedback_is_one_overwritable_document_per_prediction_in_the_predictions_month():
    first = _feedback()
    # Corrected a month later: still the same (index, id), so the correction overwrites.
    corrected = _feedback(timestamp=datetime(2025, 5, 3, tzinfo=UTC), actual_label="no", correct=1)
    assert not FeedbackEvent.IMMUTABLE
    assert first.doc_id == corrected.doc_id == "b" * 32
    assert first.index("xgbops") == corrected.index("xgbops") == "xgbops-feedback-2025.03.01"
    document = corrected.to_document()
    assert document["@timestamp"] == "2025-05-03T00:00:00.000000Z"
    assert document["predicted_at"] == "2025-03-31T23:30:00.000000Z"
    assert (document["event_type"], document["correct"]) == ("feedback", 1)


def test_feedback_correct_is_a_0_or_1_flag():
    with pytest.raises(ValidationError):
        _feedback(correct=2)
    with pytest.raises(ValidationError):
        _feedback(correct=-1)
