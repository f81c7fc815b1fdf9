"""One server bootstrap: both apps are served as the same plan says."""

from __future__ import annotations

import os

import pytest

from api import server
from api.server import ServerPlan
from tests.conftest import project_settings


def test_both_apps_share_every_value_but_their_port(project):
    settings = project_settings(project, serve={"port": 9100, "fastapi_port": 9101, "workers": 3})
    flask, fastapi = (ServerPlan.for_app(app, settings) for app in ("flask", "fastapi"))
    assert (flask.bind, fastapi.bind) == ("127.0.0.1:9100", "127.0.0.1:9101")
    shared = ("host", "workers", "threads", "log_level", "keepalive_s", "request_timeout_s")
    assert all(getattr(flask, name) == getattr(fastapi, name) for name in shared)
    assert flask.workers == 3 and flask.keepalive_s == server.KEEPALIVE_S
    assert flask.metrics_dir != fastapi.metrics_dir  # never one wipes the other's samples


@pytest.mark.parametrize(("app", "workers", "shared"), [("flask", 1, True), ("fastapi", 1, False)])
def test_metrics_are_shared_through_files_only_across_processes(
    project, monkeypatch, app, workers, shared
):
    for name in ("PROMETHEUS_MULTIPROC_DIR", "OMP_NUM_THREADS"):  # unset, and unset after:
        monkeypatch.setenv(name, "")  # recorded, so the plan's values do not leak out
        monkeypatch.delenv(name)
    plan = ServerPlan.for_app(app, project_settings(project, serve={"workers": workers}))
    plan.prepare_environment()
    assert os.environ["OMP_NUM_THREADS"] == "1"
    assert (os.environ.get("PROMETHEUS_MULTIPROC_DIR") == str(plan.metrics_dir)) is shared
    assert plan.multiprocess_metrics is shared


def test_clearing_metrics_empties_the_directory(tmp_path, monkeypatch):
    stale = tmp_path / "metrics" / "counter_123.db"
    stale.parent.mkdir()
    stale.write_bytes(b"old samples")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(stale.parent))
    ServerPlan.clear_metrics()
    assert stale.parent.is_dir() and not any(stale.parent.iterdir())
