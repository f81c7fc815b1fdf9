"""Shared fixtures: a throw-away project, fast settings, a trained champion, PostgreSQL."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import structlog

from xgbops.config import Settings, load_settings

from tests.processes import unavailable

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"

#: Environment the code reads as settings: a test never inherits the caller's (e.g. a Jenkins
#: agent's DATABASE_URL pointing at the platform's database).
SETTINGS_PREFIXES = ("XGBOPS_", "MLFLOW_", "SONAR_ADMIN_")
SETTINGS_VARIABLES = ("DATABASE_URL", "RETRAIN_TOKEN")

#: The test suite's own knobs: named like settings, read by tests only, so they are kept.
TEST_KNOBS = frozenset({"XGBOPS_TEST_POSTGRES_URL", "XGBOPS_FUZZ_EXAMPLES"})


def _is_setting(name: str) -> bool:
    return name.startswith(SETTINGS_PREFIXES) or name in SETTINGS_VARIABLES


def pytest_configure(config: pytest.Config) -> None:
    """Drop the caller's settings from the environment for the whole run, before anything reads it.

    ``clean_environ`` runs for each test, after the session fixtures that already read the
    environment: in a Jenkins build, where configuration as code sets MLFLOW_TRACKING_URI and
    more for every build, they used the platform's MLflow server. This hook runs before
    collection, so no fixture and no subprocess of the run ever sees those values.
    """
    for name in [name for name in os.environ if _is_setting(name) and name not in TEST_KNOBS]:
        del os.environ[name]


#: Test modules that use the session's running API servers (``servers``, ``postgres_servers``):
#: one pytest-xdist scope, so one worker starts those servers rather than both.
SHARED_SERVER_MODULES = frozenset(
    f"tests/api/{name}.py"
    for name in (
        "test_contract",
        "test_fuzz",
        "test_healthcheck",
        "test_http_layer",
        "test_postgres_edges",
        "test_servers",
        "test_smoke",
    )
)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Module-at-a-time scheduling, with :data:`SHARED_SERVER_MODULES` as one unit."""
    from xdist.scheduler import LoadScopeScheduling  # pylint: disable=import-outside-toplevel

    class SharedServersScheduling(LoadScopeScheduling):  # type: ignore[misc]
        """``--dist loadscope``, the modules that share the API servers kept together."""

        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "api-servers" if module in SHARED_SERVER_MODULES else module

    return SharedServersScheduling(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow modules first (a stable sort, so each keeps its order): ``make test`` runs on two
    pytest-xdist workers that take a module at a time, and with the long ones started early the
    short ones fill the end, so both workers finish together."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


#: Small enough to train in about a second, good enough to beat ROC-AUC 0.85 on the holdout.
FAST_TRAIN: dict[str, Any] = {"num_boost_round": 60, "early_stopping_rounds": 10}


def make_project(root: Path) -> Path:
    """Copy the repository's config and data into ``root``: a project the test may change."""
    shutil.copytree(REPO / "config", root / "config")
    shutil.copytree(REPO / "data", root / "data")
    return root


def project_settings(project: Path, **overrides: Any) -> Settings:
    """Settings for ``project`` with fast training, and any extra overrides (deep-merged)."""
    train = {**FAST_TRAIN, **overrides.pop("train", {})}
    return load_settings(project_dir=project, train=train, **overrides)


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts without xgbops or MLflow settings from the caller's environment,
    and leaves logging as it found it."""
    for name in list(os.environ):
        if _is_setting(name):
            monkeypatch.delenv(name)
    yield
    structlog.reset_defaults()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A fresh project directory (config + data copied from the repository)."""
    return make_project(tmp_path / "project")


@pytest.fixture
def make_settings(project: Path) -> Callable[..., Settings]:
    """Build settings for the test's project with overrides (e.g. ``train={...}``)."""
    return lambda **overrides: project_settings(project, **overrides)


@pytest.fixture
def settings(project: Path) -> Settings:
    """Fast settings on a fresh project with its own embedded MLflow store."""
    return project_settings(project)


@pytest.fixture(scope="session")
def champion_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A project with one trained, registered champion, shared by read-only tests."""
    from xgbops.train import train  # pylint: disable=import-outside-toplevel

    project = make_project(tmp_path_factory.mktemp("champion") / "project")
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if _is_setting(n)]:
            patch.delenv(name)
        train(project_settings(project))
    yield project


@pytest.fixture
def champion_settings(champion_project: Path) -> Settings:
    """Settings pointing at the shared champion project."""
    return project_settings(champion_project)


def _postgres_admin_urls() -> list[str]:
    explicit = os.environ.get("XGBOPS_TEST_POSTGRES_URL")
    if explicit:
        return [explicit]
    return [f"postgresql://{user}@127.0.0.1:5432/test" for user in ("postgres", "root")]


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """A URL of the PostgreSQL server the tests may create databases on.

    Skipped with the reason when no server answers; under ``CI=true`` that is a failure.
    """
    errors = []
    for url in _postgres_admin_urls():
        try:
            with psycopg.connect(url, connect_timeout=3):
                return url
        except psycopg.Error as exc:
            errors.append(f"{url}: {str(exc).strip()}")
    unavailable("PostgreSQL is not reachable (" + "; ".join(errors) + ")")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis server the tests may count rate limits on (each test uses keys of its own).

    Skipped with the reason when none answers; under ``CI=true`` that is a failure.
    """
    import redis  # pylint: disable=import-outside-toplevel

    url = os.environ.get("XGBOPS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        unavailable(f"Redis is not reachable at {url} ({exc})")
    return url


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A new, empty database for one test (psycopg URL); dropped afterwards."""
    name = f"xgbops_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = postgres_admin_url.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(postgres_admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
