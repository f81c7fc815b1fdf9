"""Backfills: MLflow runs as training-run events (the champion flag follows the alias), the
prediction history and the clients' feedback from their watermarks; re-runs never duplicate.
Plus the hook at the end of train."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import structlog

from tests.conftest import project_settings
from tests.monitoring.conftest import FAST_RETRY
from tests.monitoring.history_rows import label, other, records, write_feedback, write_history
from tests.monitoring.sample import rollout_decision, rollout_report
from xgbops import train as training
from xgbops.monitoring import MonitoringError, elastic, sync
from xgbops.monitoring.events import RolloutDecisionEvent, rollout_events
from xgbops.monitoring.sinks import ElasticsearchSink, LocalSink, local_sink_path
from xgbops.champion import CHAMPION_ALIAS
from xgbops.tracking import Tracker


def test_training_ships_its_run_to_the_configured_sink(champion_project):
    """The session's champion was trained by xgbops.train.train with the default local sink."""
    settings = project_settings(champion_project)
    champion = Tracker(settings).champion(settings.model_name)
    with LocalSink(local_sink_path(settings)) as sink:
        runs = {d["run_id"]: d for d in sink.read("training-runs")}
    assert runs[champion.run_id]["champion"] is True
    assert runs[champion.run_id]["model_version"] == champion.version


def test_a_run_event_carries_metrics_params_version_and_champion_flag(monitored_settings):
    tracker = Tracker(monitored_settings)
    champion = tracker.champion(monitored_settings.model_name)
    events = {e.run_id: e for e in sync.training_run_events(monitored_settings, tracker)}
    event = events[champion.run_id]
    assert (event.registered, event.champion, event.model_version) == (True, True, champion.version)
    assert event.aliases == [CHAMPION_ALIAS]
    assert event.metrics.roc_auc == champion.metrics["holdout_roc_auc"]
    assert event.promotion_metric == "roc_auc" and event.promotion_score == event.metrics.roc_auc
    assert event.promotion_decision == "promoted"
    assert event.params["xgb_max_depth"] == "5"
    assert event.duration_seconds == champion.metrics["duration_seconds"] > 0
    assert event.best_iteration == int(champion.metrics["best_iteration"])
    assert event.dataset == "churn" and event.status == "FINISHED"


def test_a_resync_overwrites_and_the_champion_flag_follows_the_alias(monitored_settings):
    settings = monitored_settings
    tracker = Tracker(settings)
    name = settings.model_name
    champion = tracker.champion(name)
    with tracker.run("unregistered-run") as other_run:
        tracker.log_metrics(other_run, {"holdout_roc_auc": 0.5})
    other = tracker.client.create_model_version(
        name, source=f"runs:/{other_run}/model", run_id=other_run
    )
    with LocalSink(local_sink_path(settings)) as sink:
        first = sync.sync_mlflow(settings, sink, tracker)
        total = len(tracker.runs())
        assert (first.created, first.failed) == (total, 0)
        tracker.set_champion(name, str(other.version))
        again = sync.sync_mlflow(settings, sink, tracker)
        assert (again.created, again.updated) == (0, total)
        assert sink.count("training-runs") == total
        runs = {d["run_id"]: d for d in sink.read("training-runs")}
    assert runs[other_run]["champion"] is True and runs[other_run]["duration_seconds"] >= 0
    assert runs[champion.run_id]["champion"] is False


def test_the_train_hook_ships_the_run_and_the_replaced_champion(make_monitored, fake_es):
    settings = make_monitored(
        monitoring={"sink": "elasticsearch", "elasticsearch_url": fake_es.url}
    )
    tracker = Tracker(settings)
    champion = tracker.champion(settings.model_name)
    with tracker.run("new-run") as run_id:
        tracker.log_metrics(run_id, {"holdout_roc_auc": 0.99})
    decision = training.PromotionDecision(
        "roc_auc", "2", 0.99, champion.version, 0.9, promoted=True, reason="better roc_auc"
    )
    training._ship_to_monitoring(settings, tracker, run_id, decision)  # noqa: SLF001
    (bulk,) = fake_es.bulk_requests()
    shipped = [line["index"]["_id"] for line in bulk.ndjson() if "index" in line]
    assert sorted(shipped) == sorted([run_id, champion.run_id])
    assert {i for i, _ in fake_es.documents()} == {"xgbops-training-runs"}


