"""``python -m api.healthcheck``: the images' probe finds the app the container runs."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import urlsplit

import pytest

from api.healthcheck import main, probe
from tests.processes import free_port


def _port(url: str) -> int:
    return int(urlsplit(url).port or 0)


class _NotReady(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the standard library's name
        self.send_response(503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        del args


@pytest.fixture
def not_ready_port():
    server = HTTPServer(("127.0.0.1", 0), _NotReady)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("app", ["flask", "fastapi"])
def test_the_probe_is_healthy_on_whichever_port_the_app_listens(servers, monkeypatch, capsys, app):
    port = _port(servers[app].url)
    variable = "XGBOPS_SERVE__PORT" if app == "flask" else "XGBOPS_SERVE__FASTAPI_PORT"
    other = "XGBOPS_SERVE__FASTAPI_PORT" if app == "flask" else "XGBOPS_SERVE__PORT"
    monkeypatch.setenv(variable, str(port))
    monkeypatch.setenv(other, str(free_port()))  # nothing listens there
    assert main() == 0
    assert capsys.readouterr().out.strip() == f"port {port}: ready"


def test_a_server_that_is_not_ready_is_unhealthy(not_ready_port, monkeypatch, capsys):
    assert probe(not_ready_port) is False
    monkeypatch.setenv("XGBOPS_SERVE__PORT", str(not_ready_port))
    assert main() == 1
    assert "not ready" in capsys.readouterr().out


def test_no_server_at_all_is_unhealthy(monkeypatch, capsys):
    for variable in ("XGBOPS_SERVE__PORT", "XGBOPS_SERVE__FASTAPI_PORT"):
        monkeypatch.setenv(variable, str(free_port()))
    assert probe(free_port()) is None
    assert main() == 1
    assert "no server answers" in capsys.readouterr().out
