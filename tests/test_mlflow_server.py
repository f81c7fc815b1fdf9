"""Training against a real MLflow tracking server backed by PostgreSQL (MLFLOW_TRACKING_URI)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from xgbops.config import load_settings
from xgbops.predict import Predictor
from xgbops.tracking import Tracker
from xgbops.train import train

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def mlflow_server(postgres_url: str, tmp_path: Path) -> Iterator[str]:
    """A real ``mlflow server`` on a free port, PostgreSQL backend, proxied artifact store."""
    port = _free_port()
    backend = postgres_url.replace("postgresql://", "postgresql+psycopg://", 1)
    log = (tmp_path / "mlflow-server.log").open("w")
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--backend-store-uri",
        backend,
        "--artifacts-destination",
        (tmp_path / "artifacts").as_uri(),
        "--serve-artifacts",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"mlflow server exited: {(tmp_path / 'mlflow-server.log').read_text()}")
            try:
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("mlflow server did not answer /health within 120 s")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def test_training_against_a_tracking_server_on_postgresql(
    mlflow_server, postgres_url, project, monkeypatch
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    settings = load_settings(project_dir=project, train={"num_boost_round": 60})
    assert settings.tracking_uri == mlflow_server

    first = train(settings)
    second = train(settings)
    assert first.decision.promoted and not second.decision.promoted

    # nothing went to the embedded store; the server's registry has both versions and the alias
    assert not (project / ".xgbops" / "mlflow.db").exists()
    tracker = Tracker(settings)
    assert tracker.champion("churn-xgboost").version == "1"
    assert tracker.version("churn-xgboost").version == "2"
    found = requests.get(
        f"{mlflow_server}/api/2.0/mlflow/registered-models/alias",
        params={"name": "churn-xgboost", "alias": "champion"},
        timeout=10,
    ).json()
    assert found["model_version"]["version"] == "1"

    # the runs are rows in PostgreSQL, the artifacts came back through the server
    import psycopg  # pylint: disable=import-outside-toplevel

    with psycopg.connect(postgres_url) as conn:
        (runs,) = conn.execute("SELECT count(*) FROM runs WHERE status = 'FINISHED'").fetchone()
    assert runs == 2
    model_dir = tracker.download_model("churn-xgboost", alias="champion")
    example = {"state": "KS", "international_plan": "yes", "number_customer_service_calls": 5}
    assert 0 < Predictor.from_directory(model_dir).predict([example])[0].probability < 1
