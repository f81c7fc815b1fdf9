# mypy: disallow-untyped-calls=False
# (dask and distributed ship no type hints for these calls)
"""Partitioned data for the Dask engines: read it, check each partition, split by a hash.

A table too big for one pandas frame is read as a Dask dataframe (a folder, a glob or an fsspec
URL of Parquet or CSV files). Every partition is checked by the very checks of
:func:`xgbops.data.check_data` (the config's schema), each failure named with its partition and
rows. Rows are split by a seeded hash of their values (or of a key column), so a row's split does
not depend on how the table is partitioned, nor on which engine reads it. Knows nothing of models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.dataframe as dd
from dask.base import compute
from dask.delayed import delayed
import numpy as np
import pandas as pd

from xgbops.config import DatasetConfig, Split
from xgbops.data import DataReport, Issue, check_data, labels

#: The three parts of a split, as :func:`hash_split` names them.
PARTS = ("train", "validation", "holdout")
#: Dataset-level checks judged on the whole table, not on each partition.
_WHOLE_TABLE_CHECKS = {"target_imbalance", "empty"}
_HEADER_LINES = 1


@dataclass
class PartitionedReport:
    """The data check of a partitioned table, with what the training run logs about it."""

    report: DataReport
    partitions: int
    #: Rows of each part of the split (``train``, ``validation``, ``holdout``).
    split_rows: dict[str, int] = field(default_factory=dict)


def text_columns(dataset: DatasetConfig) -> list[str]:
    """Columns read as text: the categorical features and the target."""
    return [f.name for f in dataset.features if f.type == "categorical"] + [dataset.target.column]


def read_partitioned(source: str, dataset: DatasetConfig, csv_blocksize: str) -> dd.DataFrame:
    """A folder, glob or URL of Parquet or CSV files as a Dask dataframe (nothing read yet).

    A folder is read as the Parquet files in it, or its CSV files when it holds no Parquet.
    """
    path = source
    if "://" not in source and Path(source).is_dir():
        folder = Path(source)
        parquet = any(folder.glob("*.parquet"))
        path = str(folder / ("*.parquet" if parquet else "*.csv"))
    if path.endswith((".csv", ".csv.gz")):
        text = {name: "string" for name in text_columns(dataset)}
        frame: dd.DataFrame = dd.read_csv(
            path, dtype=text, blocksize=csv_blocksize, assume_missing=True
        )
        return frame
    table: dd.DataFrame = dd.read_parquet(path)
    return table


def typed(frame: pd.DataFrame, dataset: DatasetConfig) -> pd.DataFrame:
    """The config's columns with the types training expects: numbers as float64, text as string.

    Call it on checked data only (every value is then known to convert).
    """
    text = set(text_columns(dataset))
    columns = dataset.feature_names + [dataset.target.column]
    return frame[columns].astype({n: "string" if n in text else "float64" for n in columns})


def hash_split(
    frame: pd.DataFrame, dataset: DatasetConfig, split: Split, seed: int, key: str | None = None
) -> pd.Series:
    """Each row's part (``train``, ``validation`` or ``holdout``) from a seeded hash of its values.

    The same row gets the same part in any partition and with any engine. Unlike the local
    engine's split it is not stratified: on the tables this engine is for, the hash keeps the
    class shares within a fraction of a percent anyway.

    Args:
        frame: typed rows (see :func:`typed`).
        key: a column whose value identifies a row; None hashes every feature and the target.
    """
    columns = [key] if key else dataset.feature_names + [dataset.target.column]
    text = set(text_columns(dataset))
    values = frame[columns].astype({n: object if n in text else "float64" for n in columns})
    hashed = pd.util.hash_pandas_object(values, index=False, hash_key=_hash_key(seed))
    unit = hashed.to_numpy(dtype=np.uint64) / float(2**64)
    holdout = split.holdout_size
    validation = holdout + (1 - holdout) * split.validation_size
    parts = np.where(unit < holdout, "holdout", np.where(unit < validation, "validation", "train"))
    return pd.Series(parts, index=frame.index, name="part")


def sample_mask(
    frame: pd.DataFrame, dataset: DatasetConfig, seed: int, share: float, key: str | None
) -> pd.Series:
    """A reproducible subset of about ``share`` of the rows, independent of the split's hash."""
    columns = [key] if key else dataset.feature_names + [dataset.target.column]
    text = set(text_columns(dataset))
    values = frame[columns].astype({n: object if n in text else "float64" for n in columns})
    hashed = pd.util.hash_pandas_object(values, index=False, hash_key=_hash_key(seed + 1))
    return pd.Series(hashed.to_numpy(dtype=np.uint64) / float(2**64) < share, index=frame.index)


