""".github/workflows: schema-valid, every step a make target that exists, actions pinned; and
.github/dependabot.yml: schema-valid, watching every pinned file."""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from tests.platform.conftest import REPO, require_tool, run_tool
from tests.platform.platform_files import make_targets, read_yaml, write_yaml

WORKFLOWS = REPO / ".github" / "workflows"
#: The four pipelines of pipelines/*.Jenkinsfile, mirrored.
PIPELINES = {"quality", "data", "training", "publish"}
_PINNED = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@(v\d+\.\d+\.\d+|[0-9a-f]{40})$")


def _workflows() -> list[Path]:
    return sorted(WORKFLOWS.glob("*.yml")) + sorted(WORKFLOWS.glob("*.yaml"))


def _steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def step_problems(workflow: dict[str, Any], targets: set[str]) -> list[str]:
    """Run steps that are not `make <existing targets> [VAR=value]`; unpinned actions."""
    problems = []
    for step in _steps(workflow):
        if "run" in step:
            words = shlex.split(step["run"])
            if len(step["run"].splitlines()) > 1 or not words or words[0] != "make":
                problems.append(f"step {step['run']!r} is not one make command")
                continue
            for word in words[1:]:
                if "=" not in word and word not in targets:
                    problems.append(f"make {word}: no such target in the Makefile")
        uses = step.get("uses", "")
        if uses and not _PINNED.match(uses):
            problems.append(f"{uses} is not pinned to a release (vX.Y.Z) or a commit SHA")
        if "setup-python" in uses and str(step.get("with", {}).get("python-version")) != "3.11":
            problems.append("setup-python must install Python 3.11")
    for name, job in workflow["jobs"].items():
        uses = job.get("uses", "")
        if uses and not (uses.startswith("./") and (REPO / uses).is_file()):
            problems.append(f"job {name} calls {uses}, which is not a workflow of this repository")
    return problems


def trigger_problems(name: str, workflow: dict[str, Any]) -> list[str]:
    """Each pipeline's triggers, as its Jenkins twin has them."""
    # YAML 1.1 reads the key `on` as True.
    on = workflow.get("on", workflow.get(True)) or {}
    problems = []
    if name == "data":
        for event in ("push", "pull_request"):
            if set(on.get(event, {}).get("paths", [])) != {"data/**", "config/**"}:
                problems.append(f"data must run on {event} only for data/** and config/**")
    if name == "training":
        inputs = on.get("workflow_dispatch", {}).get("inputs", {})
        if not {"force_promotion", "train_config"} <= inputs.keys():
            problems.append(
                "training must be started by hand with force_promotion and train_config"
            )
    if name == "publish":
        logins = [
            s for s in _steps(workflow) if str(s.get("uses", "")).startswith("docker/login-action@")
        ]
        if not logins or "secrets.DOCKERHUB_TOKEN" not in str(logins[0].get("with", {})):
            problems.append("publish must log in to Docker Hub with the DOCKERHUB_TOKEN secret")
    return problems


def test_the_four_pipelines_are_mirrored():
    assert {path.stem for path in _workflows()} >= PIPELINES


def test_the_workflows_match_github_schema():
    tool = require_tool("check-jsonschema")
    result = run_tool(tool, "--builtin-schema", "vendor.github-workflows", *map(str, _workflows()))
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_workflow_github_rejects_is_caught(tmp_path):
    tool = require_tool("check-jsonschema")
    text = (WORKFLOWS / "quality.yml").read_text(encoding="utf-8")
    assert "    runs-on: ubuntu-24.04\n" in text
    path = tmp_path / "quality.yml"
    path.write_text(text.replace("    runs-on: ubuntu-24.04\n", "", 1), encoding="utf-8")
    result = run_tool(tool, "--builtin-schema", "vendor.github-workflows", str(path))
    assert result.returncode != 0 and "runs-on" in result.stdout, result.stdout


@pytest.mark.parametrize("path", _workflows(), ids=lambda path: path.name)
def test_every_step_is_a_make_target_and_every_action_pinned(path):
    assert step_problems(read_yaml(path), make_targets()) == []
    assert trigger_problems(path.stem, read_yaml(path)) == []


def _replace_step(workflow: dict[str, Any], old: str, new: dict[str, Any]) -> None:
    for job in workflow["jobs"].values():
        for i, step in enumerate(job.get("steps", [])):
            if step.get("run") == old or step.get("uses", "").startswith(old):
                job["steps"][i] = new
                return
    raise AssertionError(f"no step {old}")


