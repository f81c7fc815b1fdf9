"""Kibana as code: import the data views and dashboards of ``monitoring/kibana/``.

The saved objects are NDJSON files in the form Kibana's export API writes them: one data view per
index family the events go to (and one for Metricbeat), Lens visualisations, and the five
dashboards that show them. :func:`import_saved_objects` sends them all in one
``POST /api/saved_objects/_import?overwrite=true`` (multipart ``file``, ``kbn-xsrf`` header):
``overwrite`` replaces the objects that have the same ids, so a re-run changes nothing twice.

Importing into a Kibana that is still starting fails (it answers 503 "Kibana server is not
ready yet", then reports its plugins one by one), so the import first polls ``GET /api/status``
with exponential backoff until the overall level is ``available``. A ``degraded`` Kibana whose
Elasticsearch and saved-objects services are both available is taken as ready too: a degraded
plugin (alerting, fleet...) does not stop an import, and waiting for it would fail the one-shot
setup service of ``docker compose`` for nothing. Credentials are Elasticsearch's (Kibana logs its
users in against it): the API key when set, else the username and password.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from xgbops.config import MonitoringSettings, Settings
from xgbops.monitoring import MonitoringError, credentials

RESOURCE_DIR = Path("monitoring") / "kibana"
#: The index prefix the data views are written with; another ``index_prefix`` is substituted.
DEFAULT_PREFIX = "xgbops"
IMPORT_PATH = "/api/saved_objects/_import"
STATUS_PATH = "/api/status"
#: Answers to retry: Kibana starting, restarting, or behind a proxy that is.
_RETRY_STATUSES = frozenset({502, 503, 504})


@dataclass(frozen=True)
class Wait:
    """How long to wait for Kibana, and how often to ask.

    ``timeout`` bounds the whole wait (status polls and import retries); delays between polls
    double from ``initial_backoff`` up to ``max_backoff``.
    """

    timeout: float = 300.0
    initial_backoff: float = 1.0
    max_backoff: float = 10.0
    request_timeout: float = 30.0


@dataclass(frozen=True)
class ImportFailure:
    """One saved object Kibana refused, and why (its error type and details)."""

    type: str
    id: str
    title: str
    error: str

    def __str__(self) -> str:
        return f"{self.type}/{self.id} ({self.title}): {self.error}"


@dataclass
class ImportResult:
    """What Kibana answered: its version, the objects imported and those refused."""

    kibana_url: str
    kibana_version: str
    imported: list[tuple[str, str]] = field(default_factory=list)
    failures: list[ImportFailure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every object was imported."""
        return not self.failures

    def lines(self) -> list[str]:
        """A summary for people: counts per type, each refusal, the dashboards' addresses."""
        counts: dict[str, int] = {}
        for kind, _ in self.imported:
            counts[kind] = counts.get(kind, 0) + 1
        detail = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())) or "nothing"
        lines = [
            f"Kibana {self.kibana_version} at {self.kibana_url}: "
            f"{len(self.imported)} saved objects imported ({detail}), "
            f"{len(self.failures)} refused"
        ]
        lines += [f"  refused {failure}" for failure in self.failures]
        lines += [
            f"  dashboard: {self.kibana_url.rstrip('/')}/app/dashboards#/view/{object_id}"
            for kind, object_id in self.imported
            if kind == "dashboard"
        ]
        return lines


def saved_objects_dir(settings: Settings) -> Path:
    """The project's ``monitoring/kibana``, else the one of this source checkout.

    Raises:
        MonitoringError: neither exists.
    """
    for candidate in (
        settings.resolve(RESOURCE_DIR),
        Path(__file__).resolve().parents[3] / RESOURCE_DIR,
    ):
        if candidate.is_dir():
            return candidate
    raise MonitoringError(f"{settings.resolve(RESOURCE_DIR)}: directory not found")


