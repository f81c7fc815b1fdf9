"""xgbops.sonar and `xgbops sonar-gate` against a local server that keeps SonarQube's documented
Web API contract (no SonarQube can run here).

The fake behaves as the documentation and SonarQube's own web app describe the endpoints
(see the module docstring of xgbops.sonar for the sources): reads are GET with query
parameters, writes are POST with form-encoded parameters (a POST whose parameters are not in
a form body is a 400 here), 401 without valid credentials, errors as {"errors": [{"msg"}]},
204 for writes that return nothing, api/system/status open to everyone.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import stat
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from xgbops import sonar
from xgbops.config import SonarSettings
from tests.cli_runner import run_xgbops

NEW_PASSWORD = "N3w-admin-password!"  # pragma: allowlist secret
INITIAL_PASSWORD = sonar.DEFAULT_ADMIN_PASSWORD
JENKINS = "http://jenkins:8080"

#: Endpoint -> HTTP method, as documented (anything else is a 405 here).
ENDPOINTS = {
    "api/system/status": "GET",
    "api/authentication/validate": "GET",
    "api/users/change_password": "POST",  # pragma: allowlist secret
    "api/qualitygates/list": "GET",
    "api/qualitygates/show": "GET",
    "api/qualitygates/create": "POST",
    "api/qualitygates/create_condition": "POST",
    "api/qualitygates/update_condition": "POST",
    "api/qualitygates/delete_condition": "POST",
    "api/qualitygates/get_by_project": "GET",
    "api/qualitygates/select": "POST",
    "api/projects/search": "GET",
    "api/projects/create": "POST",
    "api/webhooks/list": "GET",
    "api/webhooks/create": "POST",
    "api/webhooks/update": "POST",
    "api/user_tokens/search": "GET",
    "api/user_tokens/generate": "POST",
    "api/user_tokens/revoke": "POST",
}


class ApiError(Exception):
    """An error answer: status code and SonarQube's {"errors": [{"msg": ...}]} body."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code, self.msg = code, msg


