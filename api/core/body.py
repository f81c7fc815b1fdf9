"""Reading a request (its header lines, its JSON body), with the same refusals in both apps, and
writing an answer's JSON the same way in both.

A JSON object with the same key twice is refused (400 naming the key) rather than letting the
last value win: a client that sent two values would never learn which one was scored.
"""

from __future__ import annotations

import dataclasses
import decimal
import json
import uuid
from collections.abc import Iterable
from pathlib import PurePath
from typing import Any

import orjson

from api.core.errors import BadRequest, HeaderTooLarge, PayloadTooLarge, UnsupportedMediaType

#: orjson as ``json.dumps`` would write the core's answers: numbers as dictionary keys (the
#: rollout report's counts by bucket) become strings, numpy scalars and arrays numbers.
JSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def write_json(value: Any) -> bytes:
    """An answer as JSON, keys in their order (both apps' encoder).

    Raises:
        TypeError: a value that is not JSON (nor a dataclass, set, decimal, UUID or path).
    """
    return orjson.dumps(value, default=_plain, option=JSON_OPTIONS)


def _plain(value: Any) -> Any:
    """What orjson writes no other way: a dataclass as its fields, a set as a list, the rest
    (decimal, UUID, path) as its text."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (set, frozenset)):
        return list(value)
    if isinstance(value, (decimal.Decimal, uuid.UUID, PurePath)):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def check_headers(headers: Iterable[tuple[str, str]], limit: int) -> None:
    """Refuse a header line (``name: value``) longer than ``limit`` bytes.

    Raises:
        HeaderTooLarge: the first such header, named in lower case (431).
    """
    for name, value in headers:
        if len(name) + len(value) + 2 > limit:
            raise HeaderTooLarge(name.lower(), limit)


def read_json(content_type: str | None, raw: bytes, max_bytes: int) -> Any:
    """Parse a request body that must be JSON.

    Raises:
        UnsupportedMediaType: the content type is not ``application/json`` (415).
        PayloadTooLarge: the body exceeds ``max_bytes`` (413).
        BadRequest: the body is empty, not UTF-8 or not valid JSON (400).
    """
    mimetype = (content_type or "").split(";", 1)[0].strip().lower()
    if mimetype != "application/json":
        raise UnsupportedMediaType(content_type)
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"request body is larger than {max_bytes} bytes")
    if not raw.strip():
        raise BadRequest("request body is empty")
    try:
        parsed = orjson.loads(raw)  # the fast path (a 10,000-record batch parses 2x faster)
    except orjson.JSONDecodeError:
        pass  # the standard library says what is wrong, and reads NaN for the validator to name
    else:
        if _keys_near(parsed) == raw.count(b":"):
            return parsed  # every colon is a member of a counted object: no key is repeated
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("body is not valid UTF-8") from None
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except DuplicateKey as exc:
        raise BadRequest(
            f"key {exc.key!r} appears more than once in a JSON object; send each key once",
            field_name=exc.key,
        ) from None
    except json.JSONDecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc.msg} at position {exc.pos}") from None
    except RecursionError:
        raise BadRequest("body is nested too deeply") from None
    except ValueError as exc:  # e.g. an integer literal longer than Python accepts
        raise BadRequest(f"body is not valid JSON: {exc}") from None


class DuplicateKey(ValueError):
    """A JSON object holds ``key`` twice."""

    def __init__(self, key: str) -> None:
        super().__init__(f"duplicate key {key!r}")
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads``'s object hook that refuses a repeated key.

    Raises:
        DuplicateKey: the first key seen twice.
    """
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(key)
            seen.add(key)
    return found


def _keys_near(parsed: Any) -> int:
    """Keys of the parsed objects at the top level and one list down (a record, a batch).

    Every member of a JSON object is one colon outside a string, so when the body holds exactly
    as many colons as the parsed objects hold keys, no key was dropped as a repeat. A colon in
    a string or a deeper object makes the count differ, and the exact (slower) parse decides.
    """
    if not isinstance(parsed, dict):
        return -1
    total = len(parsed)
    for value in parsed.values():
        if isinstance(value, dict):
            total += len(value)
        elif isinstance(value, list):
            total += sum(len(item) for item in value if isinstance(item, dict))
    return total
