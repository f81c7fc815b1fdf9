"""rollout.json: the state every worker reads, and where a caller falls."""

from __future__ import annotations

import json

import pytest

from xgbops.rollout.decisions import next_step
from xgbops.rollout.state import (
    STATE_FILE,
    RolloutState,
    RolloutStateError,
    caller_fraction,
    new_rollout,
    read_state,
    write_state,
)


def test_a_state_survives_the_file_and_a_damaged_file_reads_as_off(tmp_path):
    state = new_rollout("canary", 20, "1", "2")
    write_state(tmp_path, state)
    assert read_state(tmp_path) == state
    assert not list(tmp_path.glob(f".{STATE_FILE}.*"))  # the partial file was renamed over
    (tmp_path / STATE_FILE).write_text('{"mode": "canary", "share": 250}')
    assert read_state(tmp_path) == RolloutState()  # an impossible share is no rollout
    (tmp_path / STATE_FILE).write_text("{not json")
    assert read_state(tmp_path).mode == "off"
    assert read_state(tmp_path / "missing") == RolloutState()


def test_mode_changes_are_checked_and_name_the_field():
    state = new_rollout("shadow", 100, "1", "2")
    assert state.with_mode("canary", 5).share == 5
    with pytest.raises(RolloutStateError, match="^mode: must be one of"):
        state.with_mode("sideways")
    with pytest.raises(RolloutStateError, match="^share: "):
        state.with_mode("ab", -1)
    with pytest.raises(RolloutStateError, match="^mode: no rollout"):
        RolloutState().with_mode("canary", 5)
    ended = state.ended("rollback", "rolled back")
    assert not ended.active and ended.ended_by == "rollback"
    with pytest.raises(RolloutStateError, match="^mode: no challenger"):
        ended.with_mode("canary", 5)  # an ended rollout is not resumed: start a new one
    assert json.loads(json.dumps(ended.to_dict())) == ended.to_dict()


def test_callers_spread_evenly_and_a_ramp_only_adds_callers():
    callers = [f"caller-{i}" for i in range(20_000)]
    fractions = [caller_fraction("r1", c) for c in callers]
    assert all(0 <= f < 1 for f in fractions)
    for share in (0.05, 0.2, 0.5):  # within 5 standard deviations of the share
        observed = sum(f < share for f in fractions) / len(fractions)
        assert abs(observed - share) < 5 * (share * (1 - share) / len(fractions)) ** 0.5
    at_10 = {c for c, f in zip(callers, fractions) if f < 0.10}
    at_25 = {c for c, f in zip(callers, fractions) if f < 0.25}
    assert at_10 < at_25  # ramping keeps every caller already on the challenger
    other = [caller_fraction("r2", c) for c in callers[:1000]]
    assert other != fractions[:1000]  # a new rollout draws its own callers


def test_a_canary_ramps_through_its_steps_and_stops_at_the_last():
    steps = [5.0, 25.0, 100.0]
    state = new_rollout("canary", 5, "1", "2")
    assert next_step(state, steps) == 25.0
    assert next_step(state.with_mode("canary", 30), steps) == 100.0
    with pytest.raises(RolloutStateError, match="already at the last step"):
        next_step(state.with_mode("canary", 100), steps)
    with pytest.raises(RolloutStateError, match="only a running canary"):
        next_step(state.with_mode("shadow"), steps)
