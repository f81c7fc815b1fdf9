"""The history database: engines with the settings this package relies on, migrations, the
idempotent insert, and which errors mean "the database, not the record"."""

from __future__ import annotations

import functools
import sqlite3
import time
from pathlib import Path
from typing import Any, Final

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
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
from sqlalchemy.pool import NullPool

from xgbops.config import to_sqlalchemy_url
from xgbops.tables import predictions

from api.core.history.records import CREATED_AT, FIELDS, Row

MIGRATIONS_DIR: Final = Path(__file__).resolve().parents[2] / "migrations"
#: Seconds to wait for a PostgreSQL connection; longer only delays spooling and readiness.
CONNECT_TIMEOUT_S: Final = 2
#: Milliseconds a SQLite writer waits for another process's write lock.
SQLITE_BUSY_TIMEOUT_MS: Final = 5000
#: How SQLAlchemy's DateTime stores a value in SQLite (it keeps no offset: values are UTC).
_SQLITE_DATETIME: Final = "%Y-%m-%d %H:%M:%S.%f"
#: Advisory-lock key that serialises concurrent migrate() calls on one PostgreSQL database.
_MIGRATION_LOCK_KEY: Final = 0x7867626F7073  # "xgbops"
#: Errors that say the database (not the record) is the problem: keep the records, retry later.
#: ProgrammingError is here because a missing table or privilege is a deployment fault.
TRANSIENT: Final = (
    OperationalError,
    InterfaceError,
    InternalError,
    ProgrammingError,
    PoolTimeoutError,
    DisconnectionError,
)


def create_engine_for(database_url: str) -> Engine:
    """An engine for the history database with the settings this module relies on."""
    return _new_engine(make_url(to_sqlalchemy_url(database_url)))


def migrate(database_url: str) -> None:
    """Bring the history database to the newest schema (alembic upgrade head).

    Idempotent, and safe when several processes start at once: they migrate one at a time.
    Creates the folder of a SQLite file if needed.

    Raises:
        sqlalchemy.exc.SQLAlchemyError: the database cannot be reached or migrated.
    """
    url = make_url(to_sqlalchemy_url(database_url))
    database = _sqlite_file(url)
    if database is not None:
        database.parent.mkdir(parents=True, exist_ok=True)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    engine = _new_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            _lock_for_migration(connection)
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    finally:
        engine.dispose()


def _new_engine(url: URL, **kwargs: Any) -> Engine:
    backend = url.get_backend_name()
    if backend == "sqlite":
        engine = create_engine(
            url, pool_pre_ping=True, connect_args={"check_same_thread": False}, **kwargs
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    connect_args = {"connect_timeout": CONNECT_TIMEOUT_S} if backend == "postgresql" else {}
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args, **kwargs)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Let several worker processes write one file: WAL, and wait for a busy writer."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS:d}")
        # Switching a new file to WAL needs an exclusive lock and SQLite does not wait for it
        # (processes starting together would fail): retry for as long as busy_timeout.
        deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
        while cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            try:
                cursor.execute("PRAGMA journal_mode=WAL")  # ":memory:" stays "memory"
                break
            except sqlite3.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
    finally:
        cursor.close()


def _sqlite_file(url: URL) -> Path | None:
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    return None if database.startswith("file:") else Path(database)


def _lock_for_migration(connection: Connection) -> None:
    """Hold a database-wide lock until the migration commits, so concurrent starts queue."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
    elif connection.dialect.name == "sqlite":
        connection.exec_driver_sql("BEGIN IMMEDIATE")


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


def sqlite_values(row: Row) -> Row:
    """``created_at`` as SQLAlchemy stores a DateTime in SQLite (UTC, no offset), so the
    reader's queries and ordering see the same text either way."""
    values = list(row)
    values[CREATED_AT] = values[CREATED_AT].strftime(_SQLITE_DATETIME)
    return tuple(values)


def is_transient(exc: SQLAlchemyError) -> bool:
    """Whether ``exc`` says the database, not the record, is the problem (retry later)."""
    return isinstance(exc, TRANSIENT) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )


def reason_of(exc: SQLAlchemyError) -> str:
    """The driver's message on one line, without SQLAlchemy's SQL echo and help link."""
    cause: BaseException = exc.orig if isinstance(exc, DBAPIError) and exc.orig else exc
    return f"{type(cause).__name__}: {' '.join(str(cause).split())}"[:500]