@dataclass
class FakeSonar:
    """The server's state and the log of every request (method, path, params, auth scheme)."""

    statuses: list[str] = field(default_factory=lambda: ["UP"])
    passwords: dict[str, str] = field(default_factory=lambda: {"admin": "admin"})
    tokens: dict[str, tuple[str, str]] = field(default_factory=dict)  # value -> (login, name)
    gates: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {
            "Sonar way": {
                "isBuiltIn": True,
                "conditions": [
                    {"id": "sw-1", "metric": "new_violations", "op": "GT", "error": "0"}
                ],
            }
        }
    )
    default_gate: str = "Sonar way"
    projects: dict[str, dict[str, Any]] = field(default_factory=dict)
    webhooks: list[dict[str, str]] = field(default_factory=list)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    auth_schemes: list[str] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids)}"

    def posts(self) -> list[tuple[str, str, dict[str, str]]]:
        return [r for r in self.requests if r[0] == "POST"]

    # --- request handling ----------------------------------------------------------------------
    def handle(self, method: str, path: str, params: dict[str, str], user: str | None) -> Any:
        if path not in ENDPOINTS:
            raise ApiError(404, f"Unknown url : /{path}")
        if ENDPOINTS[path] != method:
            raise ApiError(405, f"HTTP method {method} is not supported")
        if path == "api/system/status":
            status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
            return {"id": "fake", "version": "25.1.0.102122", "status": status}
        if path == "api/authentication/validate":
            return {"valid": user is not None}
        if user is None:
            raise ApiError(401, "Authentication is required")
        handler = getattr(self, "_" + path.removeprefix("api/").replace("/", "_"))
        return handler(params, user)

    @staticmethod
    def _need(params: dict[str, str], *names: str) -> list[str]:
        missing = [n for n in names if not params.get(n)]
        if missing:
            raise ApiError(400, f"The '{missing[0]}' parameter is missing")
        return [params[n] for n in names]

    def _users_change_password(self, params: dict[str, str], user: str) -> None:
        login, password, previous = self._need(params, "login", "password", "previousPassword")
        if login != user or self.passwords.get(login) != previous:
            raise ApiError(400, "Incorrect password")
        self.passwords[login] = password

    def _qualitygates_list(self, params: dict[str, str], user: str) -> Any:
        gates = [
            {"name": n, "isDefault": n == self.default_gate, "isBuiltIn": g.get("isBuiltIn", False)}
            for n, g in self.gates.items()
        ]
        return {"qualitygates": gates, "actions": {"create": True}}

    def _gate(self, name: str) -> dict[str, Any]:
        if name not in self.gates:
            raise ApiError(404, f"No quality gate has been found for name {name}")
        return self.gates[name]

    def _qualitygates_show(self, params: dict[str, str], user: str) -> Any:
        (name,) = self._need(params, "name")
        gate = self._gate(name)
        return {"name": name, "conditions": gate["conditions"], "isBuiltIn": gate["isBuiltIn"]}

    def _qualitygates_create(self, params: dict[str, str], user: str) -> Any:
        (name,) = self._need(params, "name")
        if name in self.gates:
            raise ApiError(400, "Name has already been taken")
        self.gates[name] = {"isBuiltIn": False, "conditions": []}
        return {"name": name}

    @staticmethod
    def _check_condition(op: str, error: str) -> None:
        if op not in ("LT", "GT"):
            raise ApiError(400, f"Operator {op} is not allowed for this metric.")
        float(error)

    def _qualitygates_create_condition(self, params: dict[str, str], user: str) -> Any:
        name, metric, op, error = self._need(params, "gateName", "metric", "op", "error")
        gate = self._gate(name)
        self._check_condition(op, error)
        if any(c["metric"] == metric for c in gate["conditions"]):
            raise ApiError(400, f"Condition on metric '{metric}' already exists.")
        condition = {"id": self.new_id("cond"), "metric": metric, "op": op, "error": error}
        gate["conditions"].append(condition)
        return condition

    def _condition(self, condition_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        for gate in self.gates.values():
            for condition in gate["conditions"]:
                if condition["id"] == condition_id:
                    return gate, condition
        raise ApiError(404, f"No quality gate condition with uuid '{condition_id}'")

    def _qualitygates_update_condition(self, params: dict[str, str], user: str) -> Any:
        condition_id, metric, op, error = self._need(params, "id", "metric", "op", "error")
        _, condition = self._condition(condition_id)
        self._check_condition(op, error)
        condition.update(metric=metric, op=op, error=error)
        return condition

    def _qualitygates_delete_condition(self, params: dict[str, str], user: str) -> None:
        (condition_id,) = self._need(params, "id")
        gate, condition = self._condition(condition_id)
        gate["conditions"].remove(condition)

    def _project(self, key: str) -> dict[str, Any]:
        if key not in self.projects:
            raise ApiError(404, f"Project '{key}' not found")
        return self.projects[key]

    def _qualitygates_get_by_project(self, params: dict[str, str], user: str) -> Any:
        (key,) = self._need(params, "project")
        gate = self._project(key).get("gate")
        return {"qualityGate": {"name": gate or self.default_gate, "default": gate is None}}

    def _qualitygates_select(self, params: dict[str, str], user: str) -> None:
        name, key = self._need(params, "gateName", "projectKey")
        self._gate(name)
        self._project(key)["gate"] = name

    def _projects_search(self, params: dict[str, str], user: str) -> Any:
        keys = set(params.get("projects", "").split(",")) - {""}
        found = [{"key": k, "name": p["name"]} for k, p in self.projects.items() if k in keys]
        return {
            "paging": {"pageIndex": 1, "pageSize": 100, "total": len(found)},
            "components": found,
        }

    def _projects_create(self, params: dict[str, str], user: str) -> Any:
        key, name = self._need(params, "project", "name")
        if key in self.projects:
            raise ApiError(400, f'Could not create Project with key: "{key}". Key already exists.')
        self.projects[key] = {"name": name, "gate": None}
        return {"project": {"key": key, "name": name, "qualifier": "TRK", "visibility": "public"}}

    def _webhooks_list(self, params: dict[str, str], user: str) -> Any:
        project = params.get("project")
        hooks = [h for h in self.webhooks if h.get("project") == project]
        return {"webhooks": [{k: h[k] for k in ("key", "name", "url")} for h in hooks]}

    def _webhooks_create(self, params: dict[str, str], user: str) -> Any:
        name, url = self._need(params, "name", "url")
        hook = {"key": self.new_id("hook"), "name": name, "url": url}
        if params.get("project"):
            self._project(params["project"])
            hook["project"] = params["project"]
        self.webhooks.append(hook)
        return {"webhook": {**{k: hook[k] for k in ("key", "name", "url")}, "hasSecret": False}}

    def _webhooks_update(self, params: dict[str, str], user: str) -> None:
        key, name, url = self._need(params, "webhook", "name", "url")
        hook = next((h for h in self.webhooks if h["key"] == key), None)
        if hook is None:
            raise ApiError(404, f"No webhook with key '{key}'")
        hook.update(name=name, url=url)

    def _user_tokens_search(self, params: dict[str, str], user: str) -> Any:
        names = [name for login, name in self.tokens.values() if login == user]
        return {"login": user, "userTokens": [{"name": n} for n in names]}

    def _user_tokens_generate(self, params: dict[str, str], user: str) -> Any:
        (name,) = self._need(params, "name")
        if any(t == (user, name) for t in self.tokens.values()):
            raise ApiError(400, f"A user token for login '{user}' and name '{name}' already exists")
        value = f"squ_{self.new_id('token')}"
        self.tokens[value] = (user, name)
        return {"login": user, "name": name, "token": value, "type": params.get("type", "")}

    def _user_tokens_revoke(self, params: dict[str, str], user: str) -> None:
        (name,) = self._need(params, "name")
        for value, owner in list(self.tokens.items()):
            if owner == (user, name):
                del self.tokens[value]

    # --- authentication --------------------------------------------------------------------
    def user_of(self, header: str | None) -> str | None:
        if not header:
            self.auth_schemes.append("none")
            return None
        scheme, _, credentials = header.partition(" ")
        self.auth_schemes.append(scheme)
        if scheme == "Bearer":
            owner = self.tokens.get(credentials)
            return owner[0] if owner else None
        if scheme == "Basic":
            login, _, password = base64.b64decode(credentials).decode().partition(":")
            if login in self.passwords and self.passwords[login] == password:
                return login
            owner = self.tokens.get(login) if not password else None  # token as basic login
            return owner[0] if owner else None
        return None


def _handler(fake: FakeSonar) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self, method: str) -> None:
            url = urlsplit(self.path)
            path = url.path.lstrip("/")
            params = dict(parse_qsl(url.query))
            if method == "POST":
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode()
                if body and self.headers.get_content_type() != "application/x-www-form-urlencoded":
                    return self._answer(400, {"errors": [{"msg": "expected form data"}]})
                # writes take their parameters from the form body only
                params = dict(parse_qsl(body))
            fake.requests.append((method, path, params))
            user = fake.user_of(self.headers.get("Authorization"))
            try:
                result = fake.handle(method, path, params, user)
            except ApiError as exc:
                return self._answer(exc.code, {"errors": [{"msg": exc.msg}]})
            except ValueError as exc:
                return self._answer(400, {"errors": [{"msg": f"Invalid value ({exc})"}]})
            return self._answer(204 if result is None else 200, result)

        def _answer(self, code: int, body: Any) -> None:
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(code)
            if data:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server's hook name
            self._serve("GET")

        def do_POST(self) -> None:  # noqa: N802 - http.server's hook name
            self._serve("POST")

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def server() -> Iterator[tuple[FakeSonar, str]]:
    """The fake SonarQube on a free local port: (state, base URL)."""
    fake = FakeSonar()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield fake, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def _settings(url: str, **extra: Any) -> SonarSettings:
    return SonarSettings(host_url=url, **{"jenkins_url": JENKINS, **extra})


