"""One server bootstrap for both apps: settings -> address, workers, timeouts, logging, metrics.

Gunicorn (the Flask app, ``api/gunicorn_conf.py``) and uvicorn (the FastAPI twin,
``python -m api.fastapi_app``) read the same :class:`ServerPlan`, so the twins keep connections
alive as long, give a request and a shutdown the same time, and run one XGBoost thread per
worker.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from xgbops.config import Settings

#: Seconds an idle keep-alive connection stays open: above the 60 s idle timeout of common load
#: balancers (AWS ALB, nginx), so the balancer closes first and never sends into a closed one.
KEEPALIVE_S: Final = 75
#: Seconds a worker may spend on one request before it is replaced (a 10,000-row batch takes
#: well under a second; training runs in its own process).
REQUEST_TIMEOUT_S: Final = 120
#: Seconds in-flight requests get to finish, and the history to flush, on a stop.
GRACEFUL_TIMEOUT_S: Final = 30
#: Environment every worker gets: one XGBoost/OpenMP thread, as more threads than cores
#: collapses throughput.
WORKER_ENV: Final = {"OMP_NUM_THREADS": "1"}

App = Literal["flask", "fastapi"]


@dataclass(frozen=True)
class ServerPlan:
    """How one app is served, derived from the settings alone."""

    app: App
    host: str
    port: int
    workers: int
    threads: int
    log_level: str
    #: Prometheus' multiprocess directory: one per app and port, so a second server of the same
    #: project never wipes this one's samples.
    metrics_dir: Path
    keepalive_s: int = KEEPALIVE_S
    request_timeout_s: int = REQUEST_TIMEOUT_S
    graceful_timeout_s: int = GRACEFUL_TIMEOUT_S

    @classmethod
    def for_app(cls, app: App, settings: Settings) -> ServerPlan:
        """The plan of ``app`` (its port is ``serve.port`` or ``serve.fastapi_port``)."""
        port = settings.serve.port if app == "flask" else settings.serve.fastapi_port
        return cls(
            app=app,
            host=settings.serve.host,
            port=port,
            workers=settings.serve.workers,
            threads=settings.serve.threads,
            log_level=settings.log_level.lower(),
            metrics_dir=settings.state_path / "prometheus" / f"{app}-{port}",
        )

    @property
    def bind(self) -> str:
        """``host:port``, as gunicorn takes it."""
        return f"{self.host}:{self.port}"

    @property
    def multiprocess_metrics(self) -> bool:
        """Whether Prometheus samples are shared through files: always under gunicorn (the
        master forks its workers), under uvicorn only with more than one worker."""
        return self.app == "flask" or self.workers > 1

    def prepare_environment(self) -> None:
        """Set what the workers inherit: :data:`WORKER_ENV` and, if shared, the metrics
        directory. Values the caller already set win."""
        for name, value in WORKER_ENV.items():
            os.environ.setdefault(name, value)
        if self.multiprocess_metrics:
            os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(self.metrics_dir))

    @staticmethod
    def clear_metrics() -> None:
        """Empty the metrics directory before the first worker starts (samples of an earlier
        run would be summed in). Only at start: a reload must keep the live workers' files."""
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if directory:
            shutil.rmtree(directory, ignore_errors=True)
            os.makedirs(directory, exist_ok=True)
