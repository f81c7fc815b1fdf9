"""xgbops.notify and `xgbops notify`: a real SMTP server (aiosmtpd) receives, we parse the mail."""

from __future__ import annotations

import email
import email.policy
import socket
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from xgbops import cli, notify
from xgbops.data import DataReport, Issue, write_report
from xgbops.train import PromotionDecision, TrainingResult
from tests.cli_runner import run_xgbops

SMTP_USER = "ci"
SMTP_PASSWORD = "s3cret-for-tests"  # pragma: allowlist secret
RECIPIENTS = ["ml-team@example.org", "lead@example.org"]
BUILD_URL = "http://jenkins:8080/job/training/12/"


class _Inbox:
    """An aiosmtpd handler that keeps every message it accepts."""

    def __init__(self) -> None:
        self.envelopes: list[Any] = []
        self.logins: list[tuple[str, str]] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        assert isinstance(auth_data, LoginPassword)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        self.logins.append((login, password))
        # handled=False: aiosmtpd then answers 535 itself on a refused login
        return AuthResult(success=(login, password) == (SMTP_USER, SMTP_PASSWORD), handled=False)

    def messages(self) -> list[EmailMessage]:
        return [
            email.message_from_bytes(e.content, policy=email.policy.default) for e in self.envelopes
        ]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def smtp() -> Iterator[tuple[_Inbox, int]]:
    """A real SMTP server on 127.0.0.1 that offers AUTH (LOGIN/PLAIN) without TLS."""
    inbox = _Inbox()
    port = _free_port()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        authenticator=inbox.authenticate,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture(autouse=True)
def desktop_calls(monkeypatch: pytest.MonkeyPatch) -> list[notify.Notification]:
    """Never pop a real desktop notification: record what would have been shown."""
    calls: list[notify.Notification] = []
    monkeypatch.setattr(notify, "_show_desktop", calls.append)
    monkeypatch.delenv("BUILD_NUMBER", raising=False)
    return calls


