"""Reading the prediction history: the API's tables, written by the API's own writer (and plain
inserts of the clients' labels), defined once in xgbops.tables, and read back as prediction and
feedback events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, text

from xgbops import tables
from tests.monitoring.history_rows import label, other, records, write_feedback, write_history
from xgbops.monitoring import MonitoringError
from xgbops.monitoring.history import (
    COLUMNS,
    FEEDBACK_COLUMNS,
    JUDGED_COLUMNS,
    read_feedback,
    read_predictions,
)

START = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)


def test_every_column_read_is_one_of_the_apis():
    assert set(COLUMNS) <= {c.name for c in tables.predictions.columns}
    assert set(JUDGED_COLUMNS) <= {c.name for c in tables.predictions.columns}
    assert set(FEEDBACK_COLUMNS) <= {c.name for c in tables.prediction_feedback.columns}


def test_no_history_yet_means_no_rows(tmp_path):
    assert list(read_predictions(f"sqlite:///{tmp_path / 'absent.db'}", "yes")) == []
    assert not (tmp_path / "absent.db").exists()  # reading never creates the database
    create_engine(f"sqlite:///{tmp_path / 'empty.db'}").connect().close()
    assert list(read_predictions(f"sqlite:///{tmp_path / 'empty.db'}", "yes")) == []


def _rows(count, start=START, step=timedelta(minutes=1), **kwargs):
    inputs = [
        {"state": "KS", "account_length": i, "total_day_minutes": 1.5 * i} for i in range(count)
    ]
    return records(inputs, [i / count for i in range(count)], start, step, **kwargs)


def test_rows_come_back_oldest_first_as_events(tmp_path):
    url = f"sqlite:///{tmp_path / 'history.db'}"
    written = _rows(5)
    write_history(url, tmp_path / "spool", reversed(written))
    read = list(read_predictions(url, "yes"))
    assert [e.prediction_id for e in read] == [r.id for r in written]
    assert read[2].timestamp == START + timedelta(minutes=2)
    assert read[3].input == {"state": "KS", "account_length": 3, "total_day_minutes": 4.5}
    assert (read[4].probability, read[4].label, read[4].positive) == (0.8, "yes", 1)
    assert (read[0].label, read[0].positive, read[0].request_id) == ("no", 0, "req-0")
    assert read[1].latency_ms == written[1].latency_ms and read[1].source == "history"


def test_the_window_filters_are_inclusive_then_exclusive(tmp_path):
    url = f"sqlite:///{tmp_path / 'history.db'}"
    write_history(url, tmp_path / "spool", _rows(5) + _rows(2, model_name="other"))
    since, until = START + timedelta(minutes=1), START + timedelta(minutes=3)
    read = list(read_predictions(url, "yes", since=since, until=until, model_name="churn-xgboost"))
    assert [e.timestamp for e in read] == [since, since + timedelta(minutes=1)]
    naive = since.replace(tzinfo=None)  # a naive time is UTC
    assert len(list(read_predictions(url, "yes", since=naive, model_name="churn-xgboost"))) == 4


def test_pages_never_skip_or_repeat_rows_sharing_a_timestamp(tmp_path):
    url = f"sqlite:///{tmp_path / 'history.db'}"
    written = _rows(7, step=timedelta(0))  # all at the same instant
    write_history(url, tmp_path / "spool", written)
    read = [e.prediction_id for e in read_predictions(url, "yes", page_size=2)]
    assert sorted(read) == sorted(r.id for r in written) and len(read) == 7


@pytest.mark.postgres
def test_the_postgresql_history_is_read_the_same_way(postgres_url, tmp_path):
    written = _rows(3)
    write_history(postgres_url, tmp_path / "spool", written)
    read = list(read_predictions(postgres_url, "yes", page_size=2))
    assert [e.prediction_id for e in read] == [r.id for r in written]
    assert read[1].input == written[1].input and read[1].timestamp == written[1].created_at


def test_a_table_without_a_column_read_is_one_clear_error(tmp_path):
    url = f"sqlite:///{tmp_path / 'history.db'}"
    with create_engine(url).begin() as connection:
        connection.execute(text("CREATE TABLE predictions (id TEXT PRIMARY KEY, created_at TEXT)"))
    with pytest.raises(MonitoringError, match=r"prediction history: no such column: \S+model_name"):
        list(read_predictions(url, "yes"))


def test_a_history_kept_as_text_is_still_read(tmp_path):
    """A table whose columns carry no SQL types (hand-made, older tools): values come as text."""
    url = f"sqlite:///{tmp_path / 'history.db'}"
    columns = ", ".join(f"{name} TEXT" for name in COLUMNS)
    with create_engine(url).begin() as connection:
        connection.execute(text(f"CREATE TABLE predictions ({columns})"))
        connection.execute(
            text(
                "INSERT INTO predictions VALUES ('p1', '2025-05-01 12:00:00.000000', 'm', '1',"
                " '{\"state\": \"KS\"}', '0.5', 'yes', '2.5', 'r1')"
            )
        )
    (event,) = read_predictions(url, "yes")
    assert event.timestamp == START and event.input == {"state": "KS"}
    assert (event.probability, event.positive, event.latency_ms) == (0.5, 1, 2.5)


def test_an_unreachable_database_is_one_clear_error():
    with pytest.raises(MonitoringError, match="cannot read the prediction history"):
        list(read_predictions("postgresql://nobody@127.0.0.1:9/none?connect_timeout=2", "yes"))


# -- feedback: the true labels clients report, joined with their predictions -----------------


def test_no_history_or_no_feedback_table_yet_means_no_labels(tmp_path):
    assert list(read_feedback(f"sqlite:///{tmp_path / 'absent.db'}")) == []
    assert not (tmp_path / "absent.db").exists()
    url = f"sqlite:///{tmp_path / 'old.db'}"  # a history from before the feedback migration
    columns = ", ".join(f"{name} TEXT" for name in COLUMNS)
    with create_engine(url).begin() as connection:
        connection.execute(text(f"CREATE TABLE predictions ({columns})"))
    assert list(read_feedback(url)) == []


def test_labels_come_back_joined_with_their_predictions_by_time_received(tmp_path):
    url = f"sqlite:///{tmp_path / 'history.db'}"
    served = _rows(4)  # labels no, no, yes, yes (probabilities 0, .25, .5, .75)
    write_history(url, tmp_path / "spool", served)
    later = START + timedelta(hours=2)
    write_feedback(
        url,
        [
            label(served[2].id, "yes", later + timedelta(minutes=1), "fb-a"),  # right
            label(served[0].id, "yes", later, "fb-b"),  # wrong
            label(served[3].id, "no", later + timedelta(minutes=2)),  # wrong
            label("f" * 32, "yes", later),  # its prediction is not stored (yet)
        ],
    )

    read = list(read_feedback(url))

    assert [e.prediction_id for e in read] == [served[0].id, served[2].id, served[3].id]
    first, right = read[0], read[1]
    assert (first.predicted_label, first.actual_label, first.correct) == ("no", "yes", 0)
    assert (right.predicted_label, right.actual_label, right.correct) == ("yes", "yes", 1)
    assert [e.correct for e in read] == [int(e.actual_label == e.predicted_label) for e in read]
    assert (right.timestamp, right.predicted_at) == (
        later + timedelta(minutes=1),
        served[2].created_at,
    )
    assert (right.model_name, right.model_version, right.probability) == (
        "churn-xgboost",
        "1",
        0.5,
    )
    assert (first.request_id, right.request_id) == ("fb-b", "fb-a")


def test_feedback_filters_on_time_received_and_model(tmp_path):
    url = f"sqlite:///{tmp_path / 'history.db'}"
    mine, theirs = _rows(4), _rows(2, model_name="other")
    write_history(url, tmp_path / "spool", mine + theirs)
    write_feedback(
        url,
        [label(r.id, r.label, START + timedelta(hours=i)) for i, r in enumerate(mine + theirs)],
    )
    since, until = START + timedelta(hours=1), START + timedelta(hours=3)

    read = list(read_feedback(url, since=since, until=until, model_name="churn-xgboost"))

    assert [e.prediction_id for e in read] == [mine[1].id, mine[2].id]
    assert [e.timestamp for e in read] == [since, since + timedelta(hours=1)]
    assert len(list(read_feedback(url, since=since.replace(tzinfo=None)))) == 5  # naive = UTC
    assert [e.model_name for e in read_feedback(url, model_name="other")] == ["other"] * 2


def test_feedback_pages_never_skip_or_repeat_labels_received_together(tmp_path):
    url = f"sqlite:///{tmp_path / 'history.db'}"
    served = _rows(7)
    write_history(url, tmp_path / "spool", served)
    write_feedback(url, [label(r.id, other(r.label), START) for r in served])
    read = [e.prediction_id for e in read_feedback(url, page_size=2)]
    assert sorted(read) == sorted(r.id for r in served) and len(read) == 7


def test_a_corrected_label_replaces_the_first(tmp_path):
    url = f"sqlite:///{tmp_path / 'history.db'}"
    (served,) = _rows(1)
    write_history(url, tmp_path / "spool", [served])
    write_feedback(url, [label(served.id, "yes", START + timedelta(hours=1))])
    write_feedback(url, [label(served.id, "no", START + timedelta(hours=2))])
    (event,) = read_feedback(url)
    assert (event.actual_label, event.correct) == ("no", 1)
    assert event.timestamp == START + timedelta(hours=2)


@pytest.mark.postgres
def test_the_postgresql_feedback_is_read_the_same_way(postgres_url, tmp_path):
    served = _rows(3)
    write_history(postgres_url, tmp_path / "spool", served)
    write_feedback(
        postgres_url,
        [label(r.id, "yes", START + timedelta(hours=1, minutes=i)) for i, r in enumerate(served)],
    )
    read = list(read_feedback(postgres_url, page_size=2))
    assert [e.prediction_id for e in read] == [r.id for r in served]
    assert [e.correct for e in read] == [0, 0, 1]
    assert read[1].predicted_at == served[1].created_at


def test_a_feedback_table_without_a_column_read_is_one_clear_error(tmp_path):
    url = f"sqlite:///{tmp_path / 'history.db'}"
    write_history(url, tmp_path / "spool", _rows(1))
    with create_engine(url).begin() as connection:
        connection.execute(text("ALTER TABLE prediction_feedback DROP COLUMN request_id"))
    missing = r"prediction feedback: no such column: \S+request_id"
    with pytest.raises(MonitoringError, match=missing):
        list(read_feedback(url))


def test_feedback_from_an_unreachable_database_is_one_clear_error():
    with pytest.raises(MonitoringError, match="cannot read the prediction feedback"):
        list(read_feedback("postgresql://nobody@127.0.0.1:9/none?connect_timeout=2"))
