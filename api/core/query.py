"""The query of ``GET /predictions``: parsed and documented from one definition.

Both adapters hand the raw query pairs to :func:`parse_history_query` (so Flask and FastAPI refuse
the same things with the same reasons) and put :data:`OPENAPI_PARAMETERS` in their OpenAPI
documents, so the documented bounds are the enforced ones.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from api.core.errors import FieldError, ValidationFailed, field_path

DEFAULT_LIMIT = 50
MAX_PAGE = 500
MAX_OFFSET = 2**31 - 1  # what every SQL backend takes as an integer
#: Longest model version a filter may name (registries number versions; 64 leaves room).
MAX_VERSION_LENGTH = 64
#: C0 and C1 control characters and DEL: PostgreSQL refuses NUL in text, the date parser skips
#: some, and no parameter of this API has a reason to hold any.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: The same rule as an OpenAPI (ECMA-262) pattern, for the documents.
NO_CONTROL_CHARACTERS = "^[^\\x00-\\x1F\\x7F-\\x9F]*$"


@dataclass(frozen=True)
class _Integer:
    default: int
    low: int
    high: int


@dataclass(frozen=True)
class HistoryQuery:
    """A checked page request of the prediction history."""

    limit: int = DEFAULT_LIMIT
    offset: int = 0
    since: datetime | None = None
    until: datetime | None = None
    model_version: str | None = None


_INTEGERS = {
    "limit": _Integer(DEFAULT_LIMIT, 1, MAX_PAGE),
    "offset": _Integer(0, 0, MAX_OFFSET),
}
_TIMES = {"since": "inclusive", "until": "exclusive"}
_DESCRIPTIONS = {
    "limit": f"page size, 1 to {MAX_PAGE} (default {DEFAULT_LIMIT})",
    "offset": "predictions to skip (default 0)",
    "model_version": (
        f"only predictions of this model version (at most {MAX_VERSION_LENGTH} characters)"
    ),
}


def parse_history_query(pairs: Iterable[tuple[str, str]]) -> HistoryQuery:
    """Check the query parameters; every offending one is named in one 422.

    Raises:
        ValidationFailed: a parameter is unknown, repeated, holds a control character, is not
            a whole number, out of range, not an ISO 8601 date-time, or too long.
    """
    query, errors = _single_values(pairs)
    values: dict[str, Any] = {}
    for name in sorted(query):
        raw = query[name]
        try:
            if CONTROL_CHARACTERS.search(name) or CONTROL_CHARACTERS.search(raw):
                raise ValueError("must not contain control characters")
            if name in _INTEGERS:
                values[name] = _integer(raw, _INTEGERS[name])
            elif name in _TIMES:
                values[name] = _time(raw)
            elif name == "model_version":
                if len(raw) > MAX_VERSION_LENGTH:
                    raise ValueError(f"must be at most {MAX_VERSION_LENGTH} characters")
                values[name] = raw or None
            else:
                errors.append(FieldError(field_path(name), "unknown parameter"))
        except ValueError as exc:
            errors.append(FieldError(field_path(name), str(exc)))
    if errors:
        raise ValidationFailed(errors)
    return HistoryQuery(**values)


def _single_values(pairs: Iterable[tuple[str, str]]) -> tuple[dict[str, str], list[FieldError]]:
    """The parameters as a dict; one given twice is an error (which one wins is moot)."""
    query: dict[str, str] = {}
    repeated: set[str] = set()
    for name, value in pairs:
        if name in query:
            repeated.add(name)
        query[name] = value
    errors = [FieldError(field_path(name), "given more than once") for name in sorted(repeated)]
    return {k: v for k, v in query.items() if k not in repeated}, errors


def _integer(raw: str, spec: _Integer) -> int:
    if raw == "":
        return spec.default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError("must be a whole number") from None
    if not spec.low <= value <= spec.high:
        raise ValueError(f"must be between {spec.low} and {spec.high}")
    return value


def _time(raw: str) -> datetime | None:
    if raw == "":
        return None
    try:
        # Upper case: RFC 3339 allows a lower-case "t" and "z", which fromisoformat refuses.
        value = datetime.fromisoformat(raw.upper().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("must be an ISO 8601 date-time") from None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T01:00+02:00 is before year 1 in UTC: no record is
        # that old or that far ahead, so the earliest or latest representable time filters alike
        bound = datetime.min if value.year == datetime.min.year else datetime.max
        return bound.replace(tzinfo=UTC)


def _parameter(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "in": "query",
        "name": name,
        "required": False,
        "allowEmptyValue": True,  # ``?since=`` is the same as no ``since``
        "schema": schema,
        "description": description,
    }


#: OpenAPI 3 parameter objects of ``GET /predictions``, with the bounds the parser enforces.
OPENAPI_PARAMETERS: list[dict[str, Any]] = [
    *(
        _parameter(
            name,
            {"type": "integer", "minimum": spec.low, "maximum": spec.high, "default": spec.default},
            _DESCRIPTIONS[name],
        )
        for name, spec in _INTEGERS.items()
    ),
    *(
        _parameter(
            name,
            {"type": "string", "format": "date-time", "pattern": NO_CONTROL_CHARACTERS},
            f"ISO 8601, {bound}",
        )
        for name, bound in _TIMES.items()
    ),
    _parameter(
        "model_version",
        {"type": "string", "maxLength": MAX_VERSION_LENGTH, "pattern": NO_CONTROL_CHARACTERS},
        _DESCRIPTIONS["model_version"],
    ),
]
