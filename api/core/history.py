"""Prediction history: every served prediction, written in batches to SQLite or PostgreSQL.

The request path only appends to an in-memory queue. One background thread per process writes
batches in one transaction each. When the database cannot be reached, batches go to a local
JSON-lines spool (one fsync'ed file per process) and are replayed later; inserts ignore ids that
are already stored, so a replay after an ambiguous failure never duplicates a prediction.
"""

from __future__ import annotations

import fcntl
import functools
import json
import math
import os
import sqlite3
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final

import orjson
import structlog
from alembic import command
from alembic.config import Config
from sqlalchemy import (
    Connection,
    Engine,
    RowMapping,
    create_engine,
    event,
    func,
    select,
    text,
)
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

from api.core.tables import predictions

MIGRATIONS_DIR: Final = Path(__file__).resolve().parents[1] / "migrations"
#: Seconds to wait for a PostgreSQL connection; longer only delays spooling and readiness.
CONNECT_TIMEOUT_S: Final = 2
#: Milliseconds a SQLite writer waits for another process's write lock.
SQLITE_BUSY_TIMEOUT_MS: Final = 5000
REJECTED_FILE: Final = "rejected.jsonl"
#: How SQLAlchemy's DateTime stores a value in SQLite (it keeps no offset: values are UTC).
_SQLITE_DATETIME: Final = "%Y-%m-%d %H:%M:%S.%f"
_SPOOL_GLOBS: Final = ("spool-*.jsonl", "replay-*.jsonl")
#: Advisory-lock key that serialises concurrent migrate() calls on one PostgreSQL database.
_MIGRATION_LOCK_KEY: Final = 0x7867626F7073  # "xgbops"
#: Errors that say the database (not the record) is the problem: keep the records, retry later.
#: ProgrammingError is here because a missing table or privilege is a deployment fault.
_TRANSIENT: Final = (
    OperationalError,
    InterfaceError,
    InternalError,
    ProgrammingError,
    PoolTimeoutError,
    DisconnectionError,
)

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class PredictionRecord:
    """One served prediction, as stored; the caller generates ``id`` (uuid4 hex)."""

    id: str
    created_at: datetime  # timezone-aware UTC
    model_name: str
    model_version: str
    input: dict[str, Any]  # the validated record, JSON-serialisable
    probability: float
    label: str
    latency_ms: float
    request_id: str


@dataclass(slots=True)
class PredictionBatch:
    """The predictions of one request, column by column: what the request path hands over.

    Building one record object per prediction cost a batch request 8 % of its time; the writer
    thread turns the columns into rows instead.
    """

    ids: list[str]
    created_at: datetime
    model_name: str
    model_version: str
    inputs: list[dict[str, Any]]
    probabilities: list[float]
    labels: list[str]
    latency_ms: float
    request_id: str

    def __len__(self) -> int:
        return len(self.ids)

    def records(self) -> Iterator[PredictionRecord]:
        """One record per prediction."""
        for prediction_id, record, probability, label in zip(
            self.ids, self.inputs, self.probabilities, self.labels
        ):
            yield PredictionRecord(
                prediction_id,
                self.created_at,
                self.model_name,
                self.model_version,
                record,
                probability,
                label,
                self.latency_ms,
                self.request_id,
            )


_Pending = PredictionRecord | PredictionBatch
_FIELDS: Final = tuple(f.name for f in fields(PredictionRecord))
#: A checked record ready to insert: the values of ``_FIELDS`` in order, ``created_at`` aware
#: UTC and ``input`` already JSON text (serialised once, by orjson).
_Row = tuple[Any, ...]
_INPUT: Final = _FIELDS.index("input")
_CREATED_AT: Final = _FIELDS.index("created_at")


def create_engine_for(database_url: str) -> Engine:
    """An engine for the history database with the settings this module relies on."""
    return _create_engine(make_url(to_sqlalchemy_url(database_url)))


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
    engine = _create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            _lock_for_migration(connection)
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    finally:
        engine.dispose()


