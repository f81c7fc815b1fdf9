"""Read the prediction history the API writes (``settings.history_url``), read-only.

The ``predictions`` and ``prediction_feedback`` tables are :mod:`xgbops.tables`, the definition
the API writes and migrates. Rows are read in keyset pages ordered by (time, id): ``created_at``
for predictions, ``received_at`` for feedback. Memory stays bounded whatever the size of the
history, and a page boundary never skips or repeats a row. Each row comes back as the event it
is shipped as: :class:`~xgbops.monitoring.events.PredictionEvent`, or
:class:`~xgbops.monitoring.events.FeedbackEvent` for a label joined with its prediction.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    ColumnElement,
    Engine,
    Select,
    and_,
    create_engine,
    inspect,
    or_,
    select,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from xgbops.config import to_sqlalchemy_url
from xgbops.monitoring import MonitoringError
from xgbops.monitoring.events import FeedbackEvent, PredictionEvent, utc
from xgbops.tables import prediction_feedback, predictions

#: Rows fetched per query.
PAGE_SIZE = 5000
TABLE = predictions.name
#: The columns of ``predictions`` that monitoring reads.
COLUMNS = (
    "id",
    "created_at",
    "model_name",
    "model_version",
    "input",
    "probability",
    "label",
    "latency_ms",
    "request_id",
)
FEEDBACK_TABLE = prediction_feedback.name
#: The columns of the API's feedback table (the true label of a prediction) monitoring reads.
FEEDBACK_COLUMNS = ("prediction_id", "label", "received_at", "request_id")
#: The columns of ``predictions`` a feedback event takes from the prediction it judges.
JUDGED_COLUMNS = ("id", "created_at", "model_name", "model_version", "probability", "label")


def _engine(database_url: str, *tables: str) -> Engine | None:
    """An engine for the history, or None when there is no history yet (no file, or one of
    ``tables`` missing: e.g. a database not yet migrated to the feedback table)."""
    url = make_url(to_sqlalchemy_url(database_url))  # psycopg 3, as the API uses
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
        return None  # connecting would create an empty database file
    engine = create_engine(url, poolclass=NullPool)
    inspector = inspect(engine)
    if not all(inspector.has_table(name) for name in tables):
        engine.dispose()
        return None
    return engine


def read_predictions(
    database_url: str,
    positive_label: str,
    since: datetime | None = None,
    until: datetime | None = None,
    model_name: str | None = None,
    page_size: int = PAGE_SIZE,
) -> Iterator[PredictionEvent]:
    """Stored predictions, oldest first, as prediction events.

    Args:
        database_url: the history database (``settings.history_url``).
        positive_label: the dataset's positive label (sets each event's ``positive``).
        since: earliest ``created_at``, inclusive (naive values are UTC).
        until: latest ``created_at``, exclusive.
        model_name: only this model's predictions.
        page_size: rows per query.

    Yields:
        One event per row; none when the history does not exist yet.

    Raises:
        MonitoringError: the database cannot be read, or its table lacks a column.
    """
    try:
        engine = _engine(database_url, TABLE)
        if engine is None:
            return
        try:
            column = predictions.c
            query = select(*(column[name] for name in COLUMNS)).where(
                *_window(column.created_at, since, until)
            )
            if model_name is not None:
                query = query.where(column.model_name == model_name)
            for row in _pages(engine, query, (column.created_at, column.id), page_size):
                yield _event(row, positive_label)
        finally:
            engine.dispose()
    except SQLAlchemyError as exc:
        raise MonitoringError(f"cannot read the prediction history: {_reason(exc)}") from exc


def read_feedback(
    database_url: str,
    since: datetime | None = None,
    until: datetime | None = None,
    model_name: str | None = None,
    page_size: int = PAGE_SIZE,
) -> Iterator[FeedbackEvent]:
    """Labels clients reported (``prediction_feedback``), each joined with the prediction it
    judges, oldest ``received_at`` first, as feedback events.

    An inner join: a label whose prediction is not stored yet (still buffered by the API, or in
    its spool) is left out, and comes back once the prediction is stored, with the same
    ``received_at`` (so a re-read from before the watermark finds it).

    Args:
        database_url: the history database (``settings.history_url``).
        since: earliest ``received_at``, inclusive (naive values are UTC).
        until: latest ``received_at``, exclusive.
        model_name: only labels of this model's predictions.
        page_size: rows per query.

    Yields:
        One event per labelled, stored prediction; none when there is no history or no
        feedback table yet.

    Raises:
        MonitoringError: the database cannot be read, or a table lacks a column.
    """
    try:
        engine = _engine(database_url, TABLE, FEEDBACK_TABLE)
        if engine is None:
            return
        try:
            label, judged = prediction_feedback.c, predictions.c
            query = (
                select(
                    label.prediction_id,
                    label.received_at,
                    label.request_id,
                    label.label.label("actual_label"),
                    judged.created_at,
                    judged.model_name,
                    judged.model_version,
                    judged.probability,
                    judged.label.label("predicted_label"),
                )
                .join_from(prediction_feedback, predictions, label.prediction_id == judged.id)
                .where(*_window(label.received_at, since, until))
            )
            if model_name is not None:
                query = query.where(judged.model_name == model_name)
            for row in _pages(engine, query, (label.received_at, label.prediction_id), page_size):
                yield _feedback_event(row)
        finally:
            engine.dispose()
    except SQLAlchemyError as exc:
        raise MonitoringError(f"cannot read the prediction feedback: {_reason(exc)}") from exc


def _window(
    column: ColumnElement[Any], since: datetime | None, until: datetime | None
) -> list[ColumnElement[bool]]:
    """``since <= column < until``, each bound only when given (naive values are UTC)."""
    where = []
    if since is not None:
        where.append(column >= utc(since))
    if until is not None:
        where.append(column < utc(until))
    return where


def _pages(
    engine: Engine,
    query: Select[Any],
    order: tuple[Column[Any], Column[Any]],
    page_size: int,
) -> Iterator[dict[str, Any]]:
    """The rows of ``query`` in keyset pages ordered by ``order`` (a time, then a unique id);
    both columns must be selected under their own names."""
    time, key = order
    after: tuple[Any, Any] | None = None
    while True:
        page = query
        if after is not None:
            page = page.where(or_(time > after[0], and_(time == after[0], key > after[1])))
        with engine.connect() as connection:
            result = connection.execute(page.order_by(time, key).limit(page_size))
            rows = [dict(row) for row in result.mappings()]
        yield from rows
        if len(rows) < page_size:
            return
        after = (rows[-1][time.key], rows[-1][key.key])


def _reason(exc: SQLAlchemyError) -> str:
    """The database's own message, on one line, bounded."""
    return " ".join(str(getattr(exc, "orig", None) or exc).split())[:300]


