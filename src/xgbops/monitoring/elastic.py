"""Elasticsearch as code: the client the settings describe, and ``xgbops monitor setup``.

The cluster's configuration lives in ``monitoring/elasticsearch/`` as the bodies of the REST
calls that install it, one JSON file per resource named after it:

- ``ilm/<policy>.json``: ILM policies (``PUT _ilm/policy/<policy>``),
- ``component_templates/<name>.json``: shared index settings (``PUT _component_template/<name>``),
- ``index_templates/<name>.json``: one template per event kind, with its strict mapping
  (``PUT _index_template/<name>``).

:func:`install` PUTs them in that order (policies and components before the templates that
name them). Every PUT replaces the resource with the same content, so a re-run is harmless; the
mappings are also applied to indices that already exist, so a field added to a template reaches
the current month's index too. Names are written with the default prefix ``xgbops``; another
``monitoring.index_prefix`` is substituted on the way in.

Plain monthly indices rather than data streams: see ``monitoring/README.md`` (in short, an event
always lands on the same index and id, so re-shipping can never duplicate it, and a training run's
document can be overwritten when the champion alias moves, which a data stream does not allow).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from elastic_transport import TransportError
from elasticsearch import ApiError, Elasticsearch

from xgbops.config import MonitoringSettings, Settings
from xgbops.monitoring import MonitoringError, credentials, find_resource_dir

#: The prefix the resource files are written with.
DEFAULT_PREFIX = "xgbops"
RESOURCE_DIR = Path("monitoring") / "elasticsearch"
_KINDS = ("ilm", "component_templates", "index_templates")
#: HTTP statuses the client retries (with backoff): overload and gateway errors.
RETRY_ON_STATUS = (429, 502, 503, 504)


@dataclass(frozen=True)
class Retry:
    """How hard to try before giving up on Elasticsearch.

    ``max_retries``/``backoff_*`` are the client's, for a whole request answered 429/502/503/504
    or a connection error; ``bulk_*`` are the bulk helper's, for single documents rejected with
    429 inside a successful bulk response.
    """

    max_retries: int = 3
    backoff_base: float = 0.5
    backoff_cap: float = 8.0
    bulk_initial_backoff: float = 1.0
    bulk_max_backoff: float = 30.0
    request_timeout: float = 30.0


@dataclass(frozen=True)
class Resource:
    """One file of ``monitoring/elasticsearch``: its kind, name and REST body."""

    kind: str
    name: str
    body: dict[str, Any]
    path: Path


def resource_dir(settings: Settings) -> Path:
    """The project's ``monitoring/elasticsearch``, else the one of this source checkout.

    Raises:
        MonitoringError: neither exists.
    """
    return find_resource_dir(settings, RESOURCE_DIR)


def load_resources(directory: Path, prefix: str = DEFAULT_PREFIX) -> list[Resource]:
    """Read every resource file, in install order, with ``prefix`` in place of ``xgbops``.

    Raises:
        MonitoringError: a file is not valid JSON or not an object.
    """
    resources = []
    for kind in _KINDS:
        for path in sorted((directory / kind).glob("*.json")):
            try:
                body = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise MonitoringError(f"{path}: cannot be read as JSON ({exc})") from exc
            if not isinstance(body, dict):
                raise MonitoringError(f"{path}: expected a JSON object")
            resources.append(Resource(kind, _prefixed(path.stem, prefix), body, path))
    if prefix != DEFAULT_PREFIX:
        resources = [_with_prefix(r, prefix) for r in resources]
    return resources


def index_template(directory: Path, kind: str, prefix: str = DEFAULT_PREFIX) -> dict[str, Any]:
    """The index template body of one event kind (e.g. ``predictions``).

    Raises:
        MonitoringError: there is none.
    """
    name = f"{prefix}-{kind}"
    for resource in load_resources(directory, prefix):
        if resource.kind == "index_templates" and resource.name == name:
            return resource.body
    raise MonitoringError(f"no index template {name!r} in {directory}")


def create_client(settings: MonitoringSettings, retry: Retry = Retry()) -> Elasticsearch:
    """A client for ``monitoring.elasticsearch_url`` with credentials and retries.

    An API key wins over a username and password. The client retries a request answered
    429/502/503/504 or cut off, with jittered exponential backoff.

    Raises:
        MonitoringError: no URL is configured.
    """
    if not settings.elasticsearch_url:
        raise MonitoringError(
            "no Elasticsearch URL: set XGBOPS_MONITORING__ELASTICSEARCH_URL "
            "(the local sink needs none)"
        )
    login = credentials(settings)
    auth: dict[str, Any] = {}
    if login.api_key is not None:
        auth["api_key"] = login.api_key
    elif login.basic is not None:
        auth["basic_auth"] = login.basic
    return Elasticsearch(
        settings.elasticsearch_url,
        request_timeout=retry.request_timeout,
        max_retries=retry.max_retries,
        retry_on_status=RETRY_ON_STATUS,
        retry_on_timeout=True,
        retry_backoff_base=retry.backoff_base,
        retry_backoff_cap=retry.backoff_cap,
        **auth,
    )


@dataclass(frozen=True)
class SetupResult:
    """What :func:`install` did: the cluster's version and each resource installed."""

    cluster_version: str
    installed: list[str]


