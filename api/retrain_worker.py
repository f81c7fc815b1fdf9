"""``python -m api.retrain_worker``: train the /retrain jobs the APIs queue.

With ``serve.retrain_runner=queue`` (compose), the API only records a job; this worker, run
from the platform image (which has the training dependencies the serving image lacks), claims
queued jobs one at a time from the history database, runs ``xgbops train`` for each and records
how it ended. The APIs' registry followers then serve the new champion if it was promoted.

It touches a heartbeat file (``<state dir>/retrain-worker.heartbeat``) after every look at the
queue that reached the database, and every few seconds while a job trains: compose's
healthcheck reads its age.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import structlog
from sqlalchemy.exc import SQLAlchemyError

from xgbops.champion import redact_uri
from xgbops.config import load_settings
from xgbops.logs import configure_logging

from api.core.history import migrate
from api.core.retrain import RetrainJobs

log = structlog.get_logger(__name__)


HEARTBEAT_FILE = "retrain-worker.heartbeat"
#: How often the heartbeat is touched while a job trains, in seconds.
HEARTBEAT_WHILE_TRAINING = 10.0


def serve_jobs(
    jobs: RetrainJobs, stop: threading.Event, poll_interval: float, heartbeat: Path
) -> int:
    """Claim and run queued jobs until ``stop`` is set; returns how many ran."""
    ran = 0
    while not stop.is_set():
        try:
            job_id = jobs.claim()
        except SQLAlchemyError as exc:  # the database is down: try again at the next turn
            log.warning("retrain.worker_database_unavailable", error=str(exc).splitlines()[0])
            stop.wait(poll_interval)
            continue
        heartbeat.touch()
        if job_id is None:
            stop.wait(poll_interval)
            continue
        log.info("retrain.claimed", job_id=job_id)
        training = threading.Event()
        beat = threading.Thread(target=_beat, args=(heartbeat, training), daemon=True)
        beat.start()
        try:
            jobs.run(job_id)
        finally:
            training.set()
            beat.join()
        ran += 1
    return ran


def _beat(heartbeat: Path, done: threading.Event) -> None:
    while not done.wait(HEARTBEAT_WHILE_TRAINING):
        heartbeat.touch()


def main(argv: list[str] | None = None) -> int:
    """Run until SIGTERM or SIGINT (a job in progress finishes first)."""
    parser = argparse.ArgumentParser(prog="python -m api.retrain_worker", description=__doc__)
    parser.add_argument("--poll-interval", type=float, default=2.0, help="seconds between looks")
    args = parser.parse_args(argv)
    settings = load_settings()
    configure_logging(settings)
    migrate(settings.history_url)
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        del frame
        log.info("retrain.worker_stopping", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info("retrain.worker_started", database=redact_uri(settings.history_url))
    settings.state_path.mkdir(parents=True, exist_ok=True)
    serve_jobs(
        RetrainJobs(settings), stop, args.poll_interval, settings.state_path / HEARTBEAT_FILE
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
