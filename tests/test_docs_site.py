"""The manual (docs/, mkdocs.yml): it builds with --strict, and its generated reference pages
cover the code: every setting of the settings model, every path of the OpenAPI document.

The site is built once for the module, with the real ``mkdocs build --strict`` of
``make docs-build``, into a temporary folder.
"""

from __future__ import annotations

import html
import inspect
import os
import re
import subprocess
import sys
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from xgbops.config import ENV_PREFIX, Settings

from api.openapi_export import openapi_document
from tests.conftest import REPO
from tests.platform.platform_files import COMPOSE_FILE, read_yaml
from tests.platform.test_compose import readme_port_problems

MKDOCS = Path(sys.executable).with_name("mkdocs")


@pytest.fixture(scope="module", name="site")
def fixture_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The manual, built as `make docs-build` builds it (a warning fails the build)."""
    site = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [str(MKDOCS), "build", "--strict", "--site-dir", str(site)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return site


def page_text(site: Path, page: str) -> str:
    """A built page's text: tags dropped, entities decoded."""
    markup = (site / page / "index.html").read_text(encoding="utf-8")
    return html.unescape(re.sub(r"<[^>]+>", " ", markup))


def settings_of(
    model: type[BaseModel], prefix: tuple[str, ...] = (), in_list: bool = False
) -> Iterator[tuple[str, list[str]]]:
    """Every setting below ``model``: its dotted key and the environment variables that set it.

    Nested models are walked; the entries of a list of models (``dataset.features``) are
    settings of their own, keyed ``dataset.features[].name``, with no environment variable.
    """
    for name, info in model.model_fields.items():
        path = (*prefix, name)
        annotation = info.annotation
        if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
            yield from settings_of(annotation, path, in_list)
            continue
        choices = getattr(info.validation_alias, "choices", None)
        env = [str(c) for c in choices] if choices else [ENV_PREFIX + "__".join(path).upper()]
        yield ".".join(path), [] if in_list else env
        for item in _models_listed(annotation):
            yield from settings_of(item, (*prefix, f"{name}[]"), True)


def _models_listed(annotation: Any) -> list[type[BaseModel]]:
    if typing.get_origin(annotation) is not list:
        return []
    item = typing.get_args(annotation)[0]
    while typing.get_origin(item) is typing.Annotated:
        item = typing.get_args(item)[0]
    members = typing.get_args(item) or (item,)
    return [m for m in members if inspect.isclass(m) and issubclass(m, BaseModel)]


def test_the_walk_sees_nested_groups_aliases_and_list_entries() -> None:
    found = dict(settings_of(Settings))
    assert found["serve.workers"] == ["XGBOPS_SERVE__WORKERS"]
    assert found["monitoring.drift.psi_threshold"] == ["XGBOPS_MONITORING__DRIFT__PSI_THRESHOLD"]
    assert found["database_url"] == ["DATABASE_URL", "XGBOPS_DATABASE_URL"]
    assert found["dataset.features[].categories"] == []
    assert "dataset.features[].min" in found and "train.split.holdout_size" in found


def test_the_configuration_page_names_every_setting_and_its_variables(site: Path) -> None:
    text = page_text(site, "reference/configuration")
    missing = [
        name
        for key, env in settings_of(Settings)
        for name in (key, *env)
        if not re.search(rf"(?<![\w.\[\]]){re.escape(name)}(?![\w\[])", text)
    ]
    assert not missing, f"the configuration page lacks {missing}"


def test_the_api_page_names_every_operation_of_the_openapi_document(site: Path) -> None:
    document = openapi_document()
    text = page_text(site, "reference/api")
    operations = [
        f"{method.upper()} {path}"
        for path, item in document["paths"].items()
        for method in item
        if method in ("get", "put", "post", "delete", "patch")
    ]
    assert len(operations) >= 10
    missing = [op for op in operations if op not in text]
    assert not missing, f"the API page lacks {missing}"
    for path in document["paths"]:
        assert path in text
    for schema in document["components"]["schemas"]:
        assert schema in text, schema


def test_the_make_targets_page_lists_every_documented_target(site: Path) -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    targets = re.findall(r"^([a-zA-Z_-]+):[^\n#]*## ", makefile, flags=re.M)
    text = page_text(site, "reference/make")
    assert {"docs", "docs-build", "run", "test"} <= set(targets)
    assert [t for t in targets if f"make {t}" not in text] == []


def test_the_site_loads_nothing_from_the_network(site: Path) -> None:
    remote = re.compile(r"<(?:script|link|img)\b[^>]*\b(?:src|href)=\"(?:https?:)?//", re.I)
    pages = sorted(site.rglob("*.html"))
    assert len(pages) > 15
    assert [p.relative_to(site) for p in pages if remote.search(p.read_text("utf-8"))] == []


def test_the_pages_show_only_ports_compose_publishes() -> None:
    compose = dict(read_yaml(COMPOSE_FILE))
    problems = [
        problem
        for page in sorted((REPO / "docs").rglob("*.md"))
        for problem in readme_port_problems(page, compose)
    ]
    assert problems == []
