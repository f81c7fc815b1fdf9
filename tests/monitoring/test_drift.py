"""Drift statistics: a shifted sample is flagged, an unshifted one is not, and the thresholds
come from the settings (environment included)."""

from __future__ import annotations

import math
import os
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from tests.conftest import make_project, project_settings
from xgbops.config import DriftSettings
from xgbops.data import load_dataset, split_dataset
from xgbops.monitoring.drift import (
    EPSILON,
    MIN_INDICATIVE_ROWS,
    PREDICTION_FEATURE,
    Inputs,
    adjust_p_values,
    build_report,
    categorical_drift,
    numeric_drift,
    population_stability_index,
)

END = datetime(2025, 6, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """(settings, reference = train + validation rows, holdout) of the default dataset."""
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith(("XGBOPS_", "MLFLOW_"))]:
            patch.delenv(name)
        settings = project_settings(make_project(tmp_path_factory.mktemp("drift") / "p"))
    frame, _ = load_dataset(settings.dataset, settings.data_path)
    splits = split_dataset(frame, settings.dataset, settings.train.split, settings.train.seed)
    return settings, pd.concat([splits.train, splits.validation]), splits.holdout


def _report(settings, reference, window, drift=None, scores=(None, None)):
    return build_report(
        Inputs(reference, window, *scores),
        settings.dataset,
        drift or settings.monitoring.drift,
        model_name=settings.model_name,
        model_versions=["1"],
        window=(END - timedelta(hours=24), END),
        generated_at=END,
    )


def _shifted(reference, holdout):
    """The holdout with a numeric feature moved by two standard deviations and the share of
    international plans raised from about 10% to 50%."""
    window = holdout.copy()
    window["total_day_minutes"] += 2 * reference["total_day_minutes"].std()
    half = len(window) // 2
    window["international_plan"] = pd.array(["yes"] * half + ["no"] * (len(window) - half))
    return window


def test_the_holdout_an_independent_sample_of_the_training_data_shows_no_drift(data):
    settings, reference, holdout = data
    report = _report(settings, reference, holdout)
    assert report.status == "no_drift" and not report.drift_detected
    assert len(report.features) == len(settings.dataset.features)
    assert report.drifted_features == []


@pytest.mark.parametrize("seed", [0, 1])
def test_a_random_subsample_of_the_reference_shows_no_drift(data, seed):
    settings, reference, _ = data
    report = _report(settings, reference, reference.sample(300, random_state=seed))
    assert report.drifted_features == [], report.to_text()


@pytest.mark.parametrize("correction", ["benjamini-hochberg", "bonferroni", "none"])
def test_a_shifted_sample_is_flagged_on_exactly_the_shifted_features(data, correction):
    settings, reference, holdout = data
    drift = settings.monitoring.drift.model_copy(update={"correction": correction})
    report = _report(settings, reference, _shifted(reference, holdout), drift)
    assert report.drift_detected and report.status == "drift"
    assert set(report.drifted_features) == {"total_day_minutes", "international_plan"}
    by_name = {f.feature: f for f in report.features}
    assert by_name["total_day_minutes"].test == "ks"
    assert by_name["international_plan"].test == "chi2"
    assert by_name["total_day_minutes"].window_mean > by_name["total_day_minutes"].reference_mean
    assert "DRIFT in 2 feature(s)" in report.to_text()


def test_p_values_are_adjusted_as_bonferroni_and_benjamini_hochberg_define_them():
    p_values = [0.01, 0.04, 0.03, 0.005]
    assert adjust_p_values(p_values, "none") == p_values
    assert adjust_p_values(p_values, "bonferroni") == pytest.approx([0.04, 0.16, 0.12, 0.02])
    # Sorted 0.005, 0.01, 0.03, 0.04 -> p * 4 / rank = 0.02, 0.02, 0.04, 0.04 (then monotone).
    assert adjust_p_values(p_values, "benjamini-hochberg") == pytest.approx(
        [0.02, 0.04, 0.04, 0.02]
    )
    assert adjust_p_values([0.3], "bonferroni") == [0.3]
    assert adjust_p_values([0.9, 0.8], "bonferroni") == [1.0, 1.0]


def test_the_correction_cuts_false_alarms_on_unshifted_windows(data):
    """Windows drawn from the reference itself have not drifted: every alarm is a false one.

    With 20 tests per report judged alone, 3 of these 40 windows raise an alarm; adjusted
    together, none does (the default keeps the rate near ``p_value``).
    """
    settings, reference, _ = data
    alarms = {}
    for correction in ("none", "benjamini-hochberg", "bonferroni"):
        drift = DriftSettings(correction=correction)
        windows = (reference.sample(100, random_state=seed) for seed in range(40))
        alarms[correction] = sum(
            _report(settings, reference, window, drift).drift_detected for window in windows
        )
    assert alarms["none"] > alarms["benjamini-hochberg"] >= alarms["bonferroni"], alarms
    assert alarms["benjamini-hochberg"] <= 1, alarms


def test_the_report_shows_raw_and_adjusted_p_values(data):
    settings, reference, holdout = data
    report = _report(settings, reference, _shifted(reference, holdout))
    assert report.p_value_correction == "benjamini-hochberg"
    tested = [f for f in report.features if f.p_value is not None]
    assert len(tested) > 10
    assert all(f.adjusted_p_value >= f.p_value for f in tested)
    assert any(f.adjusted_p_value > f.p_value for f in tested)
    assert all(f.test_drifted == (f.adjusted_p_value < report.p_value_threshold) for f in tested)
    assert "(p-values adjusted: benjamini-hochberg)" in report.to_text()
    summary = report.events()[0]
    assert summary.p_value_correction == "benjamini-hochberg"