def _admin() -> sonar.Credentials:
    return sonar.Credentials(password=NEW_PASSWORD)


def _run(monkeypatch, capsys, project: Path, *args: str) -> tuple[int, str, str]:
    return run_xgbops(monkeypatch, capsys, *args, cwd=project)


def _cli_env(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("XGBOPS_SONAR__HOST_URL", url)
    monkeypatch.setenv("XGBOPS_SONAR__JENKINS_URL", JENKINS)
    monkeypatch.setenv("SONAR_ADMIN_PASSWORD", NEW_PASSWORD)
    for name in ("SONAR_ADMIN_LOGIN", "SONAR_ADMIN_INITIAL_PASSWORD"):
        monkeypatch.delenv(name, raising=False)


def _conditions(fake: FakeSonar, gate: str = "xgbops") -> set[tuple[str, str, str]]:
    return {(c["metric"], c["op"], c["error"]) for c in fake.gates[gate]["conditions"]}


def _wanted() -> set[tuple[str, str, str]]:
    return {(c.metric, c.op, c.error) for c in sonar.GATE_CONDITIONS}


def test_first_run_on_a_fresh_server_makes_exactly_the_documented_calls(
    monkeypatch, capsys, project, server, tmp_path
):
    fake, url = server
    fake.statuses = ["STARTING", "STARTING", "UP"]
    _cli_env(monkeypatch, url)
    token_file = tmp_path / "secrets" / "sonar-token"

    status, out, err = _run(
        monkeypatch, capsys, project, "sonar-gate", "--token-file", str(token_file),
        "--poll", "0.01", "--wait", "10",
    )  # fmt: skip

    assert status == 0, err
    hook_url = f"{JENKINS}/sonarqube-webhook/"
    expected = [
        ("GET", "api/system/status", {}),
        ("GET", "api/system/status", {}),
        ("GET", "api/system/status", {}),
        ("GET", "api/authentication/validate", {}),  # the wanted password: not yet
        ("GET", "api/authentication/validate", {}),  # the initial one: accepted
        (
            "POST",
            "api/users/change_password",
            {"login": "admin", "previousPassword": INITIAL_PASSWORD, "password": NEW_PASSWORD},
        ),
        ("GET", "api/qualitygates/list", {}),
        ("POST", "api/qualitygates/create", {"name": "xgbops"}),
        ("GET", "api/qualitygates/show", {"name": "xgbops"}),
        *[
            (
                "POST",
                "api/qualitygates/create_condition",
                {"gateName": "xgbops", "metric": c.metric, "op": c.op, "error": c.error},
            )
            for c in sonar.GATE_CONDITIONS
        ],
        ("GET", "api/projects/search", {"projects": "xgbops"}),
        ("POST", "api/projects/create", {"project": "xgbops", "name": "xgbops"}),
        ("GET", "api/qualitygates/get_by_project", {"project": "xgbops"}),
        ("POST", "api/qualitygates/select", {"gateName": "xgbops", "projectKey": "xgbops"}),
        ("GET", "api/webhooks/list", {"project": "xgbops"}),
        ("POST", "api/webhooks/create", {"name": "Jenkins", "url": hook_url, "project": "xgbops"}),
        ("GET", "api/user_tokens/search", {}),
        ("POST", "api/user_tokens/generate", {"name": "jenkins", "type": "USER_TOKEN"}),
    ]
    assert fake.requests == expected
    # the state the calls left behind
    assert fake.passwords["admin"] == NEW_PASSWORD
    assert _conditions(fake) == _wanted()
    assert fake.projects["xgbops"]["gate"] == "xgbops"
    assert [(h["url"], h["project"]) for h in fake.webhooks] == [(hook_url, "xgbops")]
    token = token_file.read_text().strip()
    assert fake.tokens[token] == ("admin", "jenkins")
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert "SonarQube 25.1.0.102122 is UP" in out
    assert f"created webhook 'Jenkins' to {hook_url}" in out


def test_second_run_changes_nothing(server, tmp_path):
    fake, url = server
    token_file = tmp_path / "sonar-token"
    sonar.setup(_settings(url), sonar.Credentials(password=INITIAL_PASSWORD), token_file=token_file)
    first_token = token_file.read_text()
    fake.requests.clear()

    report = sonar.setup(
        _settings(url), sonar.Credentials(password=INITIAL_PASSWORD), token_file=token_file
    )

    assert fake.posts() == []
    assert report.changes == []
    assert report.lines()[-1].startswith("nothing to change")
    assert token_file.read_text() == first_token


def test_changed_threshold_is_updated_and_extra_condition_deleted(server):
    fake, url = server
    fake.passwords["admin"] = NEW_PASSWORD
    sonar.setup(_settings(url), _admin())
    conditions = fake.gates["xgbops"]["conditions"]
    coverage = next(c for c in conditions if c["metric"] == "new_coverage")
    coverage["error"] = "80"  # someone lowered the bar in the UI
    conditions.append({"id": "cond-extra", "metric": "new_violations", "op": "GT", "error": "0"})
    fake.requests.clear()

    report = sonar.setup(_settings(url), _admin())

    assert fake.posts() == [
        (
            "POST",
            "api/qualitygates/update_condition",
            {"id": coverage["id"], "metric": "new_coverage", "op": "LT", "error": "90"},
        ),
        ("POST", "api/qualitygates/delete_condition", {"id": "cond-extra"}),
    ]
    assert _conditions(fake) == _wanted()
    assert report.changes == [
        "updated condition new_coverage LT 90 (was LT 80)",
        "deleted condition new_violations GT 0",
    ]


def test_thresholds_equal_as_numbers_are_not_rewritten(server):
    fake, url = server
    fake.passwords["admin"] = NEW_PASSWORD
    sonar.setup(_settings(url), _admin())
    for condition in fake.gates["xgbops"]["conditions"]:
        condition["error"] = f"{float(condition['error']):.1f}"  # "90" stored as "90.0"
    fake.requests.clear()
    sonar.setup(_settings(url), _admin())
    assert fake.posts() == []


def test_webhook_with_the_jenkins_name_but_an_old_url_is_updated(server):
    fake, url = server
    fake.passwords["admin"] = NEW_PASSWORD
    fake.projects["xgbops"] = {"name": "xgbops", "gate": None}
    fake.webhooks.append(
        {"key": "hook-old", "name": "Jenkins", "url": "http://old:8080/", "project": "xgbops"}
    )
    sonar.setup(_settings(url, jenkins_url="http://ci.example.org/jenkins/"), _admin())
    assert ("POST", "api/webhooks/update", {
        "webhook": "hook-old", "name": "Jenkins",
        "url": "http://ci.example.org/jenkins/sonarqube-webhook/",
    }) in fake.posts()  # fmt: skip
    assert [h["url"] for h in fake.webhooks] == ["http://ci.example.org/jenkins/sonarqube-webhook/"]


def test_webhook_url_is_jenkins_plus_sonarqube_webhook_with_trailing_slash():
    assert sonar.webhook_url("http://jenkins:8080") == "http://jenkins:8080/sonarqube-webhook/"
    assert sonar.webhook_url("http://jenkins:8080/") == "http://jenkins:8080/sonarqube-webhook/"


def test_a_token_sonarqube_no_longer_accepts_is_replaced(server, tmp_path):
    fake, url = server
    fake.passwords["admin"] = NEW_PASSWORD
    token_file = tmp_path / "sonar-token"
    sonar.setup(_settings(url), _admin(), token_file=token_file)
    old = token_file.read_text().strip()
    del fake.tokens[old]  # e.g. SonarQube's volume was reset: the token is unknown
    fake.tokens["squ_stale"] = ("admin", "jenkins")  # a token of that name exists again
    token_file.chmod(0o644)
    fake.requests.clear()

    sonar.setup(_settings(url), _admin(), token_file=token_file)

    assert [p[1] for p in fake.posts()] == ["api/user_tokens/revoke", "api/user_tokens/generate"]
    new = token_file.read_text().strip()
    assert new != old and fake.tokens[new] == ("admin", "jenkins")
    assert "squ_stale" not in fake.tokens
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600


def test_an_empty_token_file_gets_a_token(server, tmp_path):
    fake, url = server
    fake.passwords["admin"] = NEW_PASSWORD
    token_file = tmp_path / "sonar-token"
    token_file.write_text("\n")
    report = sonar.setup(_settings(url), _admin(), token_file=token_file)
    assert report.token_file == token_file
    assert token_file.read_text().strip() in fake.tokens


def test_a_settings_token_is_sent_as_bearer(monkeypatch, capsys, project, server):
    fake, url = server
    fake.tokens["squ_admin"] = ("admin", "admin-token")
    _cli_env(monkeypatch, url)
    monkeypatch.delenv("SONAR_ADMIN_PASSWORD")
    monkeypatch.setenv("XGBOPS_SONAR__TOKEN", "squ_admin")
    status, _, err = _run(monkeypatch, capsys, project, "sonar-gate", "--poll", "0.01")
    assert status == 0, err
    authenticated = [
        scheme for (_, path, _), scheme in zip(fake.requests, fake.auth_schemes)
        if path != "api/system/status"
    ]  # fmt: skip
    assert authenticated and set(authenticated) == {"Bearer"}
    assert fake.passwords["admin"] == "admin"  # untouched: no password change with a token


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("wrong-password", "refused the password of 'admin' (SONAR_ADMIN_PASSWORD)"),
        (None, "no SonarQube credentials: set XGBOPS_SONAR__TOKEN, or SONAR_ADMIN_PASSWORD"),
    ],
)
def test_refused_or_missing_credentials_exit_2_with_one_line(
    monkeypatch, capsys, project, server, password, message
):
    fake, url = server
    fake.passwords["admin"] = "someone-else-changed-it"  # pragma: allowlist secret
    _cli_env(monkeypatch, url)
    if password is None:
        monkeypatch.delenv("SONAR_ADMIN_PASSWORD")
    else:
        monkeypatch.setenv("SONAR_ADMIN_PASSWORD", password)
    status, _, err = _run(monkeypatch, capsys, project, "sonar-gate", "--poll", "0.01")
    assert status == 2
    assert message in err and "Traceback" not in err
    assert fake.posts() == []


