"""Another CSV, another YAML, no code change: Pima diabetes (tests/fixtures/pima.*)."""

from __future__ import annotations

import pytest

from xgbops.config import load_settings
from xgbops.data import load_dataset
from xgbops.predict import Predictor
from xgbops.tracking import Tracker
from xgbops.train import promote_version, train

from .conftest import REPO


@pytest.fixture
def pima(tmp_path):
    """Settings for the Pima YAML; MLflow store and reports in a temporary directory."""
    return load_settings(
        project_dir=REPO,
        dataset_config="tests/fixtures/pima.yaml",
        state_dir=tmp_path / "state",
        reports_dir=tmp_path / "reports",
    )


def test_the_pima_description_is_checked_like_any_other(pima):
    frame, report = load_dataset(pima.dataset, pima.data_path)
    assert report.passed, report.to_text()
    assert len(frame) == 532
    assert frame["skin"].isna().sum() == 27  # the nullable column really has gaps


def test_train_register_promote_and_predict_on_a_second_dataset(pima):
    result = train(pima)
    assert result.model_name == "pima-xgboost"  # derived from the dataset name
    assert result.metrics["roc_auc"] > 0.75
    # 532 rows of a nearly linear problem: the default trees lose to the logistic baseline,
    # and the baseline gate refuses them, as it should (a user tunes, or forces knowingly).
    decision = result.decision
    assert (
        decision.baselines["logistic"] > decision.challenger_score > decision.baselines["majority"]
    )
    assert not decision.promoted and "logistic baseline" in decision.reason
    assert promote_version(pima, result.version, force=True).promoted
    tracker = Tracker(pima)
    assert tracker.champion("pima-xgboost").version == "1"
    assert tracker.champion("churn-xgboost") is None
    predictor = Predictor.from_directory(tracker.download_model("pima-xgboost", alias="champion"))
    assert "age_band=50+" in predictor.model.featurizer.output_names
    healthy = {
        "npreg": 1,
        "glu": 85,
        "bp": 66,
        "skin": None,
        "bmi": 26.6,
        "ped": 0.35,
        "age": 31,
        "age_band": "30-39",
    }
    at_risk = {**healthy, "glu": 197, "bmi": 45.0, "age": 53, "age_band": "50+", "npreg": 8}
    low, high = predictor.predict([healthy, at_risk])
    assert low.label == "No" and high.label == "Yes"
    assert high.probability > low.probability
