"""Prediction history on real SQLite and PostgreSQL: migrations, batching, spooling, replay.

PostgreSQL tests take the ``postgres_url`` fixture (skipped without a server, failed under
CI=true). Outages are real: a TCP proxy between the writer and PostgreSQL is cut and restored.
"""

from __future__ import annotations

# Fixtures arrive as parameters of the same name; test names state the behaviour they check.
# pylint: disable=redefined-outer-name,missing-function-docstring

import fcntl
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, event, inspect, make_url, text
from structlog.testing import capture_logs

from xgbops.config import to_sqlalchemy_url
from xgbops.database import MIGRATIONS_DIR

from api.core.history import (
    HistoryReader,
    HistoryWriter,
    PredictionBatch,
    PredictionRecord,
    migrate,
)
from xgbops.tables import metadata

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
#: Fast cycles so that tests wait tenths of seconds, not seconds.
FAST: dict[str, Any] = {"flush_interval": 0.05, "retry_interval": 0.2}


# -- fixtures and helpers -----------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each backend; the SQLite file's folder does not exist yet."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db' / 'predictions.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def migrated_url(database_url: str) -> str:
    """A database of each backend with the history schema."""
    migrate(database_url)
    return database_url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A migrated SQLite history database, for the tests that do not depend on the backend."""
    url = f"sqlite:///{tmp_path / 'predictions.db'}"
    migrate(url)
    return url


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    """The writers' spool folder."""
    return tmp_path / "spool"


@pytest.fixture
def make_writer(spool_dir: Path) -> Iterator[Callable[..., HistoryWriter]]:
    """Build (and start) writers with fast cycles; every one is closed after the test."""
    writers: list[HistoryWriter] = []

    def make(url: str, start: bool = True, **options: Any) -> HistoryWriter:
        writer = HistoryWriter(url, spool_dir, **{**FAST, **options})
        writers.append(writer)
        if start:
            writer.start()
        return writer

    yield make
    for writer in writers:
        writer.close()


@pytest.fixture
def make_reader() -> Iterator[Callable[[str], HistoryReader]]:
    """Build readers; their connections are closed after the test."""
    readers: list[HistoryReader] = []

    def make(url: str) -> HistoryReader:
        readers.append(HistoryReader(url))
        return readers[-1]

    yield make
    for reader in readers:
        reader.close()


def make_record(index: int, **changes: Any) -> PredictionRecord:
    """A record with awkward values: non-round floats, nesting, unicode, None, big integers."""
    record = PredictionRecord(
        id=uuid.uuid4().hex,
        created_at=T0 + timedelta(seconds=index, microseconds=index),
        model_name="churn-xgboost",
        model_version=str(1 + index % 2),
        input={
            "age": 30 + index,
            "income": 1 / (index + 3),
            "plan": "pro-ü",
            "tags": ["a", {"b": 0.1 + 0.2}],
            "missing": None,
            "flag": index % 2 == 0,
            "big": 2**62 + index,
        },
        probability=(index % 97) / 97 + 1e-12,
        label="yes" if index % 2 else "no",
        latency_ms=0.1 + index * 1e-3,
        request_id=f"req-{index // 10}",
    )
    return replace(record, **changes)


def spool_line(record: PredictionRecord) -> str:
    """A record as the writer spools it: its fields as JSON, created_at in ISO 8601."""
    return json.dumps({**asdict(record), "created_at": record.created_at.isoformat()}) + "\n"


def stored_ids(url: str) -> list[str]:
    """Every id in the table, over a fresh connection of its own (not the writer's)."""
    engine = create_engine(to_sqlalchemy_url(url))
    try:
        with engine.connect() as connection:
            return list(connection.execute(text("SELECT id FROM predictions")).scalars())
    finally:
        engine.dispose()


def spool_files(spool_dir: Path) -> list[Path]:
    """Spool files waiting to be replayed."""
    return sorted(spool_dir.glob("spool-*.jsonl")) + sorted(spool_dir.glob("replay-*.jsonl"))


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


