"""`xgbops rollout`: start, mode, ramp, status, promote and rollback on a real registry."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient

from tests.cli_runner import run_xgbops
from tests.conftest import project_settings
from xgbops.champion import read_pointer
from xgbops.rollout.actions import RolloutError, Rollouts
from xgbops.rollout.decisions import decisions_of
from xgbops.rollout.state import read_state
from xgbops.train import promote_version


@pytest.fixture
def settings(rollout_project, tmp_path):
    return project_settings(rollout_project, database_url=f"sqlite:///{tmp_path / 'h.db'}")


def _aliases(settings):
    model = MlflowClient(settings.tracking_uri).get_registered_model(settings.model_name)
    return {alias: str(version) for alias, version in model.aliases.items()}


def test_start_ramp_status_promote_and_roll_back_through_the_cli(
    settings, rollout_project, monkeypatch, capsys
):
    monkeypatch.setenv("DATABASE_URL", settings.history_url)

    def xgbops(*args):
        return run_xgbops(monkeypatch, capsys, *args, cwd=rollout_project)

    status, out, _ = xgbops("rollout", "start", "2", "--mode", "canary", "--share", "5")
    assert status == 0 and "canary at 5 %, challenger v2 against champion v1" in out
    assert _aliases(settings) == {"champion": "1", "challenger": "2"}
    assert read_pointer(settings.serving_path, "challenger")["version"] == "2"

    status, out, _ = xgbops("rollout", "ramp")
    assert status == 0 and read_state(settings.serving_path).share == 10

    status, _, err = xgbops("rollout", "start", "3")
    assert status == 2 and "v2 is on trial already" in err  # one trial at a time

    status, out, _ = xgbops(
        "rollout", "status", "--json-file", "reports/rollout.json", "--markdown-file", "r.md"
    )
    report = json.loads((rollout_project / "reports" / "rollout.json").read_text())
    assert status == 0 and "**Verdict: waiting**" in out
    assert report["verdict"]["decision"] == "waiting"
    assert report["arms"]["challenger"]["version"] == "2"
    assert (rollout_project / "r.md").read_text() == out

    status, out, _ = xgbops("rollout", "promote")
    assert status == 0
    assert _aliases(settings) == {"champion": "2", "previous_champion": "1"}
    assert read_pointer(settings.serving_path)["version"] == "2"  # served at the next look
    assert not (settings.serving_path / "challenger.json").exists()
    tags = MlflowClient(settings.tracking_uri).get_model_version(settings.model_name, "2").tags
    assert tags["rollout.decision"] == "promote"

    status, out, _ = xgbops("rollout", "rollback")
    assert status == 0 and "champion v1 restored" in out
    assert _aliases(settings) == {"champion": "1"}
    assert read_pointer(settings.serving_path)["version"] == "1"

    status, _, err = xgbops("rollout", "rollback")
    assert status == 2 and "nothing to roll back" in err
    rollouts = Rollouts(settings)
    try:
        actions = [d["action"] for d in decisions_of(rollouts.engine)]
    finally:
        rollouts.close()
    assert actions == ["start", "mode", "promote", "rollback"]


def test_the_champion_cannot_challenge_itself_and_off_is_not_a_start(settings):
    rollouts = Rollouts(settings)
    try:
        with pytest.raises(RolloutError, match="v1 is the champion already"):
            rollouts.start("1", "canary", 10)
        with pytest.raises(ValueError, match="^mode: a rollout starts in"):
            rollouts.start("2", "off", 10)
        state = rollouts.start("2", "shadow", 50)
        assert state.active and read_state(settings.serving_path) == state
        stopped = rollouts.rollback()
        assert stopped.ended_by == "rollback" and not stopped.active
        assert "challenger" not in _aliases(settings)
    finally:
        rollouts.close()


def test_training_leaves_a_close_candidate_as_challenger_unless_a_trial_runs(rollout_project):
    def promote(within):
        settings = project_settings(
            rollout_project, train={"promotion": {"challenger_within": within}}
        )
        return settings, promote_version(settings, "2", baseline_metrics={})

    settings, far = promote(0.0)  # v2 (2 rounds of depth 1) is not within 0 of v1
    assert not far.promoted and not far.challenger_alias
    assert "challenger" not in _aliases(settings)
    settings, close = promote(1.0)
    assert not close.promoted and close.challenger_alias
    assert _aliases(settings)["challenger"] == "2"
    assert close.summary().endswith("now the challenger alias: `xgbops rollout start`")
    rollouts = Rollouts(settings)
    try:
        state = rollouts.start(mode="shadow", share=100)  # no version: the challenger alias
        assert state.challenger_version == "2"
        _, again = promote(1.0)
        assert not again.challenger_alias  # a version on trial is never replaced by training
    finally:
        rollouts.close()
