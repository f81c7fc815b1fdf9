"""Kibana import against a local server that answers as Kibana's documented API does: the status
API while starting (503, "unavailable") then ready, and the saved objects import API with its
kbn-xsrf check, multipart ``file`` field, reference resolution and per-object errors."""

from __future__ import annotations

import base64
import json
import shutil
import threading
from collections.abc import Iterator
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from xgbops.monitoring import MonitoringError
from xgbops.monitoring.kibana import Wait, import_saved_objects, load_saved_objects
from tests.cli_runner import run_xgbops as _run

REPO = Path(__file__).resolve().parents[2]
KIBANA_DIR = REPO / "monitoring" / "kibana"
FAST = Wait(timeout=5.0, initial_backoff=0.01, max_backoff=0.04, request_timeout=5.0)
PASSWORD = "kibana-test-password"  # pragma: allowlist secret
NOT_READY = (503, None)  # Kibana's plain-text "Kibana server is not ready yet"


def _status_body(level: str, core: str = "available") -> dict[str, Any]:
    return {
        "name": "kibana",
        "version": {"number": "9.1.0", "build_flavor": "default"},
        "status": {
            "overall": {"level": level, "summary": f"Kibana is {level}"},
            "core": {
                "elasticsearch": {"level": core, "summary": ""},
                "savedObjects": {"level": core, "summary": ""},
            },
        },
    }


class FakeKibana:
    """Kibana's status and import APIs on a free local port, recording every request.

    ``statuses`` is the sequence of (HTTP status, level) the status API walks through (the last
    one repeats); ``existing`` holds (type, id) of objects already in Kibana, which references
    may point to besides the uploaded file.
    """

    def __init__(self, statuses: list[tuple[int, str | None]], existing: set[Any] = frozenset()):
        self.statuses = list(statuses)
        self.existing = set(existing)
        self.requests: list[dict[str, Any]] = []
        self.degraded_core = "available"
        kibana = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                """Quiet."""

            def _answer(self, status: int, body: Any) -> None:
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                kind = "text/plain" if isinstance(body, str) else "application/json"
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - http.server's hook name
                kibana.requests.append({"method": "GET", "path": self.path, **self._meta()})
                if urlsplit(self.path).path != "/api/status":
                    self._answer(404, {"statusCode": 404, "error": "Not Found"})
                    return
                status, level = (
                    kibana.statuses.pop(0) if len(kibana.statuses) > 1 else kibana.statuses[0]
                )
                if level is None:
                    self._answer(status, "Kibana server is not ready yet")
                elif status in (401, 403):
                    self._answer(status, {"statusCode": status, "error": "Unauthorized"})
                else:
                    self._answer(status, _status_body(level, kibana.degraded_core))

            def do_POST(self) -> None:  # noqa: N802 - http.server's hook name
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                record = {"method": "POST", "path": self.path, "body": body, **self._meta()}
                kibana.requests.append(record)
                status, answer = kibana.import_answer(self.path, self.headers, body, record)
                self._answer(status, answer)

            def _meta(self) -> dict[str, Any]:
                return {"headers": {k.lower(): v for k, v in self.headers.items()}}

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def import_answer(self, path, headers, body, record) -> tuple[int, Any]:
        """Answer ``POST /api/saved_objects/_import`` as Kibana documents it."""
        if urlsplit(path).path != "/api/saved_objects/_import":
            return 404, {"statusCode": 404, "error": "Not Found"}
        if "kbn-xsrf" not in {k.lower() for k in headers.keys()}:
            return 400, {
                "statusCode": 400,
                "error": "Bad Request",
                "message": "Request must contain a kbn-xsrf header.",
            }
        message = BytesParser(policy=HTTP).parsebytes(
            f"Content-Type: {headers.get('Content-Type')}\r\n\r\n".encode() + body
        )
        parts = {
            part.get_param("name", header="content-disposition"): part
            for part in message.iter_parts()
        }
        if "file" not in parts:
            return 400, {"statusCode": 400, "error": "Bad Request", "message": "[file]: required"}
        record["filename"] = parts["file"].get_filename()
        record["objects"] = [
            json.loads(text) for text in parts["file"].get_content().splitlines() if text.strip()
        ]
        uploaded = {(o["type"], o["id"]) for o in record["objects"]}
        results, errors = [], []
        for obj in record["objects"]:
            missing = [
                {"type": ref["type"], "id": ref["id"]}
                for ref in obj.get("references", [])
                if (ref["type"], ref["id"]) not in uploaded | self.existing
            ]
            meta = {"title": obj["attributes"].get("title", ""), "icon": obj["type"]}
            if missing:
                error = {"type": "missing_references", "references": missing}
                errors.append({"id": obj["id"], "type": obj["type"], "meta": meta, "error": error})
            else:
                results.append({"id": obj["id"], "type": obj["type"], "meta": meta})
        answer: dict[str, Any] = {
            "success": not errors,
            "successCount": len(results),
            "successResults": results,
        }
        if errors:
            answer["errors"] = errors
        return 200, answer

    def calls(self, method: str) -> list[dict[str, Any]]:
        """The recorded requests of one method."""
        return [r for r in self.requests if r["method"] == method]