class HistoryWriter:
    """Buffers records and writes them in batches from one background thread per process.

    Records are durable once in the database or in ``spool_dir``; the spool also receives the
    files of processes that died with records in it. Call :meth:`close` when the process ends
    (e.g. gunicorn's ``worker_exit``): records still only in memory are lost on a hard exit.
    """

    def __init__(
        self,
        database_url: str,
        spool_dir: Path,
        flush_interval: float = 0.2,
        max_batch: int = 1000,
        retry_interval: float = 1.0,
    ) -> None:
        if flush_interval <= 0 or retry_interval <= 0 or max_batch < 1:
            raise ValueError("flush_interval and retry_interval must be > 0, max_batch >= 1")
        self._engine = _create_engine(make_url(to_sqlalchemy_url(database_url)))
        _insert_sql(self._engine.dialect.name)  # fail now on an unsupported database
        self._spool = _Spool(Path(spool_dir))
        self._flush_interval = flush_interval
        self._max_batch = max_batch
        self._retry_interval = retry_interval
        self._queue: deque[_Pending | threading.Event] = deque()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._online = True
        self._next_retry = 0.0

    @property
    def engine(self) -> Engine:
        """The engine the writer inserts with (e.g. for event listeners)."""
        return self._engine

    def start(self) -> None:
        """Start the writer thread; a no-op if it already runs in this process.

        Call it after the fork (gunicorn ``post_fork``): threads and connections do not survive
        one, so a writer built before the fork drops what it inherited and starts afresh.

        Raises:
            OSError: the spool folder cannot be created.
        """
        if self._pid != os.getpid():
            self._after_fork()
        elif self._thread is not None and self._thread.is_alive():
            return
        self._spool.folder.mkdir(parents=True, exist_ok=True)
        self._stopping = False
        self._next_retry = 0.0  # replay what dead processes left at once
        self._thread = threading.Thread(target=self._run, name="history-writer", daemon=True)
        self._thread.start()
        log.info("history.writer_started", spool_dir=str(self._spool.folder))

    def record(self, record: PredictionRecord) -> None:
        """Queue one record; never blocks on the database and never raises for its trouble."""
        self._queue.append(record)

    def record_batch(self, batch: PredictionBatch) -> None:
        """Queue the predictions of one request; never blocks, never raises."""
        self._queue.append(batch)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every record queued so far is in the database or in the spool.

        Returns:
            True if that happened within ``timeout`` seconds.
        """
        if not self._running():
            return not self._queue
        done = threading.Event()
        self._queue.append(done)
        self._wake.set()
        return done.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Write or spool what is queued, then stop the thread; un-writable records stay spooled."""
        thread = self._thread
        self._stopping = True
        if thread is not None and self._running():
            self._wake.set()
            thread.join(timeout)
            if thread.is_alive():
                log.error("history.close_timeout", queued=len(self._queue))
        elif self._queue and self._pid == os.getpid():
            # Never started in this process: write what was queued here rather than lose it.
            self._spool.folder.mkdir(parents=True, exist_ok=True)
            self._run()

    @property
    def spooled(self) -> int:
        """Records waiting in the spool files of ``spool_dir`` (of every process)."""
        return self._spool.count()

    def database_ok(self) -> tuple[bool, str]:
        """Check that the database answers ``SELECT 1`` (PostgreSQL: within the connect timeout).

        Returns:
            ``(True, "ok")``, or ``(False, reason)`` naming the error (host and port included).
        """
        try:
            with self._engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            return False, reason_of(exc)
        return True, "ok"

    # -- the writer thread -------------------------------------------------------------------

    def _running(self) -> bool:
        return self._pid == os.getpid() and self._thread is not None and self._thread.is_alive()

    def _after_fork(self) -> None:
        self._engine.dispose(close=False)  # the parent's pooled connections are the parent's
        self._spool.release()  # the lock stays with the parent, which still holds the file
        self._wake = threading.Event()
        self._thread = None
        self._pid = os.getpid()

    def _run(self) -> None:
        while not self._stopping:
            self._guarded(self._cycle)
            self._wake.wait(self._flush_interval)
            self._wake.clear()
        self._guarded(self._cycle)
        if self._online and self._spool.files():
            self._guarded(self._replay_spools)
        if self._queue:
            log.error("history.unwritten_at_close", records=len(self._queue))
        self._spool.release()
        self._engine.dispose()
        log.info("history.writer_stopped")

    def _guarded(self, step: Callable[[], None]) -> None:
        try:
            step()
        except Exception:  # pylint: disable=broad-exception-caught
            # A bug must not silently end history for the process: log it, carry on later.
            log.exception("history.writer_error")
            self._next_retry = time.monotonic() + self._retry_interval

    def _cycle(self) -> None:
        self._write_queued()
        now = time.monotonic()
        if now >= self._next_retry:
            self._next_retry = now + self._retry_interval
            self._replay_spools()

    def _write_queued(self) -> None:
        while batch := self._take_batch():
            if not self._store(batch):
                self._queue.extendleft(reversed(batch))  # not durable: keep, retry next cycle
                return

    def _take_batch(self) -> list[_Pending]:
        """Queued predictions up to ``max_batch`` rows (a request's batch is never split)."""
        batch: list[_Pending] = []
        rows = 0
        while rows < self._max_batch:
            try:
                item = self._queue.popleft()
            except IndexError:
                break
            if isinstance(item, PredictionRecord):
                batch.append(item)
                rows += 1
            elif isinstance(item, PredictionBatch):
                batch.append(item)
                rows += len(item)
            elif batch:  # a flush() marker waits until the records before it are durable
                self._queue.appendleft(item)
                break
            else:
                item.set()
        return batch

    def _store(self, batch: list[_Pending]) -> bool:
        """Insert or spool ``batch``; False if neither worked (the caller keeps it queued)."""
        rows: list[_Row] = []
        invalid: list[tuple[Any, str]] = []
        for item in batch:
            if isinstance(item, PredictionBatch):
                try:
                    rows.extend(_batch_rows(item))
                    continue
                except (TypeError, ValueError):
                    pass  # find the bad records one by one below
            for record in item.records() if isinstance(item, PredictionBatch) else (item,):
                try:
                    rows.append(_to_row(record))
                except (TypeError, ValueError) as exc:
                    invalid.append((_fields_of(record), str(exc)))
        if invalid:
            self._spool.reject(invalid)
        left = self._write_rows(rows) if rows and self._online else rows
        return not left or self._spool_rows(left)

    def _write_rows(self, rows: list[_Row]) -> list[_Row]:
        """Insert ``rows`` in one transaction; returns the rows to keep for a later attempt."""
        try:
            self._insert_rows(rows)
            return []
        except SQLAlchemyError as exc:
            if _is_transient(exc):
                self._go_offline(exc)
                return rows
            log.warning("history.batch_refused", records=len(rows), error=reason_of(exc))
        # One bad record must not wedge the queue: find it by inserting one at a time.
        for index, row in enumerate(rows):
            try:
                self._insert_rows([row])
            except SQLAlchemyError as exc:
                if _is_transient(exc):
                    self._go_offline(exc)
                    return rows[index:]
                self._spool.reject([(_readable(row), reason_of(exc))])
        return []

    def _insert_rows(self, rows: Sequence[_Row]) -> None:
        # The driver's executemany, not a Core insert(): SQLAlchemy's per-value processing cost
        # ~50 us a row on PostgreSQL, in a thread that shares the GIL with the requests.
        if self._engine.dialect.name == "sqlite":
            rows = [_sqlite_values(row) for row in rows]
        with self._engine.begin() as connection:
            connection.exec_driver_sql(_insert_sql(connection.dialect.name), list(rows))

    def _go_offline(self, exc: SQLAlchemyError) -> None:
        if self._online:
            log.warning("history.database_unavailable", error=reason_of(exc))
        self._online = False
        self._next_retry = time.monotonic() + self._retry_interval

    # -- spool -------------------------------------------------------------------------------

    def _spool_rows(self, rows: list[_Row]) -> bool:
        try:
            name = self._spool.append(rows)
        except OSError as exc:
            log.error("history.spool_failed", records=len(rows), error=str(exc))
            self._spool.release()
            return False
        log.warning("history.spooled", records=len(rows), file=name)
        return True

    def _replay_spools(self) -> None:
        """Write spooled records (ours and those of dead processes) to the database."""
        if not self._spool.files():
            self._online = True
            return
        if not self._online:
            if not self.database_ok()[0]:
                return
            self._online = True
            log.info("history.database_available")
        self._spool.release()  # our own file is claimed like any other
        for path in self._spool.files():
            if not self._replay_file(path):
                return

    def _replay_file(self, path: Path) -> bool:
        """Claim ``path`` and insert its records; False if the database failed meanwhile."""
        claimed = _claim(path)
        if claimed is None:
            return True  # its process is alive (holds the lock) or another one took it
        replay_path, handle = claimed
        with handle:  # closing releases the lock: a kept file is claimed again later
            replayed = 0
            for rows in self._read_spool(handle):
                if self._write_rows(rows):
                    log.warning("history.replay_interrupted", file=replay_path.name)
                    return False
                replayed += len(rows)
            replay_path.unlink()
        log.info("history.replayed", records=replayed, file=path.name)
        return True

    def _read_spool(self, handle: IO[bytes]) -> Iterator[list[_Row]]:
        rows: list[_Row] = []
        for line in handle:
            try:
                rows.append(_to_row(_from_json(line)))
            except (TypeError, ValueError, KeyError) as exc:  # e.g. a line torn by a crash
                entry = (line.decode("utf-8", "replace"), f"unreadable spool line: {exc}")
                self._spool.reject([entry])
                continue
            if len(rows) >= self._max_batch:
                yield rows
                rows = []
        if rows:
            yield rows


