"""A real Docker engine for the container tests, and the stand-in for a base image.

Where ``DOCKER_HOST`` (or the default socket) already answers, that engine is used. Otherwise,
as root, Debian's ``dockerd`` is started with its data in a temporary folder and no bridge
network (``--bridge=none --iptables=false --ip6tables=false``): containers and builds use the
host's network. It is stopped, by its PID, when the tests end.

No image can be pulled on a machine that reaches only package registries, so the base image
(the Dockerfile's ``PYTHON_IMAGE``) is built as a stand-in when the engine lacks it: Debian
bookworm with its python3.11 from ``debootstrap``, tagged with the same name. The tests then
build exactly the Dockerfile a user builds.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess  # nosec B404 - the docker client and daemon, fixed argument lists
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
#: What the stand-in base image holds: the interpreter, venv (for `python -m venv`), CA roots.
STAND_IN_PACKAGES = (
    "python3.11",
    "python3.11-venv",
    "python3-distutils",
    "python3-pip-whl",
    "python3-setuptools-whl",
    "ca-certificates",
)
DEBIAN_MIRROR = os.environ.get("XGBOPS_DEBIAN_MIRROR", "http://deb.debian.org/debian")
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "xgbops"


class EngineUnavailable(RuntimeError):
    """No Docker engine answers and none can be started here (the reason says why)."""


@dataclass
class Engine:
    """A Docker client bound to one engine."""

    cli: str
    env: dict[str, str]
    log: Path | None = None
    started: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def run(
        self, *args: str, timeout: float = 600, check: bool = True, input_bytes: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``docker ARGS``; raises with the output when it fails and ``check`` is set."""
        result = subprocess.run(  # nosec B603 - fixed client, arguments from the tests
            [self.cli, *args],
            env=self.env,
            capture_output=True,
            timeout=timeout,
            check=False,
            input=input_bytes,
        )
        done = subprocess.CompletedProcess(
            result.args,
            result.returncode,
            result.stdout.decode("utf-8", "replace"),
            result.stderr.decode("utf-8", "replace"),
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} exited {done.returncode}:\n{done.stdout[-3000:]}"
                f"\n{done.stderr[-3000:]}"
            )
        return done

    def inspect(self, kind: str, name: str) -> dict[str, Any]:
        """``docker KIND inspect NAME`` as a dictionary."""
        return dict(json.loads(self.run(kind, "inspect", name).stdout)[0])

    def has_image(self, name: str) -> bool:
        """True when the engine holds the image ``name``."""
        return self.run("image", "inspect", name, check=False).returncode == 0


def docker_cli() -> str:
    """A client whose ``docker build`` has BuildKit built in.

    ``XGBOPS_DOCKER`` wins; then Debian's ``/usr/bin/docker`` (docker.io builds with BuildKit
    without the buildx plugin, which a newer client needs); then ``docker`` on the PATH.
    """
    for candidate in (os.environ.get("XGBOPS_DOCKER"), "/usr/bin/docker", shutil.which("docker")):
        if candidate and Path(candidate).is_file():
            return candidate
    raise EngineUnavailable("no docker client: install Debian's docker.io (make container-deps)")


@contextmanager
def engine() -> Iterator[Engine]:
    """The engine the environment names, or one started here for the duration."""
    cli = docker_cli()
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    existing = Engine(cli, env)
    if existing.run("version", check=False, timeout=20).returncode == 0:
        yield existing
        return
    dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
    if not Path(dockerd).is_file():
        raise EngineUnavailable("no Docker engine answers and dockerd is not installed")
    if os.geteuid() != 0:
        raise EngineUnavailable("no Docker engine answers, and starting dockerd needs root")
    # A short path: the daemon's unix sockets must fit in 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="xgbops-dk-", dir="/tmp"))
    log = root / "dockerd.log"
    socket = root / "docker.sock"
    command = [
        dockerd,
        f"--data-root={root / 'data'}",
        f"--exec-root={root / 'x'}",
        f"--pidfile={root / 'dockerd.pid'}",
        f"--host=unix://{socket}",
        "--bridge=none",
        "--iptables=false",
        "--ip6tables=false",
    ]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)  # nosec B603
    started = Engine(cli, {**env, "DOCKER_HOST": f"unix://{socket}"}, log, process)
    try:
        _wait_for(started, process, log)
        yield started
    finally:
        _stop(started, process, root)