def load_saved_objects(directory: Path, prefix: str = DEFAULT_PREFIX) -> list[dict[str, Any]]:
    """Every saved object of the ``*.ndjson`` files in ``directory`` (sorted by file name).

    Args:
        directory: the folder of NDJSON files.
        prefix: the index prefix; data view titles written with ``xgbops-`` get it instead.

    Returns:
        The objects, in file order.

    Raises:
        MonitoringError: no file, or a line is not a JSON object with ``type``, ``id`` and
            ``attributes`` (the message names the file and line).
    """
    paths = sorted(directory.glob("*.ndjson"))
    if not paths:
        raise MonitoringError(f"{directory}: no saved objects (*.ndjson)")
    objects = []
    for path in paths:
        for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                raise MonitoringError(f"{path}:{number}: not valid JSON ({exc})") from exc
            if not isinstance(obj, dict) or not all(
                isinstance(obj.get(key), kind)
                for key, kind in (("type", str), ("id", str), ("attributes", dict))
            ):
                raise MonitoringError(f"{path}:{number}: a saved object needs type, id, attributes")
            objects.append(_with_prefix(obj, prefix))
    return objects


def to_ndjson(objects: list[dict[str, Any]]) -> bytes:
    """The upload: one compact JSON object per line."""
    return "".join(json.dumps(obj, separators=(",", ":")) + "\n" for obj in objects).encode()


def open_session(settings: MonitoringSettings) -> requests.Session:
    """A session carrying the credentials (API key first, else username and password)."""
    session = requests.Session()
    login = credentials(settings)
    if login.api_key is not None:
        session.headers["Authorization"] = f"ApiKey {login.api_key}"
    elif login.basic is not None:
        session.auth = login.basic
    return session