def test_timeout_when_the_status_never_reaches_up(monkeypatch, capsys, project, server):
    fake, url = server
    fake.statuses = ["STARTING"]
    _cli_env(monkeypatch, url)
    status, _, err = _run(
        monkeypatch, capsys, project, "sonar-gate", "--wait", "0.3", "--poll", "0.05"
    )
    assert status == 2
    assert f"error: SonarQube at {url} is not UP after 0.3s" in err
    assert "status STARTING: the web server answers but SonarQube is still initialising" in err
    assert {r[1] for r in fake.requests} == {"api/system/status"}
    assert len(fake.requests) >= 3  # it did poll


def test_database_migration_needed_stops_at_once_with_the_way_out(server):
    fake, url = server
    fake.statuses = ["DB_MIGRATION_NEEDED"]
    with pytest.raises(sonar.SonarNotReadyError, match="api/system/migrate_db"):
        sonar.setup(_settings(url), _admin(), wait_timeout=60, poll_interval=0.01)
    assert len(fake.requests) == 1


def test_unreachable_server_times_out_naming_the_url():
    clock = iter(range(100))
    client = sonar.SonarClient("http://127.0.0.1:9", timeout=0.5)  # discard port: refused
    with pytest.raises(sonar.SonarNotReadyError) as info:
        sonar.wait_until_up(client, 3, 1, clock=lambda: float(next(clock)), sleep=lambda _: None)
    assert "is not UP after 3s" in str(info.value) and "cannot reach http://127.0.0.1:9" in str(
        info.value
    )