class _Spool:
    """The spool folder: this process's own (locked) file, files to replay, rejected records."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._own: IO[str] | None = None

    def append(self, rows: list[_Row]) -> str:
        """Append ``rows`` to this process's file and fsync it; returns the file's name.

        Raises:
            OSError: the rows could not be made durable.
        """
        lines = "".join(orjson.dumps(_jsonable(row)).decode() + "\n" for row in rows)
        handle = self._own or self._open_own()
        handle.write(lines)
        handle.flush()
        os.fsync(handle.fileno())
        return Path(handle.name).name

    def release(self) -> None:
        """Close (and unlock) this process's file: from now on any process may replay it."""
        if self._own is not None:
            self._own.close()
            self._own = None

    def files(self) -> list[Path]:
        """Spool files of every process, including claimed ones not yet replayed."""
        return sorted(path for pattern in _SPOOL_GLOBS for path in self.folder.glob(pattern))

    def count(self) -> int:
        """Records in all spool files."""
        total = 0
        for path in self.files():
            try:
                total += _count_lines(path)
            except FileNotFoundError:
                continue  # replayed and deleted meanwhile
        return total

    def reject(self, entries: list[tuple[Any, str]]) -> None:
        """Set aside records the database will never take, with the reason, for a human."""
        now = datetime.now(UTC).isoformat()
        lines = "".join(
            json.dumps({"rejected_at": now, "error": error, "record": record}, default=repr) + "\n"
            for record, error in entries
        )
        for record, error in entries:
            log.error("history.rejected", error=error, record=record)
        try:
            with (self.folder / REJECTED_FILE).open("a", encoding="utf-8") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)  # other processes append to it too
                handle.write(lines)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            log.error("history.reject_failed", records=len(entries), error=str(exc))

    def _open_own(self) -> IO[str]:
        """Open and lock this process's file; the lock tells others that its process lives."""
        pid = os.getpid()
        names = (f"spool-{pid}.jsonl", f"spool-{pid}-{uuid.uuid4().hex[:8]}.jsonl")
        for name in names:  # the second name if another process is replaying the first
            path = self.folder / name
            handle = path.open("a", encoding="utf-8")
            if _try_lock(handle) and _same_file(handle, path):
                self._own = handle
                return handle
            handle.close()
        raise OSError(f"cannot lock a spool file in {self.folder}")


