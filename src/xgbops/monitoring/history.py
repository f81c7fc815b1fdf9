"""Read the prediction history the API writes (``settings.history_url``), read-only.

``src/`` never imports ``api/``, so the ``predictions`` table is not imported from
``api/core/tables.py``: it is reflected from the database itself (SQLAlchemy Core), which is
the one definition both sides agree on, and checked for the columns monitoring reads. Rows are
read in keyset pages ordered by (``created_at``, ``id``): memory stays bounded whatever the size
of the history, and a page boundary never skips or repeats a row. Each row comes back as the
:class:`~xgbops.monitoring.events.PredictionEvent` it is shipped as.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, MetaData, Table, and_, create_engine, inspect, or_, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from xgbops.config import to_sqlalchemy_url
from xgbops.monitoring import MonitoringError
from xgbops.monitoring.events import PredictionEvent, utc

#: Rows fetched per query.
PAGE_SIZE = 5000
TABLE = "predictions"
#: The columns of the API's table (api/core/tables.py) that monitoring reads.
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


def _engine(database_url: str) -> Engine | None:
    """An engine for the history, or None when there is no history yet (no file, no table)."""
    url = make_url(to_sqlalchemy_url(database_url))  # psycopg 3, as the API uses
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
        return None  # connecting would create an empty database file
    engine = create_engine(url, poolclass=NullPool)
    if not inspect(engine).has_table(TABLE):
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
        engine = _engine(database_url)
        if engine is None:
            return
        try:
            table = Table(TABLE, MetaData(), autoload_with=engine)
            missing = [name for name in COLUMNS if name not in table.c]
            if missing:
                raise MonitoringError(f"the {TABLE} table has no column(s) {missing}")
            for row in _pages(engine, table, (since, until), model_name, page_size):
                yield _event(row, positive_label)
        finally:
            engine.dispose()
    except SQLAlchemyError as exc:
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())[:300]
        raise MonitoringError(f"cannot read the prediction history: {reason}") from exc


def _pages(
    engine: Engine,
    table: Table,
    window: tuple[datetime | None, datetime | None],
    model_name: str | None,
    page_size: int,
) -> Iterator[dict[str, Any]]:
    column = table.c
    since, until = window
    where = []
    if since is not None:
        where.append(column.created_at >= utc(since))
    if until is not None:
        where.append(column.created_at < utc(until))
    if model_name is not None:
        where.append(column.model_name == model_name)
    after: tuple[Any, Any] | None = None
    while True:
        page_where = list(where)
        if after is not None:
            page_where.append(
                or_(
                    column.created_at > after[0],
                    and_(column.created_at == after[0], column.id > after[1]),
                )
            )
        query = (
            select(*(column[name] for name in COLUMNS))
            .where(*page_where)
            .order_by(column.created_at, column.id)
            .limit(page_size)
        )
        with engine.connect() as connection:
            rows = [dict(row) for row in connection.execute(query).mappings()]
        yield from rows
        if len(rows) < page_size:
            return
        after = (rows[-1]["created_at"], rows[-1]["id"])


def _event(row: dict[str, Any], positive_label: str) -> PredictionEvent:
    created = row["created_at"]
    if isinstance(created, str):  # SQLite keeps text; reflection may not know it is a date
        created = datetime.fromisoformat(created)
    return PredictionEvent(
        timestamp=utc(created),
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
