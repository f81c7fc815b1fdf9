"""The drift check end to end: history window vs training reference, report files, shipping,
an email alert through xgbops.notify (a real SMTP server) and POST /retrain (a local server)."""

from __future__ import annotations

import email
import email.policy
import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.monitoring.conftest import FAST_RETRY
from tests.monitoring.history_rows import records, write_history
from xgbops.monitoring import MonitoringError
from xgbops.monitoring.check import (
    alert_state_path,
    check_drift,
    load_reference,
    parse_window,
    request_retrain,
)
from xgbops.monitoring.events import format_time
from xgbops.monitoring.sinks import ElasticsearchSink, LocalSink, local_sink_path
from xgbops.predict import Predictor
from xgbops.champion import read_pointer

TOKEN = "drift-test-token"  # pragma: allowlist secret


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24h", timedelta(hours=24)),
        ("90m", timedelta(minutes=90)),
        ("7d", timedelta(days=7)),
        ("1.5H", timedelta(hours=1.5)),
        ("2w", timedelta(weeks=2)),
        (" 3600s ", timedelta(seconds=3600)),
    ],
)
def test_windows_are_a_number_and_a_unit(text, expected):
    assert parse_window(text) == expected


@pytest.mark.parametrize("text", ["", "24", "h", "0h", "-1h", "24 hours", "1y"])
def test_a_bad_window_is_one_clear_error(text):
    with pytest.raises(MonitoringError, match="invalid window"):
        parse_window(text)