def test_a_failing_sink_never_fails_training(make_monitored, fake_es):
    fake_es.stop()
    settings = make_monitored(
        monitoring={"sink": "elasticsearch", "elasticsearch_url": fake_es.url}
    )
    tracker = Tracker(settings)
    champion = tracker.champion(settings.model_name)
    with structlog.testing.capture_logs() as logs:
        training._ship_to_monitoring(settings, tracker, champion.run_id, None)  # noqa: SLF001
    (warning,) = [e for e in logs if e["event"] == "monitoring.ship_failed"]
    assert warning["log_level"] == "warning" and "ConnectionError" in warning["error"]


# -- the prediction history ------------------------------------------------------------------


def _history(settings, count, start):
    inputs = [{"state": "KS", "account_length": i} for i in range(count)]
    rows = records(inputs, [0.9 if i % 3 == 0 else 0.1 for i in range(count)], start)
    write_history(settings.history_url, settings.state_path / "spool", rows)
    return rows


def test_predictions_ship_from_a_watermark_without_duplicates(settings):
    now = datetime.now(UTC)
    rows = _history(settings, 6, now - timedelta(hours=3))
    with LocalSink(local_sink_path(settings)) as sink:
        first = sync.sync_predictions(settings, sink)
        assert (first.since, first.result.created) == (None, 6)
        assert first.watermark == rows[-1].created_at
        marks = json.loads(sync.watermark_path(settings).read_text())
        assert marks == {f"{sink.target}|predictions": rows[-1].created_at.isoformat()}
        # Rows within the overlap before the watermark are read again, and only counted.
        again = sync.sync_predictions(settings, sink)
        assert again.since == rows[-1].created_at - sync.WATERMARK_OVERLAP
        assert (again.result.created, again.result.already_shipped) == (0, 6)
        newer = _history(settings, 2, now)
        third = sync.sync_predictions(settings, sink)
        assert (third.result.created, third.result.already_shipped) == (2, 6)
        assert third.watermark == newer[-1].created_at
        everything = sync.sync_predictions(settings, sink, everything=True)
        assert everything.since is None and everything.result.already_shipped == 8
        assert sink.count("predictions") == 8
        stored = sink.read("predictions")
    assert [d["positive"] for d in stored[:3]] == [1, 0, 0]
    assert stored[0]["input"] == {"state": "KS", "account_length": 0.0}
    assert stored[0]["prediction_id"] == rows[0].id


def test_the_watermark_stays_put_when_documents_were_refused(make_settings, fake_es):
    settings = make_settings()
    rows = _history(settings, 3, datetime.now(UTC) - timedelta(days=1))
    fake_es.fail_item(rows[1].id, 400)
    sink = ElasticsearchSink(
        settings.monitoring.model_copy(update={"elasticsearch_url": fake_es.url}),
        retry=FAST_RETRY,
    )
    shipped = sync.sync_predictions(settings, sink)
    assert (shipped.result.created, shipped.result.failed) == (2, 1)
    assert not sync.watermark_path(settings).exists()
    retried = sync.sync_predictions(settings, sink)
    assert (retried.result.created, retried.result.already_shipped) == (1, 2)
    assert sync.watermark_path(settings).exists()
    assert len(fake_es.documents()) == 3


# -- the clients' feedback -------------------------------------------------------------------


