"""The serving database (prediction history, retraining jobs, API keys): engines with the
settings its writers rely on, and its migrations, beside the one table definition
(:mod:`xgbops.tables`). The API migrates at start; ``xgbops keys`` may run before any API has.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any, Final

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from xgbops.config import to_sqlalchemy_url

MIGRATIONS_DIR: Final = Path(__file__).resolve().parent / "migrations"
#: Seconds to wait for a PostgreSQL connection; longer only delays spooling and readiness.
CONNECT_TIMEOUT_S: Final = 2
#: Milliseconds a SQLite writer waits for another process's write lock.
SQLITE_BUSY_TIMEOUT_MS: Final = 5000
#: Advisory-lock key that serialises concurrent migrate() calls on one PostgreSQL database.
_MIGRATION_LOCK_KEY: Final = 0x7867626F7073  # "xgbops"


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
