"""The query of GET /predictions: what is documented is what is enforced."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from api.core.errors import ValidationFailed
from api.core.query import OPENAPI_PARAMETERS, HistoryQuery, parse_history_query


def _refused(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    with pytest.raises(ValidationFailed) as refused:
        parse_history_query(pairs)
    return [(d.field, d.reason) for d in refused.value.detail]


def test_no_parameters_give_the_documented_defaults():
    defaults = {p["name"]: p["schema"].get("default") for p in OPENAPI_PARAMETERS}
    query = parse_history_query([])
    assert query == HistoryQuery()
    assert (query.limit, query.offset) == (defaults["limit"], defaults["offset"])


@pytest.mark.parametrize("parameter", [p for p in OPENAPI_PARAMETERS if "minimum" in p["schema"]])
def test_the_documented_integer_bounds_are_the_enforced_ones(parameter):
    name, low, high = (
        parameter["name"],
        parameter["schema"]["minimum"],
        parameter["schema"]["maximum"],
    )
    assert getattr(parse_history_query([(name, str(low))]), name) == low
    assert getattr(parse_history_query([(name, str(high))]), name) == high
    for outside in (low - 1, high + 1):
        assert _refused([(name, str(outside))]) == [(name, f"must be between {low} and {high}")]


def test_every_parameter_the_parser_knows_is_documented_and_no_other():
    documented = {p["name"] for p in OPENAPI_PARAMETERS}
    assert documented == {"limit", "offset", "since", "until", "model_version"}
    for name in documented:
        parse_history_query([(name, "")])  # known: an empty value is the same as none
    assert _refused([("page", "2")]) == [("page", "unknown parameter")]


def test_every_offending_parameter_is_named_in_one_refusal():
    errors = _refused(
        [("limit", "0"), ("until", "soon"), ("page", "2"), ("offset", "1"), ("offset", "2")]
    )
    assert errors == [
        ("limit", "must be between 1 and 500"),
        ("offset", "given more than once"),
        ("page", "unknown parameter"),
        ("until", "must be an ISO 8601 date-time"),
    ]


def test_times_are_read_as_utc_and_clamped_beyond_the_representable_range():
    query = parse_history_query([("since", "2025-06-01t02:00:00+02:00"), ("until", "2025-06-02")])
    assert query.since == datetime(2025, 6, 1, tzinfo=UTC)
    assert parse_history_query([("since", "2025-06-01t00:00:00.5z")]).since == datetime(
        2025, 6, 1, 0, 0, 0, 500000, tzinfo=UTC
    )
    assert query.until == datetime(2025, 6, 2, tzinfo=UTC)
    early = parse_history_query([("until", "0001-01-01T01:00:01+02:00")]).until
    late = parse_history_query([("since", "9999-12-31T23:00:00-05:00")]).since
    assert early == datetime.min.replace(tzinfo=UTC) and late == datetime.max.replace(tzinfo=UTC)
