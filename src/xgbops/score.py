# mypy: disallow-untyped-calls=False
# (dask and distributed ship no type hints for these calls)
"""Batch scoring: a whole table scored by a registered model, written as Parquet partitions.

The local engine streams a CSV (or a folder of Parquet files) through one process a chunk at a
time; the Dask engines score every partition on the cluster. Both featurise with the model's own
featuriser and call the same booster as :class:`xgbops.predict.Predictor`, so each row's
probability is the one the API would answer. Each output row carries the model version and the
run id that scored it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from xgbops.champion import CHAMPION_ALIAS
from xgbops.compiled import compile_into
from xgbops.config import Settings
from xgbops.model import Model
from xgbops.partitions import read_partitioned, text_columns
from xgbops.tracking import Tracker

#: Rows per chunk (and output file) when the local engine streams a CSV.
CSV_CHUNK_ROWS = 200_000

#: Called after each written partition with (partitions done, partitions in all or None).
PartitionCallback = Callable[[int, "int | None"], None]


@dataclass(frozen=True)
class ScoreResult:
    """What was scored, by which model, and where the partitions are."""

    output: str
    rows: int
    partitions: int
    version: str
    run_id: str
    seconds: float


def score_table(
    settings: Settings,
    source: str,
    output: str | Path,
    *,
    version: str | None = None,
    on_partition: PartitionCallback | None = None,
) -> ScoreResult:
    """Score every row of ``source`` with the champion (or ``version``), on the settings' engine.

    Args:
        source: a CSV file, a folder or glob of Parquet/CSV files, or an fsspec URL.
        output: the folder (or URL) that receives ``part-NNNNN.parquet`` files: the input
            columns plus ``probability``, ``label``, ``model_version`` and ``run_id``.

    Raises:
        xgbops.tracking.RegistryError: no champion (or no such version).
        xgbops.distributed.ClusterError: the cluster cannot be reached.
    """
    started = time.perf_counter()
    tracker = Tracker(settings)
    alias = None if version else CHAMPION_ALIAS
    info = tracker.version(settings.model_name, version=version, alias=alias)
    files = tracker.download_model(settings.model_name, version=info.version)
    if settings.compiled_cache_path is not None:  # the API's compiled trees, where it can
        compile_into(files, settings.compiled_cache_path)
    model = Model.load(files)
    target = str(output)
    if "://" not in target:
        Path(target).mkdir(parents=True, exist_ok=True)
        for stale in Path(target).glob("part-*.parquet"):
            stale.unlink()
    if settings.engine == "local":
        parts = _local_parts(settings, source)
        total_rows, count = _write_all(
            parts, model, info.version, info.run_id, target, on_partition
        )
    else:
        total_rows, count = _score_on_cluster(
            settings,
            source,
            model,
            target,
            version=info.version,
            run_id=info.run_id,
            on_partition=on_partition,
        )
    return ScoreResult(
        target, total_rows, count, info.version, info.run_id, time.perf_counter() - started
    )


def score_frame(model: Model, frame: pd.DataFrame, version: str, run_id: str) -> pd.DataFrame:
    """``frame`` with the model's probability and label, the version and the run id added."""
    columns = {
        column.name: (
            frame[column.name].to_numpy(dtype=object)
            if column.kind == "categorical"
            else pd.to_numeric(frame[column.name]).to_numpy(dtype=np.float64, na_value=np.nan)
        )
        for column in model.featurizer.columns
    }
    probability = model.predict_proba(model.featurizer.transform_columns(columns))
    scored = frame.copy()
    scored["probability"] = probability
    scored["label"] = model.labels(probability)
    scored["model_version"] = version
    scored["run_id"] = run_id
    return scored


def _write_part(  # pylint: disable=too-many-arguments
    frame: pd.DataFrame,
    index: int,
    model: Model,
    version: str,
    run_id: str,
    output: str,
    *,
    threads: int | None = None,
) -> int:
    """Score one partition and write it as ``part-NNNNN.parquet``; returns its rows.

    ``threads``: XGBoost's threads (a Dask worker's own, so that its workers do not each take
    every core of the machine); all the cores by default.
    """
    if threads is not None:
        model.booster.set_param({"nthread": threads})
    scored = score_frame(model, frame.reset_index(drop=True), version, run_id)
    scored.to_parquet(f"{output.rstrip('/')}/part-{index:05d}.parquet", index=False)
    return len(scored)


def _local_parts(settings: Settings, source: str) -> Iterator[pd.DataFrame]:
    """The input a chunk at a time: a CSV in chunks, Parquet one file at a time."""
    path = Path(source)
    if path.is_file() and path.suffix == ".csv":
        text = {name: "string" for name in text_columns(settings.dataset)}
        yield from pd.read_csv(path, dtype=text, chunksize=CSV_CHUNK_ROWS)
        return
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    for file in files:
        yield pd.read_parquet(file)


def _write_all(
    parts: Iterator[pd.DataFrame],
    model: Model,
    version: str,
    run_id: str,
    output: str,
    on_partition: PartitionCallback | None,
) -> tuple[int, int]:
    rows = count = 0
    for index, frame in enumerate(parts):
        rows += _write_part(frame, index, model, version, run_id, output)
        count = index + 1
        if on_partition is not None:
            on_partition(count, None)
    return rows, count


def _score_on_cluster(
    settings: Settings,
    source: str,
    model: Model,
    output: str,
    *,
    version: str,
    run_id: str,
    on_partition: PartitionCallback | None,
) -> tuple[int, int]:
    """Each partition scored and written by a worker; progress as partitions finish."""
    # pylint: disable=import-outside-toplevel  # dask.distributed only for the Dask engines
    from dask.delayed import delayed
    from distributed import as_completed

    from xgbops.distributed import connect

    frame = read_partitioned(source, settings.dataset, settings.dask.csv_blocksize)
    with connect(settings) as client:
        shared = client.scatter(model, broadcast=True)
        threads = min(client.nthreads().values(), default=1)
        tasks = [
            delayed(_write_part)(part, index, shared, version, run_id, output, threads=threads)
            for index, part in enumerate(frame.to_delayed())
        ]
        futures = client.compute(tasks)
        rows = 0
        for done, future in enumerate(as_completed(futures), start=1):
            rows += int(future.result())
            if on_partition is not None:
                on_partition(done, len(futures))
    return rows, len(tasks)
