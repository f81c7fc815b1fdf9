"""The rollout's automatic guard, a thread in every worker.

Every ``rollout.guard.interval`` seconds it judges the running rollout: this worker's own
count of challenger failures, and (in the one worker holding the serving folder's guard lock
at that moment, so the history is read once per interval, not once per worker) the live
comparison from the history. When :func:`xgbops.rollout.decisions.guard_trip` says stop, the
rollout is stopped for every worker at once through ``rollout.json``.
"""

from __future__ import annotations

import fcntl
import threading
from typing import Any

import structlog
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from xgbops.config import Settings
from xgbops.rollout.comparison import live_report
from xgbops.rollout.decisions import GuardTrip, guard_stop, guard_trip
from xgbops.rollout.state import RolloutState

from api.core import metrics
from api.core.history import reason_of
from api.core.rollout import RolloutRouter

log = structlog.get_logger(__name__)


class RolloutGuard:
    """Stops a rollout whose challenger fails, lags or is significantly worse."""

    def __init__(self, settings: Settings, router: RolloutRouter, engine: Engine) -> None:
        self.settings = settings
        self.router = router
        self.engine = engine
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Judge every interval until :meth:`close` (nothing when the guard is off)."""
        if not self.settings.rollout.guard.enabled:
            return
        self._thread = threading.Thread(target=self._run, name="rollout-guard", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop judging (waits for a judgement in progress)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def check(self) -> RolloutState | None:
        """One judgement; the stopped rollout when this call stopped it."""
        state = self.router.state()
        if not state.active:
            return None
        failures = self.router.failures + self.router.shadows.failures
        attempts = failures + self.router.scorings + self.router.shadows.scored
        report = self._report(state)
        trip: GuardTrip | None = guard_trip(report, failures, attempts, self.settings.rollout.guard)
        if trip is None:
            return None
        stopped = guard_stop(self.settings, self.engine, state, trip)
        if stopped is not None:
            metrics.observe_guard_stop(trip.kind)
        return stopped

    def _report(self, state: RolloutState) -> dict[str, Any] | None:
        """The live comparison, when this worker holds the guard lock; else None."""
        folder = self.settings.serving_path
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".guard.lock", "a+b") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return None  # another worker is judging right now
            try:
                return live_report(self.settings, self.engine, state)
            except SQLAlchemyError as exc:
                log.warning("rollout.guard_unread", error=reason_of(exc))
                return None

    def _run(self) -> None:
        interval = self.settings.rollout.guard.interval
        while not self._stop.wait(interval):
            try:
                self.check()
            except Exception as exc:  # pylint: disable=broad-exception-caught
                # The guard must outlive any one bad judgement; the next one tries again.
                log.error("rollout.guard_failed", error=repr(exc))
