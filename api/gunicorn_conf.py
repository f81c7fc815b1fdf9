"""Gunicorn settings for the Flask app (``make serve``); every value comes from xgbops settings.

Threaded workers keep connections alive (sync workers close them after each response), each
worker builds its own app after the fork, and Prometheus samples are shared through files.
Gunicorn's own log lines go through xgbops' logging (``_Logger``), as the app's do.
"""

# pylint: disable=invalid-name  # gunicorn reads these lowercase module globals
from typing import Any

from gunicorn.glogging import Logger  # type: ignore[import-untyped]

from xgbops.config import load_settings
from xgbops.logs import configure_logging

from api.server import WORKER_ENV, ServerPlan

_settings = load_settings()
_plan = ServerPlan.for_app("flask", _settings)
_plan.prepare_environment()
# Import the app's modules once in the master (after the line above: prometheus-client picks its
# multiprocess mode on import): workers fork with them loaded and shared copy-on-write. Each
# worker still builds its own app and service (``wsgi_app`` below).
import api.flask_app  # noqa: E402,F401  # pylint: disable=wrong-import-position,unused-import

wsgi_app = "api.flask_app:create_app()"
bind = _plan.bind
workers = _plan.workers
worker_class = "gthread"
threads = _plan.threads
keepalive = _plan.keepalive_s
# The apps refuse a header line over serve.max_header_bytes with a JSON 431; gunicorn's own
# refusal (an HTML 400) stays for lines past 8 times that.
limit_request_field_size = 8 * _settings.serve.max_header_bytes
timeout = _plan.request_timeout_s
graceful_timeout = _plan.graceful_timeout_s
accesslog = None  # the app writes one line per request itself (settings: serve.access_log)
errorlog = "-"
loglevel = _plan.log_level
raw_env = [f"{name}={value}" for name, value in WORKER_ENV.items()]


class _Logger(Logger):  # type: ignore[misc]
    """Gunicorn's logger with its records formatted by xgbops' logging (JSON lines in a container).

    Not ``logconfig_dict``: with it set, gunicorn builds its access-log fields for every request
    even though nothing prints them.
    """

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        configure_logging(_settings)  # replaces the handlers gunicorn just set


logger_class = _Logger


def on_starting(server: Any) -> None:
    """Start with an empty metrics directory (samples of a previous run would be summed in)."""
    del server
    ServerPlan.clear_metrics()


def worker_exit(server: Any, worker: Any) -> None:
    """Flush the worker's buffered prediction records before it goes."""
    del server
    app = getattr(worker, "wsgi", None)
    service = getattr(app, "extensions", {}).get("xgbops") if app is not None else None
    if service is not None:
        service.close()


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges from the shared metrics."""
    del server
    from prometheus_client import multiprocess  # pylint: disable=import-outside-toplevel

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
