"""Server errors in both apps: the one error shape, a request id, nothing of the internals.

In-process (Flask's test client, FastAPI over ASGI) so a failure can be forced where it would
happen: the database under the history, a bug in a view, a client that leaves.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from sqlalchemy.exc import OperationalError
from structlog.testing import capture_logs

from api.core.errors import ApiError, ModelNotReady, error_body
from api.core.service import PredictionService
from api.fastapi_app.app import create_app as create_fastapi
from api.flask_app import create_app as create_flask
from tests.api.internals import leaks
from tests.conftest import project_settings

DRIVER_TEXT = 'connection to server at "10.1.2.3", port 5432 failed: FATAL: password for user "x"'


@pytest.fixture
def apps(champion_project, tmp_path):
    settings = project_settings(champion_project, database_url=f"sqlite:///{tmp_path / 'h.db'}")
    service = PredictionService.create(settings)
    yield service, create_flask(settings, service=service), create_fastapi(
        settings, service=service
    )
    service.close()


def _fastapi(app, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, path, headers=headers)

    return asyncio.run(send())


def _both(flask_app, fastapi_app, path: str, request_id: str) -> list[tuple[int, dict]]:
    headers = {"X-Request-ID": request_id}
    flask = flask_app.test_client().get(path, headers=headers)
    fastapi = _fastapi(fastapi_app, "GET", path, headers)
    return [(flask.status_code, flask.get_json()), (fastapi.status_code, fastapi.json())]


def test_a_database_failure_is_a_503_with_the_request_id_and_no_driver_text(apps, monkeypatch):
    service, flask_app, fastapi_app = apps

    def broken(**_: object) -> None:
        raise OperationalError("SELECT count(*) FROM predictions", {}, Exception(DRIVER_TEXT))

    monkeypatch.setattr(service.reader, "page", broken)
    with capture_logs() as logs:
        answers = _both(flask_app, fastapi_app, "/predictions", "req-503")
    for status, body in answers:
        assert status == 503
        assert body == {
            "error": "history_unavailable",
            "message": "the prediction history cannot be read now; retry later",
            "detail": [],
            "request_id": "req-503",
        }
    failures = [e for e in logs if e["event"] == "history.read_failed"]
    assert len(failures) == 2 and all("password for user" in e["error"] for e in failures)


def test_a_bug_is_a_json_500_with_the_request_id_and_the_traceback_only_in_the_log(
    apps, monkeypatch
):
    service, flask_app, fastapi_app = apps

    def bug() -> None:
        raise KeyError("/srv/secret/path.json")

    monkeypatch.setattr(service, "model_info", bug)
    with capture_logs() as logs:
        answers = _both(flask_app, fastapi_app, "/model", "req-500")
    for status, body in answers:
        assert status == 500
        assert body["error"] == "internal_error" and body["request_id"] == "req-500"
        assert leaks(json.dumps(body)) == [] and "secret" not in json.dumps(body)
    assert [e["log_level"] for e in logs if e["event"] == "http.unexpected_error"] == [
        "error",
        "error",
    ]


def test_readiness_says_the_database_is_down_without_saying_how(apps, monkeypatch):
    service, flask_app, fastapi_app = apps
    monkeypatch.setattr(service.writer, "database_ok", lambda: (False, DRIVER_TEXT))
    for status, body in _both(flask_app, fastapi_app, "/ready", "req-ready"):
        assert status == 503
        assert body["checks"]["database"] == {"ok": False, "reason": "it does not answer"}


def test_only_server_errors_carry_a_request_id():
    assert "request_id" not in error_body(ApiError("bad", status=400), "r1")
    assert error_body(ModelNotReady(), "r1")["request_id"] == "r1"
    assert "request_id" not in error_body(ModelNotReady(), None)


def test_metrics_are_documented_and_served_as_the_same_text_in_both_apps(apps):
    _, flask_app, fastapi_app = apps
    flask = flask_app.test_client().get("/metrics")
    fastapi = _fastapi(fastapi_app, "GET", "/metrics", {})
    assert flask.headers["Content-Type"] == fastapi.headers["content-type"]
    assert flask.headers["Content-Type"].startswith("text/plain; version=")
    documents = [
        flask_app.test_client().get("/openapi.json").get_json(),
        _fastapi(fastapi_app, "GET", "/openapi.json", {}).json(),
    ]
    for document in documents:
        content = document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
        assert list(content) == ["text/plain"]


def test_a_client_leaving_mid_request_is_an_info_line_not_an_error(apps):
    _, _, fastapi_app = apps
    sent: list[dict] = []

    async def run() -> None:
        async def receive() -> dict:
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "path": "/predict",
            "raw_path": b"/predict",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")],
            "client": ("127.0.0.1", 5000),
            "server": ("test", 80),
        }
        await fastapi_app(scope, receive, send)

    with capture_logs() as logs:
        asyncio.run(run())
    levels = {e["event"]: e["log_level"] for e in logs}
    assert levels.get("http.client_disconnected") == "info"
    assert "error" not in levels.values(), logs
