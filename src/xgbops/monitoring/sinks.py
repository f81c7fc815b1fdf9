"""Where events go: a local SQLite file (the default) or Elasticsearch, chosen by settings.

Both sinks give the same guarantee: an event is stored once per (kind, id). A fact (an
``IMMUTABLE`` event) that is already stored is counted as *already shipped*, never written
twice; a state (a training run, the feedback on a prediction) is overwritten with its current
content. So any shipper can be re-run, after a crash or on purpose, without duplicating anything.

The local sink is one table, ``events`` (see ``monitoring/README.md``), in
``<state dir>/monitoring/events.db``: the HTML report and tests read it back with
:meth:`LocalSink.read`.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from elastic_transport import TransportError
from elasticsearch import ApiError, Elasticsearch
from elasticsearch.helpers import streaming_bulk

from xgbops.config import MonitoringSettings, Settings
from xgbops.monitoring import MonitoringError
from xgbops.monitoring.elastic import Retry, create_client, describe
from xgbops.monitoring.events import Event, format_time

#: Events written per SQLite transaction, and per Elasticsearch bulk request.
CHUNK_SIZE = 500
#: At most this many per-document errors are kept in a result (the count is always exact).
MAX_ERRORS_KEPT = 100
_SQLITE_BUSY_TIMEOUT_S = 5.0
_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    index_name TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    document TEXT NOT NULL,
    shipped_at TEXT NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE INDEX IF NOT EXISTS ix_events_kind_timestamp ON events (kind, timestamp);
"""


@dataclass(frozen=True)
class ShipError:
    """One document a sink refused, and why (Elasticsearch's error type and reason)."""

    index: str
    doc_id: str
    status: int
    error_type: str
    reason: str

    def __str__(self) -> str:
        return f"{self.index}/{self.doc_id}: {self.status} {self.error_type}: {self.reason}"


@dataclass
class ShipResult:
    """Counts of one shipping: new documents, overwritten states, facts already stored, errors."""

    target: str
    created: int = 0
    updated: int = 0
    already_shipped: int = 0
    failed: int = 0
    errors: list[ShipError] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Every event handed to the sink."""
        return self.created + self.updated + self.already_shipped + self.failed

    def add_error(self, error: ShipError) -> None:
        """Count a refused document (its details are kept up to :data:`MAX_ERRORS_KEPT`)."""
        self.failed += 1
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(error)

    def merge(self, other: ShipResult) -> None:
        """Add ``other``'s counts and errors to this result."""
        self.created += other.created
        self.updated += other.updated
        self.already_shipped += other.already_shipped
        for error in other.errors:
            if len(self.errors) < MAX_ERRORS_KEPT:
                self.errors.append(error)
        self.failed += other.failed

    def counts(self) -> str:
        """The four counts, for people (e.g. ``3 new, 0 updated, 0 already shipped, 0 failed``)."""
        return (
            f"{self.created} new, {self.updated} updated, "
            f"{self.already_shipped} already shipped, {self.failed} failed"
        )

    def summary(self) -> str:
        """One line for people: the target and the counts."""
        return f"{self.target}: {self.counts()}"


class Sink(Protocol):
    """What a shipper needs from a sink."""

    @property
    def target(self) -> str:
        """Where the events go, for messages and watermarks (e.g. ``local:/path/events.db``)."""

    def ship(self, events: Iterable[Event]) -> ShipResult:
        """Store ``events`` (any iterable: it is consumed in chunks) and count the outcome."""

    def close(self) -> None:
        """Release connections."""


def local_sink_path(settings: Settings) -> Path:
    """The local sink's SQLite file: ``<state dir>/monitoring/events.db``."""
    return settings.state_path / "monitoring" / "events.db"


def open_sink(settings: Settings, retry: Retry = Retry()) -> Sink:
    """The sink ``monitoring.sink`` names.

    Raises:
        MonitoringError: Elasticsearch is chosen but no URL is set.
    """
    if settings.monitoring.sink == "elasticsearch":
        return ElasticsearchSink(settings.monitoring, retry=retry)
    return LocalSink(local_sink_path(settings), settings.monitoring.index_prefix)


