"""Baselines: fitted beside every candidate, logged, shown, and a bar every champion must clear."""

from __future__ import annotations

import json

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from xgbops import baselines, notify
from xgbops.data import labels, load_splits
from xgbops.model import Featurizer
from xgbops.tracking import Tracker
from xgbops.train import features_of, promote_version, train

#: Trains models: run early (tests/conftest.py orders slow modules first).
pytestmark = pytest.mark.slow


def _stumps(rounds: int) -> dict:
    """Boosters of ``rounds`` depth-1 trees: ROC-AUC about 0.62, below the logistic baseline."""
    return {
        "train": {
            "num_boost_round": rounds,
            "early_stopping_rounds": None,
            "params": {"max_depth": 1},
        }
    }


def test_logistic_baseline_learns_and_majority_answers_the_prior(settings):
    splits = load_splits(settings)
    featurizer = Featurizer.from_dataset(settings.dataset)
    y_train = labels(splits.train, settings.dataset).to_numpy()
    scores = baselines.fit_and_score(
        ["majority", "logistic"],
        features_of(splits.train, featurizer),
        y_train,
        features_of(splits.holdout, featurizer),
        labels(splits.holdout, settings.dataset).to_numpy(),
        threshold=0.5,
        seed=42,
    )
    assert scores["majority"]["roc_auc"] == pytest.approx(0.5)
    assert scores["majority"]["recall"] == 0.0  # the majority class is "no"
    assert 0.7 < scores["logistic"]["roc_auc"] < 0.9
    assert scores["logistic"]["log_loss"] < scores["majority"]["log_loss"]
    with pytest.raises(ValueError, match="unknown baseline"):
        baselines.fit_and_score(
            ["forest"],
            np.zeros((4, 1), np.float32),
            np.array([0, 1, 0, 1]),
            [],
            [],
            threshold=0.5,
            seed=1,
        )


def test_beating_needs_more_than_the_margin_in_the_metric_direction():
    assert baselines.beats(0.81, 0.80, True, 0.0)
    assert not baselines.beats(0.80, 0.80, True, 0.0)  # a tie never wins
    assert not baselines.beats(0.81, 0.80, True, 0.02)
    assert baselines.beats(0.30, 0.40, False, 0.05)  # log_loss: lower is better
    assert not baselines.beats(0.38, 0.40, False, 0.05)
    table = {"majority": 0.5, "logistic": 0.8}
    assert baselines.losing_to(0.7, table, True, 0.0) == ["logistic"]
    assert baselines.losing_to(0.9, table, True, 0.0) == []
    assert baselines.losing_to(0.9, table, True, 0.15) == ["logistic"]
    assert baselines.losing_to(0.9, table, True, 0.45) == ["majority", "logistic"]


@pytest.mark.usefixtures("empty_mlflow_store")
def test_a_candidate_beating_the_champion_but_not_the_logistic_baseline_is_refused(make_settings):
    first = train(make_settings(**_stumps(1)))
    assert not first.decision.promoted  # no champion, yet it loses to the logistic baseline
    assert "logistic baseline" in first.decision.reason
    forced = promote_version(make_settings(), first.version, force=True)
    assert forced.promoted

    second = train(make_settings(**_stumps(3)))
    decision = second.decision
    assert decision.challenger_score > decision.champion_score  # it beats the champion...
    assert decision.challenger_score < decision.baselines["logistic"]  # ...not the baseline
    assert not decision.promoted
    assert decision.reason == "roc_auc does not beat the logistic baseline by 0.0"
    assert Tracker(make_settings()).champion("churn-xgboost").version == first.version

    # the baseline alone refused it: without baselines the same version wins
    unguarded = promote_version(make_settings(train={"baselines": []}), second.version)
    assert unguarded.promoted and unguarded.reason == "better roc_auc"


def test_baselines_are_logged_beside_the_candidate_and_shown_in_card_and_email(
    champion_settings,
):
    report_dir = champion_settings.reports_path / "training"
    result = json.loads((report_dir / "result.json").read_text())
    assert result["decision"]["promoted"]
    assert set(result["baselines"]) == {"majority", "logistic"}
    run = MlflowClient(champion_settings.tracking_uri).get_run(result["run_id"])
    logged = run.data.metrics
    logistic = result["baselines"]["logistic"]["roc_auc"]
    assert logged["baseline_logistic_roc_auc"] == pytest.approx(logistic)
    assert logged["baseline_majority_roc_auc"] == pytest.approx(0.5)
    assert "holdout_baseline_logistic_roc_auc" not in logged  # never taken for the candidate's
    assert result["metrics"]["roc_auc"] > logistic
    assert result["decision"]["baselines"]["logistic"] == pytest.approx(logistic)

    card = (report_dir / "model_card.md").read_text()
    assert "| metric | candidate | majority | logistic |" in card
    assert f"| roc_auc | {result['metrics']['roc_auc']:.4f} | 0.5000 | {logistic:.4f} |" in card

    lines = notify.training_lines(result)
    roc = next(line for line in lines if line.startswith("holdout roc_auc"))
    assert "majority 0.5" in roc and f"logistic {logistic:.4f}" in roc
    assert f"logistic baseline roc_auc={logistic:.4f}" in lines