def _wait_for(started: Engine, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EngineUnavailable(f"dockerd exited {process.returncode}:\n{_tail(log)}")
        if started.run("version", check=False, timeout=10).returncode == 0:
            return
        time.sleep(0.5)
    raise EngineUnavailable(f"dockerd did not answer within 90 s:\n{_tail(log)}")


def _stop(started: Engine, process: subprocess.Popen[bytes], root: Path) -> None:
    """Remove what the tests left, stop the daemon by its PID, drop its data."""
    running = started.run("ps", "-aq", check=False).stdout.split()
    if running:
        started.run("rm", "-f", "-v", *running, check=False)
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)
    for mount in _mounts_under(root):  # dockerd leaves its network namespace file mounted
        subprocess.run(["umount", mount], capture_output=True, check=False)  # nosec B603 B607
    shutil.rmtree(root, ignore_errors=True)


def _mounts_under(root: Path) -> list[str]:
    """Mount points below ``root``, deepest first."""
    with open("/proc/mounts", encoding="utf-8") as mounts:
        points = [line.split()[1] for line in mounts if line.split()[1].startswith(f"{root}/")]
    return sorted(points, key=len, reverse=True)


def _tail(log: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def ensure_base_image(docker: Engine, name: str) -> str:
    """Make sure the engine holds the base image ``name``; returns how it got there.

    Pulled when the engine can reach a registry; otherwise built as a stand-in from Debian's
    packages (debootstrap of bookworm, its python3.11 as ``python``), cached between runs as a
    tarball keyed by the package list.
    """
    if docker.has_image(name):
        return "present"
    if docker.run("pull", name, check=False, timeout=120).returncode == 0:
        return "pulled"
    tarball = CACHE / f"stand-in-bookworm-{'-'.join(STAND_IN_PACKAGES)}.tar"
    if not tarball.is_file():
        _debootstrap(tarball)
    with open(tarball, "rb") as archive:
        docker.run(
            "import",
            "--change",
            "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--change",
            'CMD ["python3"]',
            "-",
            name,
            input_bytes=archive.read(),
            timeout=600,
        )
    return "stand-in"


def _debootstrap(tarball: Path) -> None:
    debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    if not Path(debootstrap).is_file():
        raise EngineUnavailable("the base image cannot be pulled and debootstrap is missing")
    with tempfile.TemporaryDirectory(prefix="xgbops-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        _run(
            [
                debootstrap,
                "--variant=minbase",
                f"--include={','.join(STAND_IN_PACKAGES)}",
                "bookworm",
                str(rootfs),
                DEBIAN_MIRROR,
            ]
        )
        for mount in ("proc", "sys"):  # debootstrap may leave them mounted
            subprocess.run(["umount", str(rootfs / mount)], capture_output=True, check=False)
        for link in ("python", "python3"):
            (rootfs / "usr/local/bin" / link).symlink_to("/usr/bin/python3.11")
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (rootfs / cache).glob("*"):
                if item.is_file():
                    item.unlink()
        shutil.rmtree(rootfs / "debootstrap", ignore_errors=True)
        tarball.parent.mkdir(parents=True, exist_ok=True)
        partial = tarball.with_suffix(".partial")
        _run(
            [
                "tar",
                "--numeric-owner",
                "--exclude=./proc/*",
                "--exclude=./sys/*",
                "-C",
                str(rootfs),
                "-cf",
                str(partial),
                ".",
            ]
        )
        partial.replace(tarball)


def _run(command: Sequence[str]) -> None:
    result = subprocess.run(  # nosec B603 - fixed tools
        list(command), capture_output=True, text=True, check=False, timeout=900
    )
    if result.returncode != 0:
        raise EngineUnavailable(f"{command[0]} exited {result.returncode}: {result.stderr[-2000:]}")
