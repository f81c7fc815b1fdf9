"""The history database as the writer sees it: the idempotent insert, and which errors mean
"the database, not the record". Engines and migrations are :mod:`xgbops.database`'s."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import datetime
from typing import Final

from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    InternalError,
    OperationalError,
    ProgrammingError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from xgbops.database import create_engine_for, migrate
from xgbops.tables import predictions

from api.core.history.records import CREATED_AT, FIELDS, Row

#: How SQLAlchemy's DateTime stores a value in SQLite (it keeps no offset: values are UTC).
_SQLITE_DATETIME: Final = "%Y-%m-%d %H:%M:%S.%f"
#: Errors that say the database (not the record) is the problem: keep the records, retry later.
#: ProgrammingError is here because a missing table or privilege is a deployment fault.
__all__ = ["TRANSIENT", "create_engine_for", "insert_sql", "is_transient", "migrate", "reason_of"]

TRANSIENT: Final = (
    OperationalError,
    InterfaceError,
    InternalError,
    ProgrammingError,
    PoolTimeoutError,
    DisconnectionError,
)


@functools.cache
def insert_sql(dialect: str) -> str:
    """An insert that ignores ids already stored: replays after an ambiguous failure are safe.

    Raises:
        ValueError: the database is neither SQLite nor PostgreSQL.
    """
    columns = ", ".join(FIELDS)
    if dialect == "postgresql":
        values = ", ".join("%s::jsonb" if name == "input" else "%s" for name in FIELDS)
    elif dialect == "sqlite":
        values = ", ".join("?" for _ in FIELDS)
    else:
        raise ValueError(f"prediction history supports sqlite and postgresql, not {dialect}")
    # Built from the table's own names and placeholders only: no value is ever formatted in.
    return (
        f"INSERT INTO {predictions.name} ({columns}) VALUES ({values}) "  # nosec B608
        "ON CONFLICT (id) DO NOTHING"
    )


def sqlite_values(rows: Iterable[Row]) -> list[Row]:
    """The rows with ``created_at`` as SQLAlchemy stores a DateTime in SQLite (UTC, no offset),
    so the reader's queries and ordering see the same text either way. The rows of a request
    share one time: it is formatted once."""
    texts: dict[datetime, str] = {}
    converted = []
    for row in rows:
        when = row[CREATED_AT]
        text = texts.get(when)
        if text is None:
            text = texts[when] = when.strftime(_SQLITE_DATETIME)
        converted.append((*row[:CREATED_AT], text, *row[CREATED_AT + 1 :]))
    return converted


def is_transient(exc: SQLAlchemyError) -> bool:
    """Whether ``exc`` says the database, not the record, is the problem (retry later)."""
    return isinstance(exc, TRANSIENT) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )


def reason_of(exc: SQLAlchemyError) -> str:
    """The driver's message on one line, without SQLAlchemy's SQL echo and help link."""
    cause: BaseException = exc.orig if isinstance(exc, DBAPIError) and exc.orig else exc
    return f"{type(cause).__name__}: {' '.join(str(cause).split())}"[:500]
