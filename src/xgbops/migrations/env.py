"""Alembic environment for the serving database.

``xgbops.database.migrate`` hands over an open connection (``config.attributes``); the
``alembic -c src/xgbops/alembic.ini`` command line connects to ``DATABASE_URL``, else to the
ini's URL.
"""

from __future__ import annotations

# pylint: disable=no-member  # alembic.context is a proxy, filled in when alembic runs this

import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, create_engine, pool

from xgbops.config import to_sqlalchemy_url
from xgbops.tables import metadata

config = context.config


def _database_url() -> str:
    return to_sqlalchemy_url(
        os.environ.get("DATABASE_URL") or config.get_main_option("sqlalchemy.url") or ""
    )


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    if config.config_file_name is not None:  # the command line: log as the ini file says
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    engine = create_engine(_database_url(), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


def _run_offline() -> None:
    context.configure(
        url=_database_url(),
        target_metadata=metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    _run_offline()
else:
    _run_online()
