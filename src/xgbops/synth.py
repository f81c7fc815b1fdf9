"""Synthetic data on demand: a partitioned Parquet table that follows the dataset config.

The scale tests and the benchmark need tables of 10^5 to 10^7 rows without a download. Each
partition is drawn from its own seeded generator, so a table is reproducible and any one
partition can be regenerated alone. Values respect the config (types, ranges, whole numbers,
categories, missing values only where allowed); the target depends on the features through a
fixed random linear score, so a model has something to learn and its holdout AUC means something.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xgbops.config import CategoricalFeature, DatasetConfig, NumericFeature

#: Rows per Parquet file unless told otherwise (about 15 MB in memory for the churn config).
DEFAULT_PARTITION_ROWS = 250_000
#: Share of missing values drawn in a column the config allows to be missing.
MISSING_RATE = 0.02
#: Spread of the hidden weights: strong enough to learn, weak enough not to be trivial.
_WEIGHT = 0.5
#: Width of a numeric feature's range when the config leaves a side open.
_OPEN_RANGE = 1000.0


@dataclass(frozen=True)
class SynthResult:
    """Where the table was written and what it holds."""

    directory: Path
    rows: int
    partitions: int
    positive_rate: float


@dataclass(frozen=True)
class _Signal:
    """The hidden model the target is drawn from: a weight per numeric feature, an effect per
    category, and the intercept that puts the positive rate inside the configured band."""

    numeric: dict[str, float]
    categorical: dict[str, np.ndarray]
    frequencies: dict[str, np.ndarray]
    intercept: float


def synthesize(
    dataset: DatasetConfig,
    rows: int,
    out: Path,
    *,
    seed: int = 0,
    partition_rows: int = DEFAULT_PARTITION_ROWS,
) -> SynthResult:
    """Write ``rows`` synthetic rows as ``out/part-NNNNN.parquet``.

    Args:
        dataset: the config the table follows.
        rows: how many rows in all.
        out: the folder (created; Parquet files already in it are replaced).
        seed: the table's seed; the same seed gives the same table.
        partition_rows: rows per file.

    Raises:
        ValueError: ``rows`` or ``partition_rows`` is not positive.
    """
    if rows < 1 or partition_rows < 1:
        raise ValueError("rows and partition_rows must be positive")
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("part-*.parquet"):
        stale.unlink()
    signal = _signal(dataset, seed)
    positives, count = 0, 0
    for index, start in enumerate(range(0, rows, partition_rows)):
        size = min(partition_rows, rows - start)
        frame = synth_partition(dataset, signal, size, np.random.default_rng([seed, index + 1]))
        frame.to_parquet(out / f"part-{index:05d}.parquet", index=False)
        positives += int((frame[dataset.target.column] == dataset.target.positive).sum())
        count = index + 1
    return SynthResult(out, rows, count, positives / rows)


def synth_partition(
    dataset: DatasetConfig, signal: _Signal, size: int, rng: np.random.Generator
) -> pd.DataFrame:
    """One partition: features as the config types them, target labels as text."""
    columns: dict[str, Any] = {}
    score = np.full(size, signal.intercept)
    for feature in dataset.features:
        values: Any
        if isinstance(feature, CategoricalFeature):
            codes = rng.choice(
                len(feature.categories), size=size, p=signal.frequencies[feature.name]
            )
            score += signal.categorical[feature.name][codes]
            values = pd.array(np.asarray(feature.categories, dtype=object)[codes], dtype="string")
        else:
            unit = rng.beta(2.0, 5.0, size=size)  # skewed, like counts and amounts often are
            score += signal.numeric[feature.name] * (unit - 2.0 / 7.0) * 4.0
            values = _scale(feature, unit)
        if feature.nullable:
            values = _with_missing(values, rng)
        columns[feature.name] = values
    probability = 1.0 / (1.0 + np.exp(-score))
    positive = rng.random(size) < probability
    target = dataset.target
    columns[target.column] = pd.array(
        np.where(positive, target.positive, target.negative), dtype="string"
    )
    return pd.DataFrame(columns)


def _signal(dataset: DatasetConfig, seed: int) -> _Signal:
    rng = np.random.default_rng([seed, 0])
    numeric = {
        f.name: float(rng.normal(0.0, _WEIGHT))
        for f in dataset.features
        if isinstance(f, NumericFeature)
    }
    categorical, frequencies = {}, {}
    for feature in dataset.features:
        if isinstance(feature, CategoricalFeature):
            count = len(feature.categories)
            frequencies[feature.name] = rng.dirichlet(np.full(count, 2.0))
            effects = rng.normal(0.0, _WEIGHT, size=count)
            # Centred on the average row, so the intercept alone sets the positive rate.
            categorical[feature.name] = effects - effects @ frequencies[feature.name]
    checks = dataset.checks
    rate = (checks.min_positive_rate + checks.max_positive_rate) / 2
    return _Signal(numeric, categorical, frequencies, float(np.log(rate / (1 - rate))))


def _scale(feature: NumericFeature, unit: np.ndarray) -> np.ndarray:
    """Map draws in [0, 1] onto the feature's range, whole numbers where the config says so."""
    low = feature.min if feature.min is not None else (feature.max or 0.0) - _OPEN_RANGE
    high = feature.max if feature.max is not None else low + _OPEN_RANGE
    values = low + unit * (high - low)
    if feature.integer:
        return np.clip(np.round(values), np.ceil(low), np.floor(high))
    return np.round(values, 2)


def _with_missing(values: Any, rng: np.random.Generator) -> Any:
    series = pd.Series(values)
    series[rng.random(len(series)) < MISSING_RATE] = None
    return series.to_numpy() if not isinstance(series.dtype, pd.StringDtype) else series.array
