"""The MLflow boundary: the pyfunc MLflow serves, the registry look-ups, the download cache."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator

import mlflow
import numpy as np
import pandas as pd
import pytest

from xgbops.predict import Predictor
from xgbops.tracking import RegistryError, Tracker, git_commit


@pytest.fixture
def own_xgbops() -> Iterator[None]:
    """``mlflow.pyfunc.load_model`` puts the model's logged code first on ``sys.path`` and drops
    the cached ``xgbops`` modules: later tests of this worker (and coverage, which measures the
    ``xgbops`` it finds imported) would get the copy. Put the project's back."""
    path = list(sys.path)
    ours = {name: module for name, module in sys.modules.items() if name.split(".")[0] == "xgbops"}
    yield
    sys.path[:] = path
    for name in [name for name in sys.modules if name.split(".")[0] == "xgbops"]:
        del sys.modules[name]
    sys.modules.update(ours)


@pytest.mark.usefixtures("own_xgbops")
def test_pyfunc_loaded_by_mlflow_scores_like_the_predictor(champion_settings):
    tracker = Tracker(champion_settings)
    pyfunc = mlflow.pyfunc.load_model("models:/churn-xgboost@champion")
    example = json.loads((champion_settings.project_dir / "data" / "example.json").read_text())
    records = [
        example,
        {**example, "international_plan": "yes", "number_customer_service_calls": 5},
    ]
    served = pyfunc.predict(pd.DataFrame(records))
    direct = Predictor.from_directory(tracker.download_model("churn-xgboost", alias="champion"))
    np.testing.assert_allclose(served["probability"], direct.predict_proba(records), atol=1e-7)
    assert list(served["label"]) == [p.label for p in direct.predict(records)]


def test_signature_types_whole_numbers_as_long_so_json_ints_are_accepted(champion_settings):
    Tracker(champion_settings)
    info = mlflow.models.get_model_info("models:/churn-xgboost@champion")
    types = {spec.name: spec.type.name for spec in info.signature.inputs.inputs}
    assert types["account_length"] == "long"
    assert types["total_day_minutes"] == "double"
    assert types["state"] == "string"
    assert [o.name for o in info.signature.outputs.inputs] == ["probability", "label"]


def test_version_lookup_by_alias_number_and_latest(champion_settings):
    tracker = Tracker(champion_settings)
    by_alias = tracker.version("churn-xgboost", alias="champion")
    assert by_alias.aliases == ("champion",)
    assert tracker.version("churn-xgboost", version="1").run_id == by_alias.run_id
    assert tracker.version("churn-xgboost").version == "1"
    assert by_alias.metrics["holdout_roc_auc"] > 0.85


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"version": "99"}, "version 99 not found"), ({"alias": "nope"}, "alias 'nope' not found")],
)
def test_unknown_versions_raise_registry_error(champion_settings, kwargs, message):
    with pytest.raises(RegistryError, match=message):
        Tracker(champion_settings).version("churn-xgboost", **kwargs)


def test_a_model_without_versions_has_no_champion(settings):
    tracker = Tracker(settings)
    assert tracker.champion("never-trained") is None
    with pytest.raises(RegistryError, match="model 'never-trained' has no registered version"):
        tracker.version("never-trained")


def test_download_is_cached_in_the_state_dir(champion_settings):
    tracker = Tracker(champion_settings)
    first = tracker.download_model("churn-xgboost", version="1")
    assert first == champion_settings.state_path / "models" / "churn-xgboost" / "1"
    marker = first / "marker"
    marker.write_text("kept")
    assert tracker.download_model("churn-xgboost", alias="champion") == first
    assert marker.read_text() == "kept"
    marker.unlink()


def test_experiment_artifacts_live_in_the_project_state_dir(champion_settings):
    tracker = Tracker(champion_settings)
    experiment = tracker.client.get_experiment(tracker.experiment_id)
    assert experiment.artifact_location.startswith(champion_settings.artifact_root.as_uri())


def test_git_commit_outside_a_repository_is_none(tmp_path):
    assert git_commit(tmp_path) is None


def test_a_tracker_leaves_the_environment_alone(settings, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    Tracker(settings)
    assert "MLFLOW_TRACKING_URI" not in os.environ  # MLflow itself would export it
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://elsewhere:5000")
    Tracker(settings)
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://elsewhere:5000"
