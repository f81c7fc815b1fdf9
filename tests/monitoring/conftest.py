"""Monitoring fixtures: the fake Elasticsearch, fast retries, settings that point at them."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import project_settings
from tests.monitoring.fake_elasticsearch import FakeElasticsearch
from xgbops.config import Settings
from xgbops.monitoring.elastic import Retry

REPO = Path(__file__).resolve().parents[2]
ES_DIR = REPO / "monitoring" / "elasticsearch"
#: Retries as the production defaults, but waiting milliseconds instead of seconds.
FAST_RETRY = Retry(
    max_retries=3,
    backoff_base=0.001,
    backoff_cap=0.01,
    bulk_initial_backoff=0.001,
    bulk_max_backoff=0.01,
    request_timeout=5.0,
)


@pytest.fixture
def fake_es() -> Iterator[FakeElasticsearch]:
    """A running fake Elasticsearch 9 on a free local port."""
    server = FakeElasticsearch().start()
    yield server
    server.stop()


@pytest.fixture
def es_settings(
    make_settings: Callable[..., Settings], fake_es: FakeElasticsearch
) -> Callable[..., Settings]:
    """Settings whose sink is the fake Elasticsearch (extra monitoring keys as overrides)."""

    def build(**monitoring: Any) -> Settings:
        values = {"sink": "elasticsearch", "elasticsearch_url": fake_es.url, **monitoring}
        return make_settings(monitoring=values)

    return build


@pytest.fixture
def state_copy(champion_project: Path, tmp_path: Path) -> Path:
    """A private state directory holding a copy of the champion project's MLflow store.

    Tests may register versions, move aliases and write sinks, histories and reports there:
    the shared champion project stays as it was.
    """
    state = tmp_path / "state"
    state.mkdir()
    shutil.copy2(champion_project / ".xgbops" / "mlflow.db", state / "mlflow.db")
    return state


@pytest.fixture
def make_monitored(
    champion_project: Path, state_copy: Path, tmp_path: Path
) -> Callable[..., Settings]:
    """Settings of the champion project with state and reports in the test's own folders,
    plus overrides (validated like any settings)."""
    return lambda **overrides: project_settings(
        champion_project, state_dir=state_copy, reports_dir=tmp_path / "reports", **overrides
    )


@pytest.fixture
def monitored_settings(make_monitored: Callable[..., Settings]) -> Settings:
    """The champion project's settings with private state and reports (see make_monitored)."""
    return make_monitored()