def test_a_built_in_gate_is_refused(server):
    fake, url = server
    fake.passwords["admin"] = NEW_PASSWORD
    with pytest.raises(sonar.SonarError, match="'Sonar way' is built in"):
        sonar.setup(SonarSettings(host_url=url, gate_name="Sonar way"), _admin())
    assert fake.posts() == []


def test_sonarqube_errors_are_reported_with_the_call_and_its_message(server):
    fake, url = server
    fake.passwords["admin"] = NEW_PASSWORD
    bad = (sonar.Condition("new_coverage", "EQ", "90"),)  # type: ignore[arg-type]
    with pytest.raises(
        sonar.SonarError,
        match="POST api/qualitygates/create_condition: 400 Operator EQ is not allowed",
    ):
        sonar.setup(_settings(url), _admin(), conditions=bad)


def test_the_gate_as_code_is_what_the_docs_say_it_is():
    by_metric = {c.metric: c for c in sonar.GATE_CONDITIONS}
    assert len(by_metric) == len(sonar.GATE_CONDITIONS)  # one condition per metric
    assert {c.op for c in sonar.GATE_CONDITIONS} <= {"LT", "GT"}
    for rating in ("new_reliability_rating", "new_security_rating", "new_maintainability_rating"):
        assert (by_metric[rating].op, by_metric[rating].error) == ("GT", "1")  # worse than A
    assert by_metric["new_coverage"] == sonar.Condition("new_coverage", "LT", "90")
    assert by_metric["coverage"] == sonar.Condition("coverage", "LT", "90")


