"""Comparing runs: metrics, the parameters that differ, the data version, and a plot."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient

from tests.cli_runner import run_xgbops
from xgbops.compare import CompareError, compare
from xgbops.train import train

#: Trains two models: run early (tests/conftest.py orders slow modules first).
pytestmark = pytest.mark.slow


@pytest.fixture
def two_versions(make_settings):
    """Version 1 (hand-set depth 5, data version tagged) and version 2 (depth 2)."""
    first = train(make_settings())
    second = train(make_settings(train={"params": {"max_depth": 2}}))
    MlflowClient(make_settings().tracking_uri).set_tag(first.run_id, "data_version", "a1b2c3d")
    return first, second


@pytest.mark.usefixtures("empty_mlflow_store")
def test_compare_shows_metrics_differing_params_and_data_version(
    monkeypatch, capsys, project, make_settings, two_versions
):
    first, second = two_versions
    comparison = compare(make_settings(), ["1", second.run_id, "champion"])
    one, two, champion = comparison.runs
    assert (one.version, two.version, champion.version) == ("1", None, "1")
    assert two.run_id == second.run_id and champion.run_id == first.run_id
    assert one.metrics["roc_auc"] == pytest.approx(first.metrics["roc_auc"])
    assert two.metrics["roc_auc"] == pytest.approx(second.metrics["roc_auc"])
    # the training run's own tag (the data-versioning step's), or none without DVC
    tagged = MlflowClient(make_settings().tracking_uri).get_run(second.run_id).data.tags
    assert (one.data_version, two.data_version) == ("a1b2c3d", tagged.get("data_version"))
    assert one.dataset_sha256 == two.dataset_sha256  # same data file, only the tag differs

    assert comparison.differing_params == {"xgb_max_depth": ["5", "2", "5"]}
    table = comparison.table()
    assert "| param xgb_max_depth | 5 | 2 | 5 |" in table
    assert f"| data version | a1b2c3d | {two.data_version or '-'} | a1b2c3d |" in table
    roc = f"| roc_auc | {first.metrics['roc_auc']:.4f} | {second.metrics['roc_auc']:.4f} |"
    assert roc in table
    assert comparison.plot.read_bytes().startswith(b"\x89PNG")
    written = json.loads((comparison.markdown.parent / "compare.json").read_text())
    assert [run["run_id"] for run in written["runs"]] == [first.run_id, second.run_id, first.run_id]

    # the command prints the same table, and refuses a name it cannot find
    status, out, _ = run_xgbops(monkeypatch, capsys, "compare", "v1", "2", cwd=project)
    assert status == 0
    assert "| param xgb_max_depth | 5 | 2 |" in out
    assert "reports/compare/compare.png" in out
    status, _, err = run_xgbops(monkeypatch, capsys, "compare", "1", "v9", cwd=project)
    assert status == 2
    assert "'v9' is neither a version, an alias nor a run id" in err
    with pytest.raises(CompareError, match="at least one"):
        compare(make_settings(), [])
