"""Scoring with numpy + xgboost only: parity with training, parsing of JSON and CSV records."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from xgbops.predict import Predictor, RecordFormatError, parse_records
from xgbops.tracking import Tracker


def _holdout(settings):
    path = settings.reports_path / "training" / "holdout_predictions.csv"
    numeric = [f.name for f in settings.dataset.features if f.type == "numeric"]
    records = parse_records(path.read_text(), "csv", numeric + ["probability"])
    expected = np.array([r.pop("probability") for r in records])
    for record in records:
        record.pop("label")
    return records, expected


def test_predict_matches_training_time_probabilities_on_the_holdout(champion_settings):
    """Parity: the registry's files scored by the serving path = what training computed."""
    model_dir = Tracker(champion_settings).download_model("churn-xgboost", alias="champion")
    predictor = Predictor.from_directory(model_dir)
    records, expected = _holdout(champion_settings)
    assert len(records) == 1000
    got = predictor.predict_proba(records)
    assert np.max(np.abs(got - expected)) <= 1e-6


def test_predict_returns_probability_and_label(champion_settings):
    model_dir = Tracker(champion_settings).download_model("churn-xgboost", alias="champion")
    predictor = Predictor.from_directory(model_dir)
    example = json.loads((champion_settings.project_dir / "data" / "example.json").read_text())
    [prediction] = predictor.predict([example])
    assert 0 < prediction.probability < 1
    assert prediction.label == ("yes" if prediction.probability >= predictor.threshold else "no")
    assert predictor.metadata["model_name"] == "churn-xgboost"
    risky = {
        **example,
        "international_plan": "yes",
        "number_customer_service_calls": 6,
        "total_day_minutes": 320.0,
        "total_day_charge": 54.4,
    }
    assert predictor.predict([risky])[0].probability > prediction.probability


@pytest.mark.parametrize(
    "text",
    ['{"a": 1}', '[{"a": 1}]', '{"records": [{"a": 1}]}'],
)
def test_json_records_in_three_shapes(text):
    assert parse_records(text, "json") == [{"a": 1}]


def test_csv_records_read_numbers_and_blanks(tmp_path):
    path = tmp_path / "r.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerows([["a", "b", "c"], ["1.5", "x", ""]])
    assert parse_records(path.read_text(), "csv", ["a", "c"]) == [{"a": 1.5, "b": "x", "c": None}]


@pytest.mark.parametrize(
    ("text", "fmt", "message"),
    [
        ("{nope", "json", "invalid JSON"),
        ("[]", "json", "no records"),
        ("[1, 2]", "json", "record 0 is not an object"),
        ("a\nxyz\n", "csv", "column 'a': 'xyz' is not a number"),
        ("a\n", "csv", "no records"),
        ("a", "xml", "unknown format 'xml'"),
    ],
)
def test_bad_record_input_is_refused_with_a_reason(text, fmt, message):
    with pytest.raises(RecordFormatError, match=message):
        parse_records(text, fmt, ["a"])
