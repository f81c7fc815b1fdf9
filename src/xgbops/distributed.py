# mypy: disallow-untyped-calls=False
# (dask and distributed ship no type hints for these calls)
"""The Dask engines: train one booster across a Dask cluster with ``xgboost.dask``.

``dask-local`` starts a LocalCluster for the run (workers x threads = the machine's cores);
``dask`` joins the scheduler at ``dask.scheduler_address``. Either way the data is read as
partitions (:mod:`xgbops.partitions`), checked per partition against the dataset config, split
by a hash, featurised by the same :class:`~xgbops.model.Featurizer` and trained with
``xgboost.dask.train`` with early stopping on a distributed validation set. The result is the
same :class:`~xgbops.model.Model` the local engine makes: the engine decides how the data is read
and the booster trained, never what is registered.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import dask.dataframe as dd
import numpy as np
import pandas as pd
import structlog
import xgboost as xgb
import xgboost.dask  # noqa: F401  # pylint: disable=unused-import  # xgb.dask
from distributed import Client, LocalCluster

from xgbops import XgbopsError
from xgbops.config import ConfigError, Settings
from xgbops.data import DataReport, DataValidationError, Splits, labels
from xgbops.model import Featurizer
from xgbops.partitions import (
    PartitionedReport,
    check_partitions,
    hash_split,
    read_partitioned,
    sample_mask,
    typed,
)
from xgbops.fitting import FitResult, RoundCallback, best_model, features_of, training_params

log = structlog.get_logger(__name__)

#: Most holdout rows brought back to the client to evaluate, promote and plot: a reproducible
#: sample of the holdout beyond that (the metrics' error is then well under 0.001).
EVALUATION_ROWS = 200_000
#: Most train rows the baselines are fitted on (a logistic regression needs no more).
BASELINE_ROWS = 100_000
#: Seconds XGBoost's workers wait for each other before a lost worker fails the training.
COLLECTIVE_TIMEOUT = 120
#: Seconds between two looks at the scheduler's workers while training.
WATCH_INTERVAL = 1.0


class ClusterError(XgbopsError):
    """The cluster cannot be reached, or training on it failed (e.g. a worker was lost)."""


@dataclass
class ClusterFit:
    """What the Dask engine hands back to :func:`xgbops.train.train`."""

    fitted: FitResult
    report: DataReport
    #: The evaluated holdout (all of it, or a sample of :data:`EVALUATION_ROWS`), typed.
    holdout: pd.DataFrame
    #: A train sample and the holdout above, for the baselines.
    baseline_splits: Splits
    params: dict[str, Any]


def local_cluster_size(settings: Settings) -> tuple[int, int]:
    """Workers and threads per worker of ``dask-local``: workers x threads = cores."""
    threads = settings.dask.threads_per_worker
    workers = settings.dask.workers or max(1, (os.cpu_count() or 1) // threads)
    return workers, threads


@contextmanager
def connect(settings: Settings) -> Iterator[Client]:
    """A client of the engine's cluster, closed (and a local cluster stopped) on exit.

    Raises:
        ConfigError: engine ``dask`` without a scheduler address.
        ClusterError: the scheduler does not answer within ``dask.connect_timeout``.
    """
    if settings.engine == "dask-local":
        workers, threads = local_cluster_size(settings)
        with (
            LocalCluster(
                n_workers=workers,
                threads_per_worker=threads,
                processes=True,
                dashboard_address=":0",
            ) as cluster,
            Client(cluster) as client,
        ):
            log.info(
                "dask.local_cluster", workers=workers, threads=threads, url=client.dashboard_link
            )
            yield client
        return
    address = settings.dask.scheduler_address
    if not address:
        raise ConfigError("engine dask needs XGBOPS_DASK__SCHEDULER_ADDRESS (tcp://host:8786)")
    try:
        client = Client(address, timeout=settings.dask.connect_timeout)
    except OSError as exc:
        raise ClusterError(f"no Dask scheduler answers at {address} ({exc})") from exc
    with client:
        yield client


def fit_on_cluster(
    settings: Settings, client: Client, on_round: RoundCallback | None = None
) -> ClusterFit:
    """Read, check, split and featurise the partitioned data, and train on the cluster.

    Raises:
        xgbops.data.DataValidationError: a partition failed its checks (each one named).
        ClusterError: training failed on the cluster (a lost worker fails it: nothing is
            returned, so nothing is registered).
    """
    config = settings.train
    split = _split(settings)
    frame, part = split.frame, split.part
    featurizer = Featurizer.from_dataset(settings.dataset)
    dtrain = _matrix(client, frame[part == "train"], featurizer, settings)
    dvalid = _matrix(client, frame[part == "validation"], featurizer, settings, ref=dtrain)
    output = _train_watched(
        client,
        params={"seed": config.seed, **config.params},
        dtrain=dtrain,
        num_boost_round=config.num_boost_round,
        evals=[(dtrain, "train"), (dvalid, "validation")],
        early_stopping_rounds=config.early_stopping_rounds,
        verbose_eval=False,
        coll_cfg=xgb.collective.Config(timeout=COLLECTIVE_TIMEOUT),
    )
    booster: xgb.Booster = output["booster"]
    if on_round is not None:  # rounds run on the workers: report the end only
        on_round(booster.num_boosted_rounds(), config.num_boost_round)
    model, best = best_model(booster, featurizer, settings)
    splits = _evaluated(split, settings)
    return ClusterFit(
        fitted=FitResult(model=model, history=output["history"], best_iteration=best),
        report=split.checked.report,
        holdout=splits.holdout,
        baseline_splits=splits,
        params=_params(settings, client, split.checked, best, len(splits.holdout), split.source),
    )


def evaluation_splits(settings: Settings) -> Splits:
    """The holdout and the baselines' train sample exactly as :func:`fit_on_cluster` evaluates
    them (same hash split, same samples), read on the engine's cluster: what ``xgbops
    evaluate`` and ``xgbops promote`` re-score on.

    Raises:
        xgbops.data.DataValidationError: a partition failed its checks.
        ClusterError: the cluster cannot be reached.
    """
    with connect(settings):
        return _evaluated(_split(settings), settings)


@dataclass
class _Split:
    """The checked, typed table on the cluster and the part (train, validation, holdout) of
    each row."""

    source: str
    checked: PartitionedReport
    frame: dd.DataFrame
    part: Any  #: a dask Series of part names (its == is elementwise, unlike the stubs say)


def _split(settings: Settings) -> _Split:
    dataset, config, options = settings.dataset, settings.train, settings.dask
    source = options.data or str(settings.data_path)
    frame = read_partitioned(source, dataset, options.csv_blocksize)
    checked = check_partitions(frame, dataset, source, config.split, config.seed, options.split_key)
    if not checked.report.passed:
        raise DataValidationError(checked.report)
    frame = frame.map_partitions(typed, dataset)
    part = frame.map_partitions(
        hash_split, dataset, config.split, config.seed, options.split_key, meta=("part", "object")
    )
    return _Split(source, checked, frame, part)


def _evaluated(split: _Split, settings: Settings) -> Splits:
    """The holdout (all of it, or a sample of :data:`EVALUATION_ROWS`) and a train sample of
    :data:`BASELINE_ROWS` for the baselines, brought back to the client."""
    frame, part, rows = split.frame, split.part, split.checked.split_rows
    holdout = _sample(frame[part == "holdout"], settings, rows["holdout"], EVALUATION_ROWS)
    train_sample = _sample(frame[part == "train"], settings, rows["train"], BASELINE_ROWS)
    return Splits(train_sample, holdout.iloc[:0], holdout)


def _train_watched(client: Client, **kwargs: Any) -> dict[str, Any]:
    """``xgboost.dask.train``, failing fast when a worker leaves the cluster meanwhile.

    XGBoost cannot go on without a worker that holds its data, and its dask driver may wait
    for that worker's task forever; so the scheduler is watched, and the loss of any worker
    ends the training with :class:`ClusterError` (closing the client then cancels the rest).
    """
    workers = set(client.scheduler_info(n_workers=-1)["workers"])
    pool = ThreadPoolExecutor(1, thread_name_prefix="xgboost-dask-train")
    running = pool.submit(xgb.dask.train, client, **kwargs)
    pool.shutdown(wait=False)
    while True:
        try:
            output: dict[str, Any] = running.result(timeout=WATCH_INTERVAL)
            return output
        except FutureTimeout:
            lost = workers - set(client.scheduler_info(n_workers=-1)["workers"])
            if lost:
                raise ClusterError(
                    f"worker(s) {', '.join(sorted(lost))} left the Dask cluster during "
                    "training; the run failed and nothing registered"
                ) from None
        except Exception as exc:  # any failure on the cluster: one clear error
            raise ClusterError(
                f"training on the Dask cluster failed, nothing registered: {exc}"
            ) from exc


def _matrix(
    client: Client,
    frame: dd.DataFrame,
    featurizer: Featurizer,
    settings: Settings,
    ref: xgb.dask.DaskQuantileDMatrix | None = None,
) -> xgb.dask.DaskQuantileDMatrix:
    """Featurise each partition with the featuriser, into XGBoost's quantised matrix (the
    float matrix of a partition is freed once binned)."""
    names = featurizer.output_names
    meta = pd.DataFrame({name: np.empty(0, dtype=np.float32) for name in names})
    features = frame.map_partitions(_featurise, featurizer, meta=meta)
    label = frame.map_partitions(labels, settings.dataset, meta=("label", "int64"))
    return xgb.dask.DaskQuantileDMatrix(client, features, label, feature_names=names, ref=ref)


def _featurise(part: pd.DataFrame, featurizer: Featurizer) -> pd.DataFrame:
    matrix = (
        features_of(part, featurizer)
        if len(part)
        else np.empty((0, len(featurizer.output_names)), np.float32)
    )
    return pd.DataFrame(matrix, columns=featurizer.output_names, index=part.index)


def _sample(frame: dd.DataFrame, settings: Settings, rows: int, most: int) -> pd.DataFrame:
    """The rows of ``frame`` as one pandas frame, or a reproducible sample of about ``most``."""
    if rows > most:
        share = most / rows
        config, key = settings.train, settings.dask.split_key
        frame = frame[
            frame.map_partitions(
                sample_mask, settings.dataset, config.seed, share, key, meta=(None, "bool")
            )
        ]
    result: pd.DataFrame = frame.compute()
    return result.reset_index(drop=True)


def _params(
    settings: Settings,
    client: Client,
    checked: PartitionedReport,
    best_iteration: int,
    evaluated: int,
    source: str,
) -> dict[str, Any]:
    """What the run logs: the local engine's parameters plus engine, workers, partitions, rows."""
    workers = client.scheduler_info(n_workers=-1)["workers"]
    return {
        **training_params(settings),
        "dataset_sha256": checked.report.sha256,
        "engine": settings.engine,
        "workers": len(workers),
        "threads": sum(int(w.get("nthreads", 0)) for w in workers.values()),
        "partitions": checked.partitions,
        "rows": checked.report.rows,
        "data_source": source,
        "split": "hash" + (f" of {settings.dask.split_key}" if settings.dask.split_key else ""),
        "rows_train": checked.split_rows["train"],
        "rows_validation": checked.split_rows["validation"],
        "rows_holdout": checked.split_rows["holdout"],
        "rows_evaluated": evaluated,
        "best_iteration": best_iteration,
    }
