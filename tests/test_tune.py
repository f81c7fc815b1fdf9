"""Tuning: a real Optuna study on a real storage, trials as nested MLflow runs, resumable."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import numpy as np
import optuna
import pytest
import xgboost as xgb
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from tests.cli_runner import run_xgbops
from tests.processes import log_tail
from xgbops.config import ConfigError, load_settings, to_sqlalchemy_url
from xgbops.tune import (
    COUNTED,
    _Pruning,
    counted,
    open_study,
    storage_url,
    threads_per_worker,
    tune,
)

#: Runs studies and a killed tuning process: run early (tests/conftest.py orders slow first).
pytestmark = pytest.mark.slow

#: A small study: few short trials, pruning allowed from the third round.
QUICK = {
    "num_boost_round": 30,
    "early_stopping_rounds": 5,
    "tune": {"trials": 3, "workers": 1, "pruning_warmup_rounds": 2, "heartbeat_seconds": 1},
}


def _trials(settings):
    return optuna.load_study(
        study_name=settings.model_name, storage=storage_url(settings)
    ).get_trials()


def test_pruning_callback_stops_a_hopeless_trial_early(settings):
    study = optuna.create_study(
        direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=0.99, n_warmup_steps=3)
    )
    trial = study.ask()
    pruning = _Pruning(trial, "auc")
    rng = np.random.default_rng(0)
    data = xgb.DMatrix(rng.normal(size=(200, 3)), label=rng.integers(0, 2, 200))
    history: dict = {}
    xgb.train(
        {"objective": "binary:logistic", "eval_metric": "auc"},
        data,
        num_boost_round=50,
        evals=[(data, "validation")],
        evals_result=history,
        callbacks=[pruning],
    )
    assert pruning.pruned
    assert len(history["validation"]["auc"]) == 4  # warm-up rounds 0-2, pruned at round 3
    assert trial.should_prune()


@pytest.mark.usefixtures("empty_mlflow_store")
def test_a_killed_study_resumes_and_ends_with_nested_runs_and_the_params_train_reads(
    project, make_settings
):
    settings = make_settings(train={**QUICK, "tune": {**QUICK["tune"], "trials": 5}})
    env = {
        **os.environ,
        "XGBOPS_PROJECT_DIR": str(project),
        "XGBOPS_TRAIN__NUM_BOOST_ROUND": "30",
        "XGBOPS_TRAIN__EARLY_STOPPING_ROUNDS": "5",
        "XGBOPS_TRAIN__TUNE__HEARTBEAT_SECONDS": "1",
        "XGBOPS_TRAIN__TUNE__WORKERS": "1",
    }
    log = project / "tune.log"
    with log.open("wb") as out:
        process = subprocess.Popen(  # nosec B603 - our own command
            [os.path.join(os.path.dirname(sys.executable), "xgbops"), "tune", "--trials", "50"],
            env=env,
            cwd=project,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert process.poll() is None, log_tail(log)
            if _frozen_where_a_resume_recovers(process, settings):
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"no trial finished within 120 s:\n{log_tail(log)}")
    finally:
        process.send_signal(signal.SIGKILL)  # frozen mid-study, or the test failed
        process.wait()
    before = _trials(settings)
    parent = open_study(settings).user_attrs["mlflow_parent_run_id"]
    time.sleep(2.5)  # past the heartbeat grace period: a trial left running is stale

    result = tune(settings)  # 5 in all: only the missing ones run
    after = _trials(settings)
    assert result.parent_run_id == parent  # the same MLflow parent, reopened
    assert counted(open_study(settings)) == 5
    assert not [t for t in after if t.state == TrialState.RUNNING]
    for old in before:  # what finished before the kill is kept as it was
        if old.state in (TrialState.COMPLETE, TrialState.PRUNED):
            assert after[old.number].value == old.value
    assert len(after) - len(before) < 5
    status = MlflowClient(settings.tracking_uri).get_run(parent).info.status
    assert status == "FINISHED"

    # the resumed study ends as any study does
    trials = after
    assert trials[0].user_attrs["hand_set"] and trials[0].params["max_depth"] == 5  # train.yaml
    assert result.hand_set_value == trials[0].value
    assert result.best_value >= result.hand_set_value  # maximised validation AUC
    assert result.best_value == max(t.value for t in trials if t.state == TrialState.COMPLETE)

    client = MlflowClient(settings.tracking_uri)
    parent = client.get_run(result.parent_run_id)
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{result.parent_run_id}'"
    )
    logged = {int(r.data.tags["optuna.trial"]) for r in children}
    assert {r.info.status for r in children} <= {"FINISHED", "KILLED"}  # none left RUNNING
    assert {t.number for t in trials if t.state in COUNTED} <= logged <= {t.number for t in trials}
    finished = [r for r in children if r.info.status == "FINISHED"]
    assert {r.data.params["nthread"] for r in finished} == {str(threads_per_worker(1))}
    assert parent.data.metrics["best_validation_auc"] == pytest.approx(result.best_value)
    artifacts = {a.path for a in client.list_artifacts(result.parent_run_id, "tuning")}
    assert {"tuning/optimization_history.png", "tuning/param_importances.png"} <= artifacts

    written = yaml.safe_load(result.params_file.read_text())["params"]
    assert written == result.best_params
    reloaded = load_settings(project_dir=settings.project_dir)
    assert {k: reloaded.train.params[k] for k in written} == written  # what `train` will use
    assert reloaded.train.params["tree_method"] == "hist"  # the rest stays train.yaml's


def _finished_trials(settings) -> int:
    """Trials finished so far, read from the SQLite file without ever writing to it.

    Opening the study would let Optuna create its tables, racing the tune process that is
    creating them at the same moment ("table ... already exists").
    """
    path = settings.state_path / "optuna.db"
    if not path.exists():
        return 0
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db:
            (count,) = db.execute(
                "SELECT count(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED')"
            ).fetchone()
    except sqlite3.OperationalError:  # no tables yet, or locked by a writer
        return 0
    return int(count)


def _frozen_where_a_resume_recovers(process: subprocess.Popen[bytes], settings) -> bool:
    """Once a trial finished, freeze the tune process (SIGSTOP) and say whether it may be killed
    there: a resume fails a dead process's running trial by its stale heartbeat, so a trial
    killed between its creation and its first heartbeat (a few milliseconds) would stay
    RUNNING for ever. Frozen at such a moment, the process is let go on (SIGCONT): False."""
    if not _finished_trials(settings):
        return False
    process.send_signal(signal.SIGSTOP)
    while process.poll() is None and not _is_stopped(process.pid):
        time.sleep(0.01)
    if _running_without_heartbeat(settings) == 0:
        return True
    process.send_signal(signal.SIGCONT)
    return False


def _is_stopped(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    return stat.rsplit(")", 1)[1].split()[0] in ("T", "t")


def _running_without_heartbeat(settings) -> int | None:
    """Running trials with no heartbeat yet, read-only like :func:`_finished_trials`; None
    if the file is locked (by a process frozen in the middle of a write)."""
    path = settings.state_path / "optuna.db"
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0.5)) as db:
            (count,) = db.execute(
                "SELECT count(*) FROM trials WHERE state = 'RUNNING' AND trial_id NOT IN "
                "(SELECT trial_id FROM trial_heartbeats)"
            ).fetchone()
    except sqlite3.OperationalError:
        return None
    return int(count)


@pytest.mark.usefixtures("empty_mlflow_store")
def test_tune_command_runs_two_workers_on_a_postgresql_study(
    monkeypatch, capsys, project, make_settings, postgres_url
):
    for name, value in {
        "XGBOPS_TRAIN__NUM_BOOST_ROUND": "30",
        "XGBOPS_TRAIN__EARLY_STOPPING_ROUNDS": "5",
        "XGBOPS_TRAIN__TUNE__STORAGE": postgres_url,
    }.items():
        monkeypatch.setenv(name, value)  # the worker processes inherit them
    status, out, err = run_xgbops(
        monkeypatch, capsys, "tune", "--trials", "4", "--workers", "2", cwd=project
    )
    assert status == 0, err
    assert "study churn-xgboost (postgresql+psycopg://" in out
    assert "parameters written to" in out and "config/tuned.yaml" in out
    parent_run_id = re.search(r"MLflow parent run ([0-9a-f]{32})", out).group(1)

    study = optuna.load_study(study_name="churn-xgboost", storage=to_sqlalchemy_url(postgres_url))
    assert counted(study) >= 4  # each extra worker may finish one more
    assert study.user_attrs["mlflow_parent_run_id"] == parent_run_id
    client = MlflowClient(make_settings().tracking_uri)
    children = client.search_runs(
        [client.get_run(parent_run_id).info.experiment_id],
        f"tags.mlflow.parentRunId = '{parent_run_id}'",
    )
    assert len(children) == len(study.trials)
    assert {r.data.params["nthread"] for r in children} == {str(threads_per_worker(2))}


@pytest.mark.parametrize(
    ("dimension", "message"),
    [
        ({"type": "float", "low": 1.0, "high": 1.0}, "needs low < high"),
        ({"type": "float", "low": 0.0, "high": 1.0, "log": True}, "needs low > 0"),
        ({"type": "categorical"}, "needs choices"),
    ],
)
def test_a_bad_search_space_is_refused_naming_the_dimension(project, dimension, message):
    with pytest.raises(ConfigError, match=rf"tune\.space\.eta[\s\S]*{message}"):
        load_settings(project_dir=project, train={"tune": {"space": {"eta": dimension}}})
