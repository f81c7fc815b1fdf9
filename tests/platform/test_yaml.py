"""yamllint, with the repository's .yamllint, over every YAML file of the repository.

The files are found when the test runs, so YAML added by any part of the platform (Jenkins'
configuration-as-code, compose, workflows, Kubernetes, Metricbeat, the dataset config) is
linted without a list to update.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.platform.conftest import REPO, require_tool, run_tool
from tests.platform.platform_files import read_yaml

CONFIG = REPO / ".yamllint"
#: Folders that are not the project's own files (environments, caches, generated state).
SKIPPED = {
    ".venv",
    "node_modules",
    ".git",
    ".xgbops",
    "reports",
    ".mypy_cache",
    ".pytest_cache",
    ".hypothesis",
}


def yaml_files(root: Path = REPO) -> list[Path]:
    """Every *.yml / *.yaml under ``root``, hidden folders (.github) included."""
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if d not in SKIPPED)
        found.extend(Path(folder) / f for f in files if f.endswith((".yml", ".yaml")))
    return sorted(found)


def yamllint(*paths: Path) -> tuple[int, str]:
    """yamllint with the repository's configuration."""
    tool = require_tool("yamllint")
    result = run_tool(tool, "--strict", "-f", "parsable", "-c", str(CONFIG), *map(str, paths))
    return result.returncode, result.stdout + result.stderr


def test_every_yaml_file_passes_yamllint():
    files = yaml_files()
    names = {path.relative_to(REPO).as_posix() for path in files}
    assert {
        "docker-compose.yml",
        ".github/workflows/quality.yml",
        "k8s/base/deployment.yaml",
    } <= names
    status, output = yamllint(*files)
    assert status == 0, output


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("key: " + "x" * 130 + "\n", "line-length"),
        ("list:\n    - a\n    - b\n", "indentation"),
        ("enabled: yes\n", "truthy"),
        ("a: 1\na: 2\n", "key-duplicates"),
        ("a: 1   \n", "trailing-spaces"),
    ],
)
def test_the_configuration_really_checks(tmp_path, text, rule):
    broken = tmp_path / "broken.yaml"
    broken.write_text(text, encoding="utf-8")
    status, output = yamllint(broken)
    assert status != 0 and f"({rule})" in output, output


def test_github_actions_on_key_is_accepted(tmp_path):
    workflow = tmp_path / "ci.yml"
    workflow.write_text("on:\n  push:\n    branches: [main]\n", encoding="utf-8")
    assert yamllint(workflow)[0] == 0


def test_the_configuration_keeps_its_rules():
    config = read_yaml(CONFIG)
    rules = config["rules"]
    assert config["extends"] == "default"
    assert rules["line-length"]["max"] <= 120
    assert rules["indentation"]["spaces"] == 2
    assert all(rules.get(name) != "disable" for name in ("line-length", "indentation", "truthy"))
