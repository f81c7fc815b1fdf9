"""Sinks: the local SQLite sink and the Elasticsearch sink (against the fake server) store each
event once per id, report refusals per document, and retry what Elasticsearch asks to retry."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from tests.monitoring.conftest import ES_DIR, FAST_RETRY
from tests.monitoring.fake_elasticsearch import COMPAT_JSON
from xgbops.config import MonitoringSettings
from xgbops.monitoring import MonitoringError, elastic
from xgbops.monitoring.events import HoldoutMetrics, PredictionEvent, TrainingRunEvent
from xgbops.monitoring.sinks import (
    ElasticsearchSink,
    LocalSink,
    ShipResult,
    local_sink_path,
    open_sink,
)

START = datetime(2025, 1, 31, 23, 0, tzinfo=UTC)


def predictions(count: int, start: datetime = START) -> list[PredictionEvent]:
    """``count`` predictions one hour apart (they cross into February)."""
    return [
        PredictionEvent(
            timestamp=start + timedelta(hours=i),
            prediction_id=f"{i:032x}",
            model_name="churn-xgboost",
            model_version="1",
            probability=i / (count + 1),
            label="yes" if i % 2 else "no",
            positive=i % 2,
            latency_ms=1.5,
            request_id=f"req-{i}",
            input={"state": "KS", "account_length": float(i)},
        )
        for i in range(count)
    ]


def training_run(champion: bool) -> TrainingRunEvent:
    return TrainingRunEvent(
        timestamp=START,
        run_id="run-1",
        run_name="churn-xgboost-1",
        experiment="xgbops",
        status="FINISHED",
        registered=True,
        model_name="churn-xgboost",
        model_version="1",
        version_number=1,
        champion=champion,
        aliases=["champion"] if champion else [],
        metrics=HoldoutMetrics(roc_auc=0.9),
    )


# -- local sink ------------------------------------------------------------------------------


def test_local_sink_stores_and_reads_back_documents_oldest_first(tmp_path):
    events = predictions(3)
    with LocalSink(tmp_path / "events.db") as sink:
        result = sink.ship(reversed(events))
        assert (result.created, result.failed) == (3, 0)
        assert sink.read("predictions") == [e.to_document() for e in events]
        assert sink.read("predictions", since=START + timedelta(hours=1), limit=1) == [
            events[1].to_document()
        ]
        assert sink.read("predictions", until=START + timedelta(hours=1)) == [
            events[0].to_document()
        ]
        assert sink.read("system") == []


def test_local_sink_reshipping_the_same_ids_adds_no_row(tmp_path):
    path = tmp_path / "events.db"
    with LocalSink(path) as sink:
        sink.ship(predictions(4))
    newer = predictions(5)[4]
    with LocalSink(path) as again:  # another process, later
        result = again.ship(predictions(4) + [newer])
        assert (result.created, result.already_shipped, result.updated) == (1, 4, 0)
        assert again.count("predictions") == 5
        assert again.read("predictions")[-1] == newer.to_document()


def test_local_sink_overwrites_a_state_in_place(tmp_path):
    with LocalSink(tmp_path / "events.db") as sink:
        assert sink.ship([training_run(champion=True)]).created == 1
        result = sink.ship([training_run(champion=False)])
        assert (result.created, result.updated) == (0, 1)
        assert sink.count() == 1
        assert sink.read("training-runs")[0]["champion"] is False


def test_the_default_sink_is_local_under_the_state_directory(settings):
    sink = open_sink(settings)
    try:
        assert isinstance(sink, LocalSink)
        assert sink.target == f"local:{local_sink_path(settings)}"
        assert local_sink_path(settings) == settings.state_path / "monitoring" / "events.db"
    finally:
        sink.close()


# -- Elasticsearch sink: exact requests -------------------------------------------------------


def _es_sink(fake_es, **settings) -> ElasticsearchSink:
    monitoring = MonitoringSettings(elasticsearch_url=fake_es.url, **settings)
    return ElasticsearchSink(monitoring, retry=FAST_RETRY, chunk_size=2)


def test_bulk_bodies_name_the_op_index_and_id_of_each_event(fake_es):
    events = predictions(3)
    result = _es_sink(fake_es).ship(events + [training_run(champion=True)])
    assert (result.created, result.failed) == (4, 0)
    bodies = [request.ndjson() for request in fake_es.bulk_requests()]
    assert len(bodies) == 2  # chunks of two documents
    lines = [line for body in bodies for line in body]
    expected = []
    for event in events:
        index = f"xgbops-predictions-{event.timestamp:%Y.%m}.01"
        expected += [{"create": {"_index": index, "_id": event.doc_id}}, event.to_document()]
    expected += [
        {"index": {"_index": "xgbops-training-runs", "_id": "run-1"}},
        training_run(True).to_document(),
    ]
    assert lines == expected
    assert {i for i, _ in fake_es.documents()} == {
        "xgbops-predictions-2025.01.01",
        "xgbops-predictions-2025.02.01",
        "xgbops-training-runs",
    }


def test_requests_use_the_9x_compatibility_media_types(fake_es):
    _es_sink(fake_es).ship(predictions(1))
    (bulk,) = fake_es.bulk_requests()
    assert bulk.method in ("PUT", "POST")
    assert bulk.headers["content-type"].replace(" ", "") == (
        "application/vnd.elasticsearch+x-ndjson;compatible-with=9"
    )
    assert bulk.headers["accept"].replace(" ", "") == COMPAT_JSON


def test_an_index_prefix_from_settings_names_the_indices(fake_es):
    _es_sink(fake_es, index_prefix="team-a").ship(predictions(1))
    assert list(fake_es.indices) == ["team-a-predictions-2025.01.01"]


def test_credentials_are_sent_as_configured(fake_es):
    key = "a2V5OnNlY3JldA=="  # pragma: allowlist secret
    _es_sink(fake_es, elasticsearch_api_key=key).ship(predictions(1))
    assert fake_es.requests[-1].headers["authorization"] == f"ApiKey {key}"
    password = "changeme"  # pragma: allowlist secret
    sink = _es_sink(fake_es, elasticsearch_username="elastic", elasticsearch_password=password)
    sink.ship(predictions(1))
    expected = base64.b64encode(f"elastic:{password}".encode()).decode()
    assert fake_es.requests[-1].headers["authorization"] == f"Basic {expected}"


# -- idempotence -----------------------------------------------------------------------------


def test_a_rerun_sends_the_same_ids_and_409s_count_as_already_shipped(fake_es):
    sink = _es_sink(fake_es)
    first = sink.ship(predictions(3))
    second = sink.ship(predictions(3))
    assert (first.created, first.already_shipped) == (3, 0)
    assert (second.created, second.already_shipped, second.failed) == (0, 3, 0)
    first_ids, second_ids = (
        [
            line["create"]["_id"]
            for r in fake_es.bulk_requests()[n : n + 2]
            for line in r.ndjson()
            if "create" in line
        ]
        for n in (0, 2)
    )
    assert first_ids == second_ids
    assert len(fake_es.documents()) == 3


def test_a_training_run_is_overwritten_not_duplicated(fake_es):
    sink = _es_sink(fake_es)
    sink.ship([training_run(champion=True)])
    result = sink.ship([training_run(champion=False)])
    assert (result.updated, result.created) == (1, 0)
    assert fake_es.indices["xgbops-training-runs"]["run-1"]["champion"] is False


# -- errors and retries ----------------------------------------------------------------------


def test_per_document_errors_are_reported_and_the_rest_is_stored(fake_es):
    events = predictions(3)
    fake_es.fail_item(events[1].doc_id, 400)
    result = _es_sink(fake_es).ship(events)
    assert (result.created, result.failed) == (2, 1)
    (error,) = result.errors
    assert (error.doc_id, error.status, error.error_type) == (
        events[1].doc_id,
        400,
        "illegal_argument_exception",
    )
    assert error.index == "xgbops-predictions-2025.02.01"  # events[1] is at 00:00, Feb 1st
    assert "1 failed" in result.summary()


def test_a_document_the_strict_mapping_refuses_is_an_error_not_a_crash(fake_es, es_settings):
    elastic.install(es_settings(), elastic.create_client(es_settings().monitoring, FAST_RETRY))
    assert _es_sink(fake_es).ship(predictions(1)).failed == 0
    template = fake_es.templates["xgbops-predictions"]
    template["template"]["mappings"]["properties"].pop("latency_ms")  # a stale template
    result = _es_sink(fake_es).ship(predictions(2, START + timedelta(days=40)))
    assert result.failed == 2
    assert {e.error_type for e in result.errors} == {"strict_dynamic_mapping_exception"}
    assert "latency_ms" in result.errors[0].reason


def test_a_503_on_the_whole_request_is_retried_by_the_client(fake_es):
    fake_es.fail_requests(503, "_bulk", times=2)
    result = _es_sink(fake_es).ship(predictions(2))
    assert (result.created, result.failed) == (2, 0)
    bulks = fake_es.bulk_requests()
    assert len(bulks) == 3 and bulks[0].body == bulks[2].body
    assert len(fake_es.documents()) == 2


def test_a_429_on_one_document_is_retried_with_only_that_document(fake_es):
    events = predictions(2)
    fake_es.fail_item(events[1].doc_id, 429, 429)
    result = _es_sink(fake_es).ship(events)
    assert (result.created, result.failed) == (2, 0)
    first, second, third = fake_es.bulk_requests()
    assert len(first.ndjson()) == 4
    assert (
        second.ndjson()
        == third.ndjson()
        == [
            {"create": {"_index": events[1].index("xgbops"), "_id": events[1].doc_id}},
            events[1].to_document(),
        ]
    )


def test_a_document_still_rejected_after_the_retries_is_reported(fake_es):
    events = predictions(1)
    fake_es.fail_item(events[0].doc_id, *[429] * (FAST_RETRY.max_retries + 1))
    result = _es_sink(fake_es).ship(events)
    assert result.failed == 1 and result.errors[0].status == 429
    assert len(fake_es.bulk_requests()) == FAST_RETRY.max_retries + 1


def test_a_cluster_that_stays_down_is_one_clear_error(fake_es):
    fake_es.fail_requests(503, "_bulk", times=FAST_RETRY.max_retries + 1)
    with pytest.raises(MonitoringError, match=r"failed after 0 document\(s\): 503"):
        _es_sink(fake_es).ship(predictions(1))


def test_an_unreachable_cluster_is_one_clear_error(fake_es):
    fake_es.stop()
    with pytest.raises(MonitoringError, match="ConnectionError"):
        _es_sink(fake_es).ship(predictions(1))


def test_a_server_that_is_not_elasticsearch_is_refused(fake_es):
    fake_es.product_header = False
    with pytest.raises(MonitoringError, match="not Elasticsearch"):
        _es_sink(fake_es).ship(predictions(1))


def test_no_url_is_a_configuration_error(make_settings):
    settings = make_settings(monitoring={"sink": "elasticsearch"})
    with pytest.raises(MonitoringError, match="XGBOPS_MONITORING__ELASTICSEARCH_URL"):
        open_sink(settings)


def test_results_merge_and_keep_a_bounded_list_of_errors():
    total = ShipResult("t", created=1)
    other = ShipResult("t", already_shipped=2)
    for i in range(150):
        other.add_error(elastic_error(i))
    total.merge(other)
    assert (total.created, total.already_shipped, total.failed, total.total) == (1, 2, 150, 153)
    assert len(total.errors) == 100
    assert json.dumps(str(total.errors[0]))


def elastic_error(i: int):
    from xgbops.monitoring.sinks import ShipError  # pylint: disable=import-outside-toplevel

    return ShipError("idx", str(i), 400, "mapper_parsing_exception", "bad")


def test_the_resource_directory_is_the_repository_one_when_the_project_has_none(settings):
    assert elastic.resource_dir(settings) == ES_DIR
