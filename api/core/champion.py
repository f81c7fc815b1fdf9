"""The champion as serving sees it: files exported by ``xgbops``, swapped in without a restart.

``xgbops train``/``promote``/``export-champion`` write the champion's files and replace
``current.json`` atomically. Each worker looks at that file at most once per
``reload_interval`` (a ``stat``); when it changed, the new model is loaded *beside* the old one
and swapped in with one reference assignment, so a request in flight finishes on the model it
started with and no request ever waits for a load or fails during a swap.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from xgbops.model import ModelFormatError
from xgbops.predict import POINTER_FILE, Predictor

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
    """Holds the current champion of one model name for one worker process."""

    def __init__(self, serving_path: Path, reload_interval: float = 1.0) -> None:
        self.serving_path = serving_path
        self.reload_interval = reload_interval
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
            raise ModelNotReady(self.last_error or "no champion has been exported yet")
        return current

    def refresh(self) -> bool:
        """Load the champion if ``current.json`` changed since the last look; True if swapped."""
        if not self._lock.acquire(blocking=False):  # pylint: disable=consider-using-with
            return False  # another thread of this worker is loading; keep serving the old one
        try:
            self._checked_at = time.monotonic()
            pointer_path = self.serving_path / POINTER_FILE
            try:
                stat = pointer_path.stat()
            except FileNotFoundError:
                self.last_error = f"no champion exported at {pointer_path}; run `make train`"
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
                "champion.loaded",
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
            self.last_error = f"cannot load the champion from {pointer_path}: {exc}"
            log.error("champion.load_failed", error=self.last_error)
            return None
        # One thread per worker: XGBoost's default threading collapses throughput under load.
        predictor.model.booster.set_param({"nthread": 1})
        return LoadedModel(predictor, str(pointer["model_name"]), str(pointer["version"]), pointer)
