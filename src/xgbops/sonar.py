"""The SonarQube quality gate as code: ``xgbops sonar-gate`` (``make sonar-gate``).

One idempotent run makes the server match this file: it waits for ``api/system/status`` to say
``UP``, creates the quality gate if it is missing and makes its conditions exactly
:data:`GATE_CONDITIONS` (creates the missing, updates the changed, deletes the extra), creates
the project if it is missing and assigns it the gate, points a project webhook at
``<jenkins>/sonarqube-webhook/`` (without it Jenkins' ``waitForQualityGate`` waits at
IN_PROGRESS forever) and, on request, writes an analysis token to a file (mode 0600) for
Jenkins. A second run against the same server changes nothing.

It follows SonarQube's documented Web API (SonarQube Server 2025.x / Community Build 25.x): GET
for reads, form-encoded POST for writes, bearer-token or basic authentication, errors as
``{"errors": [{"msg": ...}]}``. Sources used:

- Web API, authentication and "use form data parameters for POST":
  https://docs.sonarsource.com/sonarqube-server/extension-guide/web-api
- The endpoints and their parameters, as SonarQube's own web app calls them
  (SonarSource/sonarqube-webapp, ``server/sonar-web/src/main/js/api/``: ``quality-gates.ts``
  list/show/create/create_condition/update_condition/delete_condition/select/get_by_project;
  ``project-management.ts`` projects/search and projects/create; ``webhooks.ts``
  list/create/update; ``user-tokens.ts`` search/generate/revoke; ``users.ts`` change_password;
  ``system.ts`` status), and the condition rules (LT/GT only, ratings 1=A..5=E) in
  SonarSource/sonarqube ``QualityGateConditionsUpdater.java``.
- ``api/system/status`` values (STARTING, UP, DOWN, RESTARTING, DB_MIGRATION_NEEDED,
  DB_MIGRATION_RUNNING): the endpoint's description in SonarQube's Web API documentation.
- The webhook requirement: https://docs.sonarsource.com/sonarqube-server/analyzing-source-code/
  ci-integration/jenkins-integration/pipeline-pause and https://jenkins.io/doc/pipeline/steps/sonar
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import requests
import structlog

from xgbops import XgbopsError
from xgbops.config import SonarSettings

log = structlog.get_logger(__name__)

#: The password of ``admin`` on a fresh SonarQube (documented; changed at the first setup).
DEFAULT_ADMIN_PASSWORD = "admin"  # nosec B105  # pragma: allowlist secret
#: Name of the webhook SonarQube calls when an analysis is processed.
WEBHOOK_NAME = "Jenkins"
#: Name of the token written to ``--token-file`` for Jenkins (a name: bandit's B105 misreads it).
TOKEN_NAME = "jenkins"  # nosec B105
#: A user token: Jenkins both submits analyses and reads their result (api/ce/task,
#: api/qualitygates/project_status), which analysis-only tokens are not always allowed to do.
TOKEN_TYPE = "USER_TOKEN"  # nosec B105
REQUEST_TIMEOUT = 30.0

Operator = Literal["LT", "GT"]

_STATUS_HELP = {
    "STARTING": "the web server answers but SonarQube is still initialising",
    "DOWN": "SonarQube is up but not running: a database migration failed or it hit an error "
    "(see its logs)",
    "RESTARTING": "a restart was requested",
    "DB_MIGRATION_NEEDED": "the database must be migrated to this SonarQube version: back it up, "
    "then open <sonarqube>/setup or POST api/system/migrate_db",
    "DB_MIGRATION_RUNNING": "the database is being migrated (see api/system/migrate_db)",
}


@dataclass(frozen=True)
class Condition:
    """One quality-gate condition: the gate fails when ``metric op error`` holds.

    ``op`` is ``LT`` (fails below ``error``) or ``GT`` (fails above). Ratings count 1 (A) to
    5 (E), so ``GT 1`` fails on anything worse than A.
    """

    metric: str
    op: Operator
    error: str

    def same_threshold(self, op: str, error: str) -> bool:
        """True when ``op``/``error`` (as the server stores them) state this condition."""
        if op != self.op:
            return False
        try:
            return float(error) == float(self.error)
        except ValueError:
            return error == self.error


#: The gate, as code. On new code (what a change adds): coverage at least 90% (the bar
#: pytest already enforces on the whole code), at most 3% duplicated lines, reliability,
#: security and maintainability rated A, every security hotspot reviewed. On the whole code:
#: coverage at least 90%.
GATE_CONDITIONS: tuple[Condition, ...] = (
    Condition("new_coverage", "LT", "90"),
    Condition("new_duplicated_lines_density", "GT", "3"),
    Condition("new_reliability_rating", "GT", "1"),
    Condition("new_security_rating", "GT", "1"),
    Condition("new_maintainability_rating", "GT", "1"),
    Condition("new_security_hotspots_reviewed", "LT", "100"),
    Condition("coverage", "LT", "90"),
)


class SonarError(XgbopsError):
    """SonarQube refused a call or could not be reached; the message names the call and why."""


class SonarAuthError(SonarError):
    """None of the credentials given is accepted by SonarQube."""


class SonarNotReadyError(SonarError):
    """SonarQube did not reach status UP in time, or needs a person (database migration)."""


@dataclass(frozen=True)
class Credentials:
    """How to authenticate: a token, else an admin login and password.

    ``initial_password`` is tried when ``password`` is refused: on a fresh server the admin
    still has it, and it is then changed to ``password`` (api/users/change_password).
    """

    token: str | None = None
    login: str = "admin"
    password: str | None = None
    initial_password: str = DEFAULT_ADMIN_PASSWORD


@dataclass
class SetupReport:
    """What :func:`setup` found and changed."""

    server_version: str = ""
    changes: list[str] = field(default_factory=list)
    token_file: Path | None = None

    def lines(self) -> list[str]:
        """One line per change, or one saying nothing had to change."""
        head = f"SonarQube {self.server_version} is UP"
        if not self.changes:
            return [head, "nothing to change: the server already matches the gate as code"]
        return [head, *self.changes]


class SonarClient:
    """A thin client of SonarQube's Web API: GET with query parameters, POST with form data.

    Args:
        base_url: the server, e.g. ``http://sonarqube:9000``.
        session: the HTTP session (a new one by default).
        timeout: seconds per request.
    """

    def __init__(
        self,
        base_url: str,
        session: requests.Session | None = None,
        timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session or requests.Session()
        self.timeout = timeout

    def use_token(self, token: str) -> None:
        """Authenticate the next calls with a user token (bearer scheme)."""
        self.session.auth = None
        self.session.headers["Authorization"] = f"Bearer {token}"

    def use_password(self, login: str, password: str) -> None:
        """Authenticate the next calls with a login and password (basic scheme)."""
        self.session.headers.pop("Authorization", None)
        self.session.auth = (login, password)

    def get(self, path: str, **params: str) -> Any:
        """GET ``api/...`` and return the decoded JSON.

        Raises:
            SonarError: the server is unreachable or answers with an error status.
        """
        return self._call("GET", path, params)

    def post(self, path: str, **data: str) -> Any:
        """POST form data to ``api/...``; returns the decoded JSON, or None (204).

        Raises:
            SonarError: the server is unreachable or answers with an error status.
        """
        return self._call("POST", path, data)

    def _call(self, method: str, path: str, values: dict[str, str]) -> Any:
        url = f"{self.base_url}/{path}"
        kwargs: dict[str, Any] = {"params": values} if method == "GET" else {"data": values}
        try:
            response = self.session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise SonarError(f"{method} {path}: cannot reach {self.base_url} ({exc})") from exc
        if response.status_code == 401:
            raise SonarAuthError(f"{method} {path}: 401, SonarQube refused the credentials")
        if response.status_code >= 400:
            raise SonarError(f"{method} {path}: {response.status_code} {_error_text(response)}")
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise SonarError(f"{method} {path}: the answer is not JSON") from exc


def wait_until_up(
    client: SonarClient,
    timeout: float,
    interval: float = 5.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Poll ``api/system/status`` until it says UP.

    Args:
        client: the client (no credentials needed for this endpoint).
        timeout: seconds to wait at most.
        interval: seconds between polls.
        clock: the monotonic clock (replaceable in tests).
        sleep: the sleep function (replaceable in tests).

    Returns:
        The server version.

    Raises:
        SonarNotReadyError: not UP within ``timeout`` (the last status and what it means are in
            the message), or the database needs a migration, which is a person's decision.
    """
    deadline = clock() + timeout
    last = "no answer"
    while True:
        try:
            answer = client.get("api/system/status") or {}
        except SonarError as exc:  # not listening yet, or a proxy answering for it
            answer, last = {}, str(exc)
        if answer:
            status = str(answer.get("status", "?"))
            last = f"status {status}: {_STATUS_HELP.get(status, 'unknown status')}"
            if status == "UP":
                return str(answer.get("version", "?"))
            if status == "DB_MIGRATION_NEEDED":
                raise SonarNotReadyError(f"SonarQube at {client.base_url} is not UP ({last})")
        log.info("waiting for SonarQube", url=client.base_url, last=last)
        if clock() + interval > deadline:
            raise SonarNotReadyError(
                f"SonarQube at {client.base_url} is not UP after {timeout:g}s (last: {last})"
            )
        sleep(interval)


