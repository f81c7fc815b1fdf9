"""Hyper-parameter tuning: an Optuna study over the search space declared in train.yaml.

Each trial trains a booster on the train split with early stopping on the validation split
(never the holdout: that one decides promotion), reports the validation metric after every
round so a hopeless trial is pruned, and is a nested MLflow run under the study's parent
run. The study lives in a database (SQLite in the state folder by default, PostgreSQL on
the platform), so several worker processes share it and a study killed half-way resumes
where it stopped: trials that were running when their process died are noticed by their
missing heartbeat, marked failed and run again once. At the end the best parameters are
written to the ``tuned_params`` file that train.yaml names, where ``xgbops train`` reads
them, and the parent run gets the optimisation history and the parameter importances.
With the ``dask`` or ``dask-local`` engine, the workers are tasks of the Dask cluster instead
of local processes.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import socket
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna
import structlog
import xgboost as xgb
import yaml
from matplotlib.figure import Figure
from optuna.trial import TrialState

from xgbops import XgbopsError
from xgbops.champion import redact_uri
from xgbops.config import SearchDimension, Settings, to_sqlalchemy_url
from xgbops.data import labels, load_splits
from xgbops.model import Featurizer
from xgbops.tracking import Tracker
from xgbops.fitting import features_of

log = structlog.get_logger(__name__)

#: The study attribute naming the MLflow run that holds the trials: a resumed study reopens it.
PARENT_RUN_ATTR = "mlflow_parent_run_id"
#: MLflow's tag naming a nested run's parent (the UI nests runs by it).
MLFLOW_PARENT_TAG = "mlflow.parentRunId"
#: Trial states that count towards the study's trial budget.
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)

#: Called after each trial this process finishes with (trials counted, budget, best value).
ProgressCallback = Callable[[int, int, float | None], None]


class TuneError(XgbopsError):
    """The study cannot run (no search space, no finished trial); the message says why."""


@dataclass
class TuneResult:
    """What a study produced, for the CLI and the benchmark."""

    study_name: str
    storage: str
    parent_run_id: str
    metric: str
    best_value: float
    best_params: dict[str, Any]
    best_trial: int
    #: Trials per state (``COMPLETE``, ``PRUNED``, ``FAIL``...) in the whole study.
    states: dict[str, int]
    #: The study's first trial: train.yaml's hand-set values, when they lie in the space.
    hand_set_value: float | None
    params_file: Path
    report_dir: Path


def storage_url(settings: Settings) -> str:
    """The study's storage: ``tune.storage``, else SQLite ``optuna.db`` in the state folder."""
    configured = settings.train.tune.storage
    if configured:
        return to_sqlalchemy_url(configured)
    return f"sqlite:///{settings.state_path / 'optuna.db'}"


def study_name(settings: Settings) -> str:
    """``tune.study_name``, else the registered model's name."""
    return settings.train.tune.study_name or settings.model_name


def threads_per_worker(workers: int) -> int:
    """XGBoost threads for each of ``workers`` processes, so together they use each core once."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // workers)


def open_study(settings: Settings, seed_offset: int = 0) -> optuna.Study:
    """Create the study, or load it when the storage already has one of that name.

    A new study's first trial is train.yaml's hand-set parameters (those inside the space),
    so the result is never worse than them on the validation split.
    """
    config = settings.train.tune
    if config.storage is None:
        settings.state_path.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = storage_url(settings)
    engine: dict[str, Any] = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.RDBStorage(
            url,
            engine_kwargs=engine,
            heartbeat_interval=config.heartbeat_seconds,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(1),
        )
    study = optuna.create_study(
        storage=storage,
        study_name=study_name(settings),
        direction="maximize" if config.maximize else "minimize",
        sampler=optuna.samplers.TPESampler(seed=settings.train.seed + seed_offset),
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=5, n_warmup_steps=config.pruning_warmup_rounds
        ),
        load_if_exists=True,
    )
    if not study.trials:
        hand_set = _hand_set(settings.train.params, config.space)
        if hand_set:
            study.enqueue_trial(hand_set, user_attrs={"hand_set": True})
    return study


def _hand_set(params: dict[str, Any], space: dict[str, SearchDimension]) -> dict[str, Any]:
    """train.yaml's values of the searched parameters, if each lies inside its range."""
    chosen = {}
    for name, dim in space.items():
        value = params.get(name)
        if value is None:
            return {}
        inside = (
            value in (dim.choices or [])
            if dim.type == "categorical"
            else dim.low is not None and dim.high is not None and dim.low <= value <= dim.high
        )
        if not inside:
            return {}
        chosen[name] = value
    return chosen


