"""The running rollout as every serving worker reads it: ``rollout.json`` in the serving folder.

One small file beside the champion's and challenger's pointers, replaced atomically like them,
so a worker picks a change up at its next look (``serve.reload_interval``) without a restart and
never reads half a file. The CLI, ``PUT /rollout`` and the guard all write it through
:func:`write_state`; nothing else does.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, cast, get_args

from xgbops import XgbopsError
from xgbops.config import RolloutMode

STATE_FILE: Final = "rollout.json"
#: The registered model's tag holding the state behind an MLflow server: every replica's
#: registry follower copies it into its own serving folder.
STATE_TAG: Final = "rollout.state"
MODES: Final = cast(tuple[str, ...], get_args(RolloutMode))
#: Arms of a rollout: who may answer a request.
CHAMPION: Final = "champion"
CHALLENGER: Final = "challenger"


class RolloutStateError(XgbopsError, ValueError):
    """A mode or share a rollout cannot take (the message names which and why)."""


@dataclass(frozen=True)
class RolloutState:
    """A rollout: its mode and share, which versions meet, and why it stopped if it did."""

    mode: str = "off"
    share: float = 0.0
    #: Drawn at each start: it salts the callers' hash, so each rollout draws its own callers.
    rollout_id: str = ""
    champion_version: str | None = None
    challenger_version: str | None = None
    started_at: str | None = None
    updated_at: str | None = None
    stopped_reason: str | None = None
    #: What ended it: ``promote``, ``rollback`` or ``guard_stop`` (None while it runs).
    ended_by: str | None = None

    @property
    def active(self) -> bool:
        """A challenger meets traffic (shadowed or answering)."""
        return self.mode != "off" and self.challenger_version is not None

    def with_mode(self, mode: str, share: float | None = None) -> RolloutState:
        """This rollout in another mode (and share); ``off`` keeps the versions for the record.

        Raises:
            RolloutStateError: an unknown mode, a share outside 0..100, or no challenger.
        """
        check_mode(mode, self.share if share is None else share)
        if not self.rollout_id:
            raise RolloutStateError("mode: no rollout; start one with `xgbops rollout start`")
        if mode != "off" and (self.challenger_version is None or self.ended_by is not None):
            raise RolloutStateError("mode: no challenger; start one with `xgbops rollout start`")
        return replace(
            self,
            mode=mode,
            share=self.share if share is None else float(share),
            updated_at=now(),
            stopped_reason=None if mode != "off" else self.stopped_reason,
        )

    def ended(self, action: str, reason: str) -> RolloutState:
        """This rollout turned off for good by ``action``, saying why."""
        return replace(self, mode="off", updated_at=now(), stopped_reason=reason, ended_by=action)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``rollout.json``, ``GET /rollout``'s ``state``)."""
        return asdict(self)


def check_mode(mode: str, share: float) -> None:
    """Raises RolloutStateError unless ``mode`` is known and ``share`` a percentage."""
    if mode not in MODES:
        raise RolloutStateError(f"mode: must be one of {', '.join(MODES)}, not {mode!r}")
    if not 0 <= share <= 100:
        raise RolloutStateError(f"share: must be a percentage from 0 to 100, not {share}")


def new_rollout(
    mode: str, share: float, champion_version: str | None, challenger_version: str
) -> RolloutState:
    """A fresh rollout of ``challenger_version`` against ``champion_version``."""
    check_mode(mode, share)
    started = now()
    return RolloutState(
        mode=mode,
        share=float(share),
        rollout_id=secrets.token_hex(6),
        champion_version=champion_version,
        challenger_version=challenger_version,
        started_at=started,
        updated_at=started,
    )


def read_state(serving: Path) -> RolloutState:
    """The rollout in ``serving``; ``off`` when there is none or the file is unreadable."""
    try:
        text = (serving / STATE_FILE).read_text(encoding="utf-8")
    except OSError:
        return RolloutState()
    return parse_state(text) or RolloutState()


def parse_state(text: str) -> RolloutState | None:
    """A state from its JSON text; None when it is not one."""
    try:
        data = json.loads(text)
        known = {key: data[key] for key in RolloutState.__dataclass_fields__ if key in data}
        state = RolloutState(**known)
        check_mode(state.mode, state.share)
    except (ValueError, TypeError, AttributeError):
        return None
    return state


def write_state(serving: Path, state: RolloutState) -> None:
    """Replace ``rollout.json`` atomically (write beside it, then rename over it)."""
    serving.mkdir(parents=True, exist_ok=True)
    partial = serving / f".{STATE_FILE}.{os.getpid()}"
    partial.write_text(state_text(state), encoding="utf-8")
    os.replace(partial, serving / STATE_FILE)


def state_text(state: RolloutState) -> str:
    """The JSON text of ``state`` (the file and the registry tag hold the same)."""
    return json.dumps(state.to_dict(), indent=2)


def caller_fraction(rollout_id: str, caller: str) -> float:
    """Where ``caller`` falls in [0, 1) for this rollout: the same caller, the same place.

    A caller is answered by the challenger when its fraction is below the share, so raising
    the share (a canary's ramp) only ever adds callers: none flips back to the champion.
    """
    digest = hashlib.blake2b(f"{rollout_id}\x1f{caller}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def now() -> str:
    """The time of a change, ISO 8601 UTC to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")
