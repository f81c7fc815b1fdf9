"""Training against a real MLflow tracking server backed by PostgreSQL (MLFLOW_TRACKING_URI)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from xgbops.config import load_settings
from xgbops.predict import Predictor
from xgbops.tracking import Tracker
from xgbops.train import train

from tests.mlflow_server import running_mlflow_server

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def mlflow_server(postgres_url: str, tmp_path: Path) -> Iterator[str]:
    """A real ``mlflow server`` on a free port, PostgreSQL backend, proxied artifact store."""
    backend = postgres_url.replace("postgresql://", "postgresql+psycopg://", 1)
    with running_mlflow_server(backend, tmp_path / "artifacts", tmp_path / "server.log") as url:
        yield url


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
