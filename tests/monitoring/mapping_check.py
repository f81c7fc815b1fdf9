"""Does a document fit an Elasticsearch mapping? A conservative re-statement of the rules.

Used by the consistency tests (every event the code ships fits its index template) and by the
fake Elasticsearch server, which refuses a misfit as a real cluster would (strict mappings).
It is stricter than Elasticsearch in one way: a ``keyword`` must receive a string (a cluster
would also coerce a number), so a type mix-up in the code is caught here first.
"""

from __future__ import annotations

import fnmatch
from datetime import datetime
from typing import Any

_INTEGER_RANGES = {
    "byte": (-(2**7), 2**7 - 1),
    "short": (-(2**15), 2**15 - 1),
    "integer": (-(2**31), 2**31 - 1),
    "long": (-(2**63), 2**63 - 1),
}
_FLOATS = {"double", "float", "half_float", "scaled_float"}


def violations(document: dict[str, Any], mappings: dict[str, Any]) -> list[str]:
    """Every field of ``document`` that the mapping would refuse, as ``path: reason``."""
    problems: list[str] = []
    _walk(document, mappings, mappings.get("dynamic", True), "", mappings, problems)
    return problems


def _walk(
    obj: dict[str, Any],
    mapping: dict[str, Any],
    dynamic: Any,
    prefix: str,
    root: dict[str, Any],
    problems: list[str],
) -> None:
    properties = mapping.get("properties", {})
    for key, value in obj.items():
        path = f"{prefix}{key}"
        field = properties.get(key)
        if field is None:
            field = _dynamic_field(path, value, dynamic, root, problems)
            if field is None:
                continue
        _check(path, value, field, _dynamic_of(field, dynamic), root, problems)


def _dynamic_of(field: dict[str, Any], inherited: Any) -> Any:
    value = field.get("dynamic", inherited)
    return value if not isinstance(value, str) or value == "strict" else value == "true"


def _dynamic_field(
    path: str, value: Any, dynamic: Any, root: dict[str, Any], problems: list[str]
) -> dict[str, Any] | None:
    if dynamic == "strict":
        problems.append(f"{path}: not in the mapping (dynamic: strict)")
        return None
    if dynamic is False or value is None:
        return None
    detected = _detected_type(value)
    for entry in root.get("dynamic_templates", []):
        (template,) = entry.values()
        if "path_match" in template and not fnmatch.fnmatchcase(path, template["path_match"]):
            continue
        if template.get("match_mapping_type", detected) != detected:
            continue
        return dict(template["mapping"])
    return {
        "type": {"string": "keyword", "long": "long", "double": "double"}.get(detected, detected)
    }


def _detected_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "long"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    return "object"


def _check(
    path: str,
    value: Any,
    field: dict[str, Any],
    dynamic: Any,
    root: dict[str, Any],
    problems: list[str],
) -> None:
    if value is None:
        return  # null is accepted by every field type
    if isinstance(value, list):
        for item in value:
            _check(path, item, field, dynamic, root, problems)
        return
    kind = field.get("type", "object" if "properties" in field or "dynamic" in field else None)
    reason = _type_problem(value, kind)
    if reason:
        problems.append(f"{path}: {reason}")
    elif kind == "object":
        _walk(value, field, dynamic, f"{path}.", root, problems)


def _type_problem(value: Any, kind: str | None) -> str | None:
    """Why ``value`` cannot go into a field of type ``kind`` (None when it can)."""
    if kind in ("object", "flattened"):
        return None if isinstance(value, dict) else f"{type(value).__name__} for an {kind}"
    if isinstance(value, dict):
        return f"an object for a {kind}"
    if kind == "keyword":
        return None if isinstance(value, str) else f"{type(value).__name__} for a keyword"
    if kind == "boolean":
        return None if isinstance(value, bool) else f"{value!r} for a boolean"
    if kind in _FLOATS:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok else f"{value!r} for a {kind}"
    if kind in _INTEGER_RANGES:
        low, high = _INTEGER_RANGES[kind]
        ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
        return None if ok else f"{value!r} for a {kind}"
    if kind == "date":
        return None if _is_date(value) else f"{value!r} for a date"
    return f"unknown field type {kind!r}"


def _is_date(value: Any) -> bool:
    """``strict_date_optional_time||epoch_millis``, the default date format."""
    if isinstance(value, int) and not isinstance(value, bool):
        return True
    if not isinstance(value, str) or "T" not in value:
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def template_for(index: str, templates: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The index template Elasticsearch would apply to ``index`` (highest priority match)."""
    matching = [
        body
        for body in templates.values()
        if any(fnmatch.fnmatchcase(index, p) for p in body.get("index_patterns", []))
    ]
    return max(matching, key=lambda b: b.get("priority", 0), default=None)