class TcpProxy:
    """Forwards a local port to PostgreSQL; can drop every connection and refuse new ones, or
    hold every chunk it forwards for ``latency`` seconds (a slow network or a loaded server)."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self.latency = 0.0
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._stop = threading.Event()
        self.port = 0

    def start(self) -> None:
        """Listen (on the same port again after a cut) and forward every connection."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.05)  # so the acceptor notices a cut
        self.port = listener.getsockname()[1]
        self._listener, self._stop = listener, threading.Event()
        self._acceptor = threading.Thread(target=self._accept, args=(listener, self._stop))
        self._acceptor.start()

    def cut(self) -> None:
        """Stop listening (connections are refused) and drop every open connection."""
        self._stop.set()
        if self._acceptor is not None:
            self._acceptor.join()
        if self._listener is not None:
            self._listener.close()
        self._acceptor = self._listener = None
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            self._drop(connection)

    def _accept(self, listener: socket.socket, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            client.settimeout(None)
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._connections.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if self.latency:
                    time.sleep(self.latency)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            self._drop(source)
            self._drop(sink)

    def _drop(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.discard(connection)
        try:
            connection.shutdown(socket.SHUT_RDWR)  # wakes the pump blocked in recv()
        except OSError:
            pass
        connection.close()


@pytest.fixture
def proxy(postgres_url: str) -> Iterator[TcpProxy]:
    """A running proxy in front of the test's PostgreSQL server."""
    url = make_url(postgres_url)
    forwarder = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    forwarder.start()
    yield forwarder
    forwarder.cut()


def through(proxy_: TcpProxy, url: str) -> str:
    """``url`` with its port replaced by the proxy's."""
    return make_url(url).set(port=proxy_.port).render_as_string(hide_password=False)


# -- migrations ---------------------------------------------------------------------------------


def test_migrate_is_idempotent_and_creates_what_the_table_definition_says(
    database_url: str,
) -> None:
    migrate(database_url)
    migrate(database_url)

    engine = create_engine(to_sqlalchemy_url(database_url))
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, metadata) == []
            assert context.get_current_revision() == "0005"
            indexes = {ix["name"] for ix in inspect(connection).get_indexes("predictions")}
            assert indexes == {
                "ix_predictions_created_at",
                "ix_predictions_model_version",
                "ix_predictions_shadow_of",
            }
    finally:
        engine.dispose()


def test_predictions_stored_before_rollouts_are_the_champions_after_migrating(
    database_url: str,
) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    url = make_url(to_sqlalchemy_url(database_url))
    if url.get_backend_name() == "sqlite":
        Path(str(url.database)).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0004")  # the schema before rollouts
            connection.execute(
                text(
                    "INSERT INTO predictions (id, created_at, model_name, model_version, input,"
                    " probability, label, latency_ms, request_id) VALUES (:id, :at, 'm', '1',"
                    " '{}', 0.5, 'yes', 1.0, 'r')"
                ),
                {"id": "a" * 32, "at": datetime(2026, 1, 1, tzinfo=UTC)},
            )
        migrate(database_url)
        with engine.connect() as connection:
            row = connection.execute(text("SELECT arm, shadow_of FROM predictions")).one()
        assert tuple(row) == ("champion", None)
    finally:
        engine.dispose()


def test_processes_starting_together_migrate_one_at_a_time(database_url: str) -> None:
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def start() -> None:
        barrier.wait()
        try:
            migrate(database_url)
        except Exception as exc:  # pylint: disable=broad-exception-caught
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert not stored_ids(database_url)


# -- writing and reading ------------------------------------------------------------------------


def test_every_field_is_read_back_exactly(
    migrated_url: str,
    make_writer: Callable[..., HistoryWriter],
    make_reader: Callable[[str], HistoryReader],
) -> None:
    plus_two = timezone(timedelta(hours=2))
    records = [make_record(i) for i in range(300)]
    records.append(make_record(300, created_at=T0.astimezone(plus_two), probability=1 / 3))
    writer = make_writer(migrated_url)
    for record in records:
        writer.record(record)

    assert writer.flush()

    read, total = make_reader(migrated_url).page(limit=1000)
    assert total == len(records)
    assert {r.id: r for r in read} == {r.id: r for r in records}
    assert all(r.created_at.utcoffset() == timedelta(0) for r in read)
    assert {(type(r.probability), type(r.latency_ms)) for r in read} == {(float, float)}


def test_page_is_newest_first_and_filters_by_time_and_version(
    migrated_url: str,
    make_writer: Callable[..., HistoryWriter],
    make_reader: Callable[[str], HistoryReader],
) -> None:
    records = [make_record(i, created_at=T0 + timedelta(minutes=i)) for i in range(30)]
    writer = make_writer(migrated_url)
    for record in records:
        writer.record(record)
    assert writer.flush()
    reader = make_reader(migrated_url)

    def ids(page: tuple[list[PredictionRecord], int]) -> tuple[list[str], int]:
        return [r.id for r in page[0]], page[1]

    newest_first = [r.id for r in reversed(records)]
    assert ids(reader.page(limit=10)) == (newest_first[:10], 30)
    assert ids(reader.page(limit=10, offset=25)) == (newest_first[25:], 30)
    assert ids(reader.page(limit=0)) == ([], 30)
    since, until = T0 + timedelta(minutes=10), T0 + timedelta(minutes=20)
    assert ids(reader.page(since=since, until=until)) == (newest_first[10:20], 10)
    same_instant = since.astimezone(timezone(timedelta(hours=-5)))
    assert ids(reader.page(since=same_instant, until=until)) == (newest_first[10:20], 10)
    odd = [r.id for r in reversed(records) if r.model_version == "2"]
    assert ids(reader.page(model_version="2")) == (odd, 15)
    assert ids(reader.page(model_version="2", since=since, limit=3)) == (odd[:3], 10)
    assert ids(reader.page(model_version="nope")) == ([], 0)
    assert reader.count() == 30
    with pytest.raises(ValueError):
        reader.page(limit=-1)


def test_records_of_one_instant_page_in_a_stable_order(
    migrated_url: str,
    make_writer: Callable[..., HistoryWriter],
    make_reader: Callable[[str], HistoryReader],
) -> None:
    records = [make_record(i, created_at=T0) for i in range(5)]  # one /predict/batch request
    writer = make_writer(migrated_url)
    for record in records:
        writer.record(record)
    assert writer.flush()

    reader = make_reader(migrated_url)
    pages = [reader.page(limit=1, offset=i)[0][0].id for i in range(5)]
    assert pages == sorted((r.id for r in records), reverse=True)


def test_writer_inserts_in_batches_not_per_record(
    migrated_url: str, make_writer: Callable[..., HistoryWriter]
) -> None:
    writer = make_writer(migrated_url, start=False, max_batch=500, flush_interval=30)
    statements: list[str] = []

    @event.listens_for(writer.engine, "before_cursor_execute")
    def count(*args: Any) -> None:
        statements.append(args[2])

    records = [make_record(i) for i in range(2000)]
    for record in records:
        writer.record(record)
    writer.start()
    assert writer.flush()

    inserts = [s for s in statements if s.lstrip().upper().startswith("INSERT")]
    assert 1 <= len(inserts) <= len(records) // 500
    assert Counter(stored_ids(migrated_url)) == Counter(r.id for r in records)


def test_a_record_the_database_refuses_is_set_aside_and_the_rest_written(
    migrated_url: str, make_writer: Callable[..., HistoryWriter], spool_dir: Path
) -> None:
    good = [make_record(i) for i in range(20)]
    bad = [
        make_record(100, input={"when": object()}),  # not JSON
        make_record(101, probability=float("nan")),
    ]
    if make_url(migrated_url).get_backend_name() == "postgresql":
        bad.append(make_record(102, label="nul\x00byte"))  # refused by the database itself
    writer = make_writer(migrated_url)
    for record in [*good[:10], *bad, *good[10:]]:
        writer.record(record)
    assert writer.flush()

    assert sorted(stored_ids(migrated_url)) == sorted(r.id for r in good)
    rejected = [
        json.loads(line) for line in (spool_dir / "rejected.jsonl").read_text().splitlines()
    ]
    assert sorted(entry["record"]["id"] for entry in rejected) == sorted(r.id for r in bad)
    assert all(entry["error"] for entry in rejected)
    assert writer.spooled == 0

    more = make_record(200)
    writer.record(more)
    assert writer.flush()
    assert more.id in stored_ids(migrated_url)


def test_close_writes_what_a_never_started_writer_queued(
    sqlite_url: str, make_writer: Callable[..., HistoryWriter]
) -> None:
    writer = make_writer(sqlite_url, start=False)
    records = [make_record(i) for i in range(3)]
    for record in records:
        writer.record(record)
    assert not writer.flush(timeout=0.1)

    writer.close()

    assert sorted(stored_ids(sqlite_url)) == sorted(r.id for r in records)


# -- outages, spool and replay ------------------------------------------------------------------


@pytest.mark.postgres
def test_an_outage_mid_load_loses_and_duplicates_nothing(
    postgres_url: str,
    proxy: TcpProxy,
    make_writer: Callable[..., HistoryWriter],
    spool_dir: Path,
) -> None:
    migrate(postgres_url)
    writer = make_writer(through(proxy, postgres_url))
    recorded: list[str] = []
    slowest = [0.0]
    stop = threading.Event()

    def load() -> None:
        index = 0
        while not stop.is_set():
            record = make_record(index, created_at=datetime.now(UTC))
            started = time.perf_counter()
            writer.record(record)
            slowest[0] = max(slowest[0], time.perf_counter() - started)
            recorded.append(record.id)
            index += 1
            time.sleep(0.002)

    loader = threading.Thread(target=load)
    with capture_logs() as logs:
        loader.start()
        try:
            time.sleep(0.6)
            proxy.cut()
            before_cut = len(recorded)
            assert wait_for(lambda: writer.spooled > 0, timeout=5)
            assert writer.flush(), "spooled records count as durable"
            time.sleep(1.5)
            assert len(recorded) - before_cut > 200, "recording went on while the DB was down"
            proxy.start()
            time.sleep(0.5)
        finally:
            stop.set()
            loader.join()
        assert writer.flush()
        assert wait_for(lambda: writer.spooled == 0, timeout=10)
        writer.close()

    stored = Counter(stored_ids(postgres_url))
    assert set(stored) == set(recorded)
    assert len(recorded) == len(set(recorded)) == sum(stored.values())
    assert spool_files(spool_dir) == []
    assert slowest[0] < 0.5, "record() waited for the database"
    events = {entry["event"] for entry in logs}
    assert {"history.database_unavailable", "history.spooled", "history.replayed"} <= events


def test_records_survive_an_unreachable_database_and_a_restart(
    tmp_path: Path, make_writer: Callable[..., HistoryWriter], spool_dir: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'not-yet' / 'predictions.db'}"  # cannot be opened yet
    records = [make_record(i) for i in range(50)]
    first = make_writer(url)
    for record in records:
        first.record(record)

    assert first.flush()
    assert first.spooled == 50
    first.close()
    assert first.spooled == 50, "what could not be written stays in the spool"

    migrate(url)
    make_writer(url)
    assert wait_for(lambda: len(stored_ids(url)) == 50)
    assert sorted(stored_ids(url)) == sorted(r.id for r in records)
    assert wait_for(lambda: spool_files(spool_dir) == [])


def test_spool_of_a_dead_process_is_replayed_once(
    migrated_url: str, make_writer: Callable[..., HistoryWriter], spool_dir: Path
) -> None:
    records = [make_record(i) for i in range(40)]
    earlier = make_writer(migrated_url)
    for record in records[:10]:  # already stored before the other process died: no duplicates
        earlier.record(record)
    earlier.close()
    dead = spool_dir / "spool-4194304.jsonl"  # above Linux's pid_max: no such live process
    garbled = '{"id": "not a record"}\n'  # a whole line that is no record: set aside for a human
    torn = '{"id": "torn-by-a-cra'  # the last write of a killed process: never acknowledged
    lines = [spool_line(r) for r in records]
    dead.write_text("".join(lines[:20]) + garbled + "".join(lines[20:]) + torn, encoding="utf-8")

    make_writer(migrated_url)

    assert wait_for(lambda: not dead.exists() and spool_files(spool_dir) == [])
    assert Counter(stored_ids(migrated_url)) == Counter(r.id for r in records)
    rejected = (spool_dir / "rejected.jsonl").read_text().splitlines()
    assert [json.loads(line)["record"] for line in rejected] == [garbled]


def test_spool_of_a_live_process_is_left_to_it(
    sqlite_url: str, make_writer: Callable[..., HistoryWriter], spool_dir: Path
) -> None:
    spool_dir.mkdir()
    records = [make_record(i) for i in range(5)]
    live = spool_dir / "spool-1.jsonl"
    with live.open("a", encoding="utf-8") as handle:
        handle.write("".join(spool_line(r) for r in records))
        handle.flush()
        fcntl.flock(handle, fcntl.LOCK_EX)  # what a live writer holds on its spool file

        make_writer(sqlite_url, retry_interval=0.05)
        time.sleep(0.5)
        assert live.exists() and not stored_ids(sqlite_url)

    assert wait_for(lambda: len(stored_ids(sqlite_url)) == 5)
    assert not live.exists()


@pytest.mark.postgres
def test_database_ok_names_an_unreachable_server(
    postgres_url: str, proxy: TcpProxy, make_writer: Callable[..., HistoryWriter]
) -> None:
    writer = make_writer(through(proxy, postgres_url), start=False)
    assert writer.database_ok() == (True, "ok")

    proxy.cut()
    ok, reason = writer.database_ok()
    assert not ok
    assert str(proxy.port) in reason and "refused" in reason.lower()

    proxy.start()
    assert writer.database_ok() == (True, "ok")


def test_database_ok_on_sqlite(
    sqlite_url: str, tmp_path: Path, make_writer: Callable[..., HistoryWriter]
) -> None:
    assert make_writer(sqlite_url, start=False).database_ok() == (True, "ok")
    missing = make_writer(f"sqlite:///{tmp_path / 'missing' / 'p.db'}", start=False)
    ok, reason = missing.database_ok()
    assert not ok and "unable to open database file" in reason


WORKER_SCRIPT = """
import sys, uuid
from datetime import UTC, datetime
from pathlib import Path
from api.core.history import HistoryWriter, PredictionRecord

url, spool, count = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
writer = HistoryWriter(url, spool, flush_interval=0.01, max_batch=50)
writer.start()
for i in range(count):
    writer.record(PredictionRecord(
        uuid.uuid4().hex, datetime.now(UTC), "m", "1", {"i": i}, 0.5, "yes", 1.0, "r"))
assert writer.flush(30)
writer.close()
"""


def test_worker_processes_share_one_sqlite_file(sqlite_url: str, spool_dir: Path) -> None:
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    command = [sys.executable, "-c", WORKER_SCRIPT, sqlite_url, str(spool_dir), "400"]
    with ExitStack() as stack:
        workers = [
            stack.enter_context(
                subprocess.Popen(
                    command,
                    cwd=REPO,
                    env={**os.environ, "PYTHONPATH": path},
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                )
            )
            for _ in range(3)
        ]
        for worker in workers:
            output, _ = worker.communicate(timeout=60)
            assert worker.returncode == 0, output.decode()

    assert len(set(stored_ids(sqlite_url))) == 1200
    assert spool_files(spool_dir) == []
    engine = create_engine(sqlite_url)
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        engine.dispose()


def batch_of(records: list[PredictionRecord]) -> PredictionBatch:
    """The column form the service hands the writer, for records sharing one request."""
    first = records[0]
    return PredictionBatch(
        ids=[r.id for r in records],
        created_at=first.created_at,
        model_name=first.model_name,
        model_version=first.model_version,
        inputs=[r.input for r in records],
        probabilities=[r.probability for r in records],
        labels=[r.label for r in records],
        latency_ms=first.latency_ms,
        request_id=first.request_id,
    )


def test_a_batch_is_stored_row_for_row_and_a_bad_record_in_it_set_aside(
    migrated_url: str,
    make_writer: Callable[..., HistoryWriter],
    make_reader: Callable[[str], HistoryReader],
    spool_dir: Path,
) -> None:
    shared = {"created_at": T0, "model_version": "3", "latency_ms": 0.25, "request_id": "req-b"}
    good = [make_record(i, **shared) for i in range(30)]
    huge = make_record(30, **shared, input={"beyond_64_bits": 2**70})  # orjson refuses; stored
    bad = make_record(31, **shared, probability=float("inf"))
    writer = make_writer(migrated_url)
    writer.record_batch(batch_of([*good[:15], huge, bad, *good[15:]]))
    writer.record_batch(batch_of(good[:1]))  # the same ids again: ignored, not duplicated
    assert writer.flush()

    stored, total = make_reader(migrated_url).page(limit=100)
    assert total == 31
    by_id = {record.id: record for record in stored}
    assert by_id[huge.id].input == {"beyond_64_bits": 2**70}
    for record in good:
        assert by_id[record.id] == record
    rejected = [
        json.loads(line) for line in (spool_dir / "rejected.jsonl").read_text().splitlines()
    ]
    assert [entry["record"]["id"] for entry in rejected] == [bad.id]
    assert "finite" in rejected[0]["error"]