def authenticate(client: SonarClient, credentials: Credentials, report: SetupReport) -> None:
    """Make ``client`` authenticated; on a fresh server, change the initial admin password.

    Args:
        client: the client to authenticate.
        credentials: a token, else a login with the wanted password (and the initial one).
        report: receives the password change, if any.

    Raises:
        SonarAuthError: no credentials, or none of them is accepted.
    """
    if credentials.token:
        client.use_token(credentials.token)
        if not _valid(client):
            raise SonarAuthError(f"SonarQube at {client.base_url} refused the token")
        return
    if not credentials.password:
        raise SonarAuthError(
            "no SonarQube credentials: set XGBOPS_SONAR__TOKEN, or SONAR_ADMIN_PASSWORD "
            "(the admin password to use; a fresh server's initial one is changed to it)"
        )
    client.use_password(credentials.login, credentials.password)
    if _valid(client):
        return
    if credentials.initial_password != credentials.password:
        client.use_password(credentials.login, credentials.initial_password)
        if _valid(client):
            client.post(
                "api/users/change_password",
                login=credentials.login,
                previousPassword=credentials.initial_password,
                password=credentials.password,
            )
            client.use_password(credentials.login, credentials.password)
            report.changes.append(f"changed the initial password of {credentials.login!r}")
            return
    raise SonarAuthError(
        f"SonarQube at {client.base_url} refused the password of {credentials.login!r} "
        "(SONAR_ADMIN_PASSWORD), and the initial password too"
    )