def test_feedback_ships_joined_and_a_label_waits_for_its_prediction(settings):
    now = datetime.now(UTC)
    served = _history(settings, 4, now - timedelta(hours=3))  # labels yes, no, no, yes
    received = now - timedelta(minutes=30)
    # The client reports a label for a prediction the API has not stored yet (still buffered).
    pending = records([{"state": "KS"}], [0.9], now - timedelta(minutes=31))[0]
    write_feedback(
        settings.history_url,
        [
            label(served[0].id, "yes", received),  # right
            label(served[1].id, "yes", received + timedelta(seconds=1)),  # wrong
            label(served[2].id, "no", received + timedelta(seconds=2)),  # right
            label(pending.id, "no", received + timedelta(seconds=3)),  # wrong, once stored
        ],
    )
    with LocalSink(local_sink_path(settings)) as sink:
        first = sync.sync_feedback(settings, sink)
        assert (first.since, first.result.created, first.result.failed) == (None, 3, 0)
        assert first.watermark == received + timedelta(seconds=2)
        marks = json.loads(sync.watermark_path(settings).read_text())
        assert marks == {f"{sink.target}|feedback": first.watermark.isoformat()}
        stored = {d["prediction_id"]: d for d in sink.read("feedback")}
        assert set(stored) == {served[0].id, served[1].id, served[2].id}
        assert [stored[r.id]["correct"] for r in served[:3]] == [1, 0, 1]
        assert stored[served[1].id]["predicted_label"] == "no"
        assert stored[served[1].id]["actual_label"] == "yes"

        # Stored now, half an hour late (the API's spool): the next run re-reads the hour before
        # the watermark, so the label is joined and shipped now.
        write_history(settings.history_url, settings.state_path / "spool", [pending])
        second = sync.sync_feedback(settings, sink)
        assert second.since == first.watermark - sync.WATERMARK_OVERLAP
        assert (second.result.created, second.result.updated) == (1, 3)  # re-reads overwrite
        assert second.watermark == received + timedelta(seconds=3)
        assert sink.count("feedback") == 4
        late = next(d for d in sink.read("feedback") if d["prediction_id"] == pending.id)
        assert (late["predicted_label"], late["actual_label"], late["correct"]) == ("yes", "no", 0)


def test_a_feedback_resync_overwrites_and_a_corrected_label_replaces_the_first(settings):
    now = datetime.now(UTC)
    served = _history(settings, 3, now - timedelta(hours=2))
    write_feedback(
        settings.history_url,
        [label(r.id, other(r.label), now - timedelta(hours=1)) for r in served],
    )
    with LocalSink(local_sink_path(settings)) as sink:
        first = sync.sync_feedback(settings, sink)
        assert (first.result.created, first.result.updated) == (3, 0)
        again = sync.sync_feedback(settings, sink, everything=True).result
        assert (again.created, again.updated, again.already_shipped) == (0, 3, 0)
        assert sink.count("feedback") == 3 and sink.count() == 3
        # The client corrects its first label: the upsert moves received_at past the watermark.
        corrected_at = now - timedelta(minutes=5)
        write_feedback(settings.history_url, [label(served[0].id, served[0].label, corrected_at)])
        third = sync.sync_feedback(settings, sink)
        assert (third.result.created, third.result.updated) == (0, 3)
        assert third.watermark == corrected_at
        documents = {d["prediction_id"]: d for d in sink.read("feedback")}
    assert len(documents) == 3
    assert documents[served[0].id]["actual_label"] == served[0].label
    assert documents[served[0].id]["correct"] == 1
    assert documents[served[0].id]["@timestamp"].startswith(f"{corrected_at:%Y-%m-%dT%H:%M:%S}")
    assert [documents[r.id]["correct"] for r in served[1:]] == [0, 0]


def test_feedback_bulk_bodies_index_by_prediction_id_and_overwrite(make_settings, fake_es):
    settings = make_settings(monitoring={"sink": "elasticsearch", "elasticsearch_url": fake_es.url})
    elastic.install(settings, elastic.create_client(settings.monitoring, FAST_RETRY))
    predicted_at = datetime(2025, 5, 31, 23, 0, tzinfo=UTC)
    served = records([{"state": "KS"}, {"state": "OH"}], [0.9, 0.1], predicted_at)
    write_history(settings.history_url, settings.state_path / "spool", served)
    received = datetime(2025, 6, 1, 8, 0, tzinfo=UTC)  # a month later than the predictions
    write_feedback(
        settings.history_url,
        [
            label(served[0].id, "yes", received, "fb-0"),
            label(served[1].id, "yes", received, "fb-1"),
        ],
    )
    sink = ElasticsearchSink(settings.monitoring, retry=FAST_RETRY)

    first = sync.sync_feedback(settings, sink)
    again = sync.sync_feedback(settings, sink)

    assert (first.result.created, first.result.failed) == (2, 0)
    assert (again.result.updated, again.result.created, again.result.failed) == (2, 0, 0)
    index = "xgbops-feedback-2025.05.01"  # the predictions' month, not the labels'
    bodies = [request.ndjson() for request in fake_es.bulk_requests()]
    assert bodies[0] == bodies[1]  # the re-run sends the very same request
    by_id = sorted(served, key=lambda r: r.id)  # same received_at: ordered by prediction id
    assert bodies[0] == [
        line
        for row in by_id
        for line in (
            {"index": {"_index": index, "_id": row.id}},
            {
                "@timestamp": "2025-06-01T08:00:00.000000Z",
                "prediction_id": row.id,
                "model_name": "churn-xgboost",
                "model_version": "1",
                "predicted_label": row.label,
                "actual_label": "yes",
                "correct": int(row.label == "yes"),
                "probability": row.probability,
                "predicted_at": f"{row.created_at:%Y-%m-%dT%H:%M:%S.%f}Z",
                "request_id": f"fb-{served.index(row)}",
                "event_type": "feedback",
            },
        )
    ]
    assert set(fake_es.documents()) == {(index, row.id) for row in served}

    write_feedback(settings.history_url, [label(served[1].id, "no", received + timedelta(days=1))])
    corrected = sync.sync_feedback(settings, sink)
    assert (corrected.result.updated, corrected.result.created) == (2, 0)
    assert fake_es.indices[index][served[1].id]["actual_label"] == "no"
    assert fake_es.indices[index][served[1].id]["correct"] == 1
    assert len(fake_es.documents()) == 2
    sink.close()


