"""The spool folder: records the database could not take yet, one locked file per process;
files whose process died are claimed (lock, then rename) and replayed by a living one."""

from __future__ import annotations

import fcntl
import functools
import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final

import orjson
import structlog

from api.core.history.journal import JOURNAL_GLOB, append_whole
from api.core.history.records import Row, jsonable

REJECTED_FILE: Final = "rejected.jsonl"
#: Files holding records to replay: spool files, claimed ones, and journal segments (whose
#: process may have died: see :mod:`.journal`).
SPOOL_GLOBS: Final = ("spool-*.jsonl", "replay-*.jsonl", JOURNAL_GLOB)

log = structlog.get_logger(__name__)


class Spool:
    """The spool folder: this process's own (locked) file, files to replay, rejected records."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._own: IO[bytes] | None = None
        #: The operating system's message if the last append failed (a full disk, say).
        self.error: str | None = None

    def append(self, rows: list[Row]) -> str:
        """Append ``rows`` to this process's file and fsync it; returns the file's name.

        Raises:
            OSError: the rows could not be made durable.
        """
        lines = b"".join(
            orjson.dumps(jsonable(row), option=orjson.OPT_APPEND_NEWLINE) for row in rows
        )
        try:
            handle = self._own or self._open_own()
            fd = handle.fileno()
            append_whole(fd, lines, os.fstat(fd).st_size, sync=True)
        except OSError as exc:
            self.error = str(exc)
            raise
        self.error = None
        return Path(str(handle.name)).name

    def release(self) -> None:
        """Close (and unlock) this process's file: from now on any process may replay it."""
        if self._own is not None:
            self._own.close()
            self._own = None

    def files(self) -> list[Path]:
        """Spool files of every process, including claimed ones not yet replayed."""
        return sorted(path for pattern in SPOOL_GLOBS for path in self.folder.glob(pattern))

    def count(self) -> int:
        """Lines waiting for the database in spool and claimed files (a claimed journal's line
        holds one request's predictions). Journals of living processes are not counted: what
        they hold is still on its way."""
        total = 0
        for path in self.files():
            if path.match(JOURNAL_GLOB):
                continue
            try:
                total += count_lines(path)
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

    def _open_own(self) -> IO[bytes]:
        """Open and lock this process's file; the lock tells others that its process lives."""
        pid = os.getpid()
        names = (f"spool-{pid}.jsonl", f"spool-{pid}-{uuid.uuid4().hex[:8]}.jsonl")
        for name in names:  # the second name if another process is replaying the first
            path = self.folder / name
            handle = path.open("ab", buffering=0)
            if try_lock(handle) and same_file(handle, path):
                self._own = handle
                return handle
            handle.close()
        raise OSError(f"cannot lock a spool file in {self.folder}")


def claim(path: Path) -> tuple[Path, IO[bytes]] | None:
    """Take a spool file over: lock it (fails while its process lives), then rename it."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return None
    if not try_lock(handle) or not same_file(handle, path):
        handle.close()
        return None
    claimed = path.with_name(f"replay-{os.getpid()}-{uuid.uuid4().hex}.jsonl")
    try:
        path.rename(claimed)
    except OSError:
        handle.close()
        return None
    return claimed, handle


def count_lines(path: Path) -> int:
    """Lines in ``path``, read in 1 MiB chunks."""
    with path.open("rb") as handle:
        return sum(
            chunk.count(b"\n") for chunk in iter(functools.partial(handle.read, 1 << 20), b"")
        )


def try_lock(handle: IO[Any]) -> bool:
    """Take ``handle``'s exclusive lock without waiting; False if another holder has it."""
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def same_file(handle: IO[Any], path: Path) -> bool:
    """Whether ``path`` still names the opened file (not renamed by a claimer meanwhile)."""
    try:
        named = path.stat()
    except FileNotFoundError:
        return False
    opened = os.fstat(handle.fileno())
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)
