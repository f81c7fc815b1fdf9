"""The champion as serving sees it: files exported by ``xgbops``, swapped in without a restart.

``xgbops train``/``promote``/``export-champion`` write the champion's files and replace
``current.json`` atomically. Each worker looks at that file at most once per
``reload_interval`` (a ``stat``); when it changed, the new model is loaded *beside* the old one
and swapped in with one reference assignment, so a request in flight finishes on the model it
started with and no request ever waits for a load or fails during a swap.

Behind an MLflow server (``MLFLOW_TRACKING_URI=http...``), a :class:`RegistryFollower` in each
worker keeps that directory on the registry's champion, so a model promoted anywhere (a
retraining job, ``make promote`` in Jenkins) is served within ``registry_sync_interval``.
"""

from __future__ import annotations

import fcntl
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from xgbops.champion import (
    CHALLENGER_ALIAS,
    CHAMPION_ALIAS,
    RegistryClient,
    RegistryError,
    RegistryUnreachable,
    identity,
    pointer_file,
    sync_from_registry,
)
from xgbops.model import ModelFormatError
from xgbops.predict import Predictor
from xgbops.rollout.state import STATE_TAG, parse_state, read_state, write_state

from api.core.errors import ModelNotReady

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """A predictor and what the pointer says about it."""

    predictor: Predictor
    name: str
    version: str
    pointer: dict[str, Any] = field(default_factory=dict)
    loaded_at: float = field(default_factory=time.time)


class ChampionStore:
    """Holds the current champion of one model name for one worker process (or, with
    ``alias="challenger"``, the challenger of a rollout, from ``challenger.json``)."""

    def __init__(
        self, serving_path: Path, reload_interval: float = 1.0, alias: str = CHAMPION_ALIAS
    ) -> None:
        # last_error is what clients may read (/ready, 503 bodies): no path, no exception text.
        self.serving_path = serving_path
        self.reload_interval = reload_interval
        self.alias = alias
        self._pointer_name = pointer_file(alias)
        self._current: LoadedModel | None = None
        self._signature: tuple[int, int] | None = None
        self._checked_at = 0.0
        self._lock = threading.Lock()
        self.last_error: str | None = None

    def get(self) -> LoadedModel:
        """The champion to score with (reloaded first if its pointer changed).

        Raises:
            ModelNotReady: nothing has been exported yet, or it cannot be loaded.
        """
        if time.monotonic() - self._checked_at >= self.reload_interval:
            self.refresh()
        current = self._current
        if current is None:
            raise ModelNotReady(self.last_error or f"no {self.alias} has been exported yet")
        return current

    def refresh(self) -> bool:
        """Load the champion if ``current.json`` changed since the last look; True if swapped."""
        if not self._lock.acquire(blocking=False):  # pylint: disable=consider-using-with
            return False  # another thread of this worker is loading; keep serving the old one
        try:
            self._checked_at = time.monotonic()
            pointer_path = self.serving_path / self._pointer_name
            try:
                stat = pointer_path.stat()
            except FileNotFoundError:
                self.last_error = f"no {self.alias} has been exported yet"
                if self.alias != CHAMPION_ALIAS:  # a rollout ended: let the challenger go
                    self._current, self._signature = None, None
                return False
            signature = (stat.st_mtime_ns, stat.st_size)
            if signature == self._signature and self._current is not None:
                return False
            loaded = self._load(pointer_path)
            if loaded is None:
                return False
            previous, self._current, self._signature = self._current, loaded, signature
            self.last_error = None
            log.info(
                f"{self.alias}.loaded",
                model_name=loaded.name,
                model_version=loaded.version,
                previous_version=previous.version if previous else None,
            )
            return True
        finally:
            self._lock.release()

    def _load(self, pointer_path: Path) -> LoadedModel | None:
        try:
            pointer = json.loads(pointer_path.read_text(encoding="utf-8"))
            predictor = Predictor.from_directory(self.serving_path / pointer["model_dir"])
        except (OSError, ValueError, KeyError, ModelFormatError) as exc:
            self.last_error = f"the {self.alias}'s files cannot be loaded"
            log.error(f"{self.alias}.load_failed", pointer=str(pointer_path), error=repr(exc))
            return None
        # One thread per worker: XGBoost's default threading collapses throughput under load.
        predictor.model.booster.set_param({"nthread": 1})
        return LoadedModel(predictor, str(pointer["model_name"]), str(pointer["version"]), pointer)


class RegistryFollower:
    """Keeps a serving directory on the registry's champion, from a thread of one worker.

    Every worker runs one; a file lock lets one of them look at a time and the others find the
    result in place. A download happens only when the champion's run or files changed; the
    :class:`ChampionStore` of every worker then swaps to it as for any new pointer. When the
    registry does not answer, or has no champion, the model in place keeps serving.
    """

    def __init__(  # pylint: disable=too-many-arguments,too-many-positional-arguments
        self,
        client: RegistryClient,
        model_name: str,
        destination: Path,
        interval: float,
        trees_cache: Path | None = None,
    ) -> None:
        self.client = client
        self.model_name = model_name
        self.destination = destination
        self.interval = interval
        self.trees_cache = trees_cache
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_problem: str | None = None

    def start(self) -> None:
        """Look now and then every ``interval`` seconds, until :meth:`close`."""
        self._thread = threading.Thread(target=self._run, name="registry-follower", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop looking (waits for a look in progress)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.client.timeout * 3)

    def sync_once(self) -> bool:
        """One look at the registry; True when this call installed a new champion."""
        self.destination.mkdir(parents=True, exist_ok=True)
        with open(self.destination / ".sync.lock", "a+b") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # another worker is looking right now
            try:
                synced = sync_from_registry(
                    self.client,
                    self.model_name,
                    self.destination,
                    trees_cache=self.trees_cache,
                )
            except RegistryError as exc:
                unreachable = isinstance(exc, RegistryUnreachable)
                event = (
                    "champion.registry_unreachable" if unreachable else "champion.registry_failed"
                )
                self._problem(event, str(exc))
                return False
            try:
                self._sync_rollout()
            except RegistryError as exc:
                self._problem("rollout.registry_failed", str(exc))
        if synced is None:
            self._problem("champion.registry_has_none", f"no champion for {self.model_name}")
            return False
        self._last_problem = None
        if synced.changed:
            log.info("champion.synced", **identity(synced.pointer))
        return synced.changed

    def _sync_rollout(self) -> None:
        """The challenger and the rollout's state as the registry holds them
        (:func:`xgbops.rollout.decisions.publish_state`): a mode changed on any replica, or by
        ``xgbops rollout`` anywhere, reaches this one's workers too."""
        text = self.client.model_tag(self.model_name, STATE_TAG)
        state = parse_state(text) if text is not None else None
        if state is not None and state != read_state(self.destination):
            write_state(self.destination, state)
            log.info("rollout.synced", mode=state.mode, share=state.share)
        challenger = sync_from_registry(
            self.client, self.model_name, self.destination, CHALLENGER_ALIAS, self.trees_cache
        )
        if challenger is None:
            (self.destination / pointer_file(CHALLENGER_ALIAS)).unlink(missing_ok=True)
        elif challenger.changed:
            log.info("challenger.synced", **identity(challenger.pointer))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync_once()
            except OSError as exc:  # the serving directory itself (disk full, permissions)
                self._problem("champion.sync_failed", str(exc))
            self._stop.wait(self.interval)

    def _problem(self, event: str, reason: str) -> None:
        """Log a problem once, not at every look while it lasts."""
        if reason != self._last_problem:
            log.warning(event, reason=reason)
            self._last_problem = reason
