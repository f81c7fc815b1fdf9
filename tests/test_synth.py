"""Synthetic data: partitioned Parquet that passes the dataset's own checks and can be learnt."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.metrics import roc_auc_score

from xgbops.data import check_data, labels
from xgbops.model import Featurizer
from xgbops.synth import synthesize
from xgbops.fitting import features_of

from tests.cli_runner import run_xgbops


def test_synth_writes_partitions_that_pass_the_dataset_checks(settings, tmp_path):
    result = synthesize(settings.dataset, 5_000, tmp_path / "table", partition_rows=2_000)
    files = sorted((tmp_path / "table").glob("part-*.parquet"))
    assert [f.name for f in files] == [f"part-0000{i}.parquet" for i in range(3)]
    frame = pd.read_parquet(tmp_path / "table")
    assert len(frame) == result.rows == 5_000
    assert result.partitions == 3
    report = check_data(frame, settings.dataset, tmp_path / "table")
    assert report.passed, report.to_text()
    assert report.positive_rate == result.positive_rate
    for feature in settings.dataset.features:
        if feature.type == "categorical":
            # Skewed frequencies: more than one category, not all equally common.
            counts = frame[feature.name].value_counts(normalize=True)
            assert len(counts) > 1 and counts.max() > 1.2 / len(feature.categories)


def test_synth_is_reproducible_and_the_seed_matters(settings, tmp_path):
    first = synthesize(settings.dataset, 1_000, tmp_path / "a", seed=7).directory
    second = synthesize(settings.dataset, 1_000, tmp_path / "b", seed=7).directory
    other = synthesize(settings.dataset, 1_000, tmp_path / "c", seed=8).directory
    pd.testing.assert_frame_equal(pd.read_parquet(first), pd.read_parquet(second))
    assert not pd.read_parquet(first).equals(pd.read_parquet(other))


def test_synthetic_target_is_learnable(settings, tmp_path):
    frame = pd.read_parquet(synthesize(settings.dataset, 6_000, tmp_path / "t").directory)
    featurizer = Featurizer.from_dataset(settings.dataset)
    x, y = features_of(frame, featurizer), labels(frame, settings.dataset).to_numpy()
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 3, "nthread": 1},
        xgb.DMatrix(x[:4_000], label=y[:4_000]),
        num_boost_round=30,
    )
    auc = roc_auc_score(y[4_000:], booster.predict(xgb.DMatrix(x[4_000:])))
    assert auc > 0.7, auc
    assert np.unique(y).tolist() == [0, 1]


def test_data_synth_command(monkeypatch, capsys, project):
    status, out, _ = run_xgbops(
        monkeypatch,
        capsys,
        "data",
        "synth",
        "--rows",
        "1200",
        "--out",
        "synthetic",
        "--partition-rows",
        "500",
        cwd=project,
    )
    assert status == 0
    assert "1200 rows in 3 Parquet file(s)" in out
    assert len(pd.read_parquet(project / "synthetic")) == 1200