def test_token_file_mode_is_0600_even_with_a_permissive_umask(server, tmp_path):
    fake, url = server
    fake.passwords["admin"] = NEW_PASSWORD
    old = os.umask(0)
    try:
        path = tmp_path / "t"
        sonar.setup(_settings(url), _admin(), token_file=path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# --- sonar-project.properties ----------------------------------------------------------------
REPO = Path(__file__).resolve().parents[1]

#: Analysis parameters the SonarQube documentation lists (analysis-parameters, Python test
#: coverage, test execution parameters, external analyzer reports pages); sonar-python's
#: sensors read the sonar.python.* keys under exactly these names.
DOCUMENTED_KEYS = {
    "sonar.projectKey",
    "sonar.projectName",
    "sonar.projectVersion",
    "sonar.projectDescription",
    "sonar.sourceEncoding",
    "sonar.sources",
    "sonar.tests",
    "sonar.inclusions",
    "sonar.exclusions",
    "sonar.test.inclusions",
    "sonar.test.exclusions",
    "sonar.coverage.exclusions",
    "sonar.cpd.exclusions",
    "sonar.python.version",
    "sonar.python.coverage.reportPaths",
    "sonar.python.xunit.reportPath",
    "sonar.python.xunit.skipDetails",
    "sonar.python.pylint.reportPaths",
    "sonar.python.flake8.reportPaths",
    "sonar.python.bandit.reportPaths",
    "sonar.python.mypy.reportPaths",
    "sonar.python.ruff.reportPaths",
}
#: The make targets the quality pipeline runs before `make sonar`.
REPORTING_TARGETS = ("lint", "security", "test")


def read_properties(text: str) -> dict[str, str]:
    """Java .properties: `key=value` or `key: value`, # and ! comments, backslash continuation."""
    props: dict[str, str] = {}
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not logical and (not line or line[0] in "#!"):
            continue
        if line.endswith("\\"):
            logical += line[:-1]
            continue
        logical += line
        key, _, value = logical.partition("=") if "=" in logical else logical.partition(":")
        props[key.strip()] = value.strip()
        logical = ""
    return props


def _recipes(makefile: str) -> dict[str, str]:
    """Target name -> its recipe (the tab-indented lines under `target: ...`)."""
    recipes: dict[str, str] = {}
    current = None
    for line in makefile.splitlines():
        if line.startswith("\t") and current:
            recipes[current] += line + "\n"
            continue
        header = line.split(":", 1)[0]
        current = header if ":" in line and header.replace("-", "").isalnum() else None
        if current:
            recipes[current] = ""
    return recipes


def reports_written(makefile: str, pyproject: dict[str, Any]) -> dict[str, str]:
    """Report path -> the reporting target that writes it (recipes, and pytest's addopts)."""
    reports_dir = re.search(r"^REPORTS\s*:?=\s*(\S+)", makefile, re.M)
    assert reports_dir, "the Makefile defines no REPORTS directory"
    written = {}
    for target, recipe in _recipes(makefile).items():
        if target not in REPORTING_TARGETS:
            continue
        for name in re.findall(r"\$\(REPORTS\)/([\w.\-]+)", recipe):
            written[f"{reports_dir.group(1)}/{name}"] = target
        if re.search(r"\$\(BIN\)/pytest\b", recipe):  # pytest reads its addopts
            for option in pyproject["tool"]["pytest"]["ini_options"]["addopts"]:
                for path in re.findall(r"(?:^--cov-report=\w+:|^--junitxml=)(\S+)", option):
                    written[path] = target
    return written


def property_problems(text: str, makefile: str, pyproject: dict[str, Any]) -> list[str]:
    """What is wrong with a sonar-project.properties, one line each (empty: nothing)."""
    props = read_properties(text)
    problems = [
        f"{k}: not a documented analysis parameter" for k in props if k not in DOCUMENTED_KEYS
    ]
    written = reports_written(makefile, pyproject)
    for key, value in props.items():
        if key.endswith((".reportPath", ".reportPaths")):
            problems += [
                f"{key}: {path} is written by none of make {', '.join(REPORTING_TARGETS)}"
                for path in (p.strip() for p in value.split(","))
                if path not in written
            ]
    if props.get("sonar.projectKey") != SonarSettings().project_key:
        problems.append("sonar.projectKey differs from the settings' sonar.project_key")
    return problems


@pytest.fixture(scope="module")
def build_files() -> tuple[str, dict[str, Any]]:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    return makefile, tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def test_sonar_properties_use_documented_keys_and_reports_make_writes(build_files):
    text = (REPO / "sonar-project.properties").read_text(encoding="utf-8")
    assert property_problems(text, *build_files) == []
    props = read_properties(text)
    report_keys = {k for k in props if k.endswith((".reportPath", ".reportPaths"))}
    assert report_keys == {
        "sonar.python.coverage.reportPaths",
        "sonar.python.xunit.reportPath",
        "sonar.python.pylint.reportPaths",
        "sonar.python.flake8.reportPaths",
        "sonar.python.bandit.reportPaths",
    }
    assert props["sonar.sources"].split(",") == ["src", "api"]
    assert all((REPO / d).is_dir() for d in props["sonar.sources"].split(",") + ["tests"])


def test_the_property_check_fails_on_a_broken_copy(build_files, tmp_path):
    text = (REPO / "sonar-project.properties").read_text(encoding="utf-8")
    broken = tmp_path / "sonar-project.properties"
    broken.write_text(
        text.replace("reports/bandit.json", "reports/bandit-report.json")
        .replace("sonar.python.pylint.reportPaths", "sonar.python.pylint.reportPath")
        .replace("sonar.projectKey=xgbops", "sonar.projectKey=other"),
        encoding="utf-8",
    )
    problems = property_problems(broken.read_text(encoding="utf-8"), *build_files)
    assert problems == [
        "sonar.python.pylint.reportPath: not a documented analysis parameter",
        "sonar.python.bandit.reportPaths: reports/bandit-report.json is written by none of "
        "make lint, security, test",
        "sonar.projectKey differs from the settings' sonar.project_key",
    ]


def test_the_makefile_reading_sees_every_report_and_who_writes_it(build_files):
    assert reports_written(*build_files) == {
        "reports/pylint.txt": "lint",
        "reports/flake8.txt": "lint",
        "reports/bandit.json": "security",
        "reports/coverage.xml": "test",
        "reports/junit.xml": "test",
    }
    makefile, pyproject = build_files
    assert reports_written(makefile.replace("$(BIN)/pytest\n", "echo no tests\n"), pyproject) == {
        "reports/pylint.txt": "lint",
        "reports/flake8.txt": "lint",
        "reports/bandit.json": "security",
    }


@pytest.mark.parametrize(
    ("op", "error", "same"),
    [("LT", "90", True), ("LT", "90.0", True), ("GT", "90", False), ("LT", "80", False)],
)
def test_a_condition_compares_thresholds_as_numbers(op, error, same):
    assert sonar.Condition("new_coverage", "LT", "90").same_threshold(op, error) is same
