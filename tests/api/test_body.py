"""Reading a JSON body: the refusals both apps share, duplicate keys among them."""

from __future__ import annotations

import dataclasses
import json
from decimal import Decimal

import numpy as np
import pytest

from api.core.body import read_json, write_json
from api.core.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

JSON = "application/json"


def _refusal(raw: bytes) -> BadRequest:
    with pytest.raises(BadRequest) as caught:
        read_json(JSON, raw, 1 << 20)
    return caught.value


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (b'{"age": 30, "age": 31}', "age"),  # the fast path's case: no colon in a string
        (b'{"records": [{"a": 1}, {"a": 1, "b": 2, "b": 3}]}', "b"),  # a batch's record
        (b'{"note": "a:b", "age": 1, "age": 2}', "age"),  # colons in strings: the exact parse
        (b'{"a": {"b": {"c": 1, "c": 2}}}', "c"),  # deeper than the count looks
        (b'{"age": NaN, "age": 1}', "age"),  # the standard library's path (NaN) checks too
    ],
)
def test_a_repeated_key_is_refused_naming_it(raw, key):
    refusal = _refusal(raw)
    assert refusal.status == 400
    assert refusal.detail[0].field == key
    assert repr(key) in refusal.message and "more than once" in refusal.message


@pytest.mark.parametrize(
    "value",
    [
        {"age": 30, "job": "admin."},
        {"records": [{"a": 1, "b": "x:y"}, {"a": 2, "b": "z"}]},
        {"a": {"b": {"c": 1}}, "d": [{"e": {"f": 2}}]},
        {"when": "2026-12-07T06:00:00+00:00", "nested": {"a": "b:c"}},
        [1, 2, {"a": 1}],
    ],
)
def test_bodies_without_repeats_are_read_as_sent(value):
    assert read_json(JSON, json.dumps(value).encode(), 1 << 20) == value


def test_the_same_key_in_different_objects_is_no_repeat():
    raw = b'{"records": [{"a": 1}, {"a": 2}], "a": 3}'
    assert read_json(JSON, raw, 1 << 20) == {"records": [{"a": 1}, {"a": 2}], "a": 3}


@pytest.mark.parametrize(
    ("content_type", "raw", "error"),
    [
        ("text/plain", b"{}", UnsupportedMediaType),
        (JSON, b"{" + b" " * 100 + b"}", PayloadTooLarge),
        (JSON, b"  ", BadRequest),
        (JSON, b"\xff{}", BadRequest),
        (JSON, b"{'a': 1}", BadRequest),
    ],
)
def test_what_is_not_a_readable_json_body_is_refused(content_type, raw, error):
    with pytest.raises(error):
        read_json(content_type, raw, 50)


def test_both_apps_write_an_answer_as_json_dumps_would():
    """Number keys (the rollout report's buckets), numpy values, dataclasses, sets and text-like
    values are written, in key order; what is not JSON is refused, not guessed."""

    @dataclasses.dataclass
    class Point:
        x: int

    answer = {
        "b": {3: np.float64(0.5), 1: np.int64(2)},
        "a": [Point(1)],
        "s": {7},
        "d": Decimal("1.5"),
    }
    assert write_json(answer) == b'{"b":{"3":0.5,"1":2},"a":[{"x":1}],"s":[7],"d":"1.5"}'
    assert json.loads(write_json({"arr": np.arange(3)})) == {"arr": [0, 1, 2]}
    with pytest.raises(TypeError):
        write_json({"x": object()})