def check_partitions(
    frame: dd.DataFrame,
    dataset: DatasetConfig,
    source: str,
    split: Split,
    seed: int,
    key: str | None = None,
) -> PartitionedReport:
    """Check every partition against the dataset config (on the cluster) and count the split.

    Returns:
        One report for the table: each partition's failures, named with the partition and its
        rows (0-based within the partition); the class balance judged on the whole table.
    """
    tasks = [
        delayed(_check_partition)(part, index, dataset, split, seed, key)
        for index, part in enumerate(frame.to_delayed())
    ]
    results: tuple[dict[str, Any], ...] = compute(*tasks)
    rows = sum(r["rows"] for r in results)
    positives = sum(r["positives"] for r in results)
    report = DataReport(
        dataset=dataset.name,
        path=source,
        sha256="",
        rows=rows,
        columns=results[0]["columns"] if results else 0,
        positive_rate=positives / rows if rows else None,
    )
    for result in results:
        report.issues.extend(result["issues"])
        report.warnings.extend(w for w in result["warnings"] if w not in report.warnings)
    checks = dataset.checks
    if not rows:
        report.issues.append(Issue("empty", "the table has no rows"))
    elif not checks.min_positive_rate <= positives / rows <= checks.max_positive_rate:
        reason = (
            f"positive rate {positives / rows:.3f} is outside the allowed band "
            f"[{checks.min_positive_rate}, {checks.max_positive_rate}]"
        )
        report.issues.append(
            Issue("target_imbalance", reason, column=dataset.target.column, count=1)
        )
    split_rows = {part: sum(r["split"].get(part, 0) for r in results) for part in PARTS}
    return PartitionedReport(report, len(results), split_rows)


def _check_partition(
    part: pd.DataFrame,
    index: int,
    dataset: DatasetConfig,
    split: Split,
    seed: int,
    key: str | None,
) -> dict[str, Any]:
    """One partition's check (run on a worker): its issues, rows, positives and split counts."""
    part = part.reset_index(drop=True)
    report = check_data(part, dataset, Path(f"partition-{index}"))
    issues = [
        _in_partition(issue, index)
        for issue in report.issues
        if issue.check not in _WHOLE_TABLE_CHECKS
    ]
    counts: dict[str, int] = {}
    positives = 0
    if not issues and len(part):
        checked = typed(part, dataset)
        positives = int(labels(checked, dataset).sum())
        parts = hash_split(checked, dataset, split, seed, key)
        counts = {str(k): int(v) for k, v in parts.value_counts().items()}
    return {
        "rows": len(part),
        "columns": part.shape[1],
        "positives": positives,
        "issues": issues,
        "warnings": report.warnings,
        "split": counts,
    }


def _in_partition(issue: Issue, index: int) -> Issue:
    rows = [line - 1 - _HEADER_LINES for line in issue.lines]
    where = f"partition {index}" + (f", rows {', '.join(map(str, rows))}" if rows else "")
    return Issue(
        check=issue.check,
        reason=f"{issue.reason} [{where}]",
        column=issue.column,
        count=issue.count,
        values=issue.values,
    )


def _hash_key(seed: int) -> str:
    """pandas' hash key: exactly 16 characters, from the seed."""
    return f"{seed % 10**16:016d}"