def wait_until_available(
    session: requests.Session,
    kibana_url: str,
    wait: Wait = Wait(),
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Poll ``GET /api/status`` until Kibana is ready (see the module docstring).

    Args:
        session: the HTTP session (credentials).
        kibana_url: Kibana's base URL.
        wait: the time limit and backoff.
        sleep: waits between polls (tests pass a recorder).

    Returns:
        Kibana's version (``unknown`` when the answer does not say).

    Raises:
        MonitoringError: the credentials were refused, or Kibana was not ready in time (the
            message gives the last answer).
    """
    url = f"{kibana_url.rstrip('/')}{STATUS_PATH}"
    deadline = time.monotonic() + wait.timeout
    delay = wait.initial_backoff
    while True:
        ready, version, last = _poll_status(session, url, wait.request_timeout)
        if ready:
            return version
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise MonitoringError(
                f"Kibana at {kibana_url} was not available after {wait.timeout:g} s "
                f"(last answer: {last}); is it running? "
                "(docker compose --profile monitoring up -d)"
            )
        sleep(min(delay, remaining))
        delay = min(delay * 2, wait.max_backoff)


def import_saved_objects(
    settings: Settings,
    directory: Path | None = None,
    wait: Wait = Wait(),
    session: requests.Session | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> ImportResult:
    """Wait for Kibana, then import every saved object of ``monitoring/kibana`` (overwriting).

    Args:
        settings: ``monitoring.kibana_url``, credentials and index prefix; the project folder.
        directory: the NDJSON folder (default: :func:`saved_objects_dir`).
        wait: the time limit and backoff.
        session: the HTTP session (default: :func:`open_session`).
        sleep: waits between attempts.

    Returns:
        Kibana's answer; ``result.ok`` is False when any object was refused.

    Raises:
        MonitoringError: the files are invalid, Kibana was not ready in time, refused the
            credentials or refused the upload as a whole.
    """
    monitoring = settings.monitoring
    objects = load_saved_objects(directory or saved_objects_dir(settings), monitoring.index_prefix)
    session = session or open_session(monitoring)
    base = monitoring.kibana_url
    version = wait_until_available(session, base, wait, sleep)
    url = f"{base.rstrip('/')}{IMPORT_PATH}"
    deadline = time.monotonic() + wait.timeout
    delay = wait.initial_backoff
    while True:
        try:
            response = session.post(
                url,
                params={"overwrite": "true"},
                headers={"kbn-xsrf": "true"},
                files={"file": ("xgbops.ndjson", to_ndjson(objects), "application/ndjson")},
                timeout=wait.request_timeout,
            )
        except requests.RequestException as exc:
            last = f"unreachable ({type(exc).__name__})"
        else:
            if response.status_code not in _RETRY_STATUSES:
                break
            last = f"HTTP {response.status_code}"
        if time.monotonic() >= deadline:
            raise MonitoringError(f"Kibana import failed at {url}: {last}")
        sleep(delay)
        delay = min(delay * 2, wait.max_backoff)
    return _import_result(response, base, version)


def _poll_status(session: requests.Session, url: str, timeout: float) -> tuple[bool, str, str]:
    """One status request: (ready, version, what it said)."""
    try:
        response = session.get(url, timeout=timeout)
    except requests.RequestException as exc:
        return False, "", f"unreachable ({type(exc).__name__})"
    if response.status_code in (401, 403):
        raise MonitoringError(
            f"Kibana at {url} refused the credentials (HTTP {response.status_code}): set "
            "XGBOPS_MONITORING__ELASTICSEARCH_USERNAME and _PASSWORD, or _API_KEY"
        )
    try:
        body = response.json()
        status = body["status"]
        overall = status["overall"]
    except (ValueError, KeyError, TypeError):
        return False, "", f"HTTP {response.status_code} {response.text[:120].strip()!r}"
    level = str(overall.get("level", ""))
    version = str((body.get("version") or {}).get("number", "unknown"))
    core = status.get("core") or {}
    services_up = all(
        (core.get(name) or {}).get("level") == "available"
        for name in ("elasticsearch", "savedObjects")
    )
    ready = response.status_code == 200 and (
        level == "available" or (level == "degraded" and services_up)
    )
    summary = overall.get("summary")
    return (
        ready,
        version,
        f"HTTP {response.status_code} {level}" + (f" ({summary})" if summary else ""),
    )


def _import_result(response: requests.Response, kibana_url: str, version: str) -> ImportResult:
    if response.status_code in (401, 403):
        raise MonitoringError(
            f"Kibana refused the import (HTTP {response.status_code}): the user needs the "
            "privilege to manage saved objects"
        )
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != 200 or not isinstance(body, dict):
        message = body.get("message") if isinstance(body, dict) else response.text[:200]
        raise MonitoringError(f"Kibana refused the import: HTTP {response.status_code} {message}")
    result = ImportResult(kibana_url, version)
    result.imported = [
        (str(item.get("type")), str(item.get("destinationId") or item.get("id")))
        for item in body.get("successResults") or []
    ]
    result.failures = [_failure(item) for item in body.get("errors") or []]
    if not body.get("success", False) and not result.failures:
        result.failures.append(ImportFailure("import", "-", "-", "Kibana answered success=false"))
    return result


def _failure(item: dict[str, Any]) -> ImportFailure:
    error = item.get("error") or {}
    kind = str(error.get("type", "unknown"))
    if kind == "missing_references":
        missing = ", ".join(f"{r.get('type')}/{r.get('id')}" for r in error.get("references", []))
        reason = f"missing_references: {missing}"
    else:
        details = error.get("message") or error.get("reason") or error.get("statusCode")
        reason = kind + (f": {details}" if details else "")
    title = item.get("title") or (item.get("meta") or {}).get("title") or ""
    return ImportFailure(str(item.get("type")), str(item.get("id")), str(title), reason)


def _with_prefix(obj: dict[str, Any], prefix: str) -> dict[str, Any]:
    """A data view with ``prefix`` in place of ``xgbops`` in its index patterns."""
    if prefix == DEFAULT_PREFIX or obj["type"] != "index-pattern":
        return obj
    patterns = str(obj["attributes"].get("title", "")).split(",")
    renamed = [
        prefix + p[len(DEFAULT_PREFIX) :] if p.startswith(DEFAULT_PREFIX + "-") else p
        for p in patterns
    ]
    return {**obj, "attributes": {**obj["attributes"], "title": ",".join(renamed)}}
