"""Readers shared by the platform checks: compose variables, the code's environment, .env files.

Each check of a file is a function returning the list of problems it finds (empty when the file
is right), so a test can run it on the repository's file and on a broken copy alike.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import typer
import yaml
from dotenv import dotenv_values
from pydantic import AliasChoices, BaseModel
from pydantic_core import PydanticUndefined

from xgbops.cli import app
from xgbops.config import ENV_PREFIX, Settings

from tests.platform.conftest import REPO

COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
MAKEFILE = REPO / "Makefile"

#: Settings that are YAML documents of their own (config/*.yaml); one value of them can be
#: overridden (XGBOPS_TRAIN__PARAMS__MAX_DEPTH) but they are not documented one by one.
YAML_SUBTREES = ("dataset", "train")

#: ``${NAME}``, ``${NAME:-default}``, ``${NAME-default}``, ``${NAME:?error}``, ``${NAME?error}``,
#: ``${NAME:+alt}`` (compose's interpolation; ``$$`` escapes a dollar for the container).
_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")


def read_yaml(path: Path) -> Any:
    """One YAML document."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def write_yaml(path: Path, document: Any) -> Path:
    """Write ``document`` as YAML to ``path`` (for broken copies) and return the path."""
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def interpolations(text: str) -> Iterator[tuple[str, str, str]]:
    """Every compose interpolation in ``text``: (name, operator, argument)."""
    for match in _INTERPOLATION.finditer(text.replace("$$", "")):
        yield match.group(1), match.group(2) or "", match.group(3) or ""


def setting_env_names() -> dict[str, Any]:
    """Every environment variable the settings read, with the field's default.

    Nested models are joined with ``__`` under the ``XGBOPS_`` prefix; a field with aliases is
    read under its first alias (``MLFLOW_TRACKING_URI``). Defaults made by a factory are
    ``None`` here. The YAML subtrees (dataset, train) are left out.
    """
    names: dict[str, Any] = {}
    _walk(Settings, ENV_PREFIX, names)
    return names


def setting_prefixes() -> list[str]:
    """Prefixes under which any name is a setting: the YAML subtrees' overrides."""
    return [f"{ENV_PREFIX}{name.upper()}__" for name in YAML_SUBTREES]


def all_setting_aliases() -> set[str]:
    """Every name a setting is read under, alternative aliases included."""
    names = set(setting_env_names())
    for field in Settings.model_fields.values():
        if isinstance(field.validation_alias, AliasChoices):
            names.update(str(choice) for choice in field.validation_alias.choices)
    return names


def is_setting(name: str) -> bool:
    """True when the code reads ``name`` as a setting."""
    return name in all_setting_aliases() or name.startswith(tuple(setting_prefixes()))


def _walk(model: type[BaseModel], prefix: str, names: dict[str, Any]) -> None:
    for name, field in model.model_fields.items():
        if model is Settings and name in YAML_SUBTREES:
            continue
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            _walk(annotation, f"{prefix}{name.upper()}__", names)
            continue
        alias = field.validation_alias
        env = (
            str(alias.choices[0]) if isinstance(alias, AliasChoices) else f"{prefix}{name.upper()}"
        )
        default = None if field.default is PydanticUndefined else field.default
        names[env] = default


def cli_env_names() -> set[str]:
    """Environment variables the ``xgbops`` command's options fall back to (Typer ``envvar``)."""
    names: set[str] = set()
    stack: list[Any] = [typer.main.get_command(app)]
    while stack:
        command = stack.pop()
        stack.extend(getattr(command, "commands", {}).values())  # a group's subcommands
        for param in command.params:
            envvar = getattr(param, "envvar", None)
            if isinstance(envvar, str):
                names.add(envvar)
            elif envvar:
                names.update(envvar)
    return names


def env_file(path: Path) -> dict[str, str | None]:
    """The variables an env file sets (values as docker compose reads them)."""
    return dict(dotenv_values(path))


def documented_names(path: Path) -> dict[str, str]:
    """Names an env file documents, set or commented out (``# NAME=value``), with the value."""
    documented = commented_names(path)
    documented.update({k: v or "" for k, v in env_file(path).items()})
    return documented


def commented_names(path: Path) -> dict[str, str]:
    """Names an env file mentions commented out (``# NAME=value``), with the value shown."""
    commented: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^#\s?([A-Z][A-Z0-9_]*)=(.*)$", line.strip())
        if match:
            commented[match.group(1)] = match.group(2).strip()
    return commented


def default_as_text(value: Any) -> str:
    """A setting's default as .env.example writes it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    if isinstance(value, timedelta):  # the short syntax of xgbops.config.parse_duration
        seconds = int(value.total_seconds())
        for unit, size in (("h", 3600), ("m", 60)):
            if seconds % size == 0:
                return f"{seconds // size}{unit}"
        return f"{seconds}s"
    return str(value)


def make_targets(makefile: Path = MAKEFILE) -> set[str]:
    """Targets the Makefile defines (``name:`` at the start of a line)."""
    text = makefile.read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z0-9_.-]+):(?!=)", text, flags=re.MULTILINE))
