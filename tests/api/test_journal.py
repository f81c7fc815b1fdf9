"""The journal: predictions a process acknowledged survive its being killed outright.

Real processes are killed with SIGKILL; a full disk is a real tmpfs of a few kilobytes (which
needs root: skipped with the reason otherwise, failed under ``CI=true``).
"""

from __future__ import annotations

# Fixtures arrive as parameters of the same name; test names state the behaviour they check.
# pylint: disable=redefined-outer-name,missing-function-docstring

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from api.core.history import HistoryWriter, PredictionBatch
from api.core.history import journal as journal_module
from api.core.history.journal import JOURNAL_GLOB, Journal, journal_line
from api.core.history.records import from_json
from tests.api import test_history as history_tests
from tests.api.conftest import fill_disk
from tests.api.test_history import REPO, make_record, stored_ids, wait_for

# The history tests' fixtures, shared rather than copied.
database_url = history_tests.database_url
migrated_url = history_tests.migrated_url
spool_dir = history_tests.spool_dir
make_writer = history_tests.make_writer

KILLED_SCRIPT = """
import os, signal, sys, uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from api.core.history import HistoryWriter, PredictionBatch

url, spool, count, acks = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
# Acknowledged ids go to a file of their own, one os.write each: on stdout, the writer
# thread's log lines could interleave with them.
ack = os.open(acks, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
# A flush interval far beyond the test: nothing reaches the database before the kill.
writer = HistoryWriter(url, spool, flush_interval=3600, retry_interval=3600)
writer.start()
for i in range(count):
    ids = [uuid.uuid4().hex for _ in range(1 + i % 3)]
    writer.record_batch(PredictionBatch(
        ids, datetime.now(UTC), "m", "1", [{"i": i}] * len(ids), [0.25] * len(ids),
        ["no"] * len(ids), 1.0, f"r{i}"))
    os.write(ack, (" ".join(ids) + "\\n").encode())  # acknowledged: the caller has the ids
os.kill(os.getpid(), signal.SIGKILL)
"""


def _journals(folder: Path) -> list[Path]:
    return sorted(folder.glob("journal-*.jsonl"))


def test_what_a_killed_process_acknowledged_is_stored_once(
    migrated_url: str, spool_dir: Path, make_writer: Callable[..., HistoryWriter], tmp_path: Path
) -> None:
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    acks = tmp_path / "acknowledged.txt"
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_SCRIPT, migrated_url, str(spool_dir), "300", str(acks)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    acknowledged = acks.read_text(encoding="utf-8").split()
    assert len(acknowledged) == 600 and not stored_ids(migrated_url)  # all in memory when killed
    assert _journals(
        spool_dir
    ), f"the killed process left its journal: {sorted(p.name for p in spool_dir.iterdir())}"

    make_writer(migrated_url)  # a living process claims the dead one's journal

    assert wait_for(lambda: not _journals(spool_dir) and not list(spool_dir.glob("replay-*")))
    assert Counter(stored_ids(migrated_url)) == Counter(acknowledged)


def test_a_journal_segment_is_deleted_once_its_records_are_stored(
    migrated_url: str, spool_dir: Path, make_writer: Callable[..., HistoryWriter]
) -> None:
    writer = make_writer(migrated_url)
    records = [make_record(i) for i in range(50)]
    for record in records:
        writer.record(record)
    assert writer.flush()

    assert wait_for(lambda: not _journals(spool_dir))
    assert sorted(stored_ids(migrated_url)) == sorted(r.id for r in records)
    assert writer.spool_ok() == (True, "ok")


def test_a_journal_line_reads_back_as_the_batch_it_was(tmp_path: Path) -> None:
    record = make_record(7)
    batch = PredictionBatch(
        [record.id, "b" * 32],
        record.created_at,
        record.model_name,
        record.model_version,
        [record.input, {"x": 1}],
        [record.probability, 0.5],
        [record.label, "no"],
        record.latency_ms,
        record.request_id,
    )
    line = journal_line(batch)
    assert line is not None and line.endswith(b"\n") and line.count(b"\n") == 1
    assert from_json(line) == batch
    single = journal_line(record)
    assert single is not None
    assert list(from_json(single).records()) == [record]  # type: ignore[union-attr]

    journal = Journal(tmp_path / "j")
    journal.append(line)
    segment = journal.rotate()
    assert segment is not None and segment.path.read_bytes() == line
    assert journal.rotate() is None  # nothing written since
    Journal.retire(segment)
    assert not segment.path.exists()


def test_a_full_disk_is_reported_not_raised_and_records_still_reach_the_database(
    migrated_url: str, tiny_disk: Path
) -> None:
    writer = HistoryWriter(migrated_url, tiny_disk / "spool", flush_interval=0.05)
    writer.start()
    try:
        filler = fill_disk(tiny_disk)
        full = [make_record(i) for i in range(20)]
        for record in full:
            writer.record(record)  # must not raise
        ok, reason = writer.spool_ok()
        assert not ok and "No space left" in reason
        assert writer.flush()

        filler.unlink()
        later = make_record(99)
        writer.record(later)
        assert writer.spool_ok() == (True, "ok")
        assert writer.flush()
        assert sorted(stored_ids(migrated_url)) == sorted(r.id for r in [*full, later])
    finally:
        writer.close()
    assert not _journals(tiny_disk / "spool")


def test_a_new_segment_is_locked_before_a_claimer_can_see_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replay claims any unlocked journal it finds: a segment visible before its lock could
    be claimed and deleted while its process went on appending to it."""
    seen_at_lock: list[list[Path]] = []
    real_flock = journal_module.fcntl.flock

    def flock(fd: int, operation: int) -> None:
        seen_at_lock.append(sorted(tmp_path.glob(JOURNAL_GLOB)))
        real_flock(fd, operation)

    monkeypatch.setattr(journal_module.fcntl, "flock", flock)
    journal = Journal(tmp_path)
    journal.append(b'{"a": 1}\n')
    assert seen_at_lock == [[]]  # nothing under the journal's name until it was locked
    (segment,) = tmp_path.glob(JOURNAL_GLOB)
    assert segment.read_bytes() == b'{"a": 1}\n'
    assert [p.name for p in tmp_path.iterdir()] == [segment.name]  # no hidden name left
    with segment.open("rb") as other:  # locked: a claimer's try_lock fails
        with pytest.raises(BlockingIOError):
            real_flock(other.fileno(), journal_module.fcntl.LOCK_EX | journal_module.fcntl.LOCK_NB)
