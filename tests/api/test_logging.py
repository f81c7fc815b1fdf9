"""Logs of the API: one access line per request, the request id on every line of a request.

In-process tests assert on structlog events; the real servers show that a container prints
nothing but JSON lines and that the log level applies to gunicorn and uvicorn too.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from flask import Flask
from structlog.testing import capture_logs

from api.core.service import PredictionService
from api.fastapi_app.app import create_app as create_fastapi
from api.flask_app import create_app as create_flask
from tests.api.conftest import start_server, stop_server
from tests.api.test_contract import EXAMPLE
from tests.conftest import project_settings
from xgbops.logs import configure_logging

#: Trains models or starts servers: run early (tests/conftest.py orders slow modules first).
pytestmark = pytest.mark.slow

ACCESS_FIELDS = {"method", "path", "status", "duration_ms", "request_id", "remote_addr"}


@pytest.fixture(scope="module")
def service(champion_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One started service on the shared champion, for every in-process app of this module."""
    database = tmp_path_factory.mktemp("logging") / "history.db"
    settings = project_settings(champion_project, database_url=f"sqlite:///{database}")
    svc = PredictionService.create(settings)
    svc.start()
    yield svc
    svc.close()


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Leave the standard library's logging and structlog's context as the test found them."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    logging.captureWarnings(False)
    structlog.contextvars.clear_contextvars()
    root.handlers[:] = handlers
    root.setLevel(level)


def _settings(champion_project: Path, **serve: Any) -> Any:
    return project_settings(champion_project, serve=serve)


def _flask(app: Flask, method: str, path: str, **kwargs: Any) -> Any:
    return app.test_client().open(path, method=method, **kwargs)


def _fastapi(app: Any, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 4321))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(send())


def _access(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event for event in events if event["event"] == "http.request"]


@pytest.mark.parametrize("kind", ["flask", "fastapi"])
def test_one_access_event_per_request_with_its_fields(kind, champion_project, service):
    settings = _settings(champion_project)
    headers = {"X-Request-ID": "req-42"}
    with capture_logs() as events:
        if kind == "flask":
            app = create_flask(settings, service=service)
            answer = _flask(app, "POST", "/predict", json=EXAMPLE, headers=headers)
            missing = _flask(app, "GET", "/nowhere")
        else:
            app = create_fastapi(settings, service=service)
            answer = _fastapi(app, "POST", "/predict", json=EXAMPLE, headers=headers)
            missing = _fastapi(app, "GET", "/nowhere")
    assert answer.status_code == 200 and missing.status_code == 404
    predict, nowhere = _access(events)
    assert set(predict) >= ACCESS_FIELDS and predict["log_level"] == "info"
    assert (predict["method"], predict["path"], predict["status"]) == ("POST", "/predict", 200)
    assert predict["request_id"] == "req-42" and 0 < predict["duration_ms"] < 10_000
    assert predict["remote_addr"] == ("127.0.0.1" if kind == "flask" else "10.1.2.3")
    assert (nowhere["path"], nowhere["status"]) == ("/nowhere", 404)
    assert nowhere["request_id"] == missing.headers["X-Request-ID"]


@pytest.mark.parametrize("kind", ["flask", "fastapi"])
def test_the_access_log_can_be_turned_off(kind, champion_project, service):
    settings = _settings(champion_project, access_log=False)
    with capture_logs() as events:
        if kind == "flask":
            _flask(create_flask(settings, service=service), "POST", "/predict", json=EXAMPLE)
        else:
            _fastapi(create_fastapi(settings, service=service), "POST", "/predict", json=EXAMPLE)
    assert not _access(events)


def _log_inside() -> dict[str, str]:
    structlog.get_logger().warning("inside.request")
    return {"ok": "yes"}


@pytest.mark.parametrize("kind", ["flask", "fastapi"])
def test_every_event_of_a_request_carries_its_id(kind, champion_project, service):
    settings = _settings(champion_project)
    headers = {"X-Request-ID": "req-7"}
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as events:
        if kind == "flask":
            app = create_flask(settings, service=service)
            app.add_url_rule("/inside", view_func=_log_inside)
            _flask(app, "GET", "/inside", headers=headers)
            assert structlog.contextvars.get_contextvars() == {}  # cleared at teardown
        else:
            app = create_fastapi(settings, service=service)
            app.add_api_route("/inside", _log_inside)
            _fastapi(app, "GET", "/inside", headers=headers)
    inside, access = events
    assert inside["event"] == "inside.request" and access["event"] == "http.request"
    assert inside["request_id"] == access["request_id"] == "req-7"


def _fail() -> None:
    logging.getLogger("test").warning("about to fail")
    raise RuntimeError("boom")


def test_a_failing_request_logs_json_lines_under_its_id(champion_project, service, capsys):
    settings = project_settings(champion_project, log_format="json")
    configure_logging(settings)
    app = create_flask(settings, service=service)
    app.add_url_rule("/fail", view_func=_fail)
    capsys.readouterr()
    answer = _flask(app, "GET", "/fail", headers={"X-Request-ID": "req-500"})
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    assert answer.status_code == 500 and answer.headers["X-Request-ID"] == "req-500"
    warning, failure, access = lines
    assert warning["event"] == "about to fail" and failure["level"] == "error"
    assert "RuntimeError: boom" in failure["exception"]
    assert access["event"] == "http.request" and access["status"] == 500
    assert {line["request_id"] for line in lines} == {"req-500"}


# -- the real servers ---------------------------------------------------------------------------


def _serve_one_prediction(
    kind: str, project: Path, logs: Path, **env: str
) -> tuple[httpx.Response, list[dict[str, Any]]]:
    """Start ``kind`` with JSON logs, POST one /predict, stop it; its answer and its log lines."""
    server = start_server(
        kind,
        project,
        logs,
        DATABASE_URL=f"sqlite:///{logs / kind}-{len(env)}.db",
        XGBOPS_LOG_FORMAT="json",
        XGBOPS_SERVE__WORKERS="1",
        **env,
    )
    try:
        with server.client() as client:
            answer = client.post("/predict", json=EXAMPLE, headers={"X-Request-ID": f"{kind}-1"})
    finally:
        stop_server(server)
    text = server.log.read_text(encoding="utf-8")
    lines = []
    for line in text.splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"{kind} printed a line that is not JSON: {line!r}\n{text}")
    return answer, lines


@pytest.mark.parametrize("kind", ["flask", "fastapi"])
def test_a_server_prints_only_json_lines_at_the_level_of_settings(kind, champion_project, tmp_path):
    answer, lines = _serve_one_prediction(kind, champion_project, tmp_path)
    assert answer.status_code == 200
    (access,) = [line for line in lines if line.get("request_id") == f"{kind}-1"]
    assert access["event"] == "http.request" and access["level"] == "info"
    assert (access["method"], access["path"], access["status"]) == ("POST", "/predict", 200)
    assert access["remote_addr"] == "127.0.0.1" and access["duration_ms"] > 0
    server_logger = "gunicorn.error" if kind == "flask" else "uvicorn.error"
    assert any(line.get("logger") == server_logger for line in lines), lines
    assert all({"event", "level", "timestamp"} <= set(line) for line in lines), lines

    answer, quiet = _serve_one_prediction(
        kind, champion_project, tmp_path, XGBOPS_LOG_LEVEL="WARNING"
    )
    assert answer.status_code == 200
    assert [line for line in quiet if line["level"] in {"debug", "info"}] == []
