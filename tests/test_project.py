"""The repository's promises: Makefile contract targets, the README's commands, CI, the pins."""

from __future__ import annotations

import re
import subprocess
import tomllib

import pytest

from .conftest import REPO

MAKEFILE = (REPO / "Makefile").read_text(encoding="utf-8")
README = (REPO / "README.md").read_text(encoding="utf-8")

#: The DESIGN.md contract targets this repository provides so far.
CONTRACT_TARGETS = [
    "help",
    "install",
    "format",
    "format-check",
    "lint",
    "typecheck",
    "security",
    "test",
    "quality",
    "data-check",
    "train",
    "evaluate",
    "promote",
    "pipeline",
    "run",
    "mlflow-ui",
    "clean",
    "watch",
]


def _documented_targets() -> dict[str, str]:
    return dict(re.findall(r"^([a-zA-Z_-]+):[^\n#]*## (.+)$", MAKEFILE, flags=re.M))


@pytest.mark.parametrize("target", CONTRACT_TARGETS)
def test_contract_target_exists_and_documents_itself(target):
    assert target in _documented_targets(), f"make {target} is missing or has no '## help'"


def test_help_is_the_default_goal_and_lists_every_target():
    assert ".DEFAULT_GOAL := help" in MAKEFILE
    out = subprocess.run(
        ["make", "--no-print-directory", "help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    listed = {line.split()[0] for line in re.sub(r"\x1b\[[0-9;]*m", "", out).splitlines() if line}
    assert listed == set(_documented_targets())


def test_pipeline_chains_quality_data_check_and_train():
    assert re.search(r"^pipeline: quality data-check train ", MAKEFILE, flags=re.M)
    assert re.search(r"^quality: format-check lint typecheck security test ", MAKEFILE, flags=re.M)


def test_makefile_dry_runs_resolve_for_every_target():
    for target in CONTRACT_TARGETS:
        subprocess.run(["make", "-n", target], cwd=REPO, capture_output=True, check=True)


def test_ci_runs_exactly_the_readme_test_command_then_the_container_test():
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert ci.strip().splitlines()[-2:] == ["make test", "make container-test"]
    assert "`make container-test`" in README and "`.ci/run` runs it" in README
    commands = re.findall(r"^```(?:bash|sh)?\n(.*?)```", README, flags=re.S | re.M)
    first_block = [line.split("#")[0].strip() for line in commands[0].strip().splitlines()]
    assert first_block == ["make run", "make test"]


def test_readme_starts_with_the_two_commands_then_the_map_then_the_platform():
    run_at, map_at = README.index("make run"), README.index("## Repository map")
    platform_at = README.index("## The full platform")
    assert run_at < map_at < platform_at


def test_embedded_mlflow_ui_uri_matches_what_config_derives(settings):
    # make mlflow-ui must open the store that training writes by default
    assert "sqlite:///$(CURDIR)/.xgbops/mlflow.db" in MAKEFILE
    assert settings.tracking_uri.endswith("/.xgbops/mlflow.db")
    assert settings.state_dir.as_posix() == ".xgbops"


def _pins(path):
    return {
        line.split("==")[0].split("[")[0].lower(): line.split("==")[1].split(";")[0].strip()
        for line in path.read_text(encoding="utf-8").splitlines()
        if "==" in line and not line.startswith("#")
    }


def test_every_declared_dependency_is_pinned_exactly_in_its_extras_lock():
    """One lock per extra (the core in every one), all agreeing with the platform's."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    locks = {extra: _pins(REPO / "requirements" / f"{extra}.txt") for extra in extras}
    assert set(locks) == {"serve", "train", "monitoring", "platform", "dev"}

    def name(requirement):
        return re.split(r"[<>=\[ ;]", requirement, maxsplit=1)[0].lower()

    for extra, requirements in extras.items():
        for requirement in [*project["dependencies"], *requirements]:
            if name(requirement) == "xgbops":
                continue  # the platform extra names the others
            assert name(requirement) in locks[extra], (extra, requirement)
    for extra, pins in locks.items():
        for package, version in pins.items():
            if package in locks["platform"]:
                assert locks["platform"][package] == version, (extra, package)


def test_the_serving_lock_holds_nothing_of_training_or_monitoring():
    serve = _pins(REPO / "requirements" / "serve.txt")
    for package in ("mlflow", "pandas", "scikit-learn", "matplotlib", "pyarrow", "elasticsearch"):
        assert package not in serve, package


def test_generated_state_is_ignored_by_git():
    ignored = (REPO / ".gitignore").read_text(encoding="utf-8").split()
    for entry in (".venv/", ".xgbops/", "reports/", "mlruns/", "*.db"):
        assert entry in ignored
