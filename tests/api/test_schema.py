"""The record spec: one set of rules and reasons for both apps, derived from the dataset YAML."""

from __future__ import annotations

import math

import pytest

from api.core.schema import FieldSpec, InvalidValue, RecordSpec
from xgbops.config import load_settings

from tests.conftest import REPO

AGE = FieldSpec("age", "numeric", "years", integer=True, minimum=0, maximum=120)
RATE = FieldSpec("rate", "numeric", "a ratio", nullable=True, minimum=0.5)
PLAN = FieldSpec("plan", "categorical", "plan", categories=("basic", "gold"))
SPEC = RecordSpec((AGE, RATE, PLAN))


@pytest.mark.parametrize(
    ("spec", "value", "expected"),
    [
        (AGE, 30, 30.0),
        (AGE, 30.0, 30.0),
        (RATE, None, None),
        (RATE, 1e9, 1e9),
        (PLAN, "gold", "gold"),
    ],
)
def test_clean_accepts_and_normalises(spec, value, expected):
    assert spec.clean(value) == expected


@pytest.mark.parametrize(
    ("spec", "value", "reason"),
    [
        (AGE, None, "may not be null"),
        (AGE, True, "must be a number"),
        (AGE, "30", "must be a number"),
        (AGE, [1], "must be a number"),
        (AGE, math.nan, "must be a finite number"),
        (AGE, -math.inf, "must be a finite number"),
        (AGE, 30.5, "must be a whole number"),
        (AGE, 121, "must be between 0 and 120"),
        (RATE, 0.25, "must be between 0.5 and unbounded"),
        (PLAN, 3, "must be a string"),
        (PLAN, "platinum", "unknown category 'platinum'; expected one of basic, gold"),
    ],
)
def test_clean_refuses_with_the_reason(spec, value, reason):
    with pytest.raises(InvalidValue) as refused:
        spec.clean(value)
    assert str(refused.value) == reason


def test_validate_reports_every_problem_and_fills_absent_nullables():
    clean, errors = SPEC.validate({"age": 200, "extra": 1})
    assert {(e.field, e.reason) for e in errors} == {
        ("age", "must be between 0 and 120"),
        ("extra", "unknown field"),
        ("plan", "field required"),
    }
    clean, errors = SPEC.validate({"age": 3, "plan": "basic"})
    assert errors == [] and clean == {"age": 3.0, "rate": None, "plan": "basic"}


@pytest.mark.parametrize("body", [[], "x", 3, None])
def test_non_objects_are_refused_as_a_whole(body):
    assert [(e.field, e.reason) for e in SPEC.validate(body)[1]] == [
        ("body", "must be a JSON object")
    ]


@pytest.mark.parametrize(
    ("records", "reason"),
    [
        ("x", "must be a list of JSON objects"),
        ({"age": 1}, "must be a list of JSON objects"),
        ([], "must hold at least one record"),
        ([{"age": 1, "plan": "gold"}] * 3, "must hold at most 2 records"),
    ],
)
def test_batch_shape_errors(records, reason):
    assert [(e.field, e.reason) for e in SPEC.validate_batch(records, limit=2)[1]] == [
        ("records", reason)
    ]


def test_batch_errors_carry_the_index():
    _, errors = SPEC.validate_batch([{"age": 1, "plan": "gold"}, {"age": -1, "plan": "x"}], 5)
    assert [e.field for e in errors] == ["records.1.age", "records.1.plan"]


def test_examples_are_valid_records():
    assert SPEC.validate(SPEC.example())[1] == []
    churn = RecordSpec.from_dataset(load_settings(project_dir=REPO).dataset)
    assert churn.validate(churn.example())[1] == []
    assert churn.names[:3] == ["state", "account_length", "area_code"]


@pytest.mark.parametrize("value", [10**400, -(10**400)])
def test_integers_beyond_any_float_are_not_finite(value):
    with pytest.raises(InvalidValue, match="must be a finite number"):
        AGE.clean(value)


def test_empty_and_unicode_digit_keys_are_named_and_sorted_safely():
    _, errors = SPEC.validate({"age": 1, "plan": "gold", "": 1, "²": 2})
    assert sorted(e.field for e in errors) == ['""', "²"]


def test_clean_batches_take_the_column_path_and_odd_ones_do_not():
    good = [{"age": 30, "rate": 0.75, "plan": "gold"}, {"age": 41.0, "rate": 1, "plan": "basic"}]
    columns = SPEC.columns_if_clean(good)
    assert columns is not None
    assert {name: list(values) for name, values in columns.items()} == {
        "age": [30, 41.0],
        "rate": [0.75, 1],
        "plan": ["gold", "basic"],
    }
    for odd in (
        [{"age": 30, "plan": "gold"}],  # a nullable field left out
        [{"age": 30, "rate": None, "plan": "gold"}],  # None
        [{"age": True, "rate": 1.0, "plan": "gold"}],  # a bool
        [{"age": 30.5, "rate": 1.0, "plan": "gold"}],  # not whole
        [{"age": 300, "rate": 1.0, "plan": "gold"}],  # out of range
        [{"age": 30, "rate": math.inf, "plan": "gold"}],  # not finite
        [{"age": 30, "rate": 10**400, "plan": "gold"}],  # beyond any float
        [{"age": 30, "rate": 1.0, "plan": "silver"}],  # unknown category
        [{"age": 30, "rate": 1.0, "plan": "gold", "x": 1}],  # an extra key
        ["not a record"],
    ):
        assert SPEC.columns_if_clean(odd) is None, odd
