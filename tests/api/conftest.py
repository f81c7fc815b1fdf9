"""Real servers for the API tests: gunicorn (Flask) and uvicorn (FastAPI) on free ports."""

from __future__ import annotations

import json
import os
import threading
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.internals import leaks
from tests.processes import free_port, wait_until_healthy

BIN = Path(sys.executable).parent


@dataclass
class Server:
    """A started server process and its base URL."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def client(self, **kwargs: Any) -> httpx.Client:
        """An HTTP client bound to this server."""
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)


def server_env(project: Path, **extra: str) -> dict[str, str]:
    """Environment of a server process for ``project`` (nothing leaks in from the caller)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XGBOPS_", "MLFLOW_"))}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.pop("DATABASE_URL", None)
    env.update({"XGBOPS_PROJECT_DIR": str(project), "XGBOPS_LOG_FORMAT": "json", **extra})
    return env


def start_server(kind: str, project: Path, log_dir: Path, **extra: str) -> Server:
    """Start ``flask`` (gunicorn) or ``fastapi`` (uvicorn) and wait until /health answers."""
    port = free_port()
    if kind == "flask":
        command = [str(BIN / "gunicorn"), "--config", "python:api.gunicorn_conf"]
        extra = {"XGBOPS_SERVE__PORT": str(port), **extra}
    else:
        command = [str(BIN / "python"), "-m", "api.fastapi_app"]
        extra = {"XGBOPS_SERVE__FASTAPI_PORT": str(port), **extra}
    log = log_dir / f"{kind}-{port}.log"
    process = subprocess.Popen(
        command,
        cwd=project,
        env=server_env(project, **extra),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    server = Server(kind, f"http://127.0.0.1:{port}", process, log)
    wait_until_up(server)
    return server


def wait_until_up(server: Server, timeout: float = 60) -> None:
    """Wait until the server's /health answers 200 (fail with its log otherwise)."""
    wait_until_healthy(server.name, f"{server.url}/health", server.process, server.log, timeout)


def stop_server(server: Server) -> None:
    """SIGTERM, then wait (gunicorn flushes the history on the way out)."""
    server.process.terminate()
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()


def _repo() -> Path:
    return Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def example_record() -> dict[str, Any]:
    """The example record the README uses."""
    return dict(json.loads((_repo() / "data" / "example.json").read_text()))


@pytest.fixture(scope="session")
def servers(
    champion_project: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Server]]:
    """Both apps on the shared champion, each with its own SQLite history."""
    logs = tmp_path_factory.mktemp("server-logs")
    started: dict[str, Server] = {}
    try:
        # gunicorn runs 2 workers (metrics must add up across them); uvicorn runs in-process
        # (1 worker), which also lets coverage follow it.
        for kind, workers in (("flask", "2"), ("fastapi", "1")):
            database = f"sqlite:///{logs / kind}.db"
            started[kind] = start_server(
                kind,
                champion_project,
                logs,
                DATABASE_URL=database,
                XGBOPS_SERVE__WORKERS=workers,
                XGBOPS_SERVE__BATCH_LIMIT="50",
                XGBOPS_SERVE__MAX_BODY_BYTES="65536",
            )
        yield started
    finally:
        for server in started.values():
            stop_server(server)


#: The retrain token of the ``postgres_servers`` (a test's own secret).
POSTGRES_RETRAIN_TOKEN = "postgres-servers-token"  # pragma: allowlist secret


@dataclass(frozen=True)
class PostgresServers:
    """Both apps, sharing one prediction history on the real PostgreSQL."""

    servers: dict[str, Server]
    database_url: str


@pytest.fixture(scope="session")
def postgres_servers(
    champion_project: Path, postgres_admin_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PostgresServers]:
    """Flask (gunicorn, 2 workers) and FastAPI (uvicorn) on the shared champion, the history on
    a database of their own on PostgreSQL, the limits of ``servers`` and a retrain token."""
    import uuid  # pylint: disable=import-outside-toplevel

    import psycopg  # pylint: disable=import-outside-toplevel

    name = f"xgbops_servers_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_admin_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    database = f"{postgres_admin_url.rsplit('/', 1)[0]}/{name}"
    logs = tmp_path_factory.mktemp("postgres-server-logs")
    started: dict[str, Server] = {}
    try:
        for kind, workers in (("flask", "2"), ("fastapi", "1")):  # in turn: one migrates first
            started[kind] = start_server(
                kind,
                champion_project,
                logs,
                DATABASE_URL=database,
                XGBOPS_RETRAIN_TOKEN=POSTGRES_RETRAIN_TOKEN,
                XGBOPS_SERVE__WORKERS=workers,
                XGBOPS_SERVE__BATCH_LIMIT="50",
                XGBOPS_SERVE__MAX_BODY_BYTES="65536",
            )
        yield PostgresServers(started, database)
    finally:
        for server in started.values():
            stop_server(server)
        with psycopg.connect(postgres_admin_url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs: a disk that fills up for real. Mounting needs root: skipped with the
    reason otherwise, failed under ``CI=true``."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if os.geteuid() != 0:
        reason = "mounting a tmpfs needs root (a full disk is a real one here)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI=true requires it")
        pytest.skip(reason)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill_disk(folder: Path) -> Path:
    """Write a file in ``folder`` until its disk is full; returns it (delete it to free)."""
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError:
            pass
    return filler


