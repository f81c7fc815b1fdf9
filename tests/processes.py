"""Processes the tests start (servers of the project's own or MLflow's): ports, waiting, and
what a test does when a real part is missing here."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess  # nosec B404 - only to type the process handle
import time
from pathlib import Path
from typing import NoReturn

import httpx
import pytest


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def log_tail(log: Path, lines: int = 40) -> str:
    """The last lines of a process's log, for a failure message."""
    text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def wait_until_healthy(
    name: str, url: str, process: subprocess.Popen[bytes], log: Path, timeout: float
) -> None:
    """Poll ``url`` until it answers 200, through any failure to answer (refused, reset, timed
    out, an error status) up to ``timeout``; fail with the log's tail if the process exits or
    the deadline passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{name} exited {process.returncode}:\n{log_tail(log)}")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"{name} did not answer {url} within {timeout:.0f} s:\n{log_tail(log)}")


def unavailable(reason: str) -> NoReturn:
    """Skip a test whose real part is missing here, naming it; under ``CI=true``, fail it."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI=true requires it")
    pytest.skip(reason)


def require_program(name: str, install: str = "") -> str:
    """The path of ``name`` on PATH, or :func:`unavailable` saying how to install it."""
    found = shutil.which(name)
    if found is None:
        unavailable(f"{name} is not installed{f' ({install})' if install else ''}")
    return found