def counted(study: optuna.Study) -> int:
    """Trials that count towards the budget: finished or pruned."""
    return len(study.get_trials(deepcopy=False, states=COUNTED))


class _Pruning(xgb.callback.TrainingCallback):
    """Optuna pruning on XGBoost's evaluation log: reports the validation metric after each
    round and stops training when the pruner gives the trial up (written here rather than
    taken from optuna-integration, whose callback needs the full ``xgboost`` wheel)."""

    def __init__(self, trial: optuna.Trial, metric: str) -> None:
        super().__init__()
        self.trial, self.metric, self.pruned = trial, metric, False

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        self.trial.report(float(evals_log["validation"][self.metric][-1]), epoch)
        self.pruned = self.trial.should_prune()
        return self.pruned


def _suggest(trial: optuna.Trial, space: dict[str, SearchDimension]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, dim in space.items():
        if dim.type == "categorical":
            values[name] = trial.suggest_categorical(name, dim.choices or [])
        elif dim.type == "int":
            low, high = int(dim.low or 0), int(dim.high or 0)
            values[name] = trial.suggest_int(name, low, high, log=dim.log)
        else:
            values[name] = trial.suggest_float(
                name, float(dim.low or 0), float(dim.high or 0), log=dim.log
            )
    return values


@dataclass
class _Data:
    train: xgb.DMatrix
    validation: xgb.DMatrix


def _load_data(settings: Settings) -> _Data:
    """The train and validation splits exactly as ``train`` splits them, featurised once."""
    dataset = settings.dataset
    splits = load_splits(settings)
    featurizer = Featurizer.from_dataset(dataset)
    names = featurizer.output_names

    def matrix(frame: Any) -> xgb.DMatrix:
        return xgb.DMatrix(
            features_of(frame, featurizer), label=labels(frame, dataset), feature_names=names
        )

    return _Data(matrix(splits.train), matrix(splits.validation))


class _Objective:
    """One trial: sample, train with early stopping and pruning, log a nested MLflow run."""

    def __init__(self, settings: Settings, parent_run_id: str, nthread: int) -> None:
        self.settings, self.parent_run_id, self.nthread = settings, parent_run_id, nthread
        self.data = _load_data(settings)
        self.tracker = Tracker(settings)

    def __call__(self, trial: optuna.Trial) -> float:
        config = self.settings.train
        metric = config.tune.metric
        sampled = _suggest(trial, config.tune.space)
        others = [m for m in _as_list(config.params.get("eval_metric")) if m != metric]
        params = {
            **config.params,
            "seed": config.seed,
            **sampled,
            "nthread": self.nthread,
            "eval_metric": [*others, metric],  # the last one is the one early stopping uses
        }
        pruning = _Pruning(trial, metric)
        tags = {"optuna.study": study_name(self.settings), "optuna.trial": str(trial.number)}
        with self.tracker.child_run(self.parent_run_id, f"trial-{trial.number}", tags) as run_id:
            self.tracker.log_params(run_id, {**sampled, "nthread": self.nthread})
            history: dict[str, dict[str, list[float]]] = {}
            booster = xgb.train(
                params,
                self.data.train,
                num_boost_round=config.num_boost_round,
                evals=[(self.data.validation, "validation")],
                early_stopping_rounds=config.early_stopping_rounds,
                evals_result=history,
                verbose_eval=False,
                callbacks=[pruning],
            )
            curve = history["validation"][metric]
            best = int(getattr(booster, "best_iteration", len(curve) - 1))
            value = float(curve[best])
            state = "PRUNED" if pruning.pruned else "COMPLETE"
            self.tracker.log_metrics(
                run_id,
                {f"validation_{metric}": value, "best_iteration": best, "rounds": len(curve)},
            )
            self.tracker.set_tags(run_id, {"optuna.state": state})
        trial.set_user_attr("mlflow_run_id", run_id)
        trial.set_user_attr("process", f"{socket.gethostname()}:{os.getpid()}")
        trial.set_user_attr("best_iteration", best)
        if pruning.pruned:
            raise optuna.TrialPruned(f"pruned at round {len(curve)}")
        return value


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def run_worker(
    settings: Settings,
    parent_run_id: str,
    *,
    trials: int,
    deadline: float | None,
    nthread: int,
    seed_offset: int = 0,
    on_trial: ProgressCallback | None = None,
) -> None:
    """Run trials of the study until it counts ``trials`` or ``deadline`` (``time.time()``).

    The main process runs one; :func:`tune` starts the others as processes of their own.
    """
    study = open_study(settings, seed_offset)
    if counted(study) >= trials:
        return
    objective = _Objective(settings, parent_run_id, nthread)

    def after_trial(study: optuna.Study, _trial: optuna.trial.FrozenTrial) -> None:
        done = counted(study)
        if done >= trials or (deadline is not None and time.time() >= deadline):
            study.stop()
        if on_trial is not None:
            on_trial(done, trials, _best_value(study))

    timeout = None if deadline is None else max(0.0, deadline - time.time())
    study.optimize(objective, timeout=timeout, callbacks=[after_trial], gc_after_trial=False)


def _best_value(study: optuna.Study) -> float | None:
    try:
        return float(study.best_value)
    except ValueError:  # no finished trial yet
        return None


def tune(
    settings: Settings,
    *,
    trials: int | None = None,
    timeout: float | None = None,
    workers: int | None = None,
    nthread: int | None = None,
    on_trial: ProgressCallback | None = None,
) -> TuneResult:
    """Run (or resume) the study, write the best parameters, log the summary.

    Args:
        settings: the loaded settings; ``train.tune`` holds the space and the defaults.
        trials: trials the study should hold when done (finished or pruned); a resumed
            study runs only the missing ones (each extra worker may add one more).
        timeout: seconds after which no new trial starts.
        workers: processes sharing the study; XGBoost threads are split between them.
        nthread: XGBoost threads per worker instead (the benchmark compares the two).
        on_trial: progress callback, called after each trial of this process.

    Raises:
        TuneError: no search space, or no trial finished.
    """
    config = settings.train.tune
    if not config.space:
        raise TuneError(f"{settings.train_config}: tune.space declares no parameter to search")
    if settings.train.tuned_params is None:
        raise TuneError(f"{settings.train_config}: set tuned_params, the file tune writes")
    trials = trials or config.trials
    if timeout is None and config.timeout is not None:
        timeout = config.timeout.total_seconds()
    deadline = None if timeout is None else time.time() + timeout
    study = open_study(settings)
    tracker = Tracker(settings)
    name, storage = study_name(settings), redact_uri(storage_url(settings))
    resumed = study.user_attrs.get(PARENT_RUN_ATTR)
    tags = {"optuna.study": name, "optuna.storage": storage}
    if settings.engine != "local":
        tags["xgbops.engine"] = settings.engine
    with tracker.run(f"tune-{name}", tags, run_id=resumed) as parent_run_id:
        study.set_user_attr(PARENT_RUN_ATTR, parent_run_id)
        if settings.engine == "local":
            workers = workers or config.workers
            log.info("tune.started", study=name, storage=storage, trials=trials, workers=workers)
            _tune_in_processes(
                settings,
                parent_run_id,
                trials,
                deadline,
                workers,
                nthread or threads_per_worker(workers),
                on_trial,
            )
        else:
            _tune_on_cluster(settings, parent_run_id, trials, deadline, workers, on_trial)
        result = _summarise(settings, tracker, open_study(settings), parent_run_id)
    log.info("tune.finished", study=name, best=result.best_value, **result.states)
    return result


def _tune_in_processes(  # pylint: disable=too-many-arguments,too-many-positional-arguments
    settings: Settings,
    parent_run_id: str,
    trials: int,
    deadline: float | None,
    workers: int,
    nthread: int,
    on_trial: ProgressCallback | None,
) -> None:
    """Run the study's trials in this process and ``workers - 1`` spawned ones (local engine)."""
    context = multiprocessing.get_context("spawn")
    others = [
        context.Process(
            target=run_worker,
            args=(settings, parent_run_id),
            kwargs={
                "trials": trials,
                "deadline": deadline,
                "nthread": nthread,
                "seed_offset": index,
            },
            daemon=True,
        )
        for index in range(1, workers)
    ]
    for process in others:
        process.start()
    run_worker(
        settings,
        parent_run_id,
        trials=trials,
        deadline=deadline,
        nthread=nthread,
        on_trial=on_trial,
    )
    for process in others:
        process.join()
        if process.exitcode:
            log.warning("tune.worker_failed", pid=process.pid, exitcode=process.exitcode)


def _tune_on_cluster(  # pylint: disable=too-many-arguments,too-many-positional-arguments
    settings: Settings,
    parent_run_id: str,
    trials: int,
    deadline: float | None,
    workers: int | None,
    on_trial: ProgressCallback | None,
) -> None:
    """Run the study's trials as tasks of the engine's Dask cluster (``dask`` or ``dask-local``).

    One task per worker (or ``workers`` tasks), each a :func:`run_worker` on the shared study
    with the worker's threads for XGBoost: Optuna's own way to spread a study over machines.
    The study's storage and the MLflow store must be reachable from the workers (PostgreSQL
    and an MLflow server on a real cluster; the embedded files do on one machine). Progress is
    read from the study while the tasks run; a task that fails fails the tuning.

    Raises:
        TuneError: a task failed (its exception is chained).
    """
    # pylint: disable=import-outside-toplevel  # Dask only for the cluster engines
    from xgbops.distributed import connect

    with connect(settings) as client:
        cluster = client.scheduler_info()["workers"]
        threads = min((w["nthreads"] for w in cluster.values()), default=1)
        tasks = workers or max(1, len(cluster))
        log.info(
            "tune.started",
            study=study_name(settings),
            trials=trials,
            engine=settings.engine,
            tasks=tasks,
            threads=threads,
        )
        futures = [
            client.submit(
                run_worker,
                settings,
                parent_run_id,
                trials=trials,
                deadline=deadline,
                nthread=threads,
                seed_offset=index,
                pure=False,
                key=f"tune-{study_name(settings)}-{index}-{time.time_ns()}",
            )
            for index in range(tasks)
        ]
        study = open_study(settings)
        while not all(f.done() for f in futures):  # type: ignore[no-untyped-call]
            time.sleep(1.0)
            if on_trial is not None:
                on_trial(counted(study), trials, _best_value(study))
        failed = [f for f in futures if f.status != "finished"]
        if failed:
            problem = failed[0].exception()  # type: ignore[no-untyped-call]
            raise TuneError(f"a tuning task failed on the cluster: {problem!r}")
        if on_trial is not None:
            on_trial(counted(study), trials, _best_value(study))


def _summarise(
    settings: Settings, tracker: Tracker, study: optuna.Study, parent_run_id: str
) -> TuneResult:
    """Write the best parameters and the plots; log both to the parent run."""
    metric = settings.train.tune.metric
    try:
        best = study.best_trial
    except ValueError as exc:
        raise TuneError(f"study {study.study_name!r} has no finished trial yet") from exc
    trials = study.get_trials(deepcopy=False)
    _end_orphans(tracker, parent_run_id, trials)
    states: dict[str, int] = {}
    for trial in trials:
        states[trial.state.name] = states.get(trial.state.name, 0) + 1
    hand_set = next(
        (t.value for t in trials if t.user_attrs.get("hand_set") and t.value is not None), None
    )
    report_dir = settings.reports_path / "tuning"
    report_dir.mkdir(parents=True, exist_ok=True)
    params_file = settings.resolve(settings.train.tuned_params or Path("config/tuned.yaml"))
    _write_params(params_file, study, best, metric)
    _plot_history(study, metric, report_dir / "optimization_history.png")
    importances = _importances(study)
    if importances:
        _plot_importances(importances, report_dir / "param_importances.png")
    tracker.log_params(parent_run_id, {f"best_{k}": v for k, v in best.params.items()})
    summary = {
        f"best_validation_{metric}": float(best.value or math.nan),
        "best_trial": best.number,
    }
    summary.update({f"trials_{state.lower()}": count for state, count in states.items()})
    if hand_set is not None:
        summary[f"hand_set_validation_{metric}"] = float(hand_set)
    tracker.log_metrics(parent_run_id, summary)
    for trial in trials:
        if trial.state == TrialState.COMPLETE and trial.value is not None:
            tracker.log_metrics(
                parent_run_id, {f"trial_validation_{metric}": trial.value}, trial.number
            )
    (report_dir / params_file.name).write_text(params_file.read_text(encoding="utf-8"), "utf-8")
    tracker.log_artifacts(parent_run_id, report_dir, "tuning")
    return TuneResult(
        study_name=study.study_name,
        storage=redact_uri(storage_url(settings)),
        parent_run_id=parent_run_id,
        metric=metric,
        best_value=float(best.value or math.nan),
        best_params=dict(best.params),
        best_trial=best.number,
        states=states,
        hand_set_value=hand_set,
        params_file=params_file,
        report_dir=report_dir,
    )


def _end_orphans(
    tracker: Tracker, parent_run_id: str, trials: list[optuna.trial.FrozenTrial]
) -> None:
    """End as KILLED the trial runs a dead process left RUNNING (their trial is now failed)."""
    failed = {str(t.number) for t in trials if t.state == TrialState.FAIL}
    if not failed:
        return
    for run in tracker.runs():
        if (
            run.status == "RUNNING"
            and run.tags.get(MLFLOW_PARENT_TAG) == parent_run_id
            and run.tags.get("optuna.trial") in failed
        ):
            tracker.end_run(run.run_id, "KILLED")


def _write_params(
    path: Path, study: optuna.Study, best: optuna.trial.FrozenTrial, metric: str
) -> None:
    header = (
        f"# Written by `xgbops tune` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: study "
        f"{study.study_name!r}, trial {best.number},\n# validation {metric} {best.value:.5f}. "
        "Its params override train.yaml's params (see tuned_params there).\n"
    )
    body = yaml.safe_dump({"params": dict(best.params)}, sort_keys=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(header + body, encoding="utf-8")
    temporary.replace(path)


def _importances(study: optuna.Study) -> dict[str, float]:
    """Parameter importances (fANOVA), or none while fewer than two trials finished."""
    if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < 2:
        return {}
    try:
        return dict(optuna.importance.get_param_importances(study))
    except (ValueError, RuntimeError) as exc:  # e.g. every trial sampled the same values
        log.warning("tune.no_importances", error=str(exc))
        return {}


def _plot_history(study: optuna.Study, metric: str, path: Path) -> Figure:
    finished = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.value is not None
    ]
    numbers = [t.number for t in finished]
    values = [float(t.value or 0.0) for t in finished]
    pick = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
    best = [pick(values[: i + 1]) for i in range(len(values))]
    fig = Figure(figsize=(7, 4))
    axis = fig.add_subplot(1, 1, 1)
    axis.scatter(numbers, values, s=14, label="trial")
    axis.step(numbers, best, where="post", color="tab:red", label="best so far")
    axis.set_xlabel("trial")
    axis.set_ylabel(f"validation {metric}")
    axis.set_title(f"Optimisation history: {study.study_name}")
    axis.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return fig


def _plot_importances(importances: dict[str, float], path: Path) -> Figure:
    names = list(importances)[::-1]
    fig = Figure(figsize=(6, 0.5 * len(names) + 1.5))
    axis = fig.add_subplot(1, 1, 1)
    axis.barh(names, [importances[n] for n in names])
    axis.set_xlabel("importance (fANOVA)")
    axis.set_title("Parameter importances")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return fig
