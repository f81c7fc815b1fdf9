"""Faults under load on PostgreSQL: the database cut or slowed, a worker killed outright, the
spool's disk full. Every acknowledged prediction is stored once; /predict never waits on them.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from tests.api.conftest import Server, SteadyLoad, fill_disk, start_server, stop_server
from tests.api.test_contract import EXAMPLE
from tests.api.test_history import TcpProxy, through

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def stored_counts(database_url: str) -> Counter[str]:
    """How many times each prediction id is stored."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT id, count(*) FROM predictions GROUP BY id").fetchall()
    return Counter({row[0]: row[1] for row in rows})


def worker_pids(server: Server) -> set[int]:
    """The gunicorn master's children: its workers."""
    pid = server.process.pid
    return {int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def log_events(server: Server) -> list[dict[str, object]]:
    """The server's JSON log lines."""
    events = []
    for line in server.log.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def test_served_predictions_survive_a_database_outage(champion_project, postgres_url, tmp_path):
    proxy = TcpProxy("127.0.0.1", 5432)
    proxy.start()
    server = start_server(
        "flask",
        champion_project,
        tmp_path,
        DATABASE_URL=through(proxy, postgres_url),
        XGBOPS_SERVE__WORKERS="2",
    )
    try:
        with SteadyLoad(server.url, EXAMPLE) as load:
            time.sleep(1.5)
            proxy.cut()  # the database is gone for the API: connections dropped and refused
            time.sleep(1.0)
            with server.client() as client:
                ready = client.get("/ready")
            time.sleep(1.0)
            served_while_down = len(load.answers)
            proxy.start()  # back, on the same port
            time.sleep(2.5)
    finally:
        stop_server(server)  # workers flush (or keep in the spool) on their way out
        proxy.cut()

    statuses = load.statuses
    served = [answer["prediction_id"] for answer in load.answers]
    assert set(statuses) == {200}, statuses  # predictions never stopped
    assert ready.status_code == 503 and ready.json()["checks"]["database"]["ok"] is False
    assert served_while_down > 0
    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute("SELECT id, count(*) FROM predictions GROUP BY id").fetchall()
    stored = {row[0]: row[1] for row in rows}
    missing = set(served) - set(stored)
    spool = list((champion_project / ".xgbops" / "spool").glob("*/spool-*.jsonl"))
    assert not missing, f"{len(missing)} of {len(served)} served predictions not stored; {spool}"
    assert all(count == 1 for count in stored.values())
    assert len(stored) == len(served) > 200


def test_a_worker_killed_under_load_loses_no_acknowledged_prediction(
    champion_project, postgres_url, tmp_path
):
    """SIGKILL gives a worker no chance to flush: what it acknowledged is in its journal, which
    a living worker replays. A flush interval of seconds makes sure it held some."""
    server = start_server(
        "flask",
        champion_project,
        tmp_path,
        DATABASE_URL=postgres_url,
        XGBOPS_SERVE__WORKERS="2",
        XGBOPS_SERVE__HISTORY_FLUSH_INTERVAL="3",
    )
    try:
        before = worker_pids(server)
        with SteadyLoad(server.url, EXAMPLE, threads=4, keep_alive=False) as load:
            time.sleep(1.5)
            victim = min(before)
            os.kill(victim, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while len(worker_pids(server) - before) < 1 and time.monotonic() < deadline:
                time.sleep(0.1)
            replaced = worker_pids(server) - before
            time.sleep(1.5)  # the replacement serves too
    finally:
        stop_server(server)  # the living workers replay the dead one's journal on their way out

    assert replaced and victim not in replaced, "gunicorn replaced the killed worker"
    assert set(load.statuses) <= {200, 0}, load.statuses  # an answer, or never acknowledged
    assert load.statuses[0] <= 8, load.statuses  # only what was in flight on the dead worker
    served = Counter(answer["prediction_id"] for answer in load.answers)
    stored = stored_counts(postgres_url)
    missing = set(served) - set(stored)
    assert not missing, f"{len(missing)} of {len(served)} acknowledged predictions not stored"
    assert set(stored.values()) == {1} and len(served) > 100
    replays = [
        event
        for event in log_events(server)
        if event.get("event") == "history.replayed"
        and str(event.get("file", "")).startswith(f"journal-{victim}-")
    ]
    assert replays, "the dead worker's journal was replayed"


def test_a_slow_database_does_not_slow_predict(champion_project, postgres_url, tmp_path):
    """Recording is write-behind: with every database round trip held 0.3 s, a prediction that
    waited on the database would take at least that; they take milliseconds."""
    proxy = TcpProxy("127.0.0.1", 5432)
    proxy.start()
    server = start_server(
        "flask", champion_project, tmp_path, DATABASE_URL=through(proxy, postgres_url)
    )
    latencies, served = [], []
    try:
        with server.client() as client:
            for _ in range(20):  # warm: connections open, model loaded
                client.post("/predict", json=EXAMPLE)
            proxy.latency = 0.3
            deadline = time.monotonic() + 4
            while time.monotonic() < deadline:
                started = time.perf_counter()
                response = client.post("/predict", json=EXAMPLE)
                latencies.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text
                served.append(response.json()["prediction_id"])
        proxy.latency = 0.0
    finally:
        stop_server(server)
        proxy.cut()

    assert len(latencies) > 40, f"only {len(latencies)} predictions in 4 s"
    assert statistics.median(latencies) < 0.1, statistics.median(latencies)
    assert sorted(latencies)[int(len(latencies) * 0.9)] < 0.3
    stored = stored_counts(postgres_url)
    assert set(served) <= set(stored) and set(stored.values()) == {1}


def test_a_full_spool_disk_is_a_503_on_ready_not_a_crash(
    champion_project, postgres_url, tmp_path, tiny_disk
):
    server = start_server(
        "flask",
        champion_project,
        tmp_path,
        DATABASE_URL=postgres_url,
        XGBOPS_SERVE__SPOOL_DIR=str(tiny_disk),
        XGBOPS_SERVE__WORKERS="1",
    )
    served = []
    try:
        with server.client() as client:
            assert client.get("/ready").status_code == 200
            filler = fill_disk(tiny_disk)
            for _ in range(20):
                response = client.post("/predict", json=EXAMPLE)
                assert response.status_code == 200, response.text  # served, not yet safe
                served.append(response.json()["prediction_id"])
            full = client.get("/ready")
            alive = client.get("/health")
            filler.unlink()
            for _ in range(5):
                served.append(client.post("/predict", json=EXAMPLE).json()["prediction_id"])
            recovered = client.get("/ready")
    finally:
        stop_server(server)

    assert full.status_code == 503, full.text
    assert full.json()["checks"]["spool"]["ok"] is False
    assert "cannot be written" in full.json()["checks"]["spool"]["reason"]
    assert alive.status_code == 200 and server.process.returncode == 0
    assert recovered.status_code == 200, recovered.text
    stored = stored_counts(postgres_url)
    assert set(served) <= set(stored) and set(stored.values()) == {1}
    assert any(e.get("event") == "history.journal_failed" for e in log_events(server))
