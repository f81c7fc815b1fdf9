"""Retraining on request: one job at a time, a rate limit, jobs you can follow (who may ask is
:mod:`api.core.access`'s business: the ``admin`` scope).

A job runs ``xgbops train`` in a child process: training (and MLflow) never load into a serving
worker, and a crash in training cannot take a worker down. Who starts that process is a setting
(``serve.retrain_runner``): the API worker that took the request (``process``, the embedded
default), or a retraining worker (``queue``: ``python -m api.retrain_worker`` in the platform
image) that claims queued jobs from the database, so the lean serving image never trains.
When the run promotes a new champion, ``xgbops`` exports it (or, behind an MLflow server, each
API worker's registry follower fetches it) and every worker swaps to it on its next look at
the pointer (see :mod:`api.core.champion`), with no restart.

Jobs live in the history database, so every worker process sees the same jobs: a unique column
that only active jobs fill makes "one job at a time" hold across workers, and the rate limit
counts a client's jobs of the last hour.
"""

from __future__ import annotations

import json
import os
import re
import socket

# Runs the project's own `xgbops train` with fixed arguments, never a shell.
import subprocess  # nosec B404
import sys
import tempfile
import threading
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import (
    Engine,
    RowMapping,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from xgbops.config import Settings
from xgbops.tables import ACTIVE, retrain_jobs

from api.core import metrics
from api.core.errors import (
    Conflict,
    FieldError,
    NotFound,
    TooManyRequests,
    ValidationFailed,
)
from api.core.history import create_engine_for

log = structlog.get_logger(__name__)

#: The form of a job id (``uuid4().hex``): anything else names no job, and never reaches the
#: database (PostgreSQL refuses a NUL in text).
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
#: The same rule for the OpenAPI documents of ``GET /retrain/{job_id}``.
JOB_ID_PARAMETER = {
    "in": "path",
    "name": "job_id",
    "required": True,
    "description": "the id POST /retrain returned (32 lower-case hexadecimal digits)",
    "schema": {"type": "string", "pattern": JOB_ID.pattern},
}


class RetrainJobs:
    """Submit, run and report retraining jobs for one worker process."""

    def __init__(
        self,
        settings: Settings,
        command: Sequence[str] | None = None,
        engine: Engine | None = None,
    ) -> None:
        """``engine``: the worker's pool, shared with the history (made on first use if not)."""
        self.settings = settings
        self.command = list(command or [str(Path(sys.executable).parent / "xgbops"), "train"])
        self._engine = engine
        self._threads: list[threading.Thread] = []

    @property
    def engine(self) -> Engine:
        """The history database's engine (created on first use)."""
        if self._engine is None:
            self._engine = create_engine_for(self.settings.history_url)
        return self._engine

    def submit(self, client: str) -> dict[str, Any]:
        """Start a job for ``client`` (an address); returns its document.

        Raises:
            TooManyRequests: the client started its hourly allowance of jobs already.
            Conflict: a job is queued or running.
        """
        self._reap_orphans()
        now = datetime.now(UTC)
        with self.engine.begin() as connection:
            recent = connection.execute(
                select(func.count())
                .select_from(retrain_jobs)
                .where(retrain_jobs.c.client == client)
                .where(retrain_jobs.c.created_at >= now - timedelta(hours=1))
            ).scalar_one()
        if recent >= self.settings.serve.retrain_per_hour:
            raise TooManyRequests(retry_after=3600)
        job_id = uuid.uuid4().hex
        try:
            with self.engine.begin() as connection:
                connection.execute(
                    insert(retrain_jobs).values(
                        id=job_id,
                        status="queued",
                        active=ACTIVE,
                        client=client,
                        created_at=now,
                        host=socket.gethostname(),
                    )
                )
        except IntegrityError:
            running = self._active()
            raise Conflict(
                f"retraining job {running['id'] if running else '?'} is already running"
            ) from None
        if self.settings.serve.retrain_runner == "process":
            thread = threading.Thread(target=self.run, args=(job_id,), name=f"retrain-{job_id[:8]}")
            thread.start()
            self._threads.append(thread)
        log.info("retrain.submitted", job_id=job_id, client=client)
        return self.get(job_id)

    def claim(self) -> str | None:
        """Take the oldest queued job for this process (the retraining worker).

        The claim is one conditional update, so two workers never take the same job.

        Returns:
            The job's id, or None when nothing is queued.
        """
        self._reap_orphans()
        with self.engine.begin() as connection:
            queued = connection.execute(
                select(retrain_jobs.c.id)
                .where(retrain_jobs.c.status == "queued")
                .order_by(retrain_jobs.c.created_at)
                .limit(1)
            ).scalar_one_or_none()
            if queued is None:
                return None
            taken = connection.execute(
                update(retrain_jobs)
                .where(retrain_jobs.c.id == queued)
                .where(retrain_jobs.c.status == "queued")
                .values(status="running", started_at=datetime.now(UTC), host=socket.gethostname())
            ).rowcount
        return str(queued) if taken == 1 else None

    def get(self, job_id: str) -> dict[str, Any]:
        """A job's document.

        Raises:
            ValidationFailed: ``job_id`` is not of the form job ids have (422).
            NotFound: no such job.
        """
        if not JOB_ID.fullmatch(job_id):
            message = "must be the 32 lower-case hexadecimal digits POST /retrain returned"
            raise ValidationFailed([FieldError("job_id", message)])
        with self.engine.connect() as connection:
            row = (
                connection.execute(select(retrain_jobs).where(retrain_jobs.c.id == job_id))
                .mappings()
                .first()
            )
        if row is None:
            raise NotFound(f"no retraining job {job_id}")
        return _document(row)

    def wait(self, timeout: float = 300) -> None:
        """Wait for this process's jobs to finish (tests, shutdown)."""
        for thread in self._threads:
            thread.join(timeout)

    def _active(self) -> RowMapping | None:
        with self.engine.connect() as connection:
            return (
                connection.execute(select(retrain_jobs).where(retrain_jobs.c.active == ACTIVE))
                .mappings()
                .first()
            )

    def run(self, job_id: str) -> None:
        """Train for ``job_id`` in a child process and record how it ended."""
        with tempfile.TemporaryDirectory(prefix="xgbops-retrain-") as tmp:
            result_file = Path(tmp) / "result.json"
            command = [*self.command, "--result-file", str(result_file)]
            try:
                with subprocess.Popen(  # nosec B603
                    command,
                    cwd=self.settings.project_dir,
                    env={**os.environ, "XGBOPS_LOG_FORMAT": "json"},
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                ) as process:
                    self._update(
                        job_id, status="running", started_at=datetime.now(UTC), pid=process.pid
                    )
                    _, stderr = process.communicate()
            except OSError as exc:
                log.error("retrain.start_failed", job_id=job_id, error=repr(exc))
                self._finish(job_id, "failed", None, "training could not start")
                return
            if process.returncode == 0 and result_file.is_file():
                result = json.loads(result_file.read_text(encoding="utf-8"))
                self._finish(job_id, "succeeded", result, None)
            else:
                tail = stderr.decode("utf-8", "replace").strip().splitlines()[-20:]
                log.error(
                    "retrain.training_failed",
                    job_id=job_id,
                    status=process.returncode,
                    stderr_tail=tail,
                )
                message = (
                    f"training failed (exit status {process.returncode}); the log has the "
                    f"details under job {job_id}"
                )
                self._finish(job_id, "failed", None, message)

    def _finish(
        self, job_id: str, status: str, result: dict[str, Any] | None, error: str | None
    ) -> None:
        self._update(
            job_id,
            status=status,
            active=None,
            finished_at=datetime.now(UTC),
            result=result,
            error=error,
        )
        log.info("retrain.finished", job_id=job_id, status=status, error=error)
        metrics.observe_retrain(status)

    def _update(self, job_id: str, **values: Any) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                update(retrain_jobs).where(retrain_jobs.c.id == job_id).values(**values)
            )

    def _reap_orphans(self) -> None:
        """Fail an active job of this host whose training process no longer exists."""
        active = self._active()
        if active is None or active["host"] != socket.gethostname() or active["pid"] is None:
            return
        try:
            os.kill(active["pid"], 0)
        except ProcessLookupError:
            self._finish(active["id"], "failed", None, "the training process disappeared")
        except PermissionError:  # pragma: no cover - alive, owned by another user
            return


def _document(row: Any) -> dict[str, Any]:
    def stamp(value: datetime | None) -> str | None:
        if value is None:
            return None
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()

    result = row["result"] or None
    summary = None
    if result:
        decision = result.get("decision") or {}
        summary = {
            "model_name": result.get("model_name"),
            "version": result.get("version"),
            "promoted": bool(decision.get("promoted")),
            "reason": decision.get("reason"),
            "metrics": result.get("metrics", {}),
        }
    return {
        "job_id": row["id"],
        "status": row["status"],
        "created_at": stamp(row["created_at"]),
        "started_at": stamp(row["started_at"]),
        "finished_at": stamp(row["finished_at"]),
        "result": summary,
        "error": row["error"],
    }