class LocalSink:
    """Events in one SQLite table, keyed by (kind, id): the embedded default, and the report's
    source. Safe for several processes at once (WAL journal, busy timeout)."""

    def __init__(self, path: Path, prefix: str = "xgbops") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.prefix = prefix
        self._db = sqlite3.connect(path, timeout=_SQLITE_BUSY_TIMEOUT_S)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    @property
    def target(self) -> str:
        """``local:<path>``."""
        return f"local:{self.path}"

    def ship(self, events: Iterable[Event]) -> ShipResult:
        """Insert new events; overwrite mutable ones; count stored facts as already shipped."""
        result = ShipResult(self.target)
        now = format_time(datetime.now().astimezone())
        for chunk in _chunks(events, CHUNK_SIZE):
            with self._db:  # one transaction per chunk
                for event in chunk:
                    self._store(event, now, result)
        return result

    def _store(self, event: Event, now: str, result: ShipResult) -> None:
        row = (
            event.KIND,
            event.doc_id,
            event.index(self.prefix),
            format_time(event.timestamp),
            json.dumps(event.to_document(), sort_keys=True),
            now,
        )
        inserted = self._db.execute(
            "INSERT OR IGNORE INTO events (kind, id, index_name, timestamp, document, shipped_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            row,
        ).rowcount
        if inserted:
            result.created += 1
        elif event.IMMUTABLE:
            result.already_shipped += 1
        else:
            self._db.execute(
                "UPDATE events SET index_name = ?, timestamp = ?, document = ?, shipped_at = ?"
                " WHERE kind = ? AND id = ?",
                (*row[2:], event.KIND, event.doc_id),
            )
            result.updated += 1

    def read(
        self,
        kind: str,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Documents of one kind (e.g. ``predictions``), oldest first.

        Args:
            kind: the event kind (``EVENT_TYPES`` keys).
            since: earliest ``@timestamp``, inclusive.
            until: latest ``@timestamp``, exclusive.
            limit: at most this many (the oldest).
        """
        query = "SELECT document FROM events WHERE kind = ?"
        params: list[Any] = [kind]
        if since is not None:
            query += " AND timestamp >= ?"
            params.append(format_time(since))
        if until is not None:
            query += " AND timestamp < ?"
            params.append(format_time(until))
        query += " ORDER BY timestamp, id"
        if limit is not None:
            query += " LIMIT ?"
            params.append(limit)
        return [json.loads(text) for (text,) in self._db.execute(query, params)]

    def count(self, kind: str | None = None) -> int:
        """How many events are stored (of one kind, or in all)."""
        if kind is None:
            return int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
        query = "SELECT COUNT(*) FROM events WHERE kind = ?"
        return int(self._db.execute(query, (kind,)).fetchone()[0])

    def close(self) -> None:
        """Close the database connection."""
        self._db.close()

    def __enter__(self) -> LocalSink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class ElasticsearchSink:
    """Bulk-ships events with the official client's ``streaming_bulk`` helper.

    Facts go with the op ``create`` and their deterministic id: one already stored is answered
    409 and counted as already shipped. States (training runs, feedback) go with ``index``,
    which overwrites. Requests answered 429/502/503/504 are retried by the client, documents
    rejected with 429 inside a bulk response by the helper, both with exponential backoff.
    """

    def __init__(
        self,
        settings: MonitoringSettings,
        client: Elasticsearch | None = None,
        retry: Retry = Retry(),
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        self.prefix = settings.index_prefix
        self.url = settings.elasticsearch_url or ""
        self.retry = retry
        self.chunk_size = chunk_size
        self.client = client or create_client(settings, retry)

    @property
    def target(self) -> str:
        """``elasticsearch:<url>``."""
        return f"elasticsearch:{self.url}"

    def actions(self, events: Iterable[Event]) -> Iterator[dict[str, Any]]:
        """The bulk actions for ``events`` (op type, index, id and the document)."""
        for event in events:
            yield {
                "_op_type": "create" if event.IMMUTABLE else "index",
                "_index": event.index(self.prefix),
                "_id": event.doc_id,
                "_source": event.to_document(),
            }

    def ship(self, events: Iterable[Event]) -> ShipResult:
        """Ship ``events`` in bulk requests of ``chunk_size`` documents.

        Raises:
            MonitoringError: a whole request failed after the retries (unreachable, refused).
        """
        result = ShipResult(self.target)
        try:
            for ok, item in streaming_bulk(
                self.client,
                self.actions(events),
                chunk_size=self.chunk_size,
                raise_on_error=False,
                max_retries=self.retry.max_retries,
                initial_backoff=self.retry.bulk_initial_backoff,
                max_backoff=self.retry.bulk_max_backoff,
                retry_on_status=(429,),
            ):
                _tally(result, ok, item)
        except (ApiError, TransportError) as exc:
            raise MonitoringError(
                f"shipping to {self.target} failed after {result.total} document(s): "
                f"{describe(exc)}"
            ) from exc
        return result

    def close(self) -> None:
        """Close the client's connections."""
        self.client.close()


def _tally(result: ShipResult, ok: bool, item: dict[str, Any]) -> None:
    """Count one bulk item: created, updated, already stored (409 on create) or refused."""
    op_type, info = next(iter(item.items()))
    if ok:
        if info.get("result") == "updated":
            result.updated += 1
        else:
            result.created += 1
        return
    status = int(info.get("status", 500))
    if status == 409 and op_type == "create":
        result.already_shipped += 1
        return
    error = info.get("error") or {}
    if not isinstance(error, dict):
        error = {"type": "error", "reason": str(error)}
    result.add_error(
        ShipError(
            index=str(info.get("_index", "")),
            doc_id=str(info.get("_id", "")),
            status=status,
            error_type=str(error.get("type", "error")),
            reason=str(error.get("reason", "")),
        )
    )


def _chunks(items: Iterable[Event], size: int) -> Iterator[list[Event]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk
