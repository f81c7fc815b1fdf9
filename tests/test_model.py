"""The featuriser and the saved model: one code path for training and prediction."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import xgboost as xgb

from xgbops.model import BOOSTER_FILE, SPEC_FILE, Column, Featurizer, Model, ModelFormatError

FEATURIZER = Featurizer(
    [
        Column("age", "numeric"),
        Column("plan", "categorical", ("basic", "gold")),
        Column("calls", "numeric"),
    ]
)


def test_output_layout_is_numbers_then_one_hot_blocks_in_input_order():
    assert FEATURIZER.output_names == ["age", "plan=basic", "plan=gold", "calls"]
    assert FEATURIZER.input_names == ["age", "plan", "calls"]


def test_records_and_columns_give_the_same_matrix():
    records = [
        {"age": 30, "plan": "gold", "calls": 2.5},
        {"age": None, "plan": "basic", "calls": 0},
        {"age": 41.0, "plan": None},  # calls absent
        {"age": float("nan"), "plan": "platinum", "calls": 1},
    ]
    by_records = FEATURIZER.transform_records(records)
    columns = {name: [r.get(name) for r in records] for name in FEATURIZER.input_names}
    by_columns = FEATURIZER.transform_columns(columns)
    np.testing.assert_array_equal(by_records, by_columns)
    expected = np.array(
        [
            [30, 0, 1, 2.5],
            [np.nan, 1, 0, 0],
            [41, np.nan, np.nan, np.nan],
            [np.nan, np.nan, np.nan, 1],  # an unknown category is missing, not a zero vector
        ],
        dtype=np.float32,
    )
    np.testing.assert_array_equal(by_records, expected)
    assert by_records.dtype == np.float32


def test_non_string_category_counts_as_missing():
    matrix = FEATURIZER.transform_records([{"age": 1, "plan": ["gold"], "calls": 1}])
    assert np.isnan(matrix[0, 1:3]).all()


def test_spec_round_trips_through_json():
    again = Featurizer.from_dict(json.loads(json.dumps(FEATURIZER.to_dict())))
    assert again.output_names == FEATURIZER.output_names
    assert again.columns == FEATURIZER.columns


def test_built_from_the_dataset_config(settings):
    featurizer = Featurizer.from_dataset(settings.dataset)
    assert featurizer.input_names == settings.dataset.feature_names
    assert "state=KS" in featurizer.output_names
    assert len(featurizer.output_names) == 15 + 51 + 3 + 2 + 2


def _tiny_model(threshold: float = 0.5) -> Model:
    rng = np.random.default_rng(0)
    x = FEATURIZER.transform_records(
        [
            {"age": float(a), "plan": "gold" if a > 40 else "basic", "calls": 1.0}
            for a in rng.integers(18, 80, 200)
        ]
    )
    y = (x[:, 0] > 40).astype(int)
    booster = xgb.train(
        {"objective": "binary:logistic", "tree_method": "hist"}, xgb.DMatrix(x, y), 5
    )
    return Model(FEATURIZER, booster, "yes", "no", threshold, {"note": "tiny"})


def test_save_and_load_give_identical_predictions(tmp_path):
    model = _tiny_model(threshold=0.3)
    model.save(tmp_path / "m")
    assert (tmp_path / "m" / BOOSTER_FILE).read_bytes()[:1] == b"{"  # UBJSON object marker
    loaded = Model.load(tmp_path / "m")
    x = FEATURIZER.transform_records(
        [{"age": 25, "plan": "basic", "calls": 1}, {"age": 70, "plan": "gold"}]
    )
    np.testing.assert_array_equal(model.predict_proba(x), loaded.predict_proba(x))
    assert loaded.threshold == 0.3
    assert loaded.metadata == {"note": "tiny"}
    assert (loaded.positive_label, loaded.negative_label) == ("yes", "no")
    spec = json.loads((tmp_path / "m" / SPEC_FILE).read_text())
    assert spec["feature_names"] == FEATURIZER.output_names
    assert spec["xgboost_version"] == xgb.__version__


def test_label_uses_the_threshold_inclusively():
    model = _tiny_model(threshold=0.4)
    assert model.label(0.4) == "yes"
    assert model.label(0.39999) == "no"


def test_empty_input_gives_empty_output():
    assert _tiny_model().predict_proba(np.zeros((0, 4), dtype=np.float32)).shape == (0,)


def test_probabilities_are_probabilities():
    model = _tiny_model()
    p = model.predict_proba(FEATURIZER.transform_records([{"age": a} for a in range(18, 90)]))
    assert ((p > 0) & (p < 1)).all()
    assert p[-1] > p[0]  # learned: older is positive
    assert not any(math.isnan(v) for v in p)


def test_loading_a_directory_without_a_model_names_the_file(tmp_path):
    with pytest.raises(ModelFormatError, match=r"model\.json: file not found"):
        Model.load(tmp_path)


def test_loading_an_unknown_format_is_refused(tmp_path):
    _tiny_model().save(tmp_path)
    spec = json.loads((tmp_path / SPEC_FILE).read_text())
    (tmp_path / SPEC_FILE).write_text(json.dumps({**spec, "format": 99}))
    with pytest.raises(ModelFormatError, match="unsupported format 99"):
        Model.load(tmp_path)
    (tmp_path / SPEC_FILE).write_text("{not json")
    with pytest.raises(ModelFormatError, match="invalid JSON"):
        Model.load(tmp_path)


def test_feature_importance_sums_one_hot_columns_back_per_input():
    model = _tiny_model()
    gains = model.booster.get_score(importance_type="total_gain")
    importance = model.feature_importance()
    assert list(importance) == ["age", "plan", "calls"] or set(importance) == {
        "age",
        "plan",
        "calls",
    }
    assert importance["plan"] == pytest.approx(gains.get("f1", 0.0) + gains.get("f2", 0.0))
    assert importance["age"] == pytest.approx(gains["f0"])
    assert list(importance.values()) == sorted(importance.values(), reverse=True)
