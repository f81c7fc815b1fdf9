"""The repository's promises: Makefile contract targets, the README and the manual's commands,
the manual's navigation, CI, the pins."""

from __future__ import annotations

import re
import shlex
import subprocess
import tomllib
from typing import Any

import pytest
import yaml

from .conftest import REPO

MAKEFILE = (REPO / "Makefile").read_text(encoding="utf-8")
README = (REPO / "README.md").read_text(encoding="utf-8")
DOCS = REPO / "docs"
#: The manual's pages: every Markdown file of docs/ but the build's own folder (docs/hooks/).
DOC_PAGES = sorted(p for p in DOCS.rglob("*.md") if "hooks" not in p.relative_to(DOCS).parts)
#: README.md is the front door; the manual (docs/) says the rest.
README_MAX_LINES = 150

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


def test_ci_builds_the_manual_runs_the_readme_test_command_then_the_container_test():
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert ci.strip().splitlines()[-4:] == [
        "make docs-build",
        "make test",
        "make bench-test",
        "make container-test",
    ]
    images = (DOCS / "operations" / "images.md").read_text(encoding="utf-8")
    assert "`make container-test`" in images and "`.ci/run` runs it" in images
    assert "`make container-test`" in README and "`.ci/run`" in README
    first_block = [line.split("#")[0].strip() for line in _code_blocks(README)[0].splitlines()]
    assert first_block == ["make run", "make test"]


def test_readme_starts_with_the_two_commands_then_the_map_then_the_platform():
    run_at, map_at = README.index("make run"), README.index("## Repository map")
    platform_at = README.index("## The full platform")
    assert run_at < map_at < platform_at
    assert "make up" in README[platform_at:]


def test_readme_is_the_front_door_under_150_lines():
    lines = README.count("\n")
    assert lines < README_MAX_LINES, f"README.md has {lines} lines: move the detail into docs/"


def _code_blocks(markdown: str) -> list[str]:
    """The fenced shell (or unlabelled) blocks of a Markdown text, indented ones included."""
    blocks: list[str] = []
    indent: str | None = None  # the open block's indentation, None outside a block
    language, lines = "", []
    for line in markdown.splitlines():
        opening = re.match(r"^( *)```(\S*)\s*$", line)
        if indent is None and opening:
            indent, language, lines = opening.group(1), opening.group(2), []
        elif indent is not None and re.match(r"^ *```\s*$", line):
            if language in ("", "bash", "sh", "console"):
                blocks.append("\n".join(text[len(indent) :] for text in lines).strip())
            indent = None
        elif indent is not None:
            lines.append(line)
    return blocks


def make_targets_in(markdown: str) -> set[str]:
    """The targets of every `make ...` command a text shows, in code blocks and code spans.

    ``make up PROFILES=a,b`` names ``up``; ``make docker-bake docker-smoke`` names both;
    ``MLFLOW_TRACKING_URI=... make promote ARGS="--version 3"`` names ``promote``; a `make`
    alone names none.
    """
    commands = [line for block in _code_blocks(markdown) for line in block.splitlines()]
    commands += re.findall(r"`([^`\n]*\bmake\b[^`\n]*)`", markdown)
    targets: set[str] = set()
    for command in commands:
        lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|()")
        lexer.whitespace_split, lexer.commenters = True, "#"
        try:
            words = list(lexer)
        except ValueError:  # unbalanced quotes: prose in a code span, not a command
            continue
        at_start, in_make = True, False
        for word in words:
            if set(word) <= set(";&|()"):
                at_start, in_make = True, False
            elif in_make:
                if "=" not in word and not word.startswith("-"):
                    targets.add(word)
            elif at_start and word == "make":
                in_make = True
            elif not (at_start and re.fullmatch(r"[A-Za-z_]\w*=.*", word)):
                at_start = False
    return targets


def _makefile_targets() -> set[str]:
    return set(re.findall(r"^([a-zA-Z_][a-zA-Z0-9_-]*):(?!=)", MAKEFILE, flags=re.M))


@pytest.mark.parametrize(
    "page", [REPO / "README.md", *DOC_PAGES], ids=lambda p: p.relative_to(REPO).as_posix()
)
def test_every_make_command_shown_is_a_real_target(page):
    shown = make_targets_in(page.read_text(encoding="utf-8"))
    assert shown - _makefile_targets() == set(), f"{page.name} shows targets the Makefile lacks"


def test_the_make_command_parser_finds_targets_and_skips_variables():
    text = (
        "```bash\nmake up PROFILES=core,ci   # comment make nothing\n"
        'MLFLOW_TRACKING_URI=http://x make promote PROMOTE_ARGS="--version 3 --force"\n'
        "echo make nothing; cd x && make\n"
        "make docker-bake docker-smoke && make -n nowhere-target\n```\n"
        "Run `make drift DRIFT_WINDOW=24h`, or `make` alone; make prose is not a command.\n"
        "    ```bash\n    make docs\n    ```\n"
    )
    assert make_targets_in(text) == {
        "up",
        "promote",
        "docker-bake",
        "docker-smoke",
        "nowhere-target",
        "drift",
        "docs",
    }
    assert "nowhere-target" not in _makefile_targets()


def _nav_pages(nav: Any) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in _nav_pages(value)]
    return [page for item in nav or [] for page in _nav_pages(item)]


def test_every_page_of_the_manual_is_in_the_navigation_and_every_entry_is_a_page():
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))
    assert config["docs_dir"] == "docs" and config["theme"]["name"] == "material"
    listed = _nav_pages(config["nav"])
    assert len(listed) == len(set(listed)), "a page is listed twice"
    pages = {p.relative_to(DOCS).as_posix() for p in DOC_PAGES}
    assert set(listed) == pages


def test_the_readme_links_into_the_manual_and_every_link_resolves():
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README)
    local = [link for link in links if not re.match(r"^[a-z]+://", link)]
    assert any(link.startswith("docs/") for link in local)
    for link in local:
        assert (REPO / link).exists(), f"README.md links to {link}, which does not exist"
    for page in ("quickstart.md", "operations/platform.md", "reference/configuration.md"):
        assert f"docs/{page}" in local, page


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
    for entry in (".venv/", ".xgbops/", "reports/", "mlruns/", "*.db", "site/"):
        assert entry in ignored