def ensure_gate(
    client: SonarClient, name: str, conditions: Sequence[Condition], report: SetupReport
) -> None:
    """Create the gate ``name`` if missing and make its conditions exactly ``conditions``.

    Raises:
        SonarError: the gate is built in (read-only), or SonarQube rejects a condition.
    """
    gates = client.get("api/qualitygates/list").get("qualitygates", [])
    if name not in {gate.get("name") for gate in gates}:
        client.post("api/qualitygates/create", name=name)
        report.changes.append(f"created quality gate {name!r}")
    gate = client.get("api/qualitygates/show", name=name)
    if gate.get("isBuiltIn"):
        raise SonarError(f"quality gate {name!r} is built in and cannot be edited; choose another")
    current = {c["metric"]: c for c in gate.get("conditions", [])}
    for wanted in conditions:
        found = current.pop(wanted.metric, None)
        if found is None:
            client.post(
                "api/qualitygates/create_condition",
                gateName=name,
                metric=wanted.metric,
                op=wanted.op,
                error=wanted.error,
            )
            report.changes.append(f"added condition {_describe(wanted)}")
        elif not wanted.same_threshold(str(found.get("op")), str(found.get("error"))):
            client.post(
                "api/qualitygates/update_condition",
                id=str(found["id"]),
                metric=wanted.metric,
                op=wanted.op,
                error=wanted.error,
            )
            was = f"{found.get('op')} {found.get('error')}"
            report.changes.append(f"updated condition {_describe(wanted)} (was {was})")
    for extra in current.values():
        client.post("api/qualitygates/delete_condition", id=str(extra["id"]))
        report.changes.append(
            f"deleted condition {extra['metric']} {extra.get('op')} {extra.get('error')}"
        )


def ensure_project(client: SonarClient, key: str, gate: str, report: SetupReport) -> None:
    """Create the project ``key`` if missing, and assign it the gate ``gate``."""
    found = client.get("api/projects/search", projects=key).get("components", [])
    if not any(component.get("key") == key for component in found):
        client.post("api/projects/create", project=key, name=key)
        report.changes.append(f"created project {key!r}")
    current = client.get("api/qualitygates/get_by_project", project=key).get("qualityGate", {})
    if current.get("name") != gate or current.get("default"):
        client.post("api/qualitygates/select", gateName=gate, projectKey=key)
        report.changes.append(f"assigned quality gate {gate!r} to project {key!r}")


def webhook_url(jenkins_url: str) -> str:
    """The URL the SonarQube Scanner plugin for Jenkins listens on (trailing slash required)."""
    return f"{jenkins_url.rstrip('/')}/sonarqube-webhook/"


