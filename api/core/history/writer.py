"""The write-behind writer: the request path queues, one thread per process writes batches."""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import structlog
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from api.core import metrics
from api.core.history.records import (
    Pending,
    PredictionBatch,
    PredictionRecord,
    Row,
    batch_rows,
    fields_of,
    from_json,
    readable,
    to_row,
)
from api.core.history.journal import Journal, Segment, journal_line
from api.core.history.spool import Spool, claim
from api.core.history.store import (
    create_engine_for,
    insert_sql,
    is_transient,
    reason_of,
    sqlite_values,
)

log = structlog.get_logger(__name__)

#: What the writer thread acts on in queue order: a flush() waiting, a journal segment to delete.
_Marker = threading.Event | Segment


class HistoryWriter:
    """Buffers records and writes them in batches from one background thread per process.

    Records are durable once in the database or in ``spool_dir``; the spool also receives the
    files of processes that died with records in it. Until then they are in this process's
    journal (:mod:`.journal`), so a process killed outright loses none it acknowledged. Call
    :meth:`close` when the process ends (e.g. gunicorn's ``worker_exit``).
    """

    def __init__(
        self,
        database_url: str,
        spool_dir: Path,
        flush_interval: float = 0.2,
        max_batch: int = 1000,
        retry_interval: float = 1.0,
        engine: Engine | None = None,
    ) -> None:
        """``engine``: the worker's pool, shared with the reader (one is made if not given)."""
        if flush_interval <= 0 or retry_interval <= 0 or max_batch < 1:
            raise ValueError("flush_interval and retry_interval must be > 0, max_batch >= 1")
        self._engine = engine or create_engine_for(database_url)
        insert_sql(self._engine.dialect.name)  # fail now on an unsupported database
        self._spool = Spool(Path(spool_dir))
        self._flush_interval = flush_interval
        self._max_batch = max_batch
        self._retry_interval = retry_interval
        self._intake = _Intake(self._spool.folder)
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
        """Journal and queue one record; never blocks on the database, never raises."""
        self._intake.add(record)

    def record_batch(self, batch: PredictionBatch) -> None:
        """Journal and queue the predictions of one request; never blocks, never raises."""
        self._intake.add(batch)

    def spool_ok(self) -> tuple[bool, str]:
        """Whether the last write to the spool folder (journal or spool) succeeded.

        Returns:
            ``(True, "ok")``, or ``(False, reason)`` with the operating system's message.
        """
        error = self._intake.error or self._spool.error
        return (False, error) if error else (True, "ok")

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every record queued so far is in the database or in the spool.

        Returns:
            True if that happened within ``timeout`` seconds.
        """
        if not self._running():
            return not self._intake.queue
        done = threading.Event()
        self._intake.queue.append(done)
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
                log.error("history.close_timeout", queued=len(self._intake.queue))
        elif self._intake.queue and self._pid == os.getpid():
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
            metrics.observe_database(False, "ping")
            return False, reason_of(exc)
        metrics.observe_database(True, "ping")
        return True, "ok"

    # -- the writer thread -------------------------------------------------------------------

    def _running(self) -> bool:
        return self._pid == os.getpid() and self._thread is not None and self._thread.is_alive()

    def _after_fork(self) -> None:
        self._engine.dispose(close=False)  # the parent's pooled connections are the parent's
        self._spool.release()  # the lock stays with the parent, which still holds the file
        self._intake.after_fork()
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
        if self._intake.queue:
            log.error("history.unwritten_at_close", records=len(self._intake.queue))
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
        self._intake.rotate()
        self._write_queued()
        metrics.observe_queue(len(self._intake.queue))
        now = time.monotonic()
        if now >= self._next_retry:
            self._next_retry = now + self._retry_interval
            self._replay_spools()

    def _write_queued(self) -> None:
        while batch := self._take_batch():
            if not self._store(batch):
                self._intake.queue.extendleft(
                    reversed(batch)
                )  # not durable: keep, retry next cycle
                return

    def _take_batch(self) -> list[Pending]:
        """Queued predictions up to ``max_batch`` rows (a request's batch is never split)."""
        batch: list[Pending] = []
        rows = 0
        while rows < self._max_batch:
            try:
                item = self._intake.queue.popleft()
            except IndexError:
                break
            if isinstance(item, PredictionRecord):
                batch.append(item)
                rows += 1
            elif isinstance(item, PredictionBatch):
                batch.append(item)
                rows += len(item)
            elif batch:  # a marker waits until the records before it are durable
                self._intake.queue.appendleft(item)
                break
            elif isinstance(item, Segment):
                Journal.retire(item)
            else:
                item.set()
        return batch

    def _store(self, batch: list[Pending]) -> bool:
        """Insert or spool ``batch``; False if neither worked (the caller keeps it queued)."""
        rows = self._checked_rows(batch)
        left = self._write_rows(rows) if rows and self._online else rows
        return not left or self._spool_rows(left)

    def _checked_rows(self, batch: Iterable[Pending]) -> list[Row]:
        """The rows of ``batch``; records that can never be stored go to the rejected file."""
        rows: list[Row] = []
        invalid: list[tuple[Any, str]] = []
        for item in batch:
            if isinstance(item, PredictionBatch):
                try:
                    rows.extend(batch_rows(item))
                    continue
                except (TypeError, ValueError):
                    pass  # find the bad records one by one below
            for record in item.records() if isinstance(item, PredictionBatch) else (item,):
                try:
                    rows.append(to_row(record))
                except (TypeError, ValueError) as exc:
                    invalid.append((fields_of(record), str(exc)))
        if invalid:
            self._spool.reject(invalid)
        return rows

    def _write_rows(self, rows: list[Row]) -> list[Row]:
        """Insert ``rows`` in one transaction; returns the rows to keep for a later attempt."""
        try:
            self._insert_rows(rows)
            metrics.observe_database(True, "write")
            return []
        except SQLAlchemyError as exc:
            if is_transient(exc):
                self._go_offline(exc)
                return rows
            log.warning("history.batch_refused", records=len(rows), error=reason_of(exc))
        # One bad record must not wedge the queue: find it by inserting one at a time.
        for index, row in enumerate(rows):
            try:
                self._insert_rows([row])
            except SQLAlchemyError as exc:
                if is_transient(exc):
                    self._go_offline(exc)
                    return rows[index:]
                self._spool.reject([(readable(row), reason_of(exc))])
        return []

    def _insert_rows(self, rows: Sequence[Row]) -> None:
        # The driver's executemany, not a Core insert(): SQLAlchemy's per-value processing cost
        # ~50 us a row on PostgreSQL, in a thread that shares the GIL with the requests.
        if self._engine.dialect.name == "sqlite":
            rows = sqlite_values(rows)
        with self._engine.begin() as connection:
            connection.exec_driver_sql(insert_sql(connection.dialect.name), list(rows))

    def _go_offline(self, exc: SQLAlchemyError) -> None:
        metrics.observe_database(False, "write")
        if self._online:
            log.warning("history.database_unavailable", error=reason_of(exc))
        self._online = False
        self._next_retry = time.monotonic() + self._retry_interval

    # -- spool -------------------------------------------------------------------------------

    def _spool_rows(self, rows: list[Row]) -> bool:
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
        claimed = claim(path)
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

    def _read_spool(self, handle: IO[bytes]) -> Iterator[list[Row]]:
        rows: list[Row] = []
        for line in handle:
            if not line.endswith(b"\n"):
                # The last line of a process killed while writing it: it was never
                # acknowledged (the write had not returned), so there is nothing to keep.
                log.info("history.torn_line_skipped", bytes=len(line))
                continue
            try:
                rows.extend(self._checked_rows([from_json(line)]))
            except (TypeError, ValueError, KeyError) as exc:
                entry = (line.decode("utf-8", "replace"), f"unreadable spool line: {exc}")
                self._spool.reject([entry])
                continue
            if len(rows) >= self._max_batch:
                yield rows
                rows = []
        if rows:
            yield rows


class _Intake:
    """What the request path hands the writer: journaled, then queued, under one lock so the
    journal's segments and the queue keep the same order."""

    def __init__(self, folder: Path) -> None:
        self.queue: deque[Pending | _Marker] = deque()
        self.journal = Journal(folder)
        #: The operating system's message if the last journal append failed.
        self.error: str | None = None
        self._lock = threading.Lock()

    def add(self, item: Pending) -> None:
        """Journal ``item`` (if the disk takes it), then queue it; never raises."""
        line = journal_line(item)
        with self._lock:
            if line is not None:
                self._append(line)
            self.queue.append(item)

    def rotate(self) -> None:
        """End the journal segment: it is deleted once what was queued before it is durable."""
        with self._lock:
            segment = self.journal.rotate()
            if segment is not None:
                self.queue.append(segment)

    def after_fork(self) -> None:
        """Leave the parent's segment to the parent; a fresh lock (the parent's may be held)."""
        self.journal.forget()
        self._lock = threading.Lock()

    def _append(self, line: bytes) -> None:
        try:
            self.journal.append(line)
        except OSError as exc:
            if self.error is None:
                log.error("history.journal_failed", folder=str(self.journal.folder), error=str(exc))
            self.error = str(exc)
            return
        if self.error is not None:
            log.info("history.journal_recovered", folder=str(self.journal.folder))
            self.error = None