@pytest.fixture
def kibana() -> Iterator[Any]:
    """Start a fake Kibana built by the test: ``kibana(statuses)``."""
    servers = []

    def start(statuses, existing=frozenset()):
        server = FakeKibana(statuses, existing)
        server.thread.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.server.shutdown()
        server.server.server_close()


def _settings(make_settings, url, **monitoring):
    values = {"kibana_url": url, "elasticsearch_username": "elastic"}
    values["elasticsearch_password"] = PASSWORD
    return make_settings(monitoring={**values, **monitoring})


def test_import_waits_for_kibana_then_posts_every_saved_object(make_settings, kibana):
    server = kibana([NOT_READY, (503, "unavailable"), (200, "available")])
    settings = _settings(make_settings, server.url)
    pauses: list[float] = []

    result = import_saved_objects(settings, KIBANA_DIR, FAST, sleep=pauses.append)

    statuses = server.calls("GET")
    assert [r["path"] for r in statuses] == ["/api/status"] * 3
    assert pauses == [0.01, 0.02]  # backoff doubles between the two refused polls
    (post,) = server.calls("POST")
    split = urlsplit(post["path"])
    assert split.path == "/api/saved_objects/_import"
    assert parse_qs(split.query) == {"overwrite": ["true"]}
    assert post["headers"]["kbn-xsrf"] == "true"
    assert post["headers"]["content-type"].startswith("multipart/form-data; boundary=")
    expected_auth = base64.b64encode(f"elastic:{PASSWORD}".encode()).decode()
    assert post["headers"]["authorization"] == f"Basic {expected_auth}"
    assert post["filename"].endswith(".ndjson")
    files = sorted(KIBANA_DIR.glob("*.ndjson"))
    expected = [json.loads(t) for f in files for t in f.read_text().splitlines() if t.strip()]
    assert post["objects"] == expected
    assert result.ok and result.kibana_version == "9.1.0"
    assert sorted(result.imported) == sorted((o["type"], o["id"]) for o in expected)
    dashboards = [line for line in result.lines() if "dashboard:" in line]
    assert len(dashboards) == 5 and all("/app/dashboards#/view/" in d for d in dashboards)


def test_a_degraded_kibana_whose_core_services_are_up_is_ready(make_settings, kibana):
    server = kibana([(200, "degraded")])
    result = import_saved_objects(_settings(make_settings, server.url), KIBANA_DIR, FAST)
    assert result.ok and len(server.calls("POST")) == 1


def test_a_degraded_kibana_without_saved_objects_is_waited_for(make_settings, kibana):
    server = kibana([(200, "degraded")])
    server.degraded_core = "unavailable"
    wait = Wait(timeout=0.3, initial_backoff=0.01, max_backoff=0.05, request_timeout=2.0)
    with pytest.raises(MonitoringError, match=r"not available after 0.3 s .*HTTP 200 degraded"):
        import_saved_objects(_settings(make_settings, server.url), KIBANA_DIR, wait)
    assert len(server.calls("GET")) > 2 and not server.calls("POST")


def test_a_kibana_that_never_comes_up_times_out_with_the_last_answer(make_settings, kibana):
    server = kibana([NOT_READY])
    wait = Wait(timeout=0.3, initial_backoff=0.01, max_backoff=0.05, request_timeout=2.0)
    with pytest.raises(MonitoringError) as error:
        import_saved_objects(_settings(make_settings, server.url), KIBANA_DIR, wait)
    assert "not available after 0.3 s" in str(error.value)
    assert "Kibana server is not ready yet" in str(error.value)
    assert not server.calls("POST")