class HistoryReader:
    """Reads the prediction history for the API."""

    def __init__(self, database_url: str) -> None:
        self._engine = _create_engine(make_url(to_sqlalchemy_url(database_url)))

    def page(
        self,
        *,
        limit: int = 50,
        offset: int = 0,
        since: datetime | None = None,
        until: datetime | None = None,
        model_version: str | None = None,
    ) -> tuple[list[PredictionRecord], int]:
        """One page of records, newest first (ties by id, so pages are stable).

        Args:
            since: earliest ``created_at``, inclusive; a naive value is taken as UTC.
            until: latest ``created_at``, exclusive.

        Returns:
            The records and how many match the filters in all.

        Raises:
            ValueError: ``limit`` or ``offset`` is negative.
            sqlalchemy.exc.SQLAlchemyError: the database cannot be read.
        """
        if limit < 0 or offset < 0:
            raise ValueError("limit and offset must be >= 0")
        where = []
        if since is not None:
            where.append(predictions.c.created_at >= _utc(since))
        if until is not None:
            where.append(predictions.c.created_at < _utc(until))
        if model_version is not None:
            where.append(predictions.c.model_version == model_version)
        query = (
            select(predictions)
            .where(*where)
            .order_by(predictions.c.created_at.desc(), predictions.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        with self._engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
            total = connection.execute(select(func.count()).where(*where).select_from(predictions))
            return [_from_row(row) for row in rows], int(total.scalar_one())

    def count(self) -> int:
        """How many records are stored."""
        with self._engine.connect() as connection:
            query = select(func.count()).select_from(predictions)
            return int(connection.execute(query).scalar_one())

    @property
    def engine(self) -> Engine:
        """The pooled engine the reader queries with (the feedback store writes through it)."""
        return self._engine

    def close(self) -> None:
        """Close the pooled connections."""
        self._engine.dispose()


# -- helpers -----------------------------------------------------------------------------------


def _create_engine(url: URL, **kwargs: Any) -> Engine:
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
def _insert_sql(dialect: str) -> str:
    """An insert that ignores ids already stored: replays after an ambiguous failure are safe.

    Raises:
        ValueError: the database is neither SQLite nor PostgreSQL.
    """
    columns = ", ".join(_FIELDS)
    if dialect == "postgresql":
        values = ", ".join("%s::jsonb" if name == "input" else "%s" for name in _FIELDS)
    elif dialect == "sqlite":
        values = ", ".join("?" for _ in _FIELDS)
    else:
        raise ValueError(f"prediction history supports sqlite and postgresql, not {dialect}")
    # Built from the table's own names and placeholders only: no value is ever formatted in.
    return (
        f"INSERT INTO {predictions.name} ({columns}) VALUES ({values}) "  # nosec B608
        "ON CONFLICT (id) DO NOTHING"
    )


def _sqlite_values(row: _Row) -> _Row:
    """``created_at`` as SQLAlchemy stores a DateTime in SQLite (UTC, no offset), so the
    reader's queries and ordering see the same text either way."""
    values = list(row)
    values[_CREATED_AT] = values[_CREATED_AT].strftime(_SQLITE_DATETIME)
    return tuple(values)


def _is_transient(exc: SQLAlchemyError) -> bool:
    return isinstance(exc, _TRANSIENT) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )


def reason_of(exc: SQLAlchemyError) -> str:
    """The driver's message on one line, without SQLAlchemy's SQL echo and help link."""
    cause: BaseException = exc.orig if isinstance(exc, DBAPIError) and exc.orig else exc
    return f"{type(cause).__name__}: {' '.join(str(cause).split())}"[:500]


def _utc(moment: datetime) -> datetime:
    """Aware UTC; naive values are taken as UTC (SQLite stores no offset)."""
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _to_row(record: PredictionRecord) -> _Row:
    """Check a record and make it a row.

    Raises:
        TypeError, ValueError: the record can never be stored.
    """
    return _rows_of(record, [(record.id, record.input, record.probability, record.label)])[0]


def _batch_rows(batch: PredictionBatch) -> list[_Row]:
    """The rows of ``batch``, each checked as :func:`_to_row` checks a record.

    Raises:
        TypeError, ValueError: some record can never be stored (the caller finds which).
    """
    if not len(batch.inputs) == len(batch.probabilities) == len(batch.labels) == len(batch):
        raise ValueError("a batch's columns differ in length")
    return _rows_of(batch, zip(batch.ids, batch.inputs, batch.probabilities, batch.labels))


def _rows_of(
    shared: PredictionRecord | PredictionBatch, scored: Iterable[tuple[Any, Any, Any, Any]]
) -> list[_Row]:
    """Rows of the ``scored`` records (id, input, probability, label), which share the time, model,
    latency and request of ``shared``: those are checked once, the rest row by row.

    Raises:
        TypeError, ValueError: a value can never be stored.
    """
    for name in ("model_name", "model_version", "request_id"):
        if not isinstance(getattr(shared, name), str):
            raise TypeError(f"{name} must be a string")
    if not isinstance(shared.created_at, datetime):
        raise TypeError("created_at must be a datetime")
    created_at, latency_ms = _utc(shared.created_at), float(shared.latency_ms)
    rows = []
    for prediction_id, record, probability, label in scored:
        for name, value in (("id", prediction_id), ("label", label)):
            if not isinstance(value, str):
                raise TypeError(f"{name} must be a string")
        if not isinstance(record, dict):
            raise TypeError("input must be a JSON object")
        _check_finite(record)  # PostgreSQL's JSON has no NaN/Infinity (orjson writes null)
        probability = float(probability)
        if not (math.isfinite(probability) and math.isfinite(latency_ms)):
            raise ValueError("probability and latency_ms must be finite")
        rows.append(
            (
                prediction_id,
                created_at,
                shared.model_name,
                shared.model_version,
                _input_json(record),
                probability,
                label,
                latency_ms,
                shared.request_id,
            )
        )
    return rows


def _input_json(record: dict[str, Any]) -> str:
    """``record`` as JSON text: orjson, or the standard library for what orjson refuses
    (integers beyond 64 bits).

    Raises:
        TypeError: ``record`` holds a value JSON cannot represent.
    """
    try:
        return orjson.dumps(record).decode()
    except orjson.JSONEncodeError:
        return json.dumps(record, allow_nan=False)  # TypeError for what is not JSON at all


def _check_finite(value: Any) -> None:
    """Raises ValueError if ``value`` holds a NaN or infinite float at any depth."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("input holds NaN or Infinity, which JSON cannot store")
    elif isinstance(value, dict):
        for item in value.values():
            _check_finite(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_finite(item)


def _fields_of(record: PredictionRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in _FIELDS}


def _readable(row: _Row) -> dict[str, Any]:
    """The row as plain JSON values, for the rejected-records file a person reads."""
    return {**_jsonable(row), "input": orjson.loads(row[_INPUT])}


def _jsonable(row: _Row) -> dict[str, Any]:
    """The spool format: the record's fields, ``created_at`` in ISO 8601 with its offset."""
    values = dict(zip(_FIELDS, row))
    values["created_at"] = row[_CREATED_AT].isoformat()
    values["input"] = orjson.Fragment(row[_INPUT])  # already JSON: embedded, not re-encoded
    return values


def _from_json(line: bytes) -> PredictionRecord:
    data = json.loads(line)
    if not isinstance(data, dict) or set(data) != set(_FIELDS):
        raise ValueError(f"expected the fields {', '.join(_FIELDS)}")
    return PredictionRecord(**{**data, "created_at": datetime.fromisoformat(data["created_at"])})


def _from_row(row: RowMapping) -> PredictionRecord:
    values = {name: row[name] for name in _FIELDS}
    values["created_at"] = _utc(values["created_at"])
    return PredictionRecord(**values)


def _claim(path: Path) -> tuple[Path, IO[bytes]] | None:
    """Take a spool file over: lock it (fails while its process lives), then rename it."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return None
    if not _try_lock(handle) or not _same_file(handle, path):
        handle.close()
        return None
    claimed = path.with_name(f"replay-{os.getpid()}-{uuid.uuid4().hex}.jsonl")
    try:
        path.rename(claimed)
    except OSError:
        handle.close()
        return None
    return claimed, handle


def _count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(
            chunk.count(b"\n") for chunk in iter(functools.partial(handle.read, 1 << 20), b"")
        )


def _try_lock(handle: IO[Any]) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _same_file(handle: IO[Any], path: Path) -> bool:
    """Whether ``path`` still names the opened file (not renamed by a claimer meanwhile)."""
    try:
        named = path.stat()
    except FileNotFoundError:
        return False
    opened = os.fstat(handle.fileno())
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)