# -- the rollout -------------------------------------------------------------------------------

ROLLOUT_AT = datetime(2026, 12, 7, 13, 0, tzinfo=UTC)


def test_ship_rollout_stores_both_arms_and_the_decisions_once_in_the_local_sink(settings):
    report = rollout_report(ROLLOUT_AT)
    decisions = [
        rollout_decision(ROLLOUT_AT - timedelta(hours=1)),
        rollout_decision(ROLLOUT_AT, "mode", share=50.0),
    ]

    unnamed = rollout_report(ROLLOUT_AT + timedelta(minutes=5))
    del unnamed["model_name"]  # the comparison knows versions; the settings know the model

    first = sync.ship_rollout(settings, report, decisions)
    again = sync.ship_rollout(settings, report, decisions)
    alone = sync.ship_rollout(settings, unnamed)

    assert (first, again, alone) == (4, 0, 2)  # a re-shipped report is not stored twice
    with LocalSink(local_sink_path(settings)) as sink:
        first_report = sink.read("rollout", until=ROLLOUT_AT + timedelta(minutes=1))
        second_report = sink.read("rollout", since=ROLLOUT_AT + timedelta(minutes=1))
        stored = sink.read("decisions")
        assert sink.count("rollout") == 4
    assert {d["model_name"] for d in second_report} == {settings.model_name}
    assert len(first_report) == 2
    arms = {d["arm"]: d for d in first_report}  # same time: read back in id order
    assert arms == {e.arm: e.to_document() for e in rollout_events(report)}
    assert (arms["challenger"]["requests"], arms["challenger"]["error_rate"]) == (400, 0.15)
    assert stored == [RolloutDecisionEvent.from_decision(d).to_document() for d in decisions]


def test_ship_rollout_creates_in_elasticsearch_and_a_refused_document_raises(
    make_settings, fake_es
):
    settings = make_settings(monitoring={"sink": "elasticsearch", "elasticsearch_url": fake_es.url})
    elastic.install(settings, elastic.create_client(settings.monitoring, FAST_RETRY))
    report = rollout_report(ROLLOUT_AT, paired=True)
    arm_ids = [e.doc_id for e in rollout_events(report)]
    decision = rollout_decision(ROLLOUT_AT, "promote")

    assert sync.ship_rollout(settings, report, [decision]) == 3
    assert sync.ship_rollout(settings, report, [decision]) == 0

    bulk, again = [request.ndjson() for request in fake_es.bulk_requests()]
    assert bulk == again
    actions = [line["create"] for line in bulk if "create" in line]
    decision_id = RolloutDecisionEvent.from_decision(decision).doc_id
    assert [(a["_index"], a["_id"]) for a in actions] == [
        ("xgbops-rollout-2026.12.01", arm_ids[0]),
        ("xgbops-rollout-2026.12.01", arm_ids[1]),
        ("xgbops-decisions-2026.12.01", decision_id),
    ]  # facts: the op is create, and the templates' strict mappings accepted every document
    assert len(fake_es.documents()) == 3
    later = rollout_report(ROLLOUT_AT + timedelta(minutes=5))
    refused = rollout_events(later)[1].doc_id
    fake_es.fail_item(refused, 400)
    with pytest.raises(MonitoringError, match=f"1 failed.*{refused}: 400"):
        sync.ship_rollout(settings, later)
