"""Reading the prediction history: the API's table, written by the API's own writer, reflected
from the database (src/ never imports api/), and read back as prediction events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, text

from api.core import tables
from tests.monitoring.history_rows import records, write_history
from xgbops.monitoring import MonitoringError
from xgbops.monitoring.history import COLUMNS, read_predictions

START = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)


def test_every_column_read_is_one_of_the_apis():
    assert set(COLUMNS) <= {c.name for c in tables.predictions.columns}


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
    with pytest.raises(MonitoringError, match=r"no column\(s\) \['model_name'"):
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
