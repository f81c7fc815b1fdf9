"""The Dask engine on a real cluster: a ``dask scheduler`` and two ``dask worker`` processes.

One cluster serves the module: training through its address, parity with the local engine,
per-partition checks, batch scoring, tuning trials as cluster tasks, and last (it leaves one
worker) a worker killed mid-training.
"""

from __future__ import annotations

import os
import signal
import subprocess  # nosec B404 - starts the Dask processes of the test
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from distributed import Client
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score

from xgbops import distributed
from xgbops.config import Settings, load_settings
from xgbops.data import DataValidationError, Splits, load_dataset, read_csv
from xgbops.partitions import hash_split, typed
from xgbops.predict import Predictor
from xgbops.score import score_table
from xgbops.synth import synthesize
from xgbops.tracking import Tracker
from xgbops.fitting import fit_model
from xgbops.train import evaluate_version, promote_version, score, train
from xgbops.tune import tune

from tests.conftest import FAST_TRAIN, make_project, seed_mlflow_store
from tests.processes import free_port, log_tail

pytestmark = pytest.mark.slow

DASK = Path(sys.executable).parent / "dask"


@dataclass
class Cluster:
    """A scheduler and its workers, each a process of the test."""

    address: str
    scheduler: subprocess.Popen[bytes]
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    worker_logs: list[Path] = field(default_factory=list)


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(  # nosec B603 - fixed command
            [str(DASK), *args], stdout=out, stderr=subprocess.STDOUT
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """``dask scheduler`` + 2 ``dask worker`` (1 thread each, no nanny: a killed worker stays
    dead), on a free port; stopped by their own handles at the end."""
    logs = tmp_path_factory.mktemp("dask-logs")
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    scheduler = _start(
        ["scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        logs / "scheduler.log",
    )
    running = Cluster(address, scheduler)
    try:
        for index in range(2):
            running.worker_logs.append(logs / f"worker-{index}.log")
            running.workers.append(
                _start(
                    [
                        "worker",
                        address,
                        "--nthreads",
                        "1",
                        "--no-nanny",
                        "--no-dashboard",
                        "--name",
                        f"worker-{index}",
                        "--memory-limit",
                        "0",
                    ],
                    logs / f"worker-{index}.log",
                )
            )
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=90)
        yield running
    except Exception:
        print("\n".join(log_tail(p) for p in sorted(logs.glob("*.log"))))
        raise
    finally:
        for process in [*running.workers, scheduler]:
            _stop(process)


@pytest.fixture(scope="module")
def dask_project(tmp_path_factory: pytest.TempPathFactory, mlflow_store_template: Path) -> Path:
    """A project whose dataset is also written as 4 Parquet partitions (``data/parts``), its
    MLflow store created (empty)."""
    project = make_project(tmp_path_factory.mktemp("dask") / "project")
    seed_mlflow_store(mlflow_store_template, project / ".xgbops" / "mlflow.db")
    settings = load_settings(project_dir=project)
    frame = read_csv(settings.data_path, settings.dataset)
    (project / "data" / "parts").mkdir()
    for index, start in enumerate(range(0, len(frame), 1250)):
        frame.iloc[start : start + 1250].to_parquet(
            project / "data" / "parts" / f"part-{index}.parquet", index=False
        )
    return project


def _settings(project: Path, cluster: Cluster, **overrides: object) -> Settings:
    options = {"scheduler_address": cluster.address, "data": str(project / "data" / "parts")}
    return load_settings(
        project_dir=project,
        engine="dask",
        dask={**options, **overrides.pop("dask", {})},  # type: ignore[dict-item]
        **overrides,
    )


@pytest.fixture(scope="module")
def dask_champion(dask_project: Path, cluster: Cluster) -> Settings:
    """The module's project with a champion trained on the cluster, through its address."""
    settings = _settings(dask_project, cluster, train=FAST_TRAIN)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(dask_project)
        train(settings)
    return settings


def test_training_through_the_scheduler_registers_the_usual_model(dask_champion):
    settings = dask_champion
    client = MlflowClient(settings.tracking_uri, settings.tracking_uri)
    version = client.get_model_version_by_alias(settings.model_name, "champion")
    params = client.get_run(version.run_id).data.params
    assert params["engine"] == "dask"
    assert (params["workers"], params["partitions"], params["rows"]) == ("2", "4", "5000")
    assert (
        int(params["rows_train"]) + int(params["rows_validation"]) + int(params["rows_holdout"])
        == 5000
    )
    assert float(client.get_run(version.run_id).data.metrics["holdout_roc_auc"]) > 0.85
    # The same artifact as the local engine's: the serving predictor loads and scores it.
    model_dir = Tracker(settings).download_model(settings.model_name, alias="champion")
    assert sorted(p.name for p in model_dir.iterdir()) == ["booster.ubj", "model.json"]
    predictor = Predictor.from_directory(model_dir)
    example = pd.read_json(settings.project_dir / "data" / "example.json", typ="series")
    assert 0.0 <= predictor.predict_proba([example.to_dict()])[0] <= 1.0


def test_evaluate_and_promote_on_the_dask_engine_score_the_rows_training_did(dask_champion):
    """``xgbops evaluate`` and ``promote`` with a Dask engine re-score the cluster's hash-split
    holdout (not the local split of the CSV): the metrics training logged, exactly."""
    settings = dask_champion
    client = MlflowClient(settings.tracking_uri, settings.tracking_uri)
    version = client.get_model_version_by_alias(settings.model_name, "champion")
    logged = client.get_run(version.run_id).data.metrics
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(settings.project_dir)
        evaluated = evaluate_version(settings, alias="champion")
        decision = promote_version(settings, version.version)
    assert evaluated.metrics["roc_auc"] == pytest.approx(logged["holdout_roc_auc"], abs=1e-12)
    assert decision.challenger_score == pytest.approx(logged["holdout_roc_auc"], abs=1e-12)
    assert decision.reason == "already champion" and not decision.promoted
    local = load_settings(project_dir=settings.project_dir)  # the local split's other rows
    assert evaluate_version(local, alias="champion").metrics["roc_auc"] != pytest.approx(
        logged["holdout_roc_auc"], abs=1e-9
    )


def test_dask_and_local_engines_agree_on_the_same_split(dask_project, cluster):
    """Parity on the 5,000-row dataset with train.yaml's own parameters and seed: both engines
    fit the same hash split's rows; their holdout AUCs differ by less than 0.005."""
    settings = _settings(dask_project, cluster)
    with distributed.connect(settings) as client:
        fit = distributed.fit_on_cluster(settings, client)
    frame = typed(load_dataset(settings.dataset, settings.data_path)[0], settings.dataset)
    part = hash_split(frame, settings.dataset, settings.train.split, settings.train.seed)
    splits = Splits(*(frame[part == name] for name in ("train", "validation", "holdout")))
    # The holdout does not depend on partitioning: the same rows as one pandas frame's.
    key = settings.dataset.feature_names
    pd.testing.assert_frame_equal(
        fit.holdout.sort_values(key).reset_index(drop=True),
        splits.holdout.sort_values(key).reset_index(drop=True),
    )
    local = fit_model(splits, settings.dataset, settings)
    y_true, local_scores = score(local.model, splits.holdout, settings.dataset)
    _, dask_scores = score(fit.fitted.model, splits.holdout, settings.dataset)
    local_auc, dask_auc = roc_auc_score(y_true, local_scores), roc_auc_score(y_true, dask_scores)
    assert local_auc > 0.85
    assert abs(local_auc - dask_auc) < 0.005, (local_auc, dask_auc)


def test_a_bad_partition_is_reported_with_its_partition_and_rows(dask_project, cluster, tmp_path):
    parts = tmp_path / "parts"
    parts.mkdir()
    for source in sorted((dask_project / "data" / "parts").glob("*.parquet")):
        frame = pd.read_parquet(source)
        if source.name == "part-2.parquet":
            frame.loc[7, "account_length"] = -5
            frame.loc[[3, 9], "state"] = "ZZ"
        frame.to_parquet(parts / source.name, index=False)
    settings = _settings(dask_project, cluster, dask={"data": str(parts)})
    with distributed.connect(settings) as client, pytest.raises(DataValidationError) as info:
        distributed.fit_on_cluster(settings, client)
    text = info.value.report.to_text()
    assert "[partition 2, rows 7]" in text
    assert "[partition 2, rows 3, 9]" in text
    assert "partition 0" not in text and "partition 3" not in text


def test_batch_scoring_on_the_cluster_matches_the_local_predictor_row_for_row(
    dask_champion, cluster, tmp_path
):
    settings = dask_champion
    output = tmp_path / "scored"
    result = score_table(settings, str(settings.project_dir / "data" / "parts"), output)
    scored = pd.read_parquet(output)
    assert len(sorted(output.glob("*.parquet"))) == result.partitions == 4
    model_dir = Tracker(settings).download_model(settings.model_name, alias="champion")
    predictor = Predictor.from_directory(model_dir)
    source = pd.read_parquet(settings.project_dir / "data" / "parts")
    records = source[settings.dataset.feature_names].to_dict("records")
    expected = predictor.predict(records)
    assert len(scored) == len(records) == result.rows
    np.testing.assert_allclose(scored["probability"], [p.probability for p in expected], rtol=1e-6)
    assert scored["label"].tolist() == [p.label for p in expected]
    assert set(scored["model_version"]) == {result.version}
    assert set(scored["run_id"]) == {predictor.metadata["run_id"]}


def test_tuning_runs_its_trials_as_tasks_of_the_cluster(dask_project, cluster, tmp_path):
    """The study's workers are Dask tasks, one per cluster worker, sharing one storage."""
    tune_config = {"storage": f"sqlite:///{tmp_path / 'study.db'}", "trials": 4}
    train_config = {**FAST_TRAIN, "tuned_params": str(tmp_path / "tuned.yaml"), "tune": tune_config}
    settings = _settings(dask_project, cluster, train=train_config)
    seen: list[int] = []
    result = tune(settings, on_trial=lambda done, total, best: seen.append(done))

    assert sum(result.states.get(s, 0) for s in ("COMPLETE", "PRUNED")) >= 4
    study = optuna.load_study(study_name=result.study_name, storage=tune_config["storage"])
    ran_in = {int(t.user_attrs["process"].rsplit(":", 1)[1]) for t in study.trials}
    assert ran_in == {worker.pid for worker in cluster.workers}  # both workers, not this process
    assert seen and seen[-1] >= 4  # progress read from the study while the tasks ran
    client = MlflowClient(settings.tracking_uri)
    parent = client.get_run(result.parent_run_id)
    assert parent.data.tags["xgbops.engine"] == "dask"
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{result.parent_run_id}'"
    )
    assert len(children) == len(study.trials)
    assert {run.data.params["nthread"] for run in children} == {"1"}  # the workers' threads
    assert (tmp_path / "tuned.yaml").is_file()


