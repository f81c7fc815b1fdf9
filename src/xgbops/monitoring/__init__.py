"""Monitoring: typed events about models, predictions, drift and the machine, shipped to a sink.

``events`` defines one pydantic model per event type, each with a deterministic document id and
index, so re-shipping the same fact never duplicates it. ``sinks`` ships them to the local
SQLite sink (the default) or to Elasticsearch (``elastic`` installs its templates). ``sync``
backfills from MLflow and the prediction history (predictions, and the true labels clients
report for them: live accuracy), ``drift`` and ``check`` compare recent inputs with the training
data, ``system`` samples CPU, memory and disk. Importing this package does no work and pulls in
none of the heavy libraries: import the submodule you need.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from xgbops import XgbopsError
from xgbops.config import MonitoringSettings, Settings


class MonitoringError(XgbopsError):
    """Monitoring cannot do what was asked (no Elasticsearch URL, a cluster refused, ...)."""


@dataclass(frozen=True)
class Credentials:
    """How Elasticsearch and Kibana are logged in to: an API key, or a username and password."""

    api_key: str | None = None
    basic: tuple[str, str] | None = None


def credentials(settings: MonitoringSettings) -> Credentials:
    """The cluster's credentials, the same for Elasticsearch and Kibana: the API key wins over
    a username and password (an unset password is empty); neither set means none."""
    if settings.elasticsearch_api_key is not None:
        return Credentials(api_key=settings.elasticsearch_api_key.get_secret_value())
    if settings.elasticsearch_username:
        password = settings.elasticsearch_password
        secret = "" if password is None else password.get_secret_value()
        return Credentials(basic=(settings.elasticsearch_username, secret))
    return Credentials()


def find_resource_dir(settings: Settings, relative: Path) -> Path:
    """A folder of files-as-code (e.g. ``monitoring/elasticsearch``): the project's own copy,
    else the one of this source checkout (tests and pip-installed checkouts have no copy).

    Raises:
        MonitoringError: neither exists.
    """
    for candidate in (settings.resolve(relative), Path(__file__).resolve().parents[3] / relative):
        if candidate.is_dir():
            return candidate
    raise MonitoringError(f"{settings.resolve(relative)}: directory not found")


__all__ = ["Credentials", "MonitoringError", "credentials", "find_resource_dir"]
