"""The journal: what this process has answered but not yet made durable.

The writer's queue lives in memory, so a worker killed with SIGKILL (the OOM killer, gunicorn's
timeout) would lose predictions it had already answered. Each request's predictions are
appended to this process's journal before the answer goes out: one ``write(2)``, no fsync, so
it survives the process, not the machine (the fsync'ed spool covers the database's outages).

The journal is a series of segment files in the spool folder, each locked by this process. The
writer rotates to a new segment and deletes the old one once everything queued before the
rotation is in the database or the spool. A segment whose process died is unlocked, so a
living process claims and replays it like a spool file; the insert ignores ids already stored,
so a replay never stores a prediction twice.
"""

from __future__ import annotations

import fcntl
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import orjson

from api.core.history.records import PredictionBatch, PredictionRecord

#: Journal segments in the spool folder; the spool's replay claims those of dead processes.
JOURNAL_GLOB: Final = "journal-*.jsonl"


@dataclass(frozen=True, slots=True)
class Segment:
    """A journal file this process has finished writing; deleted once its records are durable."""

    path: Path
    fd: int


class Journal:
    """This process's journal segments. Not thread-safe: the writer serialises the calls."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._current: Segment | None = None
        self._size = 0

    def append(self, line: bytes) -> None:
        """Append one line (a request's predictions) to the current segment.

        Raises:
            OSError: the line could not be written (a full disk, say); nothing of it is kept.
        """
        current = self._current or self._open()
        append_whole(current.fd, line, self._size)
        self._size += len(line)

    def rotate(self) -> Segment | None:
        """End the current segment (the next append starts a new one).

        Returns:
            The segment just ended, to :meth:`retire` once its records are durable; None if
            nothing was written since the last rotation.
        """
        finished, self._current = self._current, None
        if finished is not None and self._size == 0:
            self.retire(finished)
            return None
        self._size = 0
        return finished

    @staticmethod
    def retire(segment: Segment) -> None:
        """Delete a segment whose records are durable elsewhere.

        Deleted before its lock is released, so no other process can claim it in between.
        """
        try:
            segment.path.unlink(missing_ok=True)
        finally:
            os.close(segment.fd)

    def forget(self) -> None:
        """Drop the current segment without deleting it (a forked child: it is the parent's)."""
        if self._current is not None:
            os.close(self._current.fd)
        self._current, self._size = None, 0

    def _open(self) -> Segment:
        """A new segment, locked before it can be seen: created and locked under a name no
        claimer looks for, then renamed into :data:`JOURNAL_GLOB`. Created under its final
        name, it would be unlocked for a moment, and a replay (another worker's, or this
        process's own writer starting) could claim and delete it while this process went on
        appending to the deleted file: answered predictions lost to the next SIGKILL."""
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"journal-{os.getpid()}-{uuid.uuid4().hex[:12]}.jsonl"
        hidden, path = self.folder / f".{name}.new", self.folder / name
        fd = os.open(hidden, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # a new name: no one else holds it
            os.rename(hidden, path)
        except OSError:
            os.close(fd)
            hidden.unlink(missing_ok=True)
            raise
        self._current, self._size = Segment(path, fd), 0
        return self._current


def append_whole(fd: int, data: bytes, size: int, sync: bool = False) -> None:
    """Append all of ``data`` to the file ``fd`` (now ``size`` bytes long), or nothing of it.

    Raises:
        OSError: the write (or the fsync, with ``sync``) failed; the file is cut back to
            ``size``, so no torn line is left for the next append to follow.
    """
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
        if sync:
            os.fsync(fd)
    except OSError:
        os.ftruncate(fd, size)
        raise


def journal_line(item: PredictionBatch | PredictionRecord) -> bytes | None:
    """A request's predictions as one JSON line (columns, as the request handed them over).

    Returns:
        None for what JSON cannot hold (the writer rejects such a record with its reason).
    """
    if isinstance(item, PredictionRecord):
        item = PredictionBatch(
            ids=[item.id],
            created_at=item.created_at,
            model_name=item.model_name,
            model_version=item.model_version,
            inputs=[item.input],
            probabilities=[item.probability],
            labels=[item.label],
            latency_ms=item.latency_ms,
            request_id=item.request_id,
        )
    try:
        return orjson.dumps(item, option=orjson.OPT_APPEND_NEWLINE)
    except (orjson.JSONEncodeError, TypeError):
        return None