def install(settings: Settings, client: Elasticsearch | None = None) -> SetupResult:
    """Install the ILM policies, component and index templates; apply mappings to existing indices.

    Args:
        settings: the monitoring settings (URL, credentials, index prefix) and project directory.
        client: an Elasticsearch client (default: :func:`create_client`).

    Returns:
        The cluster version and the ``kind/name`` of every resource installed.

    Raises:
        MonitoringError: the cluster cannot be reached, is not Elasticsearch 8/9, or refused a
            resource (the message names it and says why).
    """
    monitoring = settings.monitoring
    resources = load_resources(resource_dir(settings), monitoring.index_prefix)
    client = client or create_client(monitoring)
    installed: list[str] = []
    current = "(connecting)"
    try:
        version = str(client.info()["version"]["number"])
        if int(version.split(".", 1)[0]) < 8:
            raise MonitoringError(f"Elasticsearch {version} is too old: 8 or 9 is needed")
        for resource in resources:
            current = f"{resource.kind}/{resource.name}"
            _put(client, resource)
            installed.append(current)
    except (ApiError, TransportError) as exc:
        raise MonitoringError(f"Elasticsearch setup failed at {current}: {describe(exc)}") from exc
    return SetupResult(version, installed)


def describe(exc: Exception) -> str:
    """One line for a client error: status, Elasticsearch's error type and reason if any."""
    if isinstance(exc, ApiError):
        body = exc.body if isinstance(exc.body, dict) else {}
        error = body.get("error")
        if isinstance(error, dict):
            return f"{exc.meta.status} {error.get('type')}: {error.get('reason')}"
        return f"{exc.meta.status} {exc.message}"
    return f"{type(exc).__name__}: {exc}"


def _put(client: Elasticsearch, resource: Resource) -> None:
    body = resource.body
    if resource.kind == "ilm":
        client.ilm.put_lifecycle(name=resource.name, body=body)
    elif resource.kind == "component_templates":
        client.cluster.put_component_template(name=resource.name, body=body)
    else:
        client.indices.put_index_template(name=resource.name, body=body)
        mappings = dict(body["template"]["mappings"])
        # Existing indices do not re-read their template: give them the (additive) new fields.
        client.indices.put_mapping(
            index=",".join(body["index_patterns"]),
            body=mappings,
            allow_no_indices=True,
            ignore_unavailable=True,
            expand_wildcards="open",
        )


def _prefixed(name: str, prefix: str) -> str:
    if name == DEFAULT_PREFIX or name.startswith(DEFAULT_PREFIX + "-"):
        return prefix + name[len(DEFAULT_PREFIX) :]
    return name


def _with_prefix(resource: Resource, prefix: str) -> Resource:
    """Rename what a resource refers to: patterns, component templates, ILM policies."""
    body = json.loads(json.dumps(resource.body))
    if resource.kind == "index_templates":
        body["index_patterns"] = [_prefixed(p, prefix) for p in body["index_patterns"]]
        body["composed_of"] = [_prefixed(c, prefix) for c in body.get("composed_of", [])]
        lifecycle = body.get("template", {}).get("settings", {}).get("index", {}).get("lifecycle")
        if lifecycle and "name" in lifecycle:
            lifecycle["name"] = _prefixed(lifecycle["name"], prefix)
    return Resource(resource.kind, resource.name, body, resource.path)