class _Api:
    """A stand-in for the serving API's POST /retrain, recording what it received."""

    def __init__(self, status: int = 202) -> None:
        self.status = status
        self.calls: list[dict[str, Any]] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's hook name
                api.calls.append({"path": self.path, "auth": self.headers.get("Authorization")})
                body = (
                    {"job_id": "job-1", "status": "queued"}
                    if api.status == 202
                    else {"error": "forbidden", "detail": [{"field": "token", "reason": "bad"}]}
                )
                payload = json.dumps(body).encode()
                self.send_response(api.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                """Quiet."""

        self.server: ThreadingHTTPServer | None = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@pytest.fixture
def api() -> Iterator[_Api]:
    server = _Api()
    yield server
    server.stop()


def test_retrain_posts_the_bearer_token_and_reports_the_job(make_settings, api):
    settings = make_settings(retrain_token=TOKEN, monitoring={"api_url": api.url + "/"})
    assert request_retrain(settings) == f"job job-1 accepted by {api.url}/retrain"
    assert api.calls == [{"path": "/retrain", "auth": f"Bearer {TOKEN}"}]


def test_retrain_refusals_and_outages_are_reported_not_raised(make_settings, api):
    assert "XGBOPS_RETRAIN_TOKEN is not" in request_retrain(make_settings())
    api.status = 403
    settings = make_settings(retrain_token=TOKEN, monitoring={"api_url": api.url})
    assert request_retrain(settings).startswith(f"not started: {api.url}/retrain answered 403")
    api.stop()
    assert "unreachable (ConnectionError)" in request_retrain(settings)


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        self.messages.append(
            email.message_from_bytes(envelope.content, policy=email.policy.default)
        )
        return "250 OK"


@pytest.fixture
def inbox() -> Iterator[tuple[_Inbox, int]]:
    handler = _Inbox()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def shifted_history(
    settings, count: int, now: datetime, version: str = "1", shift: bool = True
) -> None:
    """``count`` served predictions over the last hour whose inputs have drifted: rows of the
    reference with daytime minutes up by two standard deviations (unless ``shift`` is False),
    scored by the champion as served."""
    reference = load_reference(settings)
    window = reference.sample(count, random_state=7).copy()
    if shift:
        window["total_day_minutes"] += 2 * reference["total_day_minutes"].std()
    inputs = [
        {k: (None if v is None or v != v else v) for k, v in row.items()}
        for row in window[settings.dataset.feature_names].astype(object).to_dict("records")
    ]
    pointer = read_pointer(settings.project_dir / ".xgbops" / "serving" / settings.model_name)
    model_dir = settings.project_dir / ".xgbops" / "serving" / settings.model_name
    predictor = Predictor.from_directory(model_dir / pointer["model_dir"])
    scores = predictor.predict_proba(inputs)
    rows = records(inputs, scores, now - timedelta(minutes=59), timedelta(seconds=20), version)
    write_history(settings.history_url, settings.state_path / "spool", rows)


@pytest.fixture
def alerting(make_monitored, inbox, api):
    """Settings that mail drift alerts to the test's SMTP server and retrain through its API."""
    _, port = inbox
    return make_monitored(
        retrain_token=TOKEN,
        notify={
            "smtp_host": "127.0.0.1",
            "smtp_port": port,
            "recipients": "ops@example.com",
            "desktop": False,
        },
        monitoring={"api_url": api.url, "drift": {"retrain_on_drift": True}},
    )


def test_a_drifted_window_is_reported_shipped_announced_and_retrained(alerting, inbox, api):
    handler, settings = inbox[0], alerting
    now = datetime.now(UTC)
    shifted_history(settings, 150, now)
    with LocalSink(local_sink_path(settings)) as sink:
        outcome = check_drift(settings, timedelta(hours=24), sink, now=now)
        assert sink.count("drift-reports") == 1
        rows = sink.read("drift-features")
    report = outcome.report
    assert report.window_rows == 150 and report.model_versions == ["1"]
    assert "total_day_minutes" in report.drifted_features
    assert report.prediction is not None  # the reference was scored by the served version
    assert len(rows) == len(settings.dataset.features) + 1
    assert outcome.shipped.created == len(rows) + 1
    saved = json.loads((settings.reports_path / "drift.json").read_text())
    assert saved["status"] == "drift" and saved["report_id"] == report.report_id
    assert (settings.reports_path / "drift.txt").read_text() == report.to_text()
    (message,) = handler.messages
    assert message["Subject"].startswith("[xgbops] drift in churn-xgboost: total_day_minutes")
    assert "total_day_minutes" in message.get_body(("plain",)).get_content()
    assert outcome.alert[0].startswith("email: sent")
    assert outcome.retrain == f"job job-1 accepted by {api.url}/retrain"
    assert api.calls == [{"path": "/retrain", "auth": f"Bearer {TOKEN}"}]


def test_the_same_drift_is_announced_once_per_realert_period(alerting, inbox, api):
    handler, settings = inbox[0], alerting
    now = datetime.now(UTC)
    shifted_history(settings, 150, now)
    with LocalSink(local_sink_path(settings)) as sink:

        def check(at, window=timedelta(hours=24)):
            return check_drift(settings, window, sink, now=at)

        first = check(now)
        again = check(now + timedelta(minutes=30))  # the next scheduled check, same drift
        later = check(now + timedelta(hours=25), window=timedelta(hours=48))

        assert first.alert and first.retrain and first.suppressed is None
        assert again.report.drift_detected and again.alert == [] and again.retrain is None
        assert again.suppressed.startswith(f"the same drift was announced at {format_time(now)}")
        assert later.alert and later.retrain  # 24 h on: announced again
        assert len(handler.messages) == 2 and len(api.calls) == 2

        # A window without drift ends the episode: the next drift is news at once.
        shifted_history(settings, 150, now + timedelta(hours=30), shift=False)
        calm = check(now + timedelta(hours=30), window=timedelta(hours=1))
        assert calm.report.status == "no_drift" and not alert_state_path(settings).exists()
        shifted_history(settings, 150, now + timedelta(hours=32))
        assert check(now + timedelta(hours=32), window=timedelta(hours=1)).alert
    assert len(handler.messages) == 3


def test_an_undrifted_or_empty_window_alerts_no_one(make_monitored, api):
    settings = make_monitored(
        retrain_token=TOKEN, monitoring={"api_url": api.url, "drift": {"retrain_on_drift": True}}
    )
    with LocalSink(local_sink_path(settings)) as sink:
        outcome = check_drift(settings, timedelta(hours=1), sink)
    assert outcome.report.status == "insufficient_data"
    assert (outcome.alert, outcome.retrain, api.calls) == ([], None, [])


def test_a_version_missing_from_the_registry_becomes_a_note(make_monitored, inbox, fake_es):
    handler, port = inbox
    settings = make_monitored(
        notify={
            "smtp_host": "127.0.0.1",
            "smtp_port": port,
            "recipients": "ops@example.com",
            "desktop": False,
        },
        monitoring={"sink": "elasticsearch", "elasticsearch_url": fake_es.url},
    )
    now = datetime.now(UTC)
    shifted_history(settings, 120, now, version="99")
    sink = ElasticsearchSink(settings.monitoring, retry=FAST_RETRY)
    outcome = check_drift(settings, timedelta(hours=2), sink, now=now)
    report = outcome.report
    assert report.drift_detected and report.prediction is None
    assert report.notes[0].startswith("predicted probability not compared: v99 not loaded")
    assert report.notes[0] in report.to_text()
    assert outcome.shipped.created == 1 + len(settings.dataset.features)
    assert {index.split("-2")[0] for index, _ in fake_es.documents()} == {
        "xgbops-drift-reports",
        "xgbops-drift-features",
    }
    (message,) = handler.messages
    assert f"Kibana: {settings.monitoring.kibana_url}" in message.get_body(("plain",)).get_content()
