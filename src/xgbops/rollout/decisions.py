"""Decisions about a rollout that need no registry: a change of mode or share, and the guard.

Every decision is written the same way: the new ``rollout.json`` (what the workers apply), a
row of ``rollout_decisions`` in the history database (the order of events, shipped to the
monitoring sink) and a log event. The registry's part (aliases, version tags) is
:mod:`xgbops.rollout.actions`'s, which only the CLI imports: the API never loads MLflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import Engine, insert, select

from xgbops.champion import RegistryClient, RegistryError, is_server_uri
from xgbops.config import RolloutGuardSettings, Settings
from xgbops.notify import Notification, send
from xgbops.rollout.comparison import live_report
from xgbops.rollout.state import (
    CHALLENGER,
    CHAMPION,
    STATE_TAG,
    RolloutState,
    RolloutStateError,
    parse_state,
    read_state,
    state_text,
    write_state,
)
from xgbops.tables import rollout_decisions

log = structlog.get_logger(__name__)

#: Below this many milliseconds, a p95 difference is noise, whatever the ratio.
LATENCY_NOISE_MS = 5.0


@dataclass(frozen=True)
class GuardTrip:
    """Why the guard stops a rollout: ``kind`` is worse, failures or latency."""

    kind: str
    reason: str


def publish_state(settings: Settings, state: RolloutState) -> None:
    """Make ``state`` the rollout: this serving folder's ``rollout.json`` and, behind an MLflow
    server, the registered model's ``rollout.state`` tag, which every replica's registry
    follower copies into its own folder (``serve.registry_sync_interval``).

    Raises:
        xgbops.champion.RegistryError: the registry did not take it (the local file did).
    """
    write_state(settings.serving_path, state)
    uri = settings.mlflow_tracking_uri
    if is_server_uri(uri):
        RegistryClient(uri).set_model_tag(settings.model_name, STATE_TAG, state_text(state))


def current_state(settings: Settings) -> RolloutState:
    """The rollout now: behind an MLflow server the registry's copy (any replica's guard or
    ``PUT /rollout`` may have changed it there), else this serving folder's ``rollout.json``."""
    uri = settings.mlflow_tracking_uri
    if is_server_uri(uri):
        text = RegistryClient(uri).model_tag(settings.model_name, STATE_TAG)
        state = parse_state(text) if text is not None else None
        if state is not None:
            return state
    return read_state(settings.serving_path)


def record(
    engine: Engine | None,
    action: str,
    state: RolloutState,
    reason: str,
    actor: str,
    model_name: str,
) -> None:
    """Write one decision to the history's ``rollout_decisions`` (and the log)."""
    log.info(
        "rollout.decision",
        action=action,
        reason=reason,
        actor=actor,
        **{k: v for k, v in state.to_dict().items() if k != "stopped_reason"},
    )
    if engine is None:
        return
    with engine.begin() as connection:
        connection.execute(
            insert(rollout_decisions).values(
                at=datetime.now(UTC),
                model_name=model_name,
                rollout_id=state.rollout_id or "-",
                action=action,
                mode=state.mode,
                share=state.share,
                champion_version=state.champion_version,
                challenger_version=state.challenger_version,
                reason=reason,
                actor=actor,
            )
        )


def decisions_of(engine: Engine, rollout_id: str | None = None) -> list[dict[str, Any]]:
    """The decisions recorded, oldest first (of one rollout when ``rollout_id`` is given)."""
    query = select(rollout_decisions).order_by(rollout_decisions.c.id)
    if rollout_id:
        query = query.where(rollout_decisions.c.rollout_id == rollout_id)
    with engine.connect() as connection:
        rows = connection.execute(query).mappings().all()
    return [
        {**{k: v for k, v in row.items() if k != "id"}, "at": row["at"].isoformat()} for row in rows
    ]


def rollout_report(settings: Settings, engine: Engine, state: RolloutState) -> dict[str, Any]:
    """What ``GET /rollout`` and ``xgbops rollout status`` show: the model, the live comparison
    (:func:`xgbops.rollout.comparison.live_report`) and the rollout's decisions so far.

    Raises:
        sqlalchemy.exc.SQLAlchemyError: the history cannot be read.
    """
    report = live_report(settings, engine, state)
    decisions = decisions_of(engine, state.rollout_id or None)
    return {"model_name": settings.model_name, **report, "decisions": decisions}


