"""The guard, in-process: a challenger that cannot score is stopped; the rules on a report."""

from __future__ import annotations

import pytest

from api.core.service import PredictionService
from tests.conftest import project_settings
from tests.rollout.conftest import labelled_records
from xgbops.champion import read_pointer
from xgbops.config import RolloutGuardSettings
from xgbops.rollout.actions import Rollouts
from xgbops.rollout.decisions import decisions_of, guard_trip
from xgbops.rollout.state import read_state

GUARD = RolloutGuardSettings(min_requests=10, min_labelled=30)


def _report(champion_p95=2.0, challenger_p95=2.0, p_worse=0.5, labelled=100, requests=100):
    arm = {"labelled": labelled, "requests": requests}
    return {
        "arms": {
            "champion": {**arm, "latency_ms": {"p50": 1.0, "p95": champion_p95}},
            "challenger": {**arm, "latency_ms": {"p50": 1.0, "p95": challenger_p95}},
        },
        "tests": {
            "error_rate": {"difference": 0.1, "p_worse": p_worse, "method": "test"},
        },
    }


def test_the_rules_stop_on_failures_latency_or_a_worse_error_rate_and_not_before():
    assert guard_trip(_report(), 0, 100, GUARD) is None
    assert guard_trip(None, 6, 100, GUARD).kind == "failures"  # 6 % > 5 %
    assert guard_trip(None, 5, 9, GUARD) is None  # too few attempts to judge
    assert guard_trip(_report(challenger_p95=20.0), 0, 100, GUARD).kind == "latency"
    assert guard_trip(_report(2.0, 5.0), 0, 100, GUARD) is None  # 2.5x but within noise
    assert guard_trip(_report(p_worse=0.001), 0, 100, GUARD).kind == "worse"
    assert guard_trip(_report(p_worse=0.001, labelled=29), 0, 100, GUARD) is None
    assert guard_trip(_report(p_worse=None), 0, 100, GUARD) is None  # undefined: no evidence


@pytest.fixture
def settings(rollout_project, tmp_path):
    return project_settings(
        rollout_project,
        database_url=f"sqlite:///{tmp_path / 'h.db'}",
        serve={"reload_interval": 0.01},
        rollout={"guard": {"min_requests": 10}},
        notify={"desktop": False},
    )


def test_a_challenger_that_cannot_load_never_fails_a_request_and_is_stopped(settings):
    rollouts = Rollouts(settings)
    rollouts.start("2", "canary", 100)
    pointer = read_pointer(settings.serving_path, "challenger")
    (settings.serving_path / pointer["model_dir"] / "booster.ubj").write_bytes(b"broken")
    service = PredictionService.create(settings)
    try:
        record = labelled_records(settings)[0][0]
        answers = [service.predict_valid(record, f"r{i}", f"caller-{i}") for i in range(12)]
        assert {(a["arm"], a["model_version"]) for a in answers} == {("champion", "1")}
        stopped = service.guard.check()
        assert stopped is not None and stopped.ended_by == "guard_stop"
        assert "challenger scorings failed" in str(stopped.stopped_reason)
        assert read_state(settings.serving_path) == stopped
        assert [d["action"] for d in decisions_of(service.reader.engine)][-1] == "guard_stop"
        assert service.guard.check() is None  # stopped once
    finally:
        service.close()
        rollouts.close()
