"""MkDocs hook: the configuration reference, generated from the settings model at build time.

``docs/reference/configuration.md`` holds the prose and the marker ``<!-- settings-reference -->``;
this hook replaces the marker with one table per settings group of :class:`xgbops.config.Settings`
(every field: its key, environment variable, type, default and description), then the
repository's own ``config/train.yaml`` and ``config/dataset.yaml``.

A field's description is, in this order: its pydantic ``description``, the ``#:`` comment above
it in ``src/xgbops/config.py``, or its entry in ``docs/hooks/settings.yaml``. A field with none
of these, or an entry there for a field that no longer exists, is a warning, so
``mkdocs build --strict`` (``make docs-build``) fails until the setting is documented.
"""

from __future__ import annotations

import inspect
import logging
import re
import types
import typing
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, Union

import annotated_types
import yaml
from mdtext import cell
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from xgbops.config import ENV_PREFIX, Settings

MARKER = "<!-- settings-reference -->"
NOTES = Path(__file__).with_name("settings.yaml")
log = logging.getLogger("mkdocs.hooks.config_reference")

#: Top-level groups, in page order: (field name or None for the top level, title, YAML file).
GROUPS: list[tuple[str | None, str, str | None]] = [
    (None, "Process", None),
    ("serve", "Serving", None),
    ("notify", "Notifications", None),
    ("monitoring", "Monitoring", None),
    ("sonar", "SonarQube", None),
    ("train", "Training", "config/train.yaml"),
    ("dataset", "Dataset", "config/dataset.yaml"),
]
_DURATION_UNITS = (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replace the marker, where a page has it, with the generated reference."""
    del page, files
    if MARKER not in markdown:
        return markdown
    root = Path(config["config_file_path"]).resolve().parent
    return markdown.replace(MARKER, render(root))


@dataclass
class _Notes:
    """The descriptions of docs/hooks/settings.yaml, and which of them a setting used."""

    text: dict[str, str]
    seen: set[str] = field(default_factory=set)


def render(root: Path) -> str:
    """The reference as Markdown: one section per settings group, every field a row.

    Args:
        root: the repository, where ``config/*.yaml`` are read from.
    """
    notes = _Notes(yaml.safe_load(NOTES.read_text(encoding="utf-8")) or {})
    top_level = dict(Settings.model_fields)
    grouped = {name for name, _, _ in GROUPS if name}
    out: list[str] = []
    for name, title, yaml_file in GROUPS:
        if name is None:
            model: type[BaseModel] = Settings
            fields = {n: f for n, f in top_level.items() if n not in grouped}
        else:
            model = _model(top_level[name].annotation)
            fields = dict(model.model_fields)
        out.append(f"## {title}\n")
        out.append(_cell(_doc(model)) + "\n")
        out.extend(_section(model, fields, (name,) if name else (), notes, in_list=False))
        if yaml_file:
            text = (root / yaml_file).read_text(encoding="utf-8").rstrip()
            out.append(f'??? example "The repository\'s `{yaml_file}`"\n')
            out.append("    ```yaml\n" + _indent(text, 4) + "\n    ```\n")
    for stale in sorted(set(notes.text) - notes.seen):
        log.warning("docs/hooks/settings.yaml describes %r, which is no setting", stale)
    return "\n".join(out)


def _section(
    model: type[BaseModel],
    fields: dict[str, FieldInfo],
    prefix: tuple[str, ...],
    notes: _Notes,
    *,
    in_list: bool,
) -> list[str]:
    """A table of the scalar fields, then a sub-section per nested model (recursively)."""
    comments = _comments(model)
    rows: list[str] = []
    nested: list[tuple[type[BaseModel], tuple[str, ...], str | None]] = []
    for name, info in fields.items():
        path = (*prefix, name)
        inner = _model_or_none(info.annotation)
        if inner is not None:
            nested.append((inner, path, None))
            continue
        rows.append(_row(info, path, comments.get(name), notes, in_list=in_list))
        nested += [
            (item, (*prefix, f"{name}[]"), ".".join(path)) for item in _list_models(info.annotation)
        ]
    out: list[str] = []
    if rows:
        out.append("| setting and environment variable | type | default | description |")
        out.append("|---|---|---|---|")
        out.extend([*rows, ""])
    for inner, path, parent in nested:
        key = ".".join(path)
        kind = f" ({_item_kind(inner)})" if parent else ""
        out.append(f"{'#' * min(len(path) + 1, 6)} `{key}`{kind}\n")
        entry = f" One entry of the list `{parent}`." if parent else ""
        out.append(_cell(_doc(inner)) + entry + "\n")
        fields = dict(inner.model_fields)
        out.extend(_section(inner, fields, path, notes, in_list=in_list or bool(parent)))
    return out


def _row(
    info: FieldInfo, path: tuple[str, ...], comment: str | None, notes: _Notes, *, in_list: bool
) -> str:
    """One setting's table row; warns when nothing describes it."""
    key = ".".join(path)
    notes.seen.add(key)
    description = info.description or comment or notes.text.get(key)
    if not description:
        log.warning("setting %s has no description: add it to docs/hooks/settings.yaml", key)
    names = f"`{key}`" if in_list else f"`{key}`<br>{_env_names(info, path)}"
    return f"| {names} | {_type(info)} | {_default(info)} | {_cell(description or '')} |"


def _item_kind(model: type[BaseModel]) -> str:
    """``numeric`` for a list item told apart by a ``type: Literal["numeric"]`` field."""
    kind = model.model_fields.get("type")
    args = typing.get_args(kind.annotation) if kind else ()
    return f"`type: {args[0]}`" if len(args) == 1 else model.__name__


def _env_names(info: FieldInfo, path: tuple[str, ...]) -> str:
    alias = info.validation_alias
    choices = getattr(alias, "choices", None)
    if choices:
        names = [c for c in choices if isinstance(c, str)]
    else:
        names = [ENV_PREFIX + "__".join(path).upper()]
    return "<br>".join(f"`{n}`" for n in names)


def _type(info: FieldInfo) -> str:
    text = "list (entries below)" if _list_models(info.annotation) else _type_name(info.annotation)
    limits = []
    for meta in info.metadata:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            value = getattr(meta, attr, None)
            if value is not None and isinstance(meta, annotated_types.BaseMetadata):
                limits.append(f"{sign} {_value(value)}")
        if isinstance(meta, annotated_types.MinLen) and meta.min_length > 1:
            limits.append(f"at least {meta.min_length}")
        pattern = getattr(meta, "pattern", None)
        if pattern:
            limits.append(f"matching `{pattern}`")
    return _cell(text + (f", {', '.join(limits)}" if limits else ""))


def _type_name(annotation: Any) -> str:  # pylint: disable=too-many-return-statements
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (Union, types.UnionType):
        kept = [a for a in args if a is not types.NoneType]
        if all(_model_or_none(a) for a in kept):
            return " or ".join(_item_kind(a) for a in kept)
        name = " or ".join(_type_name(a) for a in kept)
        return f"{name} (optional)" if len(kept) < len(args) else name
    if origin is Literal and len(args) == 1:
        return f"`{args[0]}`"
    if origin is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin is list:
        return "list of strings" if args == (str,) else f"list of {_type_name(args[0])}"
    if origin is dict:
        return "mapping"
    simple = {
        str: "string",
        int: "integer",
        float: "number",
        bool: "boolean",
        Path: "path",
        SecretStr: "secret",  # pragma: allowlist secret
        timedelta: "duration",
    }
    if annotation in simple:
        return simple[annotation]
    model = _model_or_none(annotation)
    return model.__name__ if model else str(annotation)


def _default(info: FieldInfo) -> str:
    if info.default_factory is not None:
        factory: Any = info.default_factory
        if getattr(factory, "__name__", "") == "cwd":
            return "the current directory"
        return _value(factory())
    if info.default is PydanticUndefined:
        return "required"
    return _value(info.default)


def _value(value: Any) -> str:  # pylint: disable=too-many-return-statements
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, timedelta):
        seconds = int(value.total_seconds())
        if seconds == 0:
            return "`0s`"
        for unit, size in _DURATION_UNITS:
            if seconds and seconds % size == 0:
                return f"`{seconds // size}{unit}`"
        return f"`{value.total_seconds()}s`"
    if isinstance(value, (list, dict)) and not value:
        return "none"
    if value == "":
        return '`""`'
    return _cell(f"`{value}`")


def _model_or_none(annotation: Any) -> type[BaseModel] | None:
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _model(annotation: Any) -> type[BaseModel]:
    model = _model_or_none(annotation)
    if model is None:
        raise TypeError(f"{annotation!r} is not a settings group")
    return model


def _list_models(annotation: Any) -> list[type[BaseModel]]:
    """The models a ``list[Model]`` or ``list[A | B]`` field holds, in declaration order."""
    if typing.get_origin(annotation) is not list:
        return []
    item = typing.get_args(annotation)[0]
    while typing.get_origin(item) is typing.Annotated:
        item = typing.get_args(item)[0]
    members = typing.get_args(item) if typing.get_origin(item) in (Union, types.UnionType) else ()
    return [m for m in (members or (item,)) if _model_or_none(m)]


def _comments(model: type[BaseModel]) -> dict[str, str]:
    """The ``#:`` comment lines right above each field of ``model``'s class body."""
    found: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(model).splitlines():
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
            continue
        match = re.match(r"^\s+(\w+)\s*:", line)
        if match and pending:
            found[match.group(1)] = " ".join(pending)
        pending = []
    return found


def _doc(model: type[BaseModel]) -> str:
    return " ".join(inspect.cleandoc(model.__doc__ or "").split("\n\n", maxsplit=1)[0].split())


def _clean(text: str) -> str:
    """reStructuredText roles and literals as Markdown."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text)
    return text.replace("``", "`")


def _cell(text: str) -> str:
    return cell(_clean(text))


def _indent(text: str, spaces: int) -> str:
    return "\n".join((" " * spaces + line) if line else line for line in text.splitlines())
