"""The service core in-process: champion swaps, validation, history, readiness, metrics."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta

import pytest
from structlog.testing import capture_logs
from sqlalchemy import create_engine, select

from api.core import metrics
from api.core.champion import ChampionStore
from api.core.errors import HistoryUnavailable, ModelNotReady, ValidationFailed
from api.core.service import PredictionService, new_request_id
from xgbops.tables import prediction_feedback
from xgbops.config import to_sqlalchemy_url
from xgbops.train import promote_version, train

from tests.conftest import make_project, project_settings


@pytest.fixture(scope="module")
def trained_project(tmp_path_factory):
    """A project with champion v1 exported and a weak v2 registered but not promoted."""
    project = make_project(tmp_path_factory.mktemp("service") / "project")
    train(project_settings(project))
    weak = {"num_boost_round": 2, "early_stopping_rounds": None, "params": {"max_depth": 1}}
    train(project_settings(project, train=weak))
    return project


@pytest.fixture
def trained(trained_project, tmp_path):
    """A private copy of the trained project (its registry and history may be changed)."""
    copy = tmp_path / "project"
    shutil.copytree(trained_project, copy)
    (copy / ".xgbops" / "predictions.db").unlink(missing_ok=True)
    return project_settings(copy)


@pytest.fixture
def service(trained):
    svc = PredictionService.create(trained)
    svc.store.reload_interval = 0  # look at the pointer on every request
    svc.start()
    yield svc
    svc.close()


@pytest.fixture
def example(trained):
    return json.loads((trained.project_dir / "data" / "example.json").read_text())


def test_nothing_exported_is_not_ready_with_the_reason(settings):
    store = ChampionStore(settings.serving_path)
    with pytest.raises(ModelNotReady, match="^no champion has been exported yet; retry later$"):
        store.get()


def test_champion_is_swapped_when_the_pointer_changes(trained, service, example):
    assert service.predict(example, "r1")["model_version"] == "1"
    before = service.predict(example, "r2")["probability"]
    promote_version(trained, "2", force=True)  # exports v2 and replaces current.json
    after = service.predict(example, "r3")
    assert after["model_version"] == "2"
    assert after["probability"] != before
    assert service.model_info()["model_version"] == "2"


def test_a_broken_pointer_keeps_the_model_being_served(trained, service, example):
    service.predict(example, "r")
    (trained.serving_path / "current.json").write_text("{not json")
    with capture_logs() as logs:
        assert service.predict(example, "r")["model_version"] == "1"
    assert service.store.last_error == "the champion's files cannot be loaded"  # for clients
    failed = [e for e in logs if e["event"] == "champion.load_failed"]
    assert failed and failed[0]["pointer"].endswith("current.json")  # the details: the log
    assert "JSONDecodeError" in failed[0]["error"]


def test_a_worker_has_one_connection_pool_for_history_labels_and_jobs(service, example):
    engine = service.writer.engine
    assert service.reader.engine is engine and service.jobs.engine is engine
    service.predict(example, "req-pool")
    assert service.writer.flush()
    assert service.reader.count() == 1  # the reader sees what the writer wrote, same pool


def test_predict_validates_scores_and_records(service, example):
    with pytest.raises(ValidationFailed) as refused:
        service.predict({**example, "state": "ZZ"}, "r")
    assert refused.value.detail[0].field == "state"
    answer = service.predict(example, "req-1")
    assert service.writer.flush()
    page = service.predictions({"limit": "5"})
    assert page["total"] == 1
    stored = page["items"][0]
    assert stored["id"] == answer["prediction_id"]
    assert stored["request_id"] == "req-1"
    assert stored["input"]["state"] == "KS"
    assert stored["probability"] == pytest.approx(answer["probability"])


def test_batch_is_all_or_nothing(service, example):
    with pytest.raises(ValidationFailed):
        service.predict_batch({"records": [example, {**example, "state": 1}]}, "r")
    assert service.writer.flush() and service.predictions({})["total"] == 0
    answer = service.predict_batch({"records": [example] * 3}, "r")
    assert answer["count"] == 3 and len({p["prediction_id"] for p in answer["predictions"]}) == 3
    assert service.writer.flush() and service.predictions({})["total"] == 3


def test_history_filters_and_pages(service, example):
    for _ in range(5):
        service.predict(example, "r")
    assert service.writer.flush()
    now = datetime.now(UTC)
    assert service.predictions({"limit": "2", "offset": "4"})["items"].__len__() == 1
    assert service.predictions({"model_version": "1"})["total"] == 5
    assert service.predictions({"model_version": "9"})["total"] == 0
    assert service.predictions({"since": (now + timedelta(minutes=1)).isoformat()})["total"] == 0
    assert service.predictions({"until": (now + timedelta(minutes=1)).isoformat()})["total"] == 5
    assert service.predictions({"since": "2000-01-01T00:00:00Z"})["total"] == 5
    # Before year 1 or after 9999 in UTC: filtered as the earliest or latest representable time.
    assert service.predictions({"until": "0001-01-01T01:00:01+02:00"})["total"] == 0
    assert service.predictions({"since": "0001-01-01T01:00:01+02:00"})["total"] == 5
    assert service.predictions({"until": "9999-12-31T23:00:00-05:00"})["total"] == 5
    assert service.predictions({"since": "", "limit": ""})["total"] == 5  # empty means absent


@pytest.mark.parametrize(
    ("query", "field", "reason"),
    [
        ({"limit": "0"}, "limit", "must be between 1 and 500"),
        ({"offset": "-1"}, "offset", "must be between 0 and 2147483647"),
        ({"offset": str(10**30)}, "offset", "must be between 0 and 2147483647"),
        ({"offset": "x"}, "offset", "must be a whole number"),
        ({"until": "soon"}, "until", "must be an ISO 8601 date-time"),
        ({"page": "2"}, "page", "unknown parameter"),
    ],
)
def test_history_query_errors(service, query, field, reason):
    with pytest.raises(ValidationFailed) as refused:
        service.predictions(query)
    assert [(d.field, d.reason) for d in refused.value.detail] == [(field, reason)]


def test_websocket_messages_get_predictions_or_error_bodies(service, example):
    assert service.answer_message(json.dumps(example), "r")["label"] in {"yes", "no"}
    batch = service.answer_message(json.dumps({"records": [example, example]}), "r")
    assert batch["count"] == 2
    assert service.answer_message("{oops", "r")["error"] == "bad_request"
    refused = service.answer_message(json.dumps({**example, "x": 1}), "r")
    assert refused["detail"] == [{"field": "x", "reason": "unknown field"}]


def test_unreachable_database_makes_the_service_not_ready_but_still_scoring(trained, example):
    settings = project_settings(
        trained.project_dir, database_url="postgresql://postgres@127.0.0.1:9/nowhere"
    )
    svc = PredictionService(settings)
    svc.start()
    try:
        ready, body = svc.readiness()
        assert not ready and body["checks"]["database"]["ok"] is False
        assert body["checks"]["model"]["ok"] is True
        assert svc.predict(example, "r")["model_version"] == "1"  # predictions go on
        with pytest.raises(HistoryUnavailable):
            svc.predictions({})
    finally:
        svc.close()


def test_request_ids_are_kept_when_sane():
    assert new_request_id("abc") == "abc"
    assert len(new_request_id(None)) == 32
    assert new_request_id("x" * 500) != "x" * 500
    assert new_request_id("bad\nid") != "bad\nid"


def test_percentiles_are_interpolated_from_cumulative_buckets():
    buckets = {0.001: 50.0, 0.01: 90.0, 0.1: 100.0, float("inf"): 100.0}
    assert metrics._percentile(buckets, 0.5) == pytest.approx(1.0)
    assert metrics._percentile(buckets, 0.7) == pytest.approx(5.5)
    assert metrics._percentile(buckets, 0.99) == pytest.approx(91.0)
    assert metrics._percentile({}, 0.5) is None


def test_each_database_gets_its_own_spool(trained):
    from api.core.service import spool_dir  # pylint: disable=import-outside-toplevel

    one = project_settings(trained.project_dir, database_url="postgresql://h/one")
    two = project_settings(trained.project_dir, database_url="postgresql://h/two")
    assert spool_dir(one) != spool_dir(two)
    assert spool_dir(one).parent == trained.state_path / "spool"


def test_recording_can_be_switched_off_for_measurement(trained, example):
    settings = project_settings(trained.project_dir, serve={"record_predictions": False})
    svc = PredictionService.create(settings)
    svc.start()
    try:
        assert svc.predict(example, "r")["model_version"] == "1"
        assert svc.writer.flush() and svc.predictions({})["total"] == 0
    finally:
        svc.close()


def test_feedback_stores_the_label_of_a_served_prediction(service, example):
    answer = service.predict(example, "request-1")
    body = {"prediction_id": answer["prediction_id"], "label": "yes"}
    stored = service.feedback(body, "request-2")
    assert (stored["prediction_id"], stored["label"]) == (answer["prediction_id"], "yes")
    assert datetime.fromisoformat(stored["received_at"]) <= datetime.now(UTC)
    engine = create_engine(to_sqlalchemy_url(service.settings.history_url))
    with engine.connect() as connection:
        rows = connection.execute(select(prediction_feedback)).all()
    engine.dispose()
    assert [(r.prediction_id, r.label, r.request_id) for r in rows] == [
        (answer["prediction_id"], "yes", "request-2")
    ]
    with pytest.raises(ValidationFailed):
        service.feedback({**body, "label": "churned"}, "request-3")