def _smtp_env(monkeypatch: pytest.MonkeyPatch, port: int, **extra: str) -> None:
    env = {
        "XGBOPS_NOTIFY__SMTP_HOST": "127.0.0.1",
        "XGBOPS_NOTIFY__SMTP_PORT": str(port),
        "XGBOPS_NOTIFY__RECIPIENTS": ",".join(RECIPIENTS),
        "XGBOPS_NOTIFY__SENDER": "jenkins@xgbops.test",
        "XGBOPS_NOTIFY__DESKTOP": "false",
        **extra,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def _run(monkeypatch, capsys, project: Path, *args: str) -> tuple[int, str, str]:
    """Run ``xgbops ARGS`` through the real entry point in ``project``: (status, out, err)."""
    return run_xgbops(monkeypatch, capsys, *args, cwd=project)


def _training_result(project: Path, promoted: bool = True) -> Path:
    decision = PromotionDecision(
        metric="roc_auc",
        challenger_version="3",
        challenger_score=0.921349,
        champion_version="2",
        champion_score=0.900112,
        promoted=promoted,
        reason="challenger is better" if promoted else "champion is at least as good",
    )
    result = TrainingResult(
        run_id="0123abcd",
        model_name="churn-xgboost",
        version="3",
        metrics={"roc_auc": 0.921349, "f1": 0.613377},
        best_iteration=57,
        duration_seconds=3.4,
        decision=decision,
        report_dir=project / "reports" / "training",
    )
    return result.write(project / "reports" / "train-result.json")


def _data_report(project: Path, issues: list[Issue] | None = None) -> Path:
    report = DataReport(
        dataset="churn",
        path="data/churn.csv",
        sha256="f" * 64,
        rows=5000,
        columns=21,
        positive_rate=0.14,
        issues=issues or [],
    )
    return write_report(report, project / "reports")[0]


def _text(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


def _html(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("html",))
    assert part is not None
    return str(part.get_content())


def test_cli_mails_the_job_result_with_metrics_decision_data_check_and_links(
    monkeypatch, capsys, project, smtp
):
    inbox, port = smtp
    _smtp_env(monkeypatch, port, MLFLOW_TRACKING_URI="http://mlflow:5000", BUILD_NUMBER="12")
    _training_result(project)
    _data_report(project)

    status, out, err = _run(
        monkeypatch, capsys, project,
        "notify", "--job", "training", "--status", "success", "--duration", "133",
        "--url", BUILD_URL,
        "--summary", "reports/train-result.json", "--summary", "reports/data-check.json",
    )  # fmt: skip

    assert status == 0, err
    assert f"email: sent (to {', '.join(RECIPIENTS)} via 127.0.0.1:{port})" in out
    assert [e.rcpt_tos for e in inbox.envelopes] == [RECIPIENTS]
    assert inbox.envelopes[0].mail_from == "jenkins@xgbops.test"
    (message,) = inbox.messages()
    assert message["Subject"] == "[xgbops] training #12: SUCCESS in 2m 13s"
    assert message["To"] == ", ".join(RECIPIENTS)
    text = _text(message)
    for line in (
        "model: churn-xgboost v3",
        "holdout roc_auc: 0.9213",
        "holdout f1: 0.6134",
        "champion changed: yes",
        "challenger v3 roc_auc=0.9213 vs champion v2 roc_auc=0.9001",
        "data check: PASSED",
        "rows: 5000, columns: 21",
        f"Build: {BUILD_URL}",
        "MLflow: http://mlflow:5000",
    ):
        assert line in text, line
    page = _html(message)
    assert "champion changed: yes" in page
    assert f'<a href="{BUILD_URL}">' in page
    assert '<a href="http://mlflow:5000">' in page


def test_send_logs_in_and_delivers_an_alert_built_from_lines(make_settings, smtp):
    inbox, port = smtp
    settings = make_settings(
        notify={
            "smtp_host": "127.0.0.1",
            "smtp_port": port,
            "smtp_user": SMTP_USER,
            "smtp_password": SMTP_PASSWORD,
            "recipients": ["oncall@example.org"],
            "desktop": False,
        }
    )
    alert = notify.Notification.of_lines(
        "drift detected on churn-xgboost",
        ["feature total_day_minutes: PSI 0.31 >= 0.2", "<predictions> 812 in the last 24h"],
        title="Drift report",
        links=[notify.Link("Kibana", "http://kibana:5601/app/dashboards")],
    )

    report = notify.send(settings, alert)

    assert report.email.status == "sent" and report.channels_used == ["email"]
    assert inbox.logins == [(SMTP_USER, SMTP_PASSWORD)]
    (message,) = inbox.messages()
    assert message["Subject"] == "[xgbops] drift detected on churn-xgboost"
    assert "feature total_day_minutes: PSI 0.31 >= 0.2" in _text(message)
    page = _html(message)
    assert "&lt;predictions&gt; 812" in page and "<predictions>" not in page
    assert '<a href="http://kibana:5601/app/dashboards">' in page


def test_wrong_smtp_password_exits_1_naming_server_and_user(monkeypatch, capsys, project, smtp):
    inbox, port = smtp
    _smtp_env(
        monkeypatch,
        port,
        XGBOPS_NOTIFY__SMTP_USER=SMTP_USER,
        XGBOPS_NOTIFY__SMTP_PASSWORD="wrong",  # pragma: allowlist secret
    )
    status, _, err = _run(
        monkeypatch, capsys, project, "notify", "--job", "data", "--status", "FAILURE",
        "--duration", "4",
    )  # fmt: skip
    assert status == 1
    assert f"SMTP server 127.0.0.1:{port} refused the login of 'ci': 535" in err
    assert "Traceback" not in err
    # smtplib tries each mechanism the server offers (PLAIN, then LOGIN) before giving up
    assert not inbox.envelopes and set(inbox.logins) == {(SMTP_USER, "wrong")}


def test_smtp_server_down_exits_1_naming_host_and_port(monkeypatch, capsys, project):
    port = _free_port()  # nothing listens there
    _smtp_env(monkeypatch, port)
    status, _, err = _run(
        monkeypatch, capsys, project, "notify", "--job", "quality", "--status", "SUCCESS",
        "--duration", "60",
    )  # fmt: skip
    assert status == 1
    assert f"error: email not sent: cannot reach SMTP server 127.0.0.1:{port}" in err


def test_without_smtp_host_email_is_skipped_and_exit_is_0(monkeypatch, capsys, project):
    monkeypatch.setenv("XGBOPS_NOTIFY__DESKTOP", "false")
    status, out, _ = _run(
        monkeypatch, capsys, project, "notify", "--job", "quality", "--status", "SUCCESS",
        "--duration", "60",
    )  # fmt: skip
    assert status == 0
    assert "email: skipped (no SMTP host configured (XGBOPS_NOTIFY__SMTP_HOST))" in out
    assert "desktop: skipped (disabled" in out


def test_smtp_host_without_recipients_is_a_failure(make_settings):
    settings = make_settings(notify={"smtp_host": "127.0.0.1", "desktop": False})
    report = notify.send(settings, notify.Notification.of_lines("x", ["y"]))
    assert report.email_failed
    assert "no recipients (XGBOPS_NOTIFY__RECIPIENTS)" in report.email.detail


def test_a_missing_summary_is_named_and_the_mail_still_goes(monkeypatch, capsys, project, smtp):
    inbox, port = smtp
    _smtp_env(monkeypatch, port)
    status, _, err = _run(
        monkeypatch, capsys, project, "notify", "--job", "training", "--status", "FAILURE",
        "--duration", "9", "--summary", "reports/train-result.json",
    )  # fmt: skip
    assert status == 0, err
    (message,) = inbox.messages()
    assert message["Subject"] == "[xgbops] training: FAILURE in 9s"
    assert "not found: the step that writes it did not run" in _text(message)


@pytest.mark.parametrize(
    ("environ", "system", "available"),
    [
        ({}, "Linux", False),
        ({"DBUS_SESSION_BUS_ADDRESS": "unix:path=/run/user/1000/bus"}, "Linux", True),
        ({}, "Darwin", True),
        ({}, "Windows", True),
        ({"DBUS_SESSION_BUS_ADDRESS": "unix:path=/x"}, "Java", False),
    ],
)
def test_desktop_is_available_only_with_a_desktop_session(environ, system, available):
    ok, reason = notify.desktop_availability(environ, system)
    assert ok is available
    assert reason


def _linux(monkeypatch: pytest.MonkeyPatch, dbus: str | None) -> None:
    monkeypatch.setattr(notify.platform, "system", lambda: "Linux")
    if dbus is None:
        monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    else:
        monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", dbus)


def test_no_dbus_means_desktop_skipped_not_failed(monkeypatch, make_settings, desktop_calls):
    _linux(monkeypatch, dbus=None)
    report = notify.send(make_settings(), notify.Notification.of_lines("x", ["y"]))
    assert report.desktop.status == "skipped"
    assert "DBUS_SESSION_BUS_ADDRESS is not set" in report.desktop.detail
    assert not report.email_failed and not desktop_calls


def test_desktop_shows_failures_as_urgent(monkeypatch, make_settings, desktop_calls):
    _linux(monkeypatch, dbus="unix:path=/run/user/1000/bus")
    message = notify.job_notification("publish", "FAILURE", 75)
    report = notify.send(make_settings(), message)
    assert report.desktop.status == "sent" and report.channels_used == ["desktop"]
    assert [c.subject for c in desktop_calls] == ["[xgbops] publish: FAILURE in 1m 15s"]
    assert desktop_calls[0].urgent


def test_a_broken_desktop_never_fails_the_command(monkeypatch, capsys, project):
    _linux(monkeypatch, dbus="unix:path=/nonexistent")

    def broken(_: notify.Notification) -> None:
        raise ConnectionRefusedError("no notification service")

    monkeypatch.setattr(notify, "_show_desktop", broken)
    status, out, _ = _run(
        monkeypatch, capsys, project, "notify", "--job", "data", "--status", "SUCCESS",
        "--duration", "1",
    )  # fmt: skip
    assert status == 0
    assert "desktop: failed (ConnectionRefusedError: no notification service)" in out


def test_kept_champion_and_undecided_promotion_say_champion_unchanged(project):
    path = _training_result(project, promoted=False)
    lines = notify.summary_section(path).lines
    assert "champion changed: no" in lines
    assert "reason: champion is at least as good" in lines
    undecided = notify.training_lines({"run_id": "r", "model_name": "m", "metrics": {}})
    assert "champion: not decided by this run (see the promotion decision, if any)" in undecided


def test_the_promote_steps_decision_file_is_read_as_a_decision(settings, tmp_path, monkeypatch):
    from typer.testing import CliRunner  # pylint: disable=import-outside-toplevel

    from xgbops.train import train  # pylint: disable=import-outside-toplevel

    train(settings, promote=False)  # the training pipeline's --no-promote, then `make promote`
    decision_file = tmp_path / "reports" / "promotion.json"
    monkeypatch.chdir(settings.project_dir)
    result = CliRunner().invoke(cli.app, ["promote", "--result-file", str(decision_file)])

    assert result.exit_code == 0, result.output
    section = notify.summary_section(decision_file)
    assert section.title == f"Promotion decision ({decision_file})"
    assert "champion changed: yes" in section.lines
    assert "champion: none before this run" in " ".join(section.lines)
    assert any(line.startswith("challenger v1 roc_auc=") for line in section.lines)


def test_failed_data_check_lists_each_failed_check(project):
    issue = Issue(
        check="isin", reason="unknown category", column="area_code", count=3, lines=[4, 9, 12]
    )
    section = notify.summary_section(_data_report(project, [issue]))
    assert section.title.startswith("Data check")
    assert section.lines[0] == "data check: FAILED (1 failed check(s))"
    assert "failed [isin] column 'area_code': unknown category (3 case(s))" in section.lines


def test_other_json_is_shown_as_key_value_lines(tmp_path):
    path = tmp_path / "bench.json"
    path.write_text('{"flask": {"rps": 812.5, "p99_ms": 14}, "ok": true, "tags": ["a", "b"]}')
    assert notify.summary_section(path).lines == (
        "flask.rps: 812.5000",
        "flask.p99_ms: 14",
        "ok: true",
        'tags: ["a", "b"]',
    )
    path.write_text("{not json")
    assert notify.summary_section(path).lines[0].startswith("unreadable: ")


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (45.4, "45s"), (133, "2m 13s"), (3725, "1h 02m 05s")]
)
def test_durations_read_like_a_person_writes_them(seconds, text):
    assert notify.format_duration(seconds) == text


def test_rendered_text_and_html_carry_the_same_lines():
    note = notify.Notification.of_lines("t", ["a & b", "c"], links=[notify.Link("L", "http://x")])
    text, page = notify.render(note)
    assert text.splitlines()[:4] == ["[xgbops] t", "", "a & b", "c"]
    assert "<li>a &amp; b</li><li>c</li>" in page
