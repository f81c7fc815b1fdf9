"""No record lost: PostgreSQL cut mid-load under gunicorn, every served prediction stored once."""

from __future__ import annotations

import time

import psycopg
import pytest

from tests.api.conftest import SteadyLoad, start_server, stop_server
from tests.api.test_contract import EXAMPLE
from tests.api.test_history import TcpProxy, through

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


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
