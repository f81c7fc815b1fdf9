"""Fixtures of the container tests: a Docker engine, the two images built by `make docker-build`.

Run by ``make container-test`` (not by ``make test``: pyproject's ``norecursedirs``). Without an
engine the tests skip with the reason; under ``CI=true`` they fail.
"""

from __future__ import annotations

import json
import os
import re
import subprocess  # nosec B404 - make, with fixed targets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.container.engine import REPO, Engine, EngineUnavailable, engine, ensure_base_image

#: The Dockerfile's default base image (its first ARG).
BASE_IMAGE = re.search(
    r"^ARG PYTHON_IMAGE=(\S+)", (REPO / "Dockerfile").read_text(encoding="utf-8"), re.M
)[
    1
]  # type: ignore[index]
IMAGE = "xgbops-ct/xgbops"
#: What the serving image may add to its base (issue: the lean serving image).
SERVE_BUDGET_BYTES = 200 * 1000 * 1000


@dataclass(frozen=True)
class Images:
    """The images `make docker-build` built, and what building them took."""

    serve: str
    platform: str
    base: str
    base_origin: str
    cold_seconds: float
    warm_seconds: float

    def size(self, docker: Engine, name: str) -> int:
        """The image's size in bytes, as the engine counts it (uncompressed)."""
        return int(docker.inspect("image", name)["Size"])


@pytest.fixture(scope="session")
def docker() -> Iterator[Engine]:
    """A Docker engine: the environment's, or dockerd started here as root."""
    try:
        with engine() as started:
            yield started
    except EngineUnavailable as exc:
        reason = f"no Docker engine: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI=true requires it (make container-deps installs it)")
        pytest.skip(reason)


def build_args() -> str:
    """What `docker build` needs here: the host's network (the engine has no bridge) and, when
    the environment names a CA bundle for pip, that bundle as the `pip_ca` BuildKit secret."""
    args = ["--network host"]
    for variable in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        bundle = os.environ.get(variable)
        if bundle and Path(bundle).is_file():
            args.append(f"--secret id=pip_ca,src={bundle}")
            break
    return " ".join(args)


def make(docker: Engine, *targets: str, **variables: str) -> float:
    """Run ``make TARGETS`` against this engine; returns the wall time in seconds."""
    started = time.monotonic()
    result = subprocess.run(  # nosec B603 B607 - the project's own make targets
        ["make", "--no-print-directory", *targets, *(f"{k}={v}" for k, v in variables.items())],
        cwd=REPO,
        env=docker.env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"make {' '.join(targets)} exited {result.returncode}:\n{result.stdout[-4000:]}"
            f"\n{result.stderr[-4000:]}"
        )
    return time.monotonic() - started


@pytest.fixture(scope="session")
def images(docker: Engine) -> Images:
    """Both images, built twice by `make docker-build`: cold (no cache), then warm."""
    origin = ensure_base_image(docker, BASE_IMAGE)
    variables = {"DOCKER": docker.cli, "IMAGE": IMAGE, "BUILD_ARGS": build_args()}
    cold = make(docker, "docker-build", **variables)
    warm = make(docker, "docker-build", **variables)
    built = Images(
        f"{IMAGE}-serve:latest", f"{IMAGE}-platform:latest", BASE_IMAGE, origin, cold, warm
    )
    report = {
        "base": {"image": BASE_IMAGE, "origin": origin, "bytes": built.size(docker, BASE_IMAGE)},
        "serve_bytes": built.size(docker, built.serve),
        "platform_bytes": built.size(docker, built.platform),
        "build_seconds": {"cold": round(cold, 1), "warm": round(warm, 1)},
    }
    (REPO / "reports").mkdir(exist_ok=True)
    (REPO / "reports" / "container-images.json").write_text(
        json.dumps(report, indent=2), encoding="utf-8"
    )
    print(f"\ncontainer images: {json.dumps(report)}")
    return built