@pytest.mark.parametrize(
    ("file", "mutate", "problem"),
    [
        (
            "quality.yml",
            lambda w: _replace_step(w, "make lint", {"run": "make lintt"}),
            "make lintt: no such",
        ),
        (
            "quality.yml",
            lambda w: _replace_step(w, "make test", {"run": "pytest -q"}),
            "not one make command",
        ),
        (
            "quality.yml",
            lambda w: _replace_step(w, "make test", {"run": "make install\nmake test"}),
            "not one make command",
        ),
        (
            "data.yml",
            lambda w: _replace_step(w, "actions/checkout", {"uses": "actions/checkout@main"}),
            "actions/checkout@main is not pinned",
        ),
        (
            "data.yml",
            lambda w: _replace_step(
                w, "actions/setup-python", {"uses": "actions/setup-python@v5.6.0"}
            ),
            "Python 3.11",
        ),
        (
            "publish.yml",
            lambda w: w["jobs"]["quality"].update(uses="./.github/workflows/qa.yml"),
            "qa.yml",
        ),
    ],
    ids=[
        "unknown target",
        "raw command",
        "two commands",
        "floating action",
        "python",
        "missing workflow",
    ],
)
def test_a_broken_step_is_caught(tmp_path, file, mutate, problem):
    workflow = copy.deepcopy(read_yaml(WORKFLOWS / file))
    mutate(workflow)
    broken = read_yaml(write_yaml(tmp_path / file, workflow))
    problems = step_problems(broken, make_targets())
    assert any(problem in found for found in problems), problems


@pytest.mark.parametrize(
    ("file", "mutate", "problem"),
    [
        ("data.yml", lambda w: w[True]["push"].pop("paths"), "data/** and config/**"),
        ("training.yml", lambda w: w[True]["workflow_dispatch"].pop("inputs"), "force_promotion"),
        (
            "publish.yml",
            lambda w: _replace_step(w, "docker/login-action", {"run": "make docker-push"}),
            "DOCKERHUB_TOKEN",
        ),
    ],
    ids=["data paths", "training inputs", "publish login"],
)
def test_a_broken_trigger_is_caught(tmp_path, file, mutate, problem):
    workflow = copy.deepcopy(read_yaml(WORKFLOWS / file))
    mutate(workflow)
    path = tmp_path / file
    write_yaml(path, workflow)
    problems = trigger_problems(path.stem, read_yaml(path))
    assert any(problem in found for found in problems), problems


def test_make_targets_reads_the_makefile(tmp_path):
    assert {"install", "test", "docker-build", "docker-smoke", "docker-push"} <= make_targets()
    broken = tmp_path / "Makefile"
    broken.write_text((REPO / "Makefile").read_text().replace("\nlint:", "\nlint-all:"))
    assert "lint" not in make_targets(broken)


# -- .github/dependabot.yml --------------------------------------------------------------------

DEPENDABOT = REPO / ".github" / "dependabot.yml"


def dependabot_problems(config: dict[str, Any], repo: Path = REPO) -> list[str]:
    """Pinned files that no update entry watches (each ecosystem where its files are)."""
    watched: dict[str, set[str]] = {}
    for update in config.get("updates", []):
        folders = update.get("directories") or [update.get("directory", "")]
        watched.setdefault(update["package-ecosystem"], set()).update(folders)
    needed = {
        "pip": {"/requirements"},
        "npm": {"/"} if (repo / "package-lock.json").exists() else set(),
        "docker": {
            "/" + path.parent.relative_to(repo).as_posix().removeprefix(".")
            for path in repo.glob("**/Dockerfile")
            if "node_modules" not in path.parts and ".venv" not in path.parts
        },
        "docker-compose": {"/"},
        "github-actions": {"/"},
    }
    return [
        f"{ecosystem} updates do not watch {folder}"
        for ecosystem, folders in needed.items()
        for folder in sorted(folders - watched.get(ecosystem, set()))
    ]


def test_dependabot_matches_github_schema():
    tool = require_tool("check-jsonschema")
    result = run_tool(tool, "--builtin-schema", "vendor.dependabot", str(DEPENDABOT))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dependabot_watches_every_pinned_file():
    assert dependabot_problems(read_yaml(DEPENDABOT)) == []


def test_an_unwatched_dockerfile_is_caught():
    config = copy.deepcopy(read_yaml(DEPENDABOT))
    docker = next(u for u in config["updates"] if u["package-ecosystem"] == "docker")
    docker["directories"] = ["/"]
    assert dependabot_problems(config) == ["docker updates do not watch /jenkins"]