def test_an_unreachable_kibana_times_out_with_a_clear_message(make_settings, kibana):
    server = kibana([(200, "available")])
    url = server.url
    server.server.shutdown()
    server.server.server_close()
    wait = Wait(timeout=0.2, initial_backoff=0.01, max_backoff=0.05, request_timeout=1.0)
    with pytest.raises(MonitoringError, match="unreachable"):
        import_saved_objects(_settings(make_settings, url), KIBANA_DIR, wait)


def test_refused_credentials_fail_at_once(make_settings, kibana):
    server = kibana([(401, "unauthorized")])
    with pytest.raises(MonitoringError, match="refused the credentials"):
        import_saved_objects(_settings(make_settings, server.url), KIBANA_DIR, FAST)
    assert len(server.calls("GET")) == 1


def test_an_api_key_wins_over_the_password(make_settings, kibana):
    server = kibana([(200, "available")])
    key = "a2V5LWlkOmtleS1zZWNyZXQ="  # pragma: allowlist secret
    settings = _settings(make_settings, server.url, elasticsearch_api_key=key)
    import_saved_objects(settings, KIBANA_DIR, FAST)
    assert {r["headers"]["authorization"] for r in server.requests} == {f"ApiKey {key}"}


def test_another_index_prefix_renames_the_data_views(make_settings, kibana):
    server = kibana([(200, "available")])
    settings = _settings(make_settings, server.url, index_prefix="acme")
    import_saved_objects(settings, KIBANA_DIR, FAST)
    (post,) = server.calls("POST")
    titles = {
        o["id"]: o["attributes"]["title"] for o in post["objects"] if o["type"] == "index-pattern"
    }
    assert titles["xgbops-predictions"] == "acme-predictions-*"
    assert titles["xgbops-training-runs"] == "acme-training-runs"
    assert titles["xgbops-metricbeat"] == "metricbeat-*,metrics-*"


def test_an_invalid_saved_objects_file_is_named_with_its_line(tmp_path):
    broken = tmp_path / "kibana"
    shutil.copytree(KIBANA_DIR, broken)
    path = broken / "dashboard-drift.ndjson"
    lines = path.read_text().splitlines()
    lines[2] = lines[2][:-1]  # cut the closing brace
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(MonitoringError, match=r"dashboard-drift.ndjson:3: not valid JSON"):
        load_saved_objects(broken)
    path.write_text('{"type": "lens", "id": "x"}\n')
    with pytest.raises(MonitoringError, match=r":1: a saved object needs type, id, attributes"):
        load_saved_objects(broken)


def test_kibana_import_command_reports_refused_objects_and_exits_1(
    monkeypatch, capsys, project, kibana
):
    shutil.copytree(KIBANA_DIR, project / "monitoring" / "kibana")
    (project / "monitoring" / "kibana" / "data-views.ndjson").unlink()
    server = kibana([(200, "available")])
    monkeypatch.chdir(project)
    monkeypatch.setenv("XGBOPS_MONITORING__KIBANA_URL", server.url)

    status, out, _ = _run(monkeypatch, capsys, "monitor", "kibana-import", "--wait", "5")

    assert status == 1
    assert "refused lens/xgbops-predictions-latency (Latency p50 / p99 (ms)): " in out
    assert "missing_references: index-pattern/xgbops-predictions" in out
    lens = sum(o["type"] == "lens" for o in load_saved_objects(KIBANA_DIR))
    assert lens >= 25  # every Lens object was uploaded, and each was refused
    assert f"5 saved objects imported (5 dashboard), {lens} refused" in out


def test_kibana_import_command_succeeds_and_lists_the_dashboards(
    monkeypatch, capsys, project, kibana
):
    server = kibana([NOT_READY, (200, "available")])
    monkeypatch.chdir(project)  # no monitoring/kibana here: the checkout's files are used
    monkeypatch.setenv("XGBOPS_MONITORING__KIBANA_URL", server.url)

    status, out, _ = _run(monkeypatch, capsys, "monitor", "kibana-import")

    assert status == 0, out
    assert ", 0 refused" in out and out.count("/app/dashboards#/view/") == 5


def test_kibana_import_command_timeout_is_one_line_and_exit_2(monkeypatch, capsys, project, kibana):
    server = kibana([NOT_READY])
    monkeypatch.chdir(project)
    monkeypatch.setenv("XGBOPS_MONITORING__KIBANA_URL", server.url)
    status, _, err = _run(monkeypatch, capsys, "monitor", "kibana-import", "--wait", "0.2")
    assert status == 2 and "was not available after 0.2 s" in err and "Traceback" not in err
