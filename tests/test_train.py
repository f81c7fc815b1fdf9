"""Training: a tracked run, a registered version, and a champion only when it wins."""

from __future__ import annotations

import json
import subprocess

import pytest
from mlflow.tracking import MlflowClient

from xgbops.data import DataValidationError
from xgbops.tracking import Tracker
from xgbops.train import evaluate_version, promote_version, train

#: Trains models or starts servers: run early (tests/conftest.py orders slow modules first).
pytestmark = pytest.mark.slow

HOLDOUT_METRICS = {
    "accuracy",
    "precision",
    "recall",
    "f1",
    "roc_auc",
    "pr_auc",
    "log_loss",
    "brier",
}

#: A deliberately weak model: two stumps.
WEAK = {"train": {"num_boost_round": 2, "early_stopping_rounds": None, "params": {"max_depth": 1}}}


def _client(settings):
    return MlflowClient(settings.tracking_uri, settings.tracking_uri)


def test_the_champion_run_logs_everything_the_registry_and_ui_need(champion_settings):
    client = _client(champion_settings)
    version = client.get_model_version_by_alias("churn-xgboost", "champion")
    run = client.get_run(version.run_id)
    metrics, params, tags = run.data.metrics, run.data.params, run.data.tags
    assert HOLDOUT_METRICS <= {k.removeprefix("holdout_") for k in metrics}
    assert metrics["holdout_roc_auc"] >= 0.85
    assert params["xgb_tree_method"] == "hist"
    assert params["rows_holdout"] == "1000"
    assert len(params["dataset_sha256"]) == 64
    assert tags["xgbops.dataset_sha256"] == params["dataset_sha256"]
    assert tags["promotion.decision"] == "promoted"
    curve = client.get_metric_history(run.info.run_id, "validation_auc")
    assert len(curve) == int(params["best_iteration"]) + 1 + 10  # rounds until early stopping
    assert [m.step for m in curve] == list(range(len(curve)))
    assert len(client.get_metric_history(run.info.run_id, "train_logloss")) == len(curve)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "reports")}
    for name in (
        "learning_curve.png",
        "roc_curve.png",
        "pr_curve.png",
        "confusion_matrix.png",
        "feature_importance.png",
        "model_card.md",
        "data-check.json",
        "data-check.txt",
    ):
        assert f"reports/{name}" in artifacts
    assert run.inputs.dataset_inputs[0].dataset.name == "churn"
    assert version.tags["promotion.decision"] == "promoted"


def test_model_card_states_version_metrics_and_decision(champion_settings):
    card = (champion_settings.reports_path / "training" / "model_card.md").read_text()
    assert card.startswith("# Model card: churn-xgboost v1")
    assert "| roc_auc |" in card
    assert "PROMOTED: challenger v1" in card
    assert "`state` (categorical)" in card


def test_training_result_is_written_for_pipelines(champion_settings):
    result = json.loads((champion_settings.reports_path / "training" / "result.json").read_text())
    assert result["version"] == "1"
    assert result["decision"]["promoted"] is True
    assert set(result["metrics"]) == HOLDOUT_METRICS


@pytest.mark.usefixtures("empty_mlflow_store")
def test_first_version_is_promoted_a_tie_is_not(settings):
    first = train(settings)
    assert first.decision.promoted and first.decision.reason == "no champion to beat"
    second = train(settings)  # same data, same seed: the same model
    assert second.version == "2"
    assert not second.decision.promoted
    assert second.decision.champion_score == pytest.approx(second.decision.challenger_score)
    assert Tracker(settings).champion("churn-xgboost").version == "1"


@pytest.mark.usefixtures("empty_mlflow_store")
def test_worse_model_stays_out_better_model_goes_in(make_settings):
    strong = train(make_settings())
    weak = train(make_settings(**WEAK))
    assert weak.metrics["roc_auc"] < strong.metrics["roc_auc"]
    assert not weak.decision.promoted
    assert "does not beat the logistic baseline" in weak.decision.summary()  # nor the champion
    tracker = Tracker(make_settings())
    assert tracker.champion("churn-xgboost").version == strong.version

    # promote the weak one by force, then a normal run beats it on the same holdout
    forced = promote_version(make_settings(), weak.version, force=True)
    assert forced.promoted and forced.reason == "forced"
    again = train(make_settings())
    assert again.decision.promoted
    assert again.decision.champion_version == weak.version
    assert again.decision.champion_score == pytest.approx(weak.metrics["roc_auc"])


@pytest.mark.usefixtures("empty_mlflow_store")
def test_lower_is_better_metrics_promote_on_a_decrease(make_settings):
    lower = {"train": {"promotion": {"metric": "log_loss"}}}
    weak = train(make_settings(train={**WEAK["train"], **lower["train"]}))
    strong = train(make_settings(**lower))
    assert strong.metrics["log_loss"] < weak.metrics["log_loss"]
    assert strong.decision.promoted and strong.decision.metric == "log_loss"


@pytest.mark.usefixtures("empty_mlflow_store")
def test_no_promote_leaves_the_champion_to_promote_version(settings):
    result = train(settings, promote=False)
    assert result.decision is None
    assert Tracker(settings).champion("churn-xgboost") is None
    decision = promote_version(settings)  # latest version, scored from the registry
    assert decision.promoted
    assert decision.challenger_score == pytest.approx(result.metrics["roc_auc"])
    assert promote_version(settings).reason == "already champion"


def test_evaluate_version_rescores_the_registered_model(champion_settings):
    result = evaluate_version(champion_settings, alias="champion")
    logged = json.loads((champion_settings.reports_path / "training" / "result.json").read_text())
    assert result.metrics == pytest.approx(logged["metrics"])
    assert (result.report_dir / "roc_curve.png").is_file()
    summary = json.loads((result.report_dir / "metrics.json").read_text())
    assert summary["version"] == "1"


def test_bad_data_stops_training_before_anything_is_logged(settings):
    text = settings.data_path.read_text().replace(",area_code_415,", ",area_code_999,", 1)
    settings.data_path.write_text(text)
    with pytest.raises(DataValidationError):
        train(settings)
    assert (settings.reports_path / "data-check.txt").exists() is False
    assert not (settings.state_path / "mlflow.db").exists()


@pytest.mark.usefixtures("empty_mlflow_store")
def test_git_commit_is_tagged_when_the_project_is_a_repository(settings):
    def git(*args):
        subprocess.run(["git", *args], cwd=settings.project_dir, check=True, capture_output=True)

    git("init", "-q")
    git(
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@example.com",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "x",
    )
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"],
        cwd=settings.project_dir,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    result = train(settings)
    run = _client(settings).get_run(result.run_id)
    assert run.data.tags["mlflow.source.git.commit"] == head