def ensure_webhook(
    client: SonarClient, project: str, jenkins_url: str, report: SetupReport
) -> None:
    """Make the project's webhook ``Jenkins`` post to ``<jenkins_url>/sonarqube-webhook/``."""
    url = webhook_url(jenkins_url)
    hooks = client.get("api/webhooks/list", project=project).get("webhooks", [])
    if any(hook.get("url") == url for hook in hooks):
        return
    named = [hook for hook in hooks if hook.get("name") == WEBHOOK_NAME]
    if named:
        client.post("api/webhooks/update", webhook=named[0]["key"], name=WEBHOOK_NAME, url=url)
        report.changes.append(f"updated webhook {WEBHOOK_NAME!r} to {url} (was {named[0]['url']})")
    else:
        client.post("api/webhooks/create", name=WEBHOOK_NAME, url=url, project=project)
        report.changes.append(f"created webhook {WEBHOOK_NAME!r} to {url}")


def ensure_token_file(client: SonarClient, path: Path, report: SetupReport) -> None:
    """Keep the token in ``path`` if SonarQube still accepts it, else write a new one (0600).

    A new token is named ``jenkins``; an older token of that name is revoked first (its value
    is lost with the file, so nothing can still be using it).
    """
    existing = path.read_text(encoding="utf-8").strip() if path.is_file() else ""
    if existing and _token_valid(client, existing):
        _restrict(path)
        return
    tokens = client.get("api/user_tokens/search").get("userTokens", [])
    if any(token.get("name") == TOKEN_NAME for token in tokens):
        client.post("api/user_tokens/revoke", name=TOKEN_NAME)
        report.changes.append(f"revoked the old token {TOKEN_NAME!r}")
    answer = client.post("api/user_tokens/generate", name=TOKEN_NAME, type=TOKEN_TYPE)
    _write_secret(path, str(answer["token"]))
    report.token_file = path
    report.changes.append(f"wrote a new token {TOKEN_NAME!r} to {path}")


def setup(
    settings: SonarSettings,
    credentials: Credentials,
    *,
    conditions: Sequence[Condition] = GATE_CONDITIONS,
    token_file: Path | None = None,
    wait_timeout: float = 300.0,
    poll_interval: float = 5.0,
    session: requests.Session | None = None,
) -> SetupReport:
    """Make the SonarQube server match the gate as code (see the module docstring).

    Args:
        settings: the server URL, project key, gate name and Jenkins URL.
        credentials: how to authenticate.
        conditions: the gate's conditions (default :data:`GATE_CONDITIONS`).
        token_file: where to write an analysis token for Jenkins (kept if still valid).
        wait_timeout: seconds to wait for the server to be UP.
        poll_interval: seconds between status polls.
        session: the HTTP session to use (a new one by default).

    Returns:
        What was found and changed.

    Raises:
        SonarNotReadyError: the server is not UP in time.
        SonarAuthError: the credentials are refused.
        SonarError: SonarQube refused a change; the message names the call.
    """
    client = SonarClient(settings.host_url, session=session)
    report = SetupReport()
    try:
        report.server_version = wait_until_up(client, wait_timeout, poll_interval)
        authenticate(client, credentials, report)
        ensure_gate(client, settings.gate_name, conditions, report)
        ensure_project(client, settings.project_key, settings.gate_name, report)
        ensure_webhook(client, settings.project_key, settings.jenkins_url, report)
        if token_file is not None:
            ensure_token_file(client, token_file, report)
    finally:
        if session is None:
            client.session.close()
    log.info("sonarqube set up", url=settings.host_url, changes=len(report.changes))
    return report


def _valid(client: SonarClient) -> bool:
    # api/authentication/validate answers {"valid": false} (or 401) for refused credentials.
    try:
        return bool(client.get("api/authentication/validate").get("valid"))
    except SonarAuthError:
        return False


def _token_valid(client: SonarClient, token: str) -> bool:
    with requests.Session() as session:
        probe = SonarClient(client.base_url, session=session, timeout=client.timeout)
        probe.use_token(token)
        return _valid(probe)


def _write_secret(path: Path, secret: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(secret + "\n")
    _restrict(path)


def _restrict(path: Path) -> None:
    # os.open's mode applies only to a new file: an existing one keeps its mode unless set.
    path.chmod(0o600)


def _describe(condition: Condition) -> str:
    return f"{condition.metric} {condition.op} {condition.error}"


def _error_text(response: requests.Response) -> str:
    try:
        errors = response.json().get("errors", [])
        messages = [str(error.get("msg", error)) for error in errors]
    except (ValueError, AttributeError):
        messages = []
    return "; ".join(messages) or response.reason or "error"
