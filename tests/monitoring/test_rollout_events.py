"""Rollout events: a comparison report becomes one document per arm, a decision one immutable
fact; ids depend only on what identifies them, so the same report shipped twice is one set."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from tests.monitoring.sample import rollout_decision, rollout_report
from xgbops.monitoring.events import RolloutArmEvent, RolloutDecisionEvent, rollout_events

WHEN = datetime(2026, 12, 7, 13, 0, tzinfo=UTC)


def test_a_report_gives_one_document_per_arm_with_that_arms_numbers():
    champion, challenger = rollout_events(rollout_report(WHEN))

    first, second = champion.to_document(), challenger.to_document()
    assert (first["arm"], second["arm"]) == ("champion", "challenger")
    assert (first["version"], second["version"]) == ("1", "2")
    assert (first["requests"], first["labelled"]) == (1600, 800)
    assert (second["requests"], second["labelled"]) == (400, 200)
    assert (first["error_rate"], first["error_rate_low"], first["error_rate_high"]) == (
        pytest.approx((0.12, 0.10, 0.14))
    )
    assert (second["error_rate"], second["auc"], second["auc_low"]) == (
        pytest.approx((0.15, 0.79, 0.76))
    )
    assert (first["log_loss"], first["brier"], first["ece"]) == (0.35, 0.10, 0.03)
    assert (first["latency_p50_ms"], first["latency_p95_ms"]) == (1.2, 3.4)
    assert first["mean_probability"] == 0.22
    # Fields of the whole report are the same on both documents.
    for key in ("model_name", "rollout_id", "mode", "share", "p_value", "p_worse", "decision"):
        assert first[key] == second[key], key
    assert (first["mode"], first["share"], first["p_value"], first["p_worse"]) == (
        "canary",
        20.0,
        0.27,
        0.13,
    )
    assert first["agreement"] is None  # canary: the arms scored different requests
    assert first["@timestamp"] == "2026-12-07T13:00:00.000000Z"
    assert (first["event_type"], first["decision"]) == ("rollout", "waiting")
    assert champion.index("xgbops") == "xgbops-rollout-2026.12.01"
    assert RolloutArmEvent.IMMUTABLE  # a report is a fact of its time: shipped once


def test_the_same_report_gets_the_same_ids_whatever_offset_its_time_is_written_with():
    ids = [e.doc_id for e in rollout_events(rollout_report(WHEN))]
    again = [e.doc_id for e in rollout_events(rollout_report(WHEN))]
    paris = WHEN.astimezone(timezone(timedelta(hours=1)))  # the same instant, another offset
    elsewhere = [e.doc_id for e in rollout_events(rollout_report(paris))]
    later = [e.doc_id for e in rollout_events(rollout_report(WHEN + timedelta(minutes=1)))]
    other = [e.doc_id for e in rollout_events(rollout_report(WHEN, rollout_id="d4e5f6"))]

    assert ids == again == elsewhere
    assert len(set(ids)) == 2  # one id per arm
    assert not set(ids) & set(later) and not set(ids) & set(other)


def test_a_shadow_report_carries_the_agreement_and_a_report_without_labels_nulls():
    paired = [e.to_document() for e in rollout_events(rollout_report(WHEN, paired=True))]
    unlabelled = [e.to_document() for e in rollout_events(rollout_report(WHEN, labelled=False))]

    assert [d["agreement"] for d in paired] == [0.93, 0.93]
    assert {d["mode"] for d in paired} == {"shadow"}
    for document in unlabelled:
        assert document["labelled"] == 0
        for key in ("error_rate", "error_rate_low", "auc_high", "log_loss", "ece", "p_value"):
            assert document[key] is None, key
        assert document["mean_probability"] == 0.22  # needs no label


def test_a_report_with_a_missing_or_unknown_value_is_refused():
    report = rollout_report(WHEN)
    del report["arms"]["challenger"]["requests"]
    with pytest.raises(ValidationError, match="requests"):
        rollout_events(report)
    with pytest.raises(ValidationError, match="decision"):
        rollout_events(rollout_report(WHEN, decision="maybe"))


def test_a_decision_is_one_immutable_fact_with_a_stable_id():
    decision = RolloutDecisionEvent.from_decision(rollout_decision(WHEN))
    again = RolloutDecisionEvent.from_decision(rollout_decision(WHEN, reason="said otherwise"))
    promote = RolloutDecisionEvent.from_decision(rollout_decision(WHEN, action="promote"))

    assert RolloutDecisionEvent.IMMUTABLE
    assert decision.doc_id == again.doc_id != promote.doc_id
    assert decision.index("xgbops") == "xgbops-decisions-2026.12.01"
    document = decision.to_document()
    assert document == {
        "@timestamp": "2026-12-07T13:00:00.000000Z",
        "event_type": "decisions",
        "model_name": "churn-xgboost",
        "rollout_id": "a1b2c3",
        "action": "start",
        "mode": "canary",
        "share": 20.0,
        "champion_version": "1",
        "challenger_version": "2",
        "reason": "a new version to try",
        "actor": "alice",
    }


def test_a_decision_read_back_from_the_history_without_a_zone_is_taken_as_utc():
    """The history's rows come back naive from SQLite; a decision may also name no rollout."""
    naive = rollout_decision(WHEN, at=WHEN.replace(tzinfo=None).isoformat())
    del naive["rollout_id"]
    decision = RolloutDecisionEvent.from_decision(naive)

    assert decision.rollout_id is None
    assert decision.to_document()["@timestamp"] == "2026-12-07T13:00:00.000000Z"
    assert decision.doc_id == RolloutDecisionEvent.from_decision(rollout_decision(WHEN)).doc_id


def test_a_decision_with_an_unknown_action_or_field_is_refused():
    with pytest.raises(ValidationError, match="action"):
        RolloutDecisionEvent.from_decision(rollout_decision(WHEN, action="pause"))
    with pytest.raises(ValidationError, match="extra"):
        RolloutDecisionEvent.from_decision(rollout_decision(WHEN, colour="red"))
