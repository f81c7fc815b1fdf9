"""The rollout's registry decisions (``xgbops rollout``): start, promote, roll back, report.

Each moves the registry's aliases (``champion``, ``challenger``, ``previous_champion``),
exports the files serving reads into the serving folder, writes ``rollout.json`` and records
the decision (:func:`xgbops.rollout.decisions.record`) and, as tags, on the versions concerned:
``rollout.decision``, ``rollout.reason``, ``rollout.decided_at``, ``rollout.id``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from xgbops import XgbopsError
from xgbops.champion import CHALLENGER_ALIAS, PREVIOUS_ALIAS, pointer_file
from xgbops.config import Settings
from xgbops.database import create_engine_for, migrate
from xgbops.rollout.decisions import (
    change_mode,
    current_state,
    next_step,
    publish_state,
    record,
    rollout_report,
)
from xgbops.rollout.state import (
    RolloutState,
    RolloutStateError,
    new_rollout,
    now,
)
from xgbops.tracking import Tracker


class RolloutError(XgbopsError):
    """A rollout decision that cannot be taken now (the message says why and what to do)."""


class Rollouts:
    """The rollout of one model: its registry, its serving folder and its history."""

    def __init__(self, settings: Settings, tracker: Tracker | None = None) -> None:
        self.settings = settings
        self.tracker = tracker or Tracker(settings)
        self.name = settings.model_name
        self.serving: Path = settings.serving_path
        migrate(settings.history_url)
        self.engine: Engine = create_engine_for(settings.history_url)

    def close(self) -> None:
        """Release the history's connections."""
        self.engine.dispose()

    def state(self) -> RolloutState:
        """The rollout as the workers apply it (:func:`current_state`)."""
        return current_state(self.settings)

    def start(
        self,
        version: str | None = None,
        mode: str | None = None,
        share: float | None = None,
        actor: str = "cli",
    ) -> RolloutState:
        """Give ``version`` the ``challenger`` alias and put it on live traffic (without a
        version: the one training left as ``challenger``).

        Raises:
            RolloutError: the version is the champion, there is no champion, or a rollout runs.
            RolloutStateError: an unknown mode or a share outside 0..100.
            RegistryError: no such version.
        """
        config = self.settings.rollout
        mode = mode or config.mode
        share = config.share if share is None else share
        if mode == "off":
            raise RolloutStateError("mode: a rollout starts in shadow, canary or ab")
        current = self.state()
        if current.active:
            raise RolloutError(
                f"v{current.challenger_version} is on trial already: "
                "promote it or roll it back first"
            )
        if version is None:
            aliased = self.tracker.aliased(self.name, CHALLENGER_ALIAS)
            if aliased is None:
                raise RolloutError("no challenger alias: name the version to try")
            version = aliased.version
        challenger = self.tracker.version(self.name, version=version)
        champion = self.tracker.champion(self.name)
        if champion is None:
            raise RolloutError("no champion to compare with: train (and promote) one first")
        if champion.version == challenger.version:
            raise RolloutError(f"v{challenger.version} is the champion already")
        self.tracker.set_alias(self.name, CHALLENGER_ALIAS, challenger.version)
        self.tracker.export_champion(self.name, self.serving, alias=CHALLENGER_ALIAS)
        state = new_rollout(mode, share, champion.version, challenger.version)
        publish_state(self.settings, state)
        reason = f"{mode} at {share:g} % against champion v{champion.version}"
        self._decided("start", state, reason, actor)
        return state

    def change(self, mode: str, share: float | None = None, actor: str = "cli") -> RolloutState:
        """Another mode or share for the running rollout (``off`` pauses it)."""
        state = change_mode(self.settings, self.engine, mode, share, actor)
        self._tag(state, "mode", f"{mode} at {state.share:g} %")
        return state

    def ramp(self, actor: str = "cli") -> RolloutState:
        """The canary's next traffic step."""
        state = self.state()
        return self.change("canary", next_step(state, self.settings.rollout.steps), actor)

    def promote(
        self, actor: str = "cli", reason: str = "promoted on live evidence"
    ) -> RolloutState:
        """The challenger becomes champion; the old champion keeps ``previous_champion``.

        Raises:
            RolloutError: no challenger is on trial.
        """
        state = self.state()
        challenger = self.tracker.aliased(self.name, CHALLENGER_ALIAS)
        if challenger is None or state.challenger_version != challenger.version:
            raise RolloutError("no challenger on trial: `xgbops rollout start VERSION` first")
        champion = self.tracker.champion(self.name)
        if champion is not None:
            self.tracker.set_alias(self.name, PREVIOUS_ALIAS, champion.version)
        self.tracker.set_champion(self.name, challenger.version)
        self.tracker.export_champion(self.name, self.serving)
        self._end_trial()
        ended = state.ended("promote", reason)
        publish_state(self.settings, ended)
        self._decided("promote", ended, reason, actor)
        return ended

    def rollback(self, actor: str = "cli", reason: str = "rolled back") -> RolloutState:
        """Undo the last step: a rollout on trial is stopped and its challenger cleared (also
        one the guard already stopped); right after a promotion, ``champion`` goes back to
        ``previous_champion``.

        Raises:
            RolloutError: nothing to undo.
        """
        state = self.state()
        on_trial = self.tracker.aliased(self.name, CHALLENGER_ALIAS)
        if state.ended_by is None and state.challenger_version is not None:
            ended = state.ended("rollback", reason)
            publish_state(self.settings, ended)  # the workers stop routing first
            self._end_trial()
            self._decided("rollback", ended, reason, actor)
            return ended
        if state.ended_by == "guard_stop" and on_trial is not None:
            self._end_trial()  # the guard stopped the traffic; this clears the alias
            self._decided("rollback", state, f"{reason} after the guard's stop", actor)
            return state
        previous = self.tracker.aliased(self.name, PREVIOUS_ALIAS)
        if state.ended_by != "promote" or previous is None:
            raise RolloutError("nothing to roll back: no rollout on trial and no promotion to undo")
        return self._undo_promotion(state, previous.version, actor, reason)

    def _undo_promotion(
        self, state: RolloutState, previous: str, actor: str, reason: str
    ) -> RolloutState:
        replaced = self.tracker.champion(self.name)
        self.tracker.set_champion(self.name, previous)
        self.tracker.export_champion(self.name, self.serving)
        self.tracker.delete_alias(self.name, PREVIOUS_ALIAS)
        restored = replace(
            state,
            champion_version=previous,
            challenger_version=replaced.version if replaced else None,
            updated_at=now(),
            stopped_reason=f"{reason}: champion v{previous} restored",
            ended_by="rollback",
        )
        publish_state(self.settings, restored)
        self._decided("rollback", restored, restored.stopped_reason or reason, actor)
        return restored

    def report(self) -> dict[str, Any]:
        """The live comparison of the rollout (running or last), with its decisions."""
        state = self.state()
        report = rollout_report(self.settings, self.engine, state)
        self._tag_guard_stop(state)
        return report

    def _end_trial(self) -> None:
        self.tracker.delete_alias(self.name, CHALLENGER_ALIAS)
        (self.serving / pointer_file(CHALLENGER_ALIAS)).unlink(missing_ok=True)

    def _decided(self, action: str, state: RolloutState, reason: str, actor: str) -> None:
        record(self.engine, action, state, reason, actor, self.name)
        self._tag(state, action, reason)

    def _tag(self, state: RolloutState, action: str, reason: str) -> None:
        if state.challenger_version is None:
            return
        self.tracker.tag_version(
            self.name,
            state.challenger_version,
            {
                "rollout.id": state.rollout_id,
                "rollout.decision": action,
                "rollout.reason": reason[:5000],
                "rollout.decided_at": state.updated_at or now(),
                "rollout.mode": state.mode,
            },
        )

    def _tag_guard_stop(self, state: RolloutState) -> None:
        """The API has no MLflow client: a guard's stop reaches the version's tags here."""
        if state.ended_by == "guard_stop" and state.challenger_version is not None:
            self._tag(state, "guard_stop", state.stopped_reason or "stopped by the guard")