class SteadyLoad:
    """Client threads POSTing one record to /predict until stopped (a bounded soak test).

    ``statuses`` counts answers by status (0: the connection failed); ``timed_answers`` holds
    every 200 body in arrival order with the monotonic time its request was sent, so a test can
    judge by time rather than by count.
    """

    def __init__(
        self,
        url: str,
        body: dict[str, Any],
        threads: int = 2,
        keep_alive: bool = True,
        callers: bool = False,
    ) -> None:
        """``callers``: each request as a new caller (a fresh ``X-Rollout-Key``), so a rollout
        spreads the load over its arms."""
        self.url, self.body, self.callers = url, body, callers
        # Without keep-alive every request is a new connection that any worker may accept, so
        # the load spreads over all workers of a gunicorn server.
        self._limits = httpx.Limits(max_keepalive_connections=None if keep_alive else 0)
        self.statuses: Counter[int] = Counter()
        self.timed_answers: list[tuple[float, dict[str, Any]]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def __enter__(self) -> SteadyLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    @property
    def answers(self) -> list[dict[str, Any]]:
        """Every 200 body in arrival order."""
        return [answer for _, answer in self.timed_answers]

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30, limits=self._limits) as client:
            while not self._stop.is_set():
                sent_at = time.monotonic()
                try:
                    headers = {"X-Rollout-Key": uuid.uuid4().hex} if self.callers else None
                    response = client.post("/predict", json=self.body, headers=headers)
                except httpx.TransportError:  # a dropped request counts as a failure, status 0
                    self.statuses[0] += 1
                    continue
                self.statuses[response.status_code] += 1
                if response.status_code == 200:
                    self.timed_answers.append((sent_at, response.json()))


def _request_text(method: str, url: str, headers: Any, body: bytes | str | None) -> str:
    from urllib.parse import unquote  # pylint: disable=import-outside-toplevel

    raw = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body or "")
    return f"{method} {unquote(str(url))} {dict(headers or {})} {raw} {unquote(raw)}"


def _body(request: httpx.Request) -> bytes:
    try:
        return request.content
    except httpx.RequestNotRead:  # a streamed body: nothing to compare with
        return b""


def _check_response(status: int, text: str, request_text: str) -> None:
    """Fail the test on an error response that gives away the server's internals."""
    if status >= 400:
        found = leaks(text, request_text)
        assert not found, f"a {status} answer gives away internals: {found}\n{text[:1000]}"


@pytest.fixture(scope="session", autouse=True)
def no_internals_in_any_error() -> Iterator[None]:
    """Every error response any API test receives, from a real server or an in-process app,
    through httpx (sync or async, Starlette's TestClient included) or Flask's test client, is
    checked for driver or SQL text, tracebacks, paths, class names and settings."""
    import flask.testing  # pylint: disable=import-outside-toplevel

    send, async_send, flask_open = (
        httpx.Client.send,
        httpx.AsyncClient.send,
        flask.testing.FlaskClient.open,
    )

    def checked_send(self: httpx.Client, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        response = send(self, request, **kwargs)
        if response.status_code >= 400 and not kwargs.get("stream"):
            response.read()
            text = _request_text(request.method, request.url, request.headers, _body(request))
            _check_response(response.status_code, response.text, text)
        return response

    async def checked_async_send(
        self: httpx.AsyncClient, request: httpx.Request, **kwargs: Any
    ) -> httpx.Response:
        response = await async_send(self, request, **kwargs)
        if response.status_code >= 400 and not kwargs.get("stream"):
            await response.aread()
            text = _request_text(request.method, request.url, request.headers, _body(request))
            _check_response(response.status_code, response.text, text)
        return response

    def checked_open(self: Any, *args: Any, **kwargs: Any) -> Any:
        response = flask_open(self, *args, **kwargs)
        if response.status_code >= 400:
            body = response.get_data().decode("utf-8", "replace")
            _check_response(response.status_code, body, f"{args!r} {kwargs!r}")
        return response

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(httpx.Client, "send", checked_send)
        patch.setattr(httpx.AsyncClient, "send", checked_async_send)
        patch.setattr(flask.testing.FlaskClient, "open", checked_open)
        yield
