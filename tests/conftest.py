"""Shared fixtures: a throw-away project, fast settings, a trained champion, PostgreSQL."""

from __future__ import annotations

import os
import shutil
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg
import pytest
import structlog
from filelock import FileLock

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
    _share_the_cores(config)


def _share_the_cores(config: pytest.Config) -> None:
    """One core's worth of OpenMP threads per pytest-xdist worker, and idle threads that sleep.

    XGBoost's OpenMP threads busy-wait between parallel regions by default: with two workers on
    two cores (and any other load), each fit's threads spin against the other process's, and a
    one-second fit takes twenty. Waiting passively and ``cores // workers`` threads (what
    ``xgbops.tune.threads_per_worker`` does for its own processes) change no result, only who
    waits how. Set here, before any test module imports XGBoost and before pytest-xdist starts
    its workers, so the workers and every process a test starts (the CLI, DVC's stages, servers,
    Dask workers, the notebook's kernel) inherit it; a value the caller set is kept.
    """
    count = str(
        os.environ.get("PYTEST_XDIST_WORKER_COUNT") or getattr(config.option, "numprocesses", 1)
    )
    workers = int(count) if count.isdigit() and int(count) > 0 else 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (cores or 1) // workers)))
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


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


def shared_artefact(
    tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[Path], None]
) -> Path:
    """A folder ``make`` fills once for the whole run, however many pytest-xdist workers ask.

    Session fixtures run once per worker; this runs ``make`` once per ``pytest`` run: the first
    worker to ask makes it under a file lock in the run's shared temporary folder, the others
    wait for the lock and find it done (pytest-xdist's documented pattern). If ``make`` fails,
    the next to ask tries again. Without pytest-xdist it is simply a fresh temporary folder.
    The folder is shared: treat it as read-only, and copy what a test changes.
    """
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        folder = tmp_path_factory.mktemp(name)
        make(folder)
        return folder
    root = tmp_path_factory.getbasetemp().parent
    folder, done = root / name, root / f"{name}.done"
    with FileLock(root / f"{name}.lock"):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            make(folder)
            done.touch()
    return folder


def _without_settings_in_environ(action: Callable[[], Any]) -> Any:
    """Run ``action`` with no xgbops or MLflow setting in the environment (session fixtures run
    before ``clean_environ``)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if _is_setting(n)]:
            patch.delenv(name)
        return action()


def _create_mlflow_store(folder: Path) -> None:
    """An empty MLflow store, ``folder/mlflow.db``, created by MLflow as any first use does.

    MLflow points the store's Default experiment (which xgbops never uses) at ``./mlruns`` of
    the working directory: made in ``folder``, it points there rather than into the repository.
    """
    from mlflow.tracking import MlflowClient  # pylint: disable=import-outside-toplevel

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(uri, uri)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        _without_settings_in_environ(client.search_experiments)  # the tracking tables...
        _without_settings_in_environ(client.search_registered_models)  # ...and the registry's


@pytest.fixture(scope="session")
def mlflow_store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty SQLite MLflow store, migrated once for the run (MLflow runs some fifty schema
    migrations on a new store: seconds, each time). Copy it with :func:`seed_mlflow_store`."""
    return shared_artefact(tmp_path_factory, "mlflow-store", _create_mlflow_store) / "mlflow.db"


def seed_mlflow_store(template: Path, database: Path) -> Path:
    """Put a copy of the empty store ``template`` at ``database`` (which must not exist yet):
    the state MLflow leaves on first use, without its migrations. Returns ``database``."""
    assert not database.exists(), f"{database} exists: seeding it would lose its contents"
    database.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(template)) as source, closing(sqlite3.connect(database)) as copy:
        source.backup(copy)
    return database


@pytest.fixture
def empty_mlflow_store(mlflow_store_template: Path, project: Path) -> Path:
    """The test's project with its embedded MLflow store already created, empty: for tests that
    train on a fresh project and are not about the store's creation. Returns the store file."""
    return seed_mlflow_store(mlflow_store_template, project / ".xgbops" / "mlflow.db")


def _train_champion(folder: Path) -> None:
    from xgbops.train import train  # pylint: disable=import-outside-toplevel

    trained = make_project(folder / "project")
    _without_settings_in_environ(lambda: train(project_settings(trained)))


def relocate(copy: Path, original: Path) -> None:
    """Make a copy of the project folder ``original`` name its own place: every mention of
    ``original``'s path in its SQLite files (the MLflow store's experiment, run, model and
    dataset locations) and text files (MLflow's model files, the reports) becomes ``copy``'s."""
    old, new = str(original), str(copy)
    for path in (p for p in copy.rglob("*") if p.is_file()):
        content = path.read_bytes()
        if content.startswith(b"SQLite format 3\0"):
            _relocate_database(path, old, new)
        elif old.encode() in content:
            try:
                text = content.decode("utf-8")
            except UnicodeDecodeError:
                pytest.fail(f"{path} names {original} but is not text: it cannot be relocated")
            path.write_text(text.replace(old, new), encoding="utf-8")


def _relocate_database(path: Path, old: str, new: str) -> None:
    """Replace ``old`` by ``new`` in every text value of every table of a SQLite file."""
    with closing(sqlite3.connect(path)) as database:
        with database:  # one transaction, committed at the end
            tables = database.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            for (table,) in tables.fetchall():
                columns = database.execute(f'PRAGMA table_info("{table}")').fetchall()
                for column in (f'"{row[1]}"' for row in columns):
                    database.execute(
                        f'UPDATE "{table}" SET {column} = replace({column}, ?, ?) '  # nosec B608
                        f"WHERE typeof({column}) = 'text' AND instr({column}, ?) > 0",
                        (old, new, old),
                    )


@pytest.fixture(scope="session")
def champion_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with one trained, registered champion, shared by read-only tests.

    Trained once per run: under pytest-xdist each worker gets its own copy of the one trained
    project (its MLflow store, artifacts and reports relocated to the copy), so whatever a
    worker's tests leave there (histories, spools, exported models) stays that worker's.
    """
    trained = shared_artefact(tmp_path_factory, "champion", _train_champion) / "project"
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return trained
    copy = tmp_path_factory.mktemp("champion") / "project"
    shutil.copytree(trained, copy, symlinks=True)
    relocate(copy, trained)
    return copy


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
