"""A real ``mlflow server`` for the tests that need one, started and stopped as a user would."""

from __future__ import annotations

import os
import subprocess  # nosec B404 - the venv's own mlflow command, fixed arguments
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.processes import free_port, wait_until_healthy

#: How long a slow machine may take to bring the server up (it imports all of MLflow).
START_DEADLINE = 180.0


@contextmanager
def running_mlflow_server(backend_uri: str, artifacts: Path, log_path: Path) -> Iterator[str]:
    """``mlflow server`` on a free port with a proxied artifact store; yields its URL.

    MLflow 3's job executor stays off (``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``): on by
    default with a database backend, it doubles the server's processes and memory and delays
    its start for jobs the project never submits. The wait tolerates any failure to answer
    (refused, reset, timed out) until the deadline, then fails with the server's log tail.
    """
    port = free_port()
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--backend-store-uri",
        backend_uri,
        "--artifacts-destination",
        artifacts.as_uri(),
        "--serve-artifacts",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # the server's own prometheus-client is in-process
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(  # nosec B603
            command, stdout=log, stderr=subprocess.STDOUT, env=env
        )
        try:
            wait_until_healthy("mlflow server", f"{url}/health", process, log_path, START_DEADLINE)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