def test_a_category_share_change_alone_is_flagged(data):
    settings, reference, holdout = data
    window = holdout.copy()
    window["area_code"] = pd.array(["area_code_510"] * len(window))
    assert _report(settings, reference, window).drifted_features == ["area_code"]


def test_the_psi_threshold_comes_from_the_settings(data, make_settings):
    _, reference, holdout = data
    window = _shifted(reference, holdout)
    strict = make_settings()
    lenient = make_settings(monitoring={"drift": {"psi_threshold": 100.0}})
    assert _report(strict, reference, window).drift_detected
    relaxed = _report(lenient, reference, window)
    assert not relaxed.drift_detected and relaxed.psi_threshold == 100.0


def test_the_thresholds_come_from_the_environment(data, make_settings, monkeypatch):
    _, reference, holdout = data
    window = _shifted(reference, holdout)
    monkeypatch.setenv("XGBOPS_MONITORING__DRIFT__PSI_THRESHOLD", "1.5")
    settings = make_settings()
    assert settings.monitoring.drift.psi_threshold == 1.5
    report = _report(settings, reference, window)
    # international_plan's PSI (about 0.9) no longer counts; total_day_minutes' (above 3) does.
    assert report.drifted_features == ["total_day_minutes"]


def test_a_large_psi_without_a_significant_test_is_not_drift():
    values = (["a"] * 500 + ["b"] * 500, ["a"] * 100 + ["z"] * 100)
    flagged = categorical_drift("c", *values, ["a", "b"], DriftSettings())
    demanding = categorical_drift("c", *values, ["a", "b"], DriftSettings(p_value=1e-300))
    assert flagged.drifted and flagged.psi == demanding.psi
    assert demanding.psi_drifted and not demanding.test_drifted and not demanding.drifted


def test_too_few_predictions_is_not_a_verdict(data):
    settings, reference, holdout = data
    window = _shifted(reference, holdout).head(settings.monitoring.drift.min_samples - 1)
    report = _report(settings, reference, window)
    assert report.status == "insufficient_data" and not report.drift_detected
    # The statistics are there for a first look, and show the shift, but judge nothing.
    shifted = {row.feature: row for row in report.features}["total_day_minutes"]
    assert shifted.psi >= settings.monitoring.drift.psi_threshold
    assert not any(row.drifted or row.psi_drifted or row.test_drifted for row in report.features)
    assert report.drifted_features == []
    assert "not enough predictions (99 < 100)" in report.to_text()
    assert "indicative only: 99 predictions" in report.to_text()
    assert "  DRIFT" not in report.to_text()
    tiny = _report(settings, reference, window.head(MIN_INDICATIVE_ROWS - 1))
    assert tiny.features == [] and tiny.status == "insufficient_data"


def test_a_shifted_predicted_probability_is_flagged_alone(data):
    settings, reference, holdout = data
    rng = np.random.default_rng(0)
    reference_scores = rng.beta(2, 8, len(reference))
    same = _report(settings, reference, holdout, scores=(reference_scores, rng.beta(2, 8, 300)))
    moved = _report(settings, reference, holdout, scores=(reference_scores, rng.beta(8, 2, 300)))
    assert same.prediction is not None and not same.prediction.drifted
    assert moved.prediction is not None and moved.prediction.drifted
    assert moved.prediction.feature == PREDICTION_FEATURE
    assert moved.drift_detected and moved.drifted_features == []
    assert "and in the predicted probability" in moved.to_text()


def test_psi_follows_its_definition():
    expected = (0.9 - 0.5) * math.log(0.9 / 0.5) + (0.1 - 0.5) * math.log(0.1 / 0.5)
    assert population_stability_index([50, 50], [90, 10]) == pytest.approx(expected)
    assert population_stability_index([10, 20, 30], [1, 2, 3]) == pytest.approx(0.0)


def test_an_empty_bin_is_floored_so_psi_stays_finite():
    value = population_stability_index([100, 0], [50, 50])
    expected = (0.5 - 1.0) * math.log(0.5 / 1.0) + (0.5 - EPSILON) * math.log(0.5 / EPSILON)
    assert value == pytest.approx(expected)


def test_missing_values_have_a_bin_of_their_own():
    drift = DriftSettings()
    reference = np.arange(1000, dtype=float)
    window = reference.copy()
    window[:500] = np.nan
    row = numeric_drift("x", reference, window, drift)
    assert row.window_missing_share == 0.5 and row.reference_missing_share == 0.0
    assert row.psi > drift.psi_threshold


def test_an_unlisted_category_counts_and_a_single_category_needs_no_test():
    drift = DriftSettings()
    row = categorical_drift(
        "c", ["a"] * 90 + ["b"] * 10, ["a"] * 50 + ["z"] * 50, ["a", "b"], drift
    )
    assert row.drifted and row.test == "chi2" and row.window_missing_share == 0.0
    single = categorical_drift("c", ["a"] * 10, ["a"] * 10, ["a", "b"], drift)
    assert (single.test, single.p_value, single.psi, single.drifted) == (None, None, 0.0, False)


def test_report_events_are_one_summary_and_one_row_per_feature(data):
    settings, reference, holdout = data
    report = _report(settings, reference, _shifted(reference, holdout))
    summary, *rows = report.events()
    assert summary.KIND == "drift-reports" and summary.features_drifted == 2
    assert [r.feature for r in rows] == settings.dataset.feature_names
    assert len({r.doc_id for r in rows}) == len(rows)
    assert summary.doc_id == report.report_id == _report(settings, reference, holdout).report_id
