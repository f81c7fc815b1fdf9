"""The xgbops command: thin, with a clear message and a non-zero status on every user error."""

from __future__ import annotations

import json
import sys

import pytest
from typer.testing import CliRunner

from xgbops import cli
from tests.cli_runner import run_xgbops

#: Trains models or starts servers: run early (tests/conftest.py orders slow modules first).
pytestmark = pytest.mark.slow

runner = CliRunner()


def _run(monkeypatch, capsys, project, *args):
    """Run ``xgbops ARGS`` through the real entry point in ``project``: (status, out, err)."""
    return run_xgbops(monkeypatch, capsys, *args, cwd=project)


def test_help_lists_every_command():
    result = runner.invoke(cli.app, ["--help"])
    assert result.exit_code == 0
    for command in ("data-check", "train", "evaluate", "promote", "predict", "watch"):
        assert command in result.output


def test_data_check_passes_and_writes_both_reports(monkeypatch, capsys, project):
    status, out, _ = _run(monkeypatch, capsys, project, "data-check")
    assert status == 0
    assert out.startswith("Data check PASSED")
    assert json.loads((project / "reports" / "data-check.json").read_text())["passed"] is True
    assert (project / "reports" / "data-check.txt").read_text().startswith("Data check PASSED")


def test_data_check_fails_with_exit_1_and_names_the_problem(monkeypatch, capsys, project):
    path = project / "data" / "churn.csv"
    path.write_text(path.read_text().replace(",area_code_415,", ",area_code_999,", 1))
    status, out, _ = _run(monkeypatch, capsys, project, "data-check")
    assert status == 1
    assert "column 'area_code': unknown category" in out
    assert json.loads((project / "reports" / "data-check.json").read_text())["passed"] is False


def test_train_refuses_bad_data_with_the_report_and_exit_1(monkeypatch, capsys, project):
    path = project / "data" / "churn.csv"
    path.write_text(path.read_text().replace(",area_code_415,", ",area_code_999,", 1))
    status, _, err = _run(monkeypatch, capsys, project, "train")
    assert status == 1
    assert "unknown category" in err and "data check failed" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--train-config", "missing.yaml", "train"], "missing.yaml: file not found"),
        (["predict", "nowhere.json"], "nowhere.json: file not found"),
        (["predict", "data/example.json"], "alias 'champion' not found in the registry"),
        (["predict", "data/example.json", "--model-dir", "."], "model.json: file not found"),
        (["evaluate", "--version", "3"], "version 3 not found in the registry"),
    ],
)
def test_user_errors_exit_2_with_one_line(monkeypatch, capsys, project, args, message):
    monkeypatch.setenv("XGBOPS_TRAIN__NUM_BOOST_ROUND", "5")
    status, _, err = _run(monkeypatch, capsys, project, *args)
    assert status == 2
    assert message in err
    assert "Traceback" not in err


def test_missing_data_file_exits_2(monkeypatch, capsys, project):
    (project / "data" / "churn.csv").unlink()
    status, _, err = _run(monkeypatch, capsys, project, "data-check")
    assert status == 2
    assert "churn.csv: file not found" in err


def test_unknown_option_is_a_usage_error(monkeypatch, capsys, project):
    status, _, err = _run(monkeypatch, capsys, project, "train", "--bogus")
    assert status == 2
    assert "No such option" in err


def test_train_predict_promote_evaluate_round_trip(monkeypatch, capsys, project):
    monkeypatch.setenv("XGBOPS_TRAIN__NUM_BOOST_ROUND", "60")
    monkeypatch.setenv("XGBOPS_TRAIN__EARLY_STOPPING_ROUNDS", "10")
    status, out, _ = _run(monkeypatch, capsys, project, "train")
    assert status == 0
    assert "churn-xgboost v1" in out and "PROMOTED" in out and "roc_auc" in out

    status, out, _ = _run(monkeypatch, capsys, project, "train", "--skip-if-champion")
    assert (status, out.strip()) == (0, "churn-xgboost v1 is champion; not training.")

    status, out, _ = _run(monkeypatch, capsys, project, "predict", "data/example.json")
    prediction = json.loads(out)
    assert (
        status == 0 and 0 < prediction["probability"] < 1 and prediction["label"] in {"yes", "no"}
    )

    csv_text = "\n".join((project / "data" / "churn.csv").read_text().splitlines()[:4])
    monkeypatch.setattr(sys, "stdin", __import__("io").StringIO(csv_text))
    status, out, _ = _run(monkeypatch, capsys, project, "predict", "-", "--format", "csv")
    assert status == 0 and len(json.loads(out)) == 3

    partial = project / "partial.json"
    partial.write_text(json.dumps({"state": "KS"}))
    status, out, err = _run(monkeypatch, capsys, project, "predict", str(partial), "--version", "1")
    assert status == 0 and "scored as missing" in err and "probability" in out

    status, out, _ = _run(monkeypatch, capsys, project, "train", "--no-promote")
    assert status == 0 and "PROMOTED" not in out and "kept" not in out
    status, out, _ = _run(monkeypatch, capsys, project, "promote")
    assert status == 0 and out.startswith("kept champion: challenger v2")
    status, out, _ = _run(monkeypatch, capsys, project, "promote", "--version", "2", "--force")
    assert status == 0 and out.startswith("PROMOTED: challenger v2")

    status, out, _ = _run(monkeypatch, capsys, project, "evaluate", "--alias", "champion")
    assert status == 0 and out.startswith("churn-xgboost v2 on the holdout:")
    assert (project / "reports" / "evaluation" / "metrics.json").is_file()


def test_json_logs_when_not_a_terminal(monkeypatch, capsys, project):
    monkeypatch.setenv("XGBOPS_TRAIN__NUM_BOOST_ROUND", "20")
    monkeypatch.setenv("XGBOPS_LOG_FORMAT", "json")
    status, _, err = _run(monkeypatch, capsys, project, "train")
    assert status == 0
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    finished = [e for e in events if e["event"] == "training.finished"]
    assert finished and finished[0]["version"] == "1" and "run_id" in finished[0]
    decided = [e for e in events if e["event"] == "promotion.decided"][0]
    assert decided["model_version"] == "1" and decided["promoted"] is True