def _time(value: Any) -> datetime:
    """A stored time as aware UTC (SQLite keeps text; a raw value may not be parsed)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return utc(value)


def _feedback_event(row: dict[str, Any]) -> FeedbackEvent:
    actual, predicted = str(row["actual_label"]), str(row["predicted_label"])
    return FeedbackEvent(
        timestamp=_time(row["received_at"]),
        prediction_id=str(row["prediction_id"]),
        model_name=str(row["model_name"]),
        model_version=str(row["model_version"]),
        predicted_label=predicted,
        actual_label=actual,
        correct=int(actual == predicted),
        probability=float(row["probability"]),
        predicted_at=_time(row["created_at"]),
        request_id=None if row["request_id"] is None else str(row["request_id"]),
    )


def _event(row: dict[str, Any], positive_label: str) -> PredictionEvent:
    return PredictionEvent(
        timestamp=_time(row["created_at"]),
        prediction_id=str(row["id"]),
        model_name=str(row["model_name"]),
        model_version=str(row["model_version"]),
        probability=float(row["probability"]),
        label=str(row["label"]),
        positive=int(row["label"] == positive_label),
        latency_ms=row["latency_ms"],
        request_id=row["request_id"],
        source="history",
        input=_json(row["input"]),
    )


def _json(value: Any) -> dict[str, Any]:
    """The input column as a dict (a database without a JSON type hands back text)."""
    if isinstance(value, (str, bytes)):
        value = json.loads(value)
    return dict(value or {})
