"""Which arm answers a request, and the challenger's shadow scoring off the response path.

Each worker holds the challenger beside the champion (a second :class:`ChampionStore` on
``challenger.json``) and looks at ``rollout.json`` at most once per ``reload_interval``, so a
mode change, a ramp, a promotion or a rollback reaches every worker within a second, without a
restart and without failing a request: a request in flight finishes on the models it started
with. What a rollout *is* and how its arms compare live in :mod:`xgbops.rollout`.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from xgbops.champion import CHALLENGER_ALIAS
from xgbops.config import Settings
from xgbops.rollout.state import (
    CHALLENGER,
    CHAMPION,
    RolloutState,
    caller_fraction,
    read_state,
)
from xgbops.rollout.state import STATE_FILE

from api.core import metrics
from api.core.access import presented_credential
from api.core.champion import ChampionStore, LoadedModel
from api.core.errors import ModelNotReady

log = structlog.get_logger(__name__)

#: Scores and records the challenger's shadows of some requests (the service's own scoring,
#: so a shadow is recorded exactly as an answer is).
ShadowScore = Callable[[LoadedModel, list["Shadow"]], None]


@dataclass(frozen=True)
class Route:
    """Where one request goes: the arm that answers and, when the challenger shadows it, the
    challenger to score it with off the response path."""

    arm: str
    challenger: LoadedModel | None = None
    shadow: bool = False


CHAMPION_ONLY = Route(CHAMPION)
#: The body of ``PUT /rollout`` as both OpenAPI documents describe it.
ROLLOUT_CHANGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["mode"],
    "additionalProperties": False,
    "properties": {
        "mode": {"type": "string", "enum": ["off", "shadow", "canary", "ab"]},
        "share": {"type": "number", "minimum": 0, "maximum": 100},
    },
    "example": {"mode": "canary", "share": 25},
}


def model_headers(body: dict[str, Any]) -> dict[str, str]:
    """Which model answered, as response headers: ``X-Model-Version`` and ``X-Model-Arm``."""
    return {"X-Model-Version": str(body["model_version"]), "X-Model-Arm": str(body["arm"])}


def request_caller(header: Callable[[str], str | None], client: str, key_header: str) -> str:
    """:func:`caller_key` of a request, from its headers (``header(name)``, any case)."""
    credential = presented_credential(header("Authorization"), header("X-API-Key"))
    return caller_key(header(key_header), credential, client)


def caller_key(explicit: str | None, credential: str | None, client: str) -> str:
    """What keeps a caller on one arm: the rollout key header if sent, else its credential
    (an API key or bearer token: one client, one arm), else its address."""
    if explicit and len(explicit) <= 256 and explicit.isprintable():
        return f"key:{explicit}"
    if credential:
        return f"credential:{credential}"
    return f"addr:{client}"


class RolloutRouter:
    """One per worker: the challenger, the rollout state, and the shadow scorer."""

    def __init__(self, settings: Settings, shadow_score: ShadowScore) -> None:
        self.serving_path = settings.serving_path
        self.reload_interval = settings.serve.reload_interval
        self.challenger = ChampionStore(
            settings.serving_path, settings.serve.reload_interval, alias=CHALLENGER_ALIAS
        )
        self.shadows = ShadowScorer(shadow_score, settings.rollout.shadow_queue)
        self._state = RolloutState()
        self._signature: tuple[int, int] | None = (-1, -1)  # never a file's: read at first look
        self._checked_at = 0.0
        #: Challenger scorings that failed in this worker, and those that ran (the guard's
        #: error ratio; shadow failures are counted by the scorer).
        self.failures = 0
        self.scorings = 0

    def start(self) -> None:
        """Start the shadow scorer's thread (after the worker forks) and read the state, so
        the rollout gauge has its series from the first scrape."""
        self.shadows.start()
        self.state()

    def close(self) -> None:
        """Stop the shadow scorer (what it holds is dropped: shadows are samples)."""
        self.shadows.close()

    def state(self) -> RolloutState:
        """The rollout as ``rollout.json`` says now (re-read when the file changed)."""
        if time.monotonic() - self._checked_at >= self.reload_interval:
            self._checked_at = time.monotonic()
            try:
                stat = (self.serving_path / STATE_FILE).stat()
                signature: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_size)
            except FileNotFoundError:
                signature = None
            if signature != self._signature:
                previous, self._state = self._state, read_state(self.serving_path)
                self._signature = signature
                if (previous.mode, previous.share) != (self._state.mode, self._state.share):
                    log.info("rollout.changed", **self._state.to_dict())
                metrics.set_rollout(self._state.mode, self._state.share)
        return self._state

    def forget(self) -> None:
        """Look at ``rollout.json`` again at the next request (this worker just changed it)."""
        self._checked_at = 0.0
        self._signature = (-1, -1)

    def route(self, caller: str, request_id: str) -> Route:
        """The arm of one request: sticky per ``caller`` in canary and A/B, sampled per request
        in shadow (a caller's every request is shadowed alike only at 100 %)."""
        state = self.state()
        if not state.active:
            return CHAMPION_ONLY
        challenger = self.loaded_challenger(state)
        if challenger is None:
            return CHAMPION_ONLY
        share = state.share / 100
        if state.mode == "shadow":
            shadow = share >= 1 or caller_fraction(state.rollout_id, request_id) < share
            return Route(CHAMPION, challenger, shadow)
        if caller_fraction(state.rollout_id, caller) < share:
            return Route(CHALLENGER, challenger)
        return Route(CHAMPION, challenger)

    def loaded_challenger(self, state: RolloutState) -> LoadedModel | None:
        """The challenger the rollout names, or None while it is not (yet) the one loaded;
        a challenger that cannot be loaded counts as a failure for the guard."""
        try:
            loaded = self.challenger.get()
        except ModelNotReady:
            if self.challenger.last_error and "cannot be loaded" in self.challenger.last_error:
                self.failed()
            return None
        return loaded if loaded.version == state.challenger_version else None

    def scored(self) -> None:
        """Count a challenger scoring that worked."""
        self.scorings += 1

    def failed(self) -> None:
        """Count a challenger scoring that raised (its request was answered by the champion)."""
        self.failures += 1
        metrics.observe_challenger_failure("answer")


@dataclass(frozen=True)
class Shadow:
    """One request the challenger shadows: its records and the champion's prediction ids."""

    records: list[dict[str, Any]]
    champion_ids: list[str]
    request_id: str


class ShadowScorer:
    """A thread scoring the challenger's shadows from a bounded queue, many requests at once.

    The champion's answer never waits for it: a request only puts its records on the queue
    (a few microseconds), and when the queue is full the shadow is dropped and counted
    (``xgbops_rollout_challenger_failures_total{stage="dropped"}``), so an overloaded challenger
    costs samples, never latency. The thread lingers a few milliseconds after the first shadow
    and scores everything that arrived meanwhile in one call: per-call overhead (featurising,
    the booster's setup) is most of a single record's cost, and the time it holds the GIL is
    time a request waits.
    """

    #: Seconds the thread gathers shadows before scoring them together.
    LINGER_S = 0.005
    #: Most requests scored in one call.
    MAX_BATCH = 256

    def __init__(self, score: ShadowScore, capacity: int) -> None:
        self._score = score
        self._queue: queue.Queue[tuple[LoadedModel, Shadow] | None] = queue.Queue(capacity)
        self._thread: threading.Thread | None = None
        self.failures = 0
        self.scored = 0

    def start(self) -> None:
        """Start scoring (one thread per worker)."""
        self._thread = threading.Thread(target=self._run, name="shadow-scorer", daemon=True)
        self._thread.start()

    def submit(self, challenger: LoadedModel, shadow: Shadow) -> bool:
        """Queue a shadow; False (and counted) when the queue is full."""
        try:
            self._queue.put_nowait((challenger, shadow))
        except queue.Full:
            metrics.observe_shadow_dropped(len(shadow.records))
            return False
        return True

    def close(self) -> None:
        """Stop after the shadows being scored."""
        if self._thread is not None:
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                pass  # a daemon thread: it ends with the process
            self._thread.join(timeout=5)

    def _run(self) -> None:
        running = True
        while running:
            first = self._queue.get()
            if first is None:
                self._queue.task_done()
                return
            time.sleep(self.LINGER_S)
            taken: list[tuple[LoadedModel, Shadow]] = [first]
            while len(taken) < self.MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.task_done()
                    running = False
                    break
                taken.append(item)
            try:
                self._score_all(taken)
            finally:
                for _ in taken:
                    self._queue.task_done()

    def _score_all(self, taken: list[tuple[LoadedModel, Shadow]]) -> None:
        """One scoring per challenger among ``taken`` (one, unless it changed meanwhile)."""
        by_model: dict[int, tuple[LoadedModel, list[Shadow]]] = {}
        for challenger, shadow in taken:
            by_model.setdefault(id(challenger), (challenger, []))[1].append(shadow)
        for challenger, shadows in by_model.values():
            try:
                self._score(challenger, shadows)
                self.scored += len(shadows)
            except Exception as exc:  # pylint: disable=broad-exception-caught
                # A challenger that raises must not kill the thread: count it for the guard.
                self.failures += len(shadows)
                metrics.observe_challenger_failure("shadow")
                log.warning("rollout.shadow_failed", error=repr(exc))