def change_mode(
    settings: Settings,
    engine: Engine | None,
    mode: str,
    share: float | None = None,
    actor: str = "cli",
) -> RolloutState:
    """Put the running rollout in ``mode`` (and ``share``); ``off`` pauses it.

    Raises:
        RolloutStateError: an unknown mode, a share outside 0..100, or no rollout to change.
    """
    current = current_state(settings)
    changed = current.with_mode(mode, share)
    publish_state(settings, changed)
    record(engine, "mode", changed, f"{mode} at {changed.share:g} %", actor, settings.model_name)
    return changed


def next_step(state: RolloutState, steps: list[float]) -> float:
    """The canary's next traffic step after the current share.

    Raises:
        RolloutStateError: not a running canary, or already at its last step.
    """
    if state.mode != "canary" or not state.active:
        raise RolloutStateError("mode: only a running canary ramps")
    later = [step for step in steps if step > state.share]
    if not later:
        raise RolloutStateError(f"share: already at the last step ({state.share:g} %)")
    return later[0]


def guard_trip(
    report: dict[str, Any] | None,
    failures: int,
    attempts: int,
    guard: RolloutGuardSettings,
) -> GuardTrip | None:
    """Whether the live evidence says stop.

    Args:
        report: the comparison (:func:`xgbops.rollout.comparison.compare`), None when the
            history was not read this time.
        failures: challenger scorings that raised (or could not load) in this worker.
        attempts: challenger scorings tried in this worker.
        guard: the thresholds.
    """
    if attempts >= guard.min_requests and failures / attempts > guard.max_error_ratio:
        return GuardTrip(
            "failures",
            f"{failures} of {attempts} challenger scorings failed "
            f"(more than {guard.max_error_ratio:.0%})",
        )
    if report is None:
        return None
    arms = report["arms"]
    champion_p95 = arms[CHAMPION]["latency_ms"]["p95"]
    challenger_p95 = arms[CHALLENGER]["latency_ms"]["p95"]
    if (
        arms[CHALLENGER]["requests"] >= guard.min_requests
        and champion_p95 is not None
        and challenger_p95 is not None
        and challenger_p95 > guard.max_latency_ratio * champion_p95
        and challenger_p95 - champion_p95 > LATENCY_NOISE_MS
    ):
        return GuardTrip(
            "latency",
            f"challenger p95 {challenger_p95:.1f} ms against the champion's "
            f"{champion_p95:.1f} ms (over {guard.max_latency_ratio:g} times)",
        )
    test = report["tests"].get("error_rate")
    labelled = min(arm["labelled"] for arm in arms.values())
    p_worse = None if test is None else test["p_worse"]
    if p_worse is not None and labelled >= guard.min_labelled and p_worse < guard.alpha:
        return GuardTrip(
            "worse",
            f"the challenger's live error rate is higher by {test['difference']:.4f} "
            f"(one-sided p = {p_worse:.2g} < {guard.alpha}, {test['method']}, "
            f"{labelled} labels per arm at least)",
        )
    return None


def guard_stop(
    settings: Settings, engine: Engine | None, state: RolloutState, trip: GuardTrip
) -> RolloutState | None:
    """Stop ``state``'s rollout for ``trip``: the workers go back to the champion alone at their
    next look, the decision is recorded, and the notification channels say so. None when the
    rollout changed meanwhile (someone else decided first)."""
    try:
        current = current_state(settings)
    except RegistryError:  # the registry is down: judge by this folder's copy
        current = read_state(settings.serving_path)
    if current.rollout_id != state.rollout_id or not current.active:
        return None
    stopped = current.ended("guard_stop", f"guard: {trip.reason}")
    try:
        publish_state(settings, stopped)
    except RegistryError as exc:  # this folder's workers stopped; the log says the rest did not
        log.error("rollout.guard_stop_unpublished", error=str(exc))
    log.error("rollout.guard_stopped", kind=trip.kind, reason=trip.reason, **_versions(stopped))
    record(engine, "guard_stop", stopped, trip.reason, "guard", settings.model_name)
    send(
        settings,
        Notification.of_lines(
            f"rollout of {settings.model_name} v{stopped.challenger_version} stopped by the guard",
            [
                f"Reason: {trip.reason}",
                f"Mode was: {state.mode} at {state.share:g} %",
                f"Champion v{stopped.champion_version} answers every request again.",
                "Next: `xgbops rollout status` for the comparison; "
                "`xgbops rollout rollback` clears the challenger.",
            ],
            title="Rollout stopped",
            urgent=True,
        ),
    )
    return stopped


def _versions(state: RolloutState) -> dict[str, Any]:
    return {
        "rollout_id": state.rollout_id,
        "champion_version": state.champion_version,
        "challenger_version": state.challenger_version,
    }
