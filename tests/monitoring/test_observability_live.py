"""The project's Prometheus and Alertmanager configuration, run for real against a live API.

Debian's ``prometheus`` scrapes a gunicorn API (history on PostgreSQL, through the TCP proxy of
the fault tests) with ``monitoring/prometheus``'s rules, ``for:`` shortened to 1 s and 1 s
intervals, nothing else changed; Debian's ``prometheus-alertmanager`` runs
``monitoring/alertmanager`` with its SMTP server replaced by an aiosmtpd server of this test.
Without the Debian packages (``make system-deps``) the test skips; under ``CI=true`` it fails.
"""

from __future__ import annotations

import email
import email.policy
import json
import re
import subprocess  # nosec B404 - starts Debian's prometheus and alertmanager
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from aiosmtpd.controller import Controller

from tests.api.conftest import Server, start_server, stop_server
from tests.api.test_contract import EXAMPLE
from tests.api.test_history import TcpProxy, through
from tests.api.test_metrics import write_drift_report
from tests.conftest import project_settings
from tests.processes import free_port, require_program, wait_until_healthy
from tools import grafana_dashboards as grafana

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "monitoring"
RUNBOOKS = REPO / "docs" / "operations" / "runbooks.md"


def require(binary: str) -> str:
    """The path of a Debian binary; skipped with the reason when absent, failed under CI=true."""
    return require_program(binary, "make system-deps installs Debian's package")


@dataclass
class Mailbox:
    """What a local SMTP server received, as parsed messages."""

    messages: list[email.message.EmailMessage] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        """aiosmtpd's hook: keep the message."""
        del server, session
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append(message)  # type: ignore[arg-type]
        return "250 OK"

    def texts(self) -> list[str]:
        """The plain-text body of every message, its subject first."""
        found = []
        for message in self.messages:
            body = message.get_body(preferencelist=("plain",))
            found.append(f"{message['Subject']}\n{body.get_content() if body else ''}")
        return found

    def wait_for(self, alert: str, timeout: float = 40) -> str:
        """The first mail naming ``alert`` as firing."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for text in self.texts():
                if f"Alert: {alert} (firing" in text:
                    return text
            time.sleep(0.5)
        raise AssertionError(f"no mail for {alert}; got {self.texts()}")


def shorten_rules(rule_file: Path, target: Path) -> Path:
    """A copy of ``rule_file`` whose alerts wait 1 s (``for:``) instead of minutes."""
    document = yaml.safe_load(rule_file.read_text(encoding="utf-8"))
    for group in document["groups"]:
        for rule in group["rules"]:
            if "alert" in rule and "for" in rule:
                rule["for"] = "1s"
    target.write_text(yaml.safe_dump(document), encoding="utf-8")
    return target


def prometheus_config(folder: Path, api_port: int, alertmanager_port: int) -> Path:
    """The project's prometheus.yml, aimed at this test's API and Alertmanager, 1 s intervals."""
    config = yaml.safe_load((MONITORING / "prometheus" / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = [
        str(shorten_rules(MONITORING / "prometheus" / name, folder / Path(name).name))
        for name in config["rule_files"]
    ]
    config["alerting"]["alertmanagers"][0]["static_configs"] = [
        {"targets": [f"127.0.0.1:{alertmanager_port}"]}
    ]
    api = next(job for job in config["scrape_configs"] if job["job_name"] == "xgbops-api")
    api["static_configs"][0]["targets"] = [f"127.0.0.1:{api_port}"]
    config["scrape_configs"] = [api]
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def alertmanager_config(folder: Path, smtp_port: int) -> Path:
    """The project's alertmanager.yml, mailing through this test's SMTP server at once."""
    config = yaml.safe_load((MONITORING / "alertmanager" / "alertmanager.yml").read_text())
    config["global"]["smtp_smarthost"] = f"127.0.0.1:{smtp_port}"
    config["templates"] = [str(MONITORING / "alertmanager" / "templates" / "*.tmpl")]
    for route in [config["route"], *config["route"]["routes"]]:
        route.update(group_wait="1s", group_interval="1s")
    path = folder / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@dataclass
class Daemon:
    """A started Prometheus or Alertmanager."""

    url: str
    process: subprocess.Popen[bytes]


def start_daemon(name: str, command: list[str], url: str, log: Path) -> Daemon:
    """Start ``command`` and wait until ``url``/-/ready answers."""
    process = subprocess.Popen(  # nosec B603 - a Debian binary with this test's arguments
        command, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    wait_until_healthy(name, f"{url}/-/ready", process, log, timeout=30)
    return Daemon(url, process)


def stop_daemon(daemon: Daemon) -> None:
    """SIGTERM by pid, then wait."""
    daemon.process.terminate()
    try:
        daemon.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        daemon.process.kill()


@dataclass
class Stack:
    """The live API, its database proxy, Prometheus, Alertmanager and the mailbox."""

    api: Server
    proxy: TcpProxy
    prometheus: Daemon
    alertmanager: Daemon
    mailbox: Mailbox

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result through Prometheus' HTTP API."""
        answer = httpx.get(f"{self.prometheus.url}/api/v1/query", params={"query": expr})
        assert answer.status_code == 200, (expr, answer.text)
        return list(answer.json()["data"]["result"])

    def firing(self) -> set[str]:
        """Names of the alerts Prometheus has firing."""
        alerts = httpx.get(f"{self.prometheus.url}/api/v1/alerts").json()["data"]["alerts"]
        return {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}


