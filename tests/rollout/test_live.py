"""Live rollouts on real servers: gunicorn (2 workers) and uvicorn, the history on PostgreSQL,
the registry in the project's MLflow store, a real SMTP server for the guard's notice; the
project's versions are ``tests/rollout/conftest.py``'s (v2 weak, v3 broken on purpose)."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from aiosmtpd.controller import Controller

from tests.api.conftest import SteadyLoad, Server, start_server, stop_server
from tests.conftest import project_settings
from tests.processes import free_port
from tests.rollout.conftest import labelled_records
from xgbops.config import Settings
from xgbops.rollout.actions import Rollouts
from xgbops.rollout.state import read_state
from xgbops.tracking import Tracker

pytestmark = pytest.mark.slow
ADMIN_TOKEN = "rollout-admin-token"  # pragma: allowlist secret


class _Inbox:
    """An aiosmtpd handler keeping what it receives."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        del server, session
        self.messages.append(envelope.content)
        return "250 accepted"


@pytest.fixture(scope="module")
def smtp_inbox() -> Iterator[tuple[_Inbox, int]]:
    """A real SMTP server for the guard's notification."""
    inbox = _Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture
def live(
    rollout_project: Path,
    tmp_path: Path,
    postgres_admin_url: str,
    smtp_inbox: tuple[_Inbox, int],
) -> Iterator[tuple[Settings, dict[str, Server]]]:
    """A private copy of the project, both apps on a PostgreSQL history of its own, a 1 s guard
    that may judge after 30 labels per arm, and notifications to the test's SMTP server."""
    project = rollout_project
    name = f"xgbops_rollout_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_admin_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    database = f"{postgres_admin_url.rsplit('/', 1)[0]}/{name}"
    env = {
        "DATABASE_URL": database,
        "XGBOPS_RETRAIN_TOKEN": ADMIN_TOKEN,
        "XGBOPS_SERVE__RELOAD_INTERVAL": "0.2",
        "XGBOPS_ROLLOUT__GUARD__INTERVAL": "1",
        "XGBOPS_ROLLOUT__GUARD__MIN_LABELLED": "30",
        "XGBOPS_NOTIFY__SMTP_HOST": "127.0.0.1",
        "XGBOPS_NOTIFY__SMTP_PORT": str(smtp_inbox[1]),
        "XGBOPS_NOTIFY__RECIPIENTS": "ops@example.com",
        "XGBOPS_NOTIFY__DESKTOP": "false",
    }
    started: dict[str, Server] = {}
    try:
        for kind, workers in (("flask", "2"), ("fastapi", "1")):
            started[kind] = start_server(
                kind, project, tmp_path, XGBOPS_SERVE__WORKERS=workers, **env
            )
        settings = project_settings(project, database_url=database, retrain_token=ADMIN_TOKEN)
        yield settings, started
    finally:
        for server in started.values():
            stop_server(server)
        with psycopg.connect(postgres_admin_url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _start(settings: Settings, version: str, mode: str, share: float) -> Rollouts:
    rollouts = Rollouts(settings)
    rollouts.start(version, mode, share)
    return rollouts


def _until_applied(
    client: httpx.Client, record: dict[str, Any], arm: str, tries: int = 100
) -> None:
    """Wait until a request keyed to land on ``arm`` does (every worker looked at the files)."""
    for _ in range(tries):
        answers = {
            client.post("/predict", json=record, headers={"X-Rollout-Key": f"probe-{i}"}).json()[
                "arm"
            ]
            for i in range(20)
        }
        if arm in answers:
            return
        time.sleep(0.1)
    pytest.fail(f"no worker answered from the {arm} within {tries * 0.1:.0f} s")


def _rows(database_url: str) -> list[tuple[str, str, str | None, str]]:
    url = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as connection:
        return list(connection.execute("SELECT id, arm, shadow_of, model_version FROM predictions"))


def _wait_rows(database_url: str, count: int) -> list[tuple[str, str, str | None, str]]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = _rows(database_url)
        if len(rows) >= count:
            return rows
        time.sleep(0.2)
    pytest.fail(f"only {len(_rows(database_url))} of {count} predictions were stored")


def test_shadow_answers_with_the_champion_only_and_records_both_arms(live) -> None:
    settings, servers = live
    record = labelled_records(settings)[0][0]
    _start(settings, "2", "shadow", 100)
    with servers["flask"].client() as client:
        time.sleep(0.5)  # both workers look at rollout.json within 0.2 s
        answers = [client.post("/predict", json=record) for _ in range(200)]
    assert {a.status_code for a in answers} == {200}
    assert {(a.json()["arm"], a.json()["model_version"]) for a in answers} == {("champion", "1")}
    assert {(a.headers["X-Model-Arm"], a.headers["X-Model-Version"]) for a in answers} == {
        ("champion", "1")
    }
    served = {a.json()["prediction_id"] for a in answers}
    rows = _wait_rows(settings.history_url, 400)
    shadows = [row for row in rows if row[1] == "challenger"]
    assert {row[3] for row in shadows} == {"2"}
    assert {row[2] for row in shadows} == served  # each answer shadowed exactly once
    assert len(shadows) == 200

    with servers["fastapi"].client(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as client:
        answer = client.get("/rollout")
    report = answer.json()
    assert answer.status_code == 200, report
    assert report["paired"] is True and report["state"]["mode"] == "shadow"
    assert report["arms"]["challenger"]["requests"] == 200
    assert 0 <= report["agreement"]["estimate"] <= 1
    assert report["verdict"]["decision"] == "waiting"  # no labels yet


def test_canary_at_20_percent_is_20_percent_of_callers_and_sticky(live) -> None:
    settings, servers = live
    record = labelled_records(settings)[0][0]
    _start(settings, "2", "canary", 20)
    with servers["flask"].client() as client:
        _until_applied(client, record, "challenger")
        time.sleep(0.5)
        arms = [
            client.post("/predict", json=record, headers={"X-Rollout-Key": f"caller-{i}"}).json()
            for i in range(2000)
        ]
        again = [
            client.post("/predict", json=record, headers={"X-Rollout-Key": f"caller-{i}"}).json()
            for i in range(200)
        ]
    share = sum(a["arm"] == "challenger" for a in arms) / len(arms)
    assert 0.17 <= share <= 0.23
    assert [a["arm"] for a in again] == [a["arm"] for a in arms[:200]]  # same caller, same arm
    assert {a["model_version"] for a in arms if a["arm"] == "challenger"} == {"2"}
    with servers["fastapi"].client() as client:  # the twin routes the same callers alike
        twin = [
            client.post("/predict", json=record, headers={"X-Rollout-Key": f"caller-{i}"}).json()
            for i in range(200)
        ]
    assert [a["arm"] for a in twin] == [a["arm"] for a in arms[:200]]


def test_a_rollback_under_load_loses_no_request(live) -> None:
    settings, servers = live
    record = labelled_records(settings)[0][0]
    rollouts = _start(settings, "2", "ab", 50)
    with SteadyLoad(servers["flask"].url, record, 4, keep_alive=False, callers=True) as load:
        with servers["flask"].client() as client:
            _until_applied(client, record, "challenger")
        time.sleep(1)
        rolled_back_at = time.monotonic()
        rollouts.rollback()
        time.sleep(2)
    assert set(load.statuses) == {200}, load.statuses
    before = [a for t, a in load.timed_answers if t < rolled_back_at]
    after = [a for t, a in load.timed_answers if t > rolled_back_at + 1]  # 1 s: every worker looked
    assert {a["arm"] for a in before} == {"champion", "challenger"}
    assert after and {a["arm"] for a in after} == {"champion"}
    assert read_state(settings.serving_path).ended_by == "rollback"
    assert not (settings.serving_path / "challenger.json").exists()


def test_the_guard_stops_a_broken_challenger_and_says_so(live, smtp_inbox) -> None:
    settings, servers = live
    inbox, _ = smtp_inbox
    before = len(inbox.messages)
    labelled = labelled_records(settings)[:400]
    _start(settings, "3", "canary", 50)
    stopped = None
    with servers["flask"].client() as client:
        _until_applied(client, labelled[0][0], "challenger")
        for i, (record, truth) in enumerate(labelled):
            answer = client.post(
                "/predict", json=record, headers={"X-Rollout-Key": f"guard-{i}"}
            ).json()
            client.post(
                "/feedback", json={"prediction_id": answer["prediction_id"], "label": truth}
            )
            state = read_state(settings.serving_path)
            if state.ended_by is not None:
                stopped = state
                break
        deadline = time.monotonic() + 20
        while stopped is None and time.monotonic() < deadline:
            time.sleep(0.5)
            state = read_state(settings.serving_path)
            stopped = state if state.ended_by else None
        assert stopped is not None, "the guard did not stop v3"
        assert stopped.ended_by == "guard_stop" and "error rate is higher" in str(
            stopped.stopped_reason
        )
        time.sleep(1)
        after = {
            client.post("/predict", json=labelled[0][0], headers={"X-Rollout-Key": f"g{i}"}).json()[
                "arm"
            ]
            for i in range(50)
        }
    assert after == {"champion"}
    deadline = time.monotonic() + 15
    while len(inbox.messages) == before and time.monotonic() < deadline:
        time.sleep(0.2)
    notice = b"".join(inbox.messages[before:])
    assert b"stopped by the guard" in notice and b"error rate is higher" in notice
    report = Rollouts(settings).report()  # the CLI's view writes the decision to MLflow too
    assert [d["action"] for d in report["decisions"]][-1] == "guard_stop"
    assert report["verdict"]["decision"] == "rollback"
    tags = Tracker(settings).client.get_model_version(settings.model_name, "3").tags
    assert tags["rollout.decision"] == "guard_stop"


def test_mode_changes_need_admin_and_name_the_wrong_field(live) -> None:
    settings, servers = live
    _start(settings, "2", "canary", 10)
    for kind in ("flask", "fastapi"):
        with servers[kind].client() as client:
            assert client.put("/rollout", json={"mode": "ab"}).status_code == 401
            admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            bad = client.put("/rollout", json={"mode": "sideways", "share": 5}, headers=admin)
            assert bad.status_code == 422
            assert [e["field"] for e in bad.json()["detail"]] == ["mode"]
            over = client.put("/rollout", json={"mode": "ab", "share": 101}, headers=admin)
            assert over.status_code == 422 and over.json()["detail"][0]["field"] == "share"
            extra = client.put("/rollout", json={"mode": "ab", "colour": 1}, headers=admin)
            assert [e["field"] for e in extra.json()["detail"]] == ["colour"]
            changed = client.put("/rollout", json={"mode": "ab", "share": 30}, headers=admin)
            assert changed.status_code == 200, changed.text
            assert changed.json()["state"] == read_state(settings.serving_path).to_dict()
            assert read_state(settings.serving_path).share == 30
    actions = [d["action"] for d in Rollouts(settings).report()["decisions"]]
    assert actions == ["start", "mode", "mode"]
    assert Counter(actions)["mode"] == 2
