""".env.example documents every variable compose uses and every setting the code reads.

And no XGBOPS_* name anywhere in the platform files is a typo: each is a real setting.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.platform.conftest import REPO
from tests.platform.platform_files import (
    COMPOSE_FILE,
    ENV_EXAMPLE,
    cli_env_names,
    commented_names,
    default_as_text,
    documented_names,
    env_file,
    interpolations,
    is_setting,
    setting_env_names,
)

#: XGBOPS_* names that are not settings of xgbops.config, and who reads them.
NOT_SETTINGS = {
    "XGBOPS_GIT_URL": "Jenkins' job seed (the repository the jobs check out)",
    "XGBOPS_GIT_BRANCH": "Jenkins' job seed",
    "XGBOPS_IMAGE": "the Makefile's IMAGE and Jenkins' publish pipeline",
    "XGBOPS_BAKED_MODEL": "docker/bake.Dockerfile sets it, docker/entrypoint.sh reads it",
}
#: Options of the `xgbops` command read from the environment that .env.example need not
#: document, and why.
CLI_ENV_NOT_DOCUMENTED = {
    "BUILD_NUMBER": "set by Jenkins for every build",
    "SONAR_ADMIN_LOGIN": "admin unless changed by hand; sonar-setup always uses admin",
    "SONAR_ADMIN_INITIAL_PASSWORD": "a fresh SonarQube's documented admin password",
}
_SECRET = re.compile(r"PASSWORD|TOKEN|SECRET|API_KEY")
_XGBOPS_NAME = re.compile(r"\bXGBOPS_[A-Z0-9_]*[A-Z0-9]\b")
#: Files where an XGBOPS_* name must be a setting (or one of NOT_SETTINGS).
PLATFORM_FILES = ["docker-compose.yml", ".env.example", "Dockerfile", "docker/entrypoint.sh"]
PLATFORM_GLOBS = ["k8s/**/*.yaml", "k8s/**/*.env.example", ".github/workflows/*.yml"]


def undocumented_settings(env_example: Path) -> list[str]:
    """Settings missing from ``env_example``, or shown commented out with another default."""
    documented, commented = documented_names(env_example), commented_names(env_example)
    problems = []
    for name, default in setting_env_names().items():
        if name not in documented:
            problems.append(f"{name} is not in {env_example.name}")
        elif name in commented and commented[name] != default_as_text(default):
            problems.append(
                f"{name}: {env_example.name} says {commented[name]!r}, "
                f"the code's default is {default_as_text(default)!r}"
            )
    return problems


def undefined_compose_variables(compose_file: Path, env_example: Path) -> list[str]:
    """Variables compose interpolates that ``env_example`` does not list.

    A required one (``${NAME:?...}``) must be set; one with a default in compose may be shown
    commented out.
    """
    defined, documented = env_file(env_example), documented_names(env_example)
    problems = set()
    for name, operator, _ in interpolations(compose_file.read_text(encoding="utf-8")):
        if name not in documented or ("?" in operator and name not in defined):
            problems.add(
                f"${{{name}}} is used by {compose_file.name} but not set in {env_example.name}"
            )
    return sorted(problems)


def misused_secrets(compose_file: Path, env_example: Path) -> list[str]:
    """Secrets with a default in compose, or with a real-looking value in ``env_example``."""
    problems = []
    text = compose_file.read_text(encoding="utf-8")
    for name, operator, argument in interpolations(text):
        if _SECRET.search(name) and operator in {":-", "-"} and argument:
            problems.append(f"{name} has a default in {compose_file.name}: only .env may set it")
    for name, value in env_file(env_example).items():
        if _SECRET.search(name) and value not in {"change-me", "", None}:
            problems.append(f"{name} in {env_example.name} must be change-me or empty")
    return problems


def non_settings(files: list[Path]) -> list[str]:
    """XGBOPS_* names in ``files`` that the code does not read (typos)."""
    problems = set()
    for path in files:
        for name in _XGBOPS_NAME.findall(path.read_text(encoding="utf-8")):
            if not is_setting(name) and name not in NOT_SETTINGS:
                problems.add(f"{path.name}: {name}")
    return sorted(problems)


def _platform_files() -> list[Path]:
    files = [REPO / name for name in PLATFORM_FILES]
    for pattern in PLATFORM_GLOBS:
        files.extend(sorted(REPO.glob(pattern)))
    return [path for path in files if path.is_file()]


def _broken_copy(tmp_path: Path, source: Path, old: str, new: str) -> Path:
    text = source.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {source}"
    copy = tmp_path / source.name
    copy.write_text(text.replace(old, new, 1), encoding="utf-8")
    return copy


def test_every_setting_is_documented_with_its_default():
    assert undocumented_settings(ENV_EXAMPLE) == []


def test_a_missing_or_stale_setting_is_caught(tmp_path):
    missing = _broken_copy(tmp_path, ENV_EXAMPLE, "# XGBOPS_SERVE__THREADS=2\n", "")
    assert undocumented_settings(missing) == ["XGBOPS_SERVE__THREADS is not in .env.example"]
    stale = _broken_copy(
        tmp_path, ENV_EXAMPLE, "# XGBOPS_SERVE__WORKERS=2", "# XGBOPS_SERVE__WORKERS=4"
    )
    assert undocumented_settings(stale) == [
        "XGBOPS_SERVE__WORKERS: .env.example says '4', the code's default is '2'"
    ]


def test_every_environment_option_of_the_cli_is_documented():
    documented = documented_names(ENV_EXAMPLE)
    missing = cli_env_names() - documented.keys() - CLI_ENV_NOT_DOCUMENTED.keys()
    assert missing == set()
    assert "SONAR_ADMIN_PASSWORD" in cli_env_names()  # the enumeration sees Typer's envvars


def test_every_compose_variable_is_set_in_env_example():
    assert undefined_compose_variables(COMPOSE_FILE, ENV_EXAMPLE) == []


def test_a_compose_variable_missing_from_env_example_is_caught(tmp_path):
    broken = _broken_copy(tmp_path, ENV_EXAMPLE, "ES_MEM_LIMIT=1g\n", "")
    assert undefined_compose_variables(COMPOSE_FILE, broken) == [
        "${ES_MEM_LIMIT} is used by docker-compose.yml but not set in .env.example"
    ]
    required_commented = _broken_copy(
        tmp_path, ENV_EXAMPLE, "\nPOSTGRES_PASSWORD=", "\n# POSTGRES_PASSWORD="
    )
    assert undefined_compose_variables(COMPOSE_FILE, required_commented) == [
        "${POSTGRES_PASSWORD} is used by docker-compose.yml but not set in .env.example"
    ]


def test_secrets_come_only_from_env_and_are_placeholders():
    assert misused_secrets(COMPOSE_FILE, ENV_EXAMPLE) == []


def test_a_secret_default_or_a_real_looking_secret_is_caught(tmp_path):
    compose = _broken_copy(
        tmp_path,
        COMPOSE_FILE,
        "${POSTGRES_PASSWORD:?see .env.example}",
        "${POSTGRES_PASSWORD:-postgres}",
    )
    assert misused_secrets(compose, ENV_EXAMPLE) == [
        "POSTGRES_PASSWORD has a default in docker-compose.yml: only .env may set it"
    ]
    leaked = "ELASTIC_PASSWORD=hunter2"  # pragma: allowlist secret
    env = _broken_copy(tmp_path, ENV_EXAMPLE, "ELASTIC_PASSWORD=change-me", leaked)
    assert misused_secrets(COMPOSE_FILE, env) == [
        "ELASTIC_PASSWORD in .env.example must be change-me or empty"
    ]


def test_every_xgbops_name_in_the_platform_files_is_a_setting():
    files = _platform_files()
    assert {path.name for path in files} >= {"docker-compose.yml", "configmap.yaml", "quality.yml"}
    assert non_settings(files) == []


@pytest.mark.parametrize("typo", ["XGBOPS_SERVE__WORKRES", "XGBOPS_MONITORING_SINK"])
def test_a_misspelt_setting_is_caught(tmp_path, typo):
    broken = _broken_copy(tmp_path, REPO / "k8s/base/configmap.yaml", "XGBOPS_LOG_LEVEL", typo)
    assert len(non_settings([broken])) == 1 and typo in non_settings([broken])[0]


def test_train_overrides_are_settings_too():
    assert is_setting("XGBOPS_TRAIN__PARAMS__MAX_DEPTH")
    assert not is_setting("XGBOPS_TRAINING__SEED")