@pytest.fixture
def stack(champion_project: Path, postgres_url: str, tmp_path: Path) -> Iterator[Stack]:
    """Everything started on free ports, stopped by pid at the end."""
    prometheus_bin, alertmanager_bin = require("prometheus"), require("prometheus-alertmanager")
    reports = tmp_path / "reports"
    write_drift_report(project_settings(champion_project), reports, "account_length")
    mailbox = Mailbox()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    proxy = TcpProxy("127.0.0.1", int(postgres_url.split(":")[-1].split("/")[0]))
    proxy.start()
    started: list[Callable[[], None]] = [smtp.stop, proxy.cut]
    try:
        api = start_server(
            "flask",
            champion_project,
            tmp_path,
            DATABASE_URL=through(proxy, postgres_url),
            XGBOPS_REPORTS_DIR=str(reports),
            XGBOPS_SERVE__WORKERS="2",
        )
        started.append(lambda: stop_server(api))
        am_port, prom_port = free_port(), free_port()
        alertmanager = start_daemon(
            "alertmanager",
            [
                alertmanager_bin,
                f"--config.file={alertmanager_config(tmp_path, smtp.port)}",
                f"--storage.path={tmp_path / 'alertmanager'}",
                f"--web.listen-address=127.0.0.1:{am_port}",
                "--cluster.listen-address=",
            ],
            f"http://127.0.0.1:{am_port}",
            tmp_path / "alertmanager.log",
        )
        started.append(lambda: stop_daemon(alertmanager))
        api_port = int(api.url.rsplit(":", 1)[1])
        prometheus = start_daemon(
            "prometheus",
            [
                prometheus_bin,
                f"--config.file={prometheus_config(tmp_path, api_port, am_port)}",
                f"--storage.tsdb.path={tmp_path / 'prometheus'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            f"http://127.0.0.1:{prom_port}",
            tmp_path / "prometheus.log",
        )
        started.append(lambda: stop_daemon(prometheus))
        yield Stack(api, proxy, prometheus, alertmanager, mailbox)
    finally:
        for stop in reversed(started):
            stop()


def wait_until(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    """Poll ``check`` until it returns something true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def runbook_anchors() -> set[str]:
    """The anchors MkDocs gives the runbooks' sections."""
    headings = re.findall(r"^## (.+)$", RUNBOOKS.read_text(encoding="utf-8"), re.M)
    return {re.sub(r"[^a-z0-9]+", "-", h.lower().replace("`", "")).strip("-") for h in headings}


def test_rules_panels_and_alerts_on_a_live_api(stack: Stack):
    with httpx.Client(base_url=stack.api.url, timeout=10) as client:
        for _ in range(100):  # good traffic, and some bad requests (4xx: no error budget)
            assert client.post("/predict", json=EXAMPLE).status_code == 200
        for _ in range(10):
            assert client.post("/predict", json={**EXAMPLE, "state": "ZZ"}).status_code == 422
        client.post("/predict/batch", json={"records": [EXAMPLE] * 5})
        wait_until(lambda: stack.query("xgbops:predictions:rate5m"), "a first rate")
        # labels for some served predictions: the live error ratio (outcomes of the champion)
        served = [client.post("/predict", json=EXAMPLE).json() for _ in range(8)]
        time.sleep(1)  # the write-behind history flushes every 0.2 s
        for number, answer in enumerate(served):
            truth = answer["label"] if number % 4 else "yes" if answer["label"] == "no" else "no"
            sent = {"prediction_id": answer["prediction_id"], "label": truth}
            assert client.post("/feedback", json=sent).status_code == 200
        wait_until(
            lambda: stack.query('xgbops:rollout_error:ratio_rate1h{arm="champion"} > 0'),
            "the live error ratio of the labelled predictions",
        )

        stack.proxy.cut()  # the database is gone: predictions spool, history reads fail (503)
        answers = []
        for _ in range(40):  # over several scrapes: rate() sees no increase in a new series'
            answers.append(client.post("/predict", json=EXAMPLE).status_code)  # first sample
            answers.append(client.get("/predictions").status_code)
            time.sleep(0.1)
        assert answers.count(200) == 40 and answers.count(503) == 40, answers

        expected = {"XgbopsErrorBudgetBurnFast", "XgbopsDatabaseUnreachable", "XgbopsSpoolGrowing"}
        try:
            fired = wait_until(lambda: expected <= stack.firing() and stack.firing(), "alerts")
        except AssertionError as exc:  # say what Prometheus saw instead
            seen = {e: stack.query(e) for e in ("ALERTS", "xgbops:http_errors:ratio_rate5m")}
            raise AssertionError(f"{exc} {expected}: {seen}") from None
        assert "XgbopsFeatureDrift" in fired  # the drift job's report: account_length moved
        assert "XgbopsApiDown" not in fired and "XgbopsNoModelLoaded" not in fired

        # every recording rule and every Grafana panel's query answers with data
        records = [
            rule["record"]
            for group in yaml.safe_load((MONITORING / "prometheus/rules/slo.yml").read_text())[
                "groups"
            ]
            for rule in group["rules"]
        ]
        empty = [r for r in records if not stack.query(r)]
        assert not empty, f"recording rules without data: {empty}"
        panels = [  # the committed JSON, as Grafana provisions it
            (path.name, title, expr)
            for path in sorted(grafana.DASHBOARDS.glob("*.json"))
            for title, expr in grafana.panel_queries(json.loads(path.read_text()))
        ]
        assert len(panels) >= 20
        empty = [(name, title, expr) for name, title, expr in panels if not stack.query(expr)]
        assert not empty, f"panel queries without data: {empty}"
        assert stack.query("xgbops_history_spool_bytes > 0")
        assert stack.query('xgbops_database_errors_total{operation="write"} > 0')

    mail = stack.mailbox.wait_for("XgbopsErrorBudgetBurnFast")
    assert "Runbook: docs/operations/runbooks.md#the-api-answers-errors" in mail
    assert "the-api-answers-errors" in runbook_anchors()

    stack.proxy.start()
    stop_server(stack.api)  # the API is down: scrapes fail
    mail = stack.mailbox.wait_for("XgbopsApiDown")
    assert "Runbook: docs/operations/runbooks.md#the-api-is-down" in mail
    assert "severity=page" in mail and "the-api-is-down" in runbook_anchors()


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[Daemon]:
    """The project's Alertmanager alone (its SMTP server is never reached here)."""
    binary, port = require("prometheus-alertmanager"), free_port()
    daemon = start_daemon(
        "alertmanager",
        [
            binary,
            f"--config.file={alertmanager_config(tmp_path, free_port())}",
            f"--storage.path={tmp_path / 'alertmanager'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        f"http://127.0.0.1:{port}",
        tmp_path / "alertmanager.log",
    )
    yield daemon
    stop_daemon(daemon)


def test_api_down_inhibits_that_apis_other_alerts(alertmanager: Daemon):
    """The project's inhibition rules on the real Alertmanager (alerts posted as Prometheus
    posts them: a down API's latency alerts are suppressed, another API's are not)."""

    def alert(name: str, job: str) -> dict[str, Any]:
        return {"labels": {"alertname": name, "job": job, "severity": "page"}}

    posted = httpx.post(
        f"{alertmanager.url}/api/v2/alerts",
        json=[
            alert("XgbopsApiDown", "xgbops-api"),
            alert("XgbopsLatencyP99High", "xgbops-api"),
            alert("XgbopsLatencyP99High", "xgbops-api-fastapi"),
        ],
    )
    assert posted.status_code == 200

    def states() -> dict[str, str]:
        found = httpx.get(
            f"{alertmanager.url}/api/v2/alerts",
            params={"filter": 'alertname="XgbopsLatencyP99High"'},
        ).json()
        return {a["labels"]["job"]: a["status"]["state"] for a in found}

    wait_until(lambda: states().get("xgbops-api") == "suppressed", "the inhibition")
    assert states()["xgbops-api-fastapi"] == "active"