def test_a_worker_killed_mid_training_fails_the_run_and_registers_nothing(
    cluster, tmp_path, mlflow_store_template
):
    """Last in the module: it leaves the cluster one worker short."""
    project = make_project(tmp_path / "project")
    store = seed_mlflow_store(mlflow_store_template, project / ".xgbops" / "mlflow.db")
    synthesize(
        load_settings(project_dir=project).dataset, 40_000, project / "big", partition_rows=10_000
    )
    long_run = {
        "num_boost_round": 5000,
        "early_stopping_rounds": None,
        "params": {"max_depth": 8, "eta": 0.01},
    }
    settings = _settings(project, cluster, dask={"data": str(project / "big")}, train=long_run)
    before = _ranks(cluster)
    pool = ThreadPoolExecutor(1)
    running = pool.submit(train, settings)
    deadline = time.monotonic() + 120
    while not _training(cluster, before) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _training(cluster, before), "training never started on the workers"
    time.sleep(1.0)
    os.kill(cluster.workers[1].pid, signal.SIGKILL)
    with pytest.raises(distributed.ClusterError, match="nothing registered"):
        running.result(timeout=180)
    pool.shutdown(wait=False)
    assert settings.tracking_uri == f"sqlite:///{store}"
    registry = MlflowClient(settings.tracking_uri, settings.tracking_uri)
    assert registry.search_model_versions(f"name='{settings.model_name}'") == []


def _ranks(cluster: Cluster) -> list[int]:
    """How many trainings each worker joined so far (each logs its rank when it joins one)."""
    return [log.read_text(errors="replace").count("got rank") for log in cluster.worker_logs]


def _training(cluster: Cluster, before: list[int]) -> bool:
    """True once both workers joined a training since ``before``."""
    return all(now > then for now, then in zip(_ranks(cluster), before, strict=True))
