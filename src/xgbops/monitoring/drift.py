"""Data drift: how far a window of live inputs (and predicted probabilities) has moved from the
training reference, per feature.

For each feature two measures are computed, because each misleads alone:

- the Population Stability Index (PSI), an effect size: numeric features are cut into the
  reference's quantile bins, categorical ones counted per category, missing values get a bin of
  their own; empty bins are floored at :data:`EPSILON` so the logarithm stays finite;
- a test of "same distribution" from scipy: two-sample Kolmogorov-Smirnov for numeric features,
  chi-square homogeneity for categorical ones.

A feature has drifted when its PSI reaches ``monitoring.drift.psi_threshold`` *and* the test's
p-value, adjusted for the report's other tests (``monitoring.drift.correction``), is below
``monitoring.drift.p_value`` (or no test applies). PSI alone is biased upwards
on small windows with many bins (a 51-category feature over 100 rows scores about 0.5 with no
drift at all); a test alone flags differences too small to matter once windows are large.
The predicted probability is checked the same way, against the reference scored by the same
model version. Nothing here reads files or databases: :mod:`xgbops.monitoring.check` does.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import stats  # type: ignore[import-untyped]  # scipy ships no type hints

from pydantic import BaseModel, Field

from xgbops.config import DatasetConfig, DriftSettings, PValueCorrection
from xgbops.monitoring.events import (
    DriftFeatureEvent,
    DriftReportEvent,
    Event,
    FeatureDrift,
    format_time,
    stable_id,
)

#: Floor of a bin's share in the PSI, so an empty bin does not make it infinite.
EPSILON = 1e-4
#: The name of the predicted-probability row in a report.
PREDICTION_FEATURE = "predicted_probability"
_MISSING = "<missing>"

FeatureType = Literal["numeric", "categorical", "prediction"]
Status = Literal["drift", "no_drift", "insufficient_data"]
#: A test's name, statistic and p-value (all None when no test applies).
_TestResult = tuple[Literal["ks", "chi2"] | None, float | None, float | None]


#: Fewest window rows for which statistics are computed at all (without a verdict below
#: ``DriftSettings.min_samples``): a KS test or a PSI of one or two values says nothing.
MIN_INDICATIVE_ROWS = 5


class DriftReport(BaseModel):
    """A drift check's verdict and per-feature statistics; JSON and text for people."""

    report_id: str
    generated_at: datetime
    model_name: str
    model_versions: list[str]
    window_start: datetime
    window_end: datetime
    reference_rows: int
    window_rows: int
    psi_threshold: float
    p_value_threshold: float
    p_value_correction: PValueCorrection = "none"
    min_samples: int
    features: list[FeatureDrift] = Field(default_factory=list)
    prediction: FeatureDrift | None = None
    notes: list[str] = Field(default_factory=list)

    @property
    def enough_samples(self) -> bool:
        """True when the window holds at least ``min_samples`` predictions."""
        return self.window_rows >= self.min_samples

    @property
    def drifted_features(self) -> list[str]:
        """Names of the drifted features, most shifted (highest PSI) first."""
        drifted = [f for f in self.features if f.drifted]
        return [f.feature for f in sorted(drifted, key=lambda f: -f.psi)]

    @property
    def drift_detected(self) -> bool:
        """The verdict: enough samples, and a feature or the predicted probability drifted."""
        prediction = self.prediction is not None and self.prediction.drifted
        return self.enough_samples and (bool(self.drifted_features) or prediction)

    @property
    def status(self) -> Status:
        """``drift``, ``no_drift`` or ``insufficient_data``."""
        if not self.enough_samples:
            return "insufficient_data"
        return "drift" if self.drift_detected else "no_drift"

    @property
    def window_hours(self) -> float:
        """The window's length in hours."""
        return (self.window_end - self.window_start).total_seconds() / 3600

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form with the verdict first."""
        data = self.model_dump(mode="json")
        for key in ("generated_at", "window_start", "window_end"):
            data[key] = format_time(getattr(self, key))
        return {
            "status": self.status,
            "drift_detected": self.drift_detected,
            "drifted_features": self.drifted_features,
            "window_hours": self.window_hours,
            **data,
        }

    def to_text(self) -> str:
        """A report a person reads: verdict, window, then each feature by decreasing PSI."""
        verdict = {
            "drift": f"DRIFT in {len(self.drifted_features)} feature(s)",
            "no_drift": "no drift",
            "insufficient_data": (
                f"not enough predictions ({self.window_rows} < {self.min_samples})"
            ),
        }[self.status]
        if self.prediction is not None and self.prediction.drifted:
            verdict += " and in the predicted probability"
        lines = [
            f"Drift check: {verdict}",
            f"model: {self.model_name} (versions in the window: "
            f"{', '.join(self.model_versions) or 'none'})",
            f"window: {format_time(self.window_start)} to {format_time(self.window_end)} "
            f"({self.window_hours:g} h, {self.window_rows} predictions); "
            f"reference: {self.reference_rows} training rows",
            f"thresholds: PSI >= {self.psi_threshold:g} and p-value < {self.p_value_threshold:g}"
            f" (p-values adjusted: {self.p_value_correction})",
        ]
        rows = sorted(self.features, key=lambda f: -f.psi)
        if self.prediction is not None:
            rows.insert(0, self.prediction)
        if rows:
            lines.append(
                f"{'feature':<32} {'type':<11} {'PSI':>8} {'test':>5} {'p-value':>10} "
                f"{'adjusted':>10}"
            )
        for row in rows:
            p_values = [
                "n/a" if value is None else f"{value:.3g}"
                for value in (row.p_value, row.adjusted_p_value)
            ]
            mark = "  DRIFT" if row.drifted else ""
            lines.append(
                f"{row.feature:<32} {row.feature_type:<11} {row.psi:>8.4f} "
                f"{row.test or '-':>5} {p_values[0]:>10} {p_values[1]:>10}{mark}"
            )
        lines.extend(f"note: {note}" for note in self.notes)
        return "\n".join(lines) + "\n"

    def write(self, directory: Path, stem: str = "drift") -> list[Path]:
        """Write ``<stem>.json`` and ``<stem>.txt`` into ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        json_path, text_path = directory / f"{stem}.json", directory / f"{stem}.txt"
        json_path.write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")
        text_path.write_text(self.to_text(), encoding="utf-8")
        return [json_path, text_path]

    def events(self) -> list[Event]:
        """The report as monitoring events: one summary and one row per feature."""
        summary = DriftReportEvent(
            timestamp=self.generated_at,
            report_id=self.report_id,
            model_name=self.model_name,
            model_versions=self.model_versions,
            status=self.status,
            drift_detected=self.drift_detected,
            window_hours=self.window_hours,
            window_start=self.window_start,
            window_end=self.window_end,
            reference_rows=self.reference_rows,
            window_rows=self.window_rows,
            features_checked=len(self.features),
            features_drifted=len(self.drifted_features),
            drifted_features=self.drifted_features,
            max_psi=max((f.psi for f in self.features), default=None),
            prediction_psi=None if self.prediction is None else self.prediction.psi,
            prediction_p_value=None if self.prediction is None else self.prediction.p_value,
            prediction_drifted=None if self.prediction is None else self.prediction.drifted,
            psi_threshold=self.psi_threshold,
            p_value_threshold=self.p_value_threshold,
            p_value_correction=self.p_value_correction,
            min_samples=self.min_samples,
        )
        rows = self.features + ([self.prediction] if self.prediction is not None else [])
        return [summary] + [
            DriftFeatureEvent(
                timestamp=self.generated_at,
                report_id=self.report_id,
                model_name=self.model_name,
                **row.model_dump(),
            )
            for row in rows
        ]


def population_stability_index(
    reference_counts: npt.ArrayLike, window_counts: npt.ArrayLike
) -> float:
    """PSI = sum((w - r) * ln(w / r)) over bins, on shares floored at :data:`EPSILON`.

    Args:
        reference_counts: rows per bin in the reference.
        window_counts: rows per bin in the window, same bins.

    Returns:
        0 for identical shares; about 0.1 is a small shift, 0.2 and above a significant one.
    """
    reference = np.asarray(reference_counts, dtype=np.float64)
    window = np.asarray(window_counts, dtype=np.float64)
    ref_share = np.clip(reference / max(reference.sum(), 1.0), EPSILON, None)
    win_share = np.clip(window / max(window.sum(), 1.0), EPSILON, None)
    return float(np.sum((win_share - ref_share) * np.log(win_share / ref_share)))


def numeric_drift(
    name: str,
    reference: npt.ArrayLike,
    window: npt.ArrayLike,
    drift: DriftSettings,
    feature_type: FeatureType = "numeric",
) -> FeatureDrift:
    """PSI on the reference's quantile bins (plus a missing-value bin) and a KS test.

    Args:
        name: the feature's name.
        reference: reference values (NaN = missing).
        window: window values (NaN = missing).
        drift: thresholds and the number of bins.
        feature_type: ``numeric``, or ``prediction`` for the predicted probability.
    """
    ref = np.asarray(reference, dtype=np.float64)
    win = np.asarray(window, dtype=np.float64)
    ref_ok, win_ok = ref[~np.isnan(ref)], win[~np.isnan(win)]
    cuts = np.linspace(0.0, 1.0, drift.bins + 1)[1:-1]
    edges = np.unique(np.quantile(ref_ok, cuts)) if ref_ok.size else np.array([])
    slots = len(edges) + 2  # the bins between the edges, and one for missing values

    def counts(ok: npt.NDArray[np.float64], missing: int) -> npt.NDArray[np.int64]:
        binned = np.bincount(np.searchsorted(edges, ok, side="right"), minlength=slots - 1)
        return np.append(binned, missing)

    psi = population_stability_index(
        counts(ref_ok, ref.size - ref_ok.size), counts(win_ok, win.size - win_ok.size)
    )
    statistic = p_value = None
    if ref_ok.size and win_ok.size:
        result = stats.ks_2samp(ref_ok, win_ok)
        statistic, p_value = float(result.statistic), float(result.pvalue)
    return _verdict(
        name,
        feature_type,
        psi,
        ("ks" if p_value is not None else None, statistic, p_value),
        drift,
        values=(ref, win),
        means=(_mean(ref_ok), _mean(win_ok)),
    )


def categorical_drift(
    name: str,
    reference: Sequence[str | None],
    window: Sequence[str | None],
    categories: Sequence[str],
    drift: DriftSettings,
) -> FeatureDrift:
    """PSI on category shares (unlisted values and missing ones get bins too) and a chi-square
    test of homogeneity on the categories seen on either side.

    Args:
        name: the feature's name.
        reference: reference values (None = missing).
        window: window values (None = missing).
        categories: the configured categories.
        drift: thresholds.
    """
    ref = [_MISSING if v is None else str(v) for v in reference]
    win = [_MISSING if v is None else str(v) for v in window]
    seen = sorted((set(ref) | set(win)) - set(categories) - {_MISSING})
    levels = list(categories) + seen + [_MISSING]
    ref_counts = pd.Series(ref, dtype=object).value_counts().reindex(levels, fill_value=0)
    win_counts = pd.Series(win, dtype=object).value_counts().reindex(levels, fill_value=0)
    table = np.vstack([ref_counts.to_numpy(), win_counts.to_numpy()]).astype(np.int64)
    psi = population_stability_index(table[0], table[1])
    table = table[:, table.sum(axis=0) > 0]
    statistic = p_value = None
    if table.shape[1] >= 2 and table[0].sum() and table[1].sum():
        result = stats.chi2_contingency(table)
        statistic, p_value = float(result.statistic), float(result.pvalue)
    ref_missing = np.array([v == _MISSING for v in ref], dtype=bool)
    win_missing = np.array([v == _MISSING for v in win], dtype=bool)
    return _verdict(
        name,
        "categorical",
        psi,
        ("chi2" if p_value is not None else None, statistic, p_value),
        drift,
        values=(np.where(ref_missing, np.nan, 0.0), np.where(win_missing, np.nan, 0.0)),
        means=(None, None),
    )


def compare(
    reference: pd.DataFrame,
    window: pd.DataFrame,
    dataset: DatasetConfig,
    drift: DriftSettings,
) -> list[FeatureDrift]:
    """Drift of every configured feature between two frames of inputs.

    Args:
        reference: the training reference, one column per feature.
        window: the recent inputs; a feature missing from it counts as all-missing.
        dataset: which columns are features, their types and categories.
        drift: thresholds and bins.
    """
    rows = []
    for feature in dataset.features:
        ref_column = reference[feature.name]
        win_column = (
            window[feature.name]
            if feature.name in window
            else pd.Series([None] * len(window), dtype=object)
        )
        if feature.type == "numeric":
            rows.append(
                numeric_drift(feature.name, _numbers(ref_column), _numbers(win_column), drift)
            )
        else:
            rows.append(
                categorical_drift(
                    feature.name,
                    _labels(ref_column),
                    _labels(win_column),
                    feature.categories,
                    drift,
                )
            )
    return rows


@dataclass(frozen=True)
class Inputs:
    """What :func:`build_report` compares: frames of inputs and, if known, their scores."""

    reference: pd.DataFrame
    window: pd.DataFrame
    reference_scores: npt.NDArray[np.float64] | None = None
    window_scores: npt.NDArray[np.float64] | None = None


def build_report(
    inputs: Inputs,
    dataset: DatasetConfig,
    drift: DriftSettings,
    *,
    model_name: str,
    model_versions: list[str],
    window: tuple[datetime, datetime],
    generated_at: datetime,
) -> DriftReport:
    """Compare the window with the reference and return the report.

    With fewer than ``drift.min_samples`` window rows the report's status is
    ``insufficient_data``: its statistics are computed (from ``MIN_INDICATIVE_ROWS`` rows on)
    for a first look, but no feature is judged drifted. The predicted probability is compared
    only when both score arrays are given.

    Args:
        inputs: the reference and window frames, and their scores if available.
        dataset: the dataset's features.
        drift: thresholds.
        model_name: the model the window's predictions came from.
        model_versions: the versions seen in the window.
        window: its start and end.
        generated_at: when the check ran (the events' timestamp).
    """
    start, end = window
    report = DriftReport(
        report_id=stable_id(model_name, format_time(start), format_time(end)),
        generated_at=generated_at,
        model_name=model_name,
        model_versions=model_versions,
        window_start=start,
        window_end=end,
        reference_rows=len(inputs.reference),
        window_rows=len(inputs.window),
        psi_threshold=drift.psi_threshold,
        p_value_threshold=drift.p_value,
        p_value_correction=drift.correction,
        min_samples=drift.min_samples,
    )
    if report.window_rows < MIN_INDICATIVE_ROWS:
        return report
    report.features = compare(inputs.reference, inputs.window, dataset, drift)
    if inputs.reference_scores is not None and inputs.window_scores is not None:
        report.prediction = numeric_drift(
            PREDICTION_FEATURE, inputs.reference_scores, inputs.window_scores, drift, "prediction"
        )
    report.features, report.prediction = _corrected(report.features, report.prediction, drift)
    if not report.enough_samples:
        # The statistics are shown (a first look after a handful of predictions) but judge
        # nothing: PSI and the tests are unstable on so few rows.
        report.features = [_withheld(row) for row in report.features]
        report.prediction = report.prediction and _withheld(report.prediction)
        report.notes.append(
            f"indicative only: {report.window_rows} predictions, fewer than the "
            f"{report.min_samples} a verdict needs (XGBOPS_MONITORING__DRIFT__MIN_SAMPLES)"
        )
    return report


def adjust_p_values(p_values: Sequence[float], correction: PValueCorrection) -> list[float]:
    """``p_values`` adjusted for being tested together (each compared with the same threshold).

    Bonferroni multiplies by the number of tests; Benjamini-Hochberg is scipy's
    ``false_discovery_control``, which controls the false discovery rate and, when nothing
    drifted at all, the chance of any false alarm.
    """
    if correction == "none" or len(p_values) < 2:
        return list(p_values)
    values = np.asarray(p_values, dtype=np.float64)
    if correction == "bonferroni":
        return [float(v) for v in np.minimum(values * values.size, 1.0)]
    return [float(v) for v in stats.false_discovery_control(values, method="bh")]


def _corrected(
    features: list[FeatureDrift], prediction: FeatureDrift | None, drift: DriftSettings
) -> tuple[list[FeatureDrift], FeatureDrift | None]:
    """Every row's ``test_drifted``/``drifted`` judged again on p-values adjusted together."""
    rows = features + ([prediction] if prediction is not None else [])
    tested = [index for index, row in enumerate(rows) if row.p_value is not None]
    adjusted = adjust_p_values([float(rows[i].p_value or 0.0) for i in tested], drift.correction)
    for index, p_value in zip(tested, adjusted):
        test_drifted = p_value < drift.p_value
        rows[index] = rows[index].model_copy(
            update={
                "adjusted_p_value": p_value,
                "test_drifted": test_drifted,
                "drifted": rows[index].psi_drifted and test_drifted,
            }
        )
    return rows[: len(features)], (rows[-1] if prediction is not None else None)


def _withheld(row: FeatureDrift) -> FeatureDrift:
    """``row`` with every verdict off (its statistics kept)."""
    return row.model_copy(update={"psi_drifted": False, "test_drifted": False, "drifted": False})


def _verdict(
    name: str,
    feature_type: FeatureType,
    psi: float,
    test_result: _TestResult,
    drift: DriftSettings,
    *,
    values: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]],
    means: tuple[float | None, float | None],
) -> FeatureDrift:
    """Apply the thresholds; ``values`` only count rows and missing ones (NaN)."""
    test, statistic, p_value = test_result
    psi_drifted = psi >= drift.psi_threshold
    test_drifted = p_value is not None and p_value < drift.p_value
    ref, win = values
    return FeatureDrift(
        feature=name,
        feature_type=feature_type,
        psi=psi,
        test=test,
        statistic=statistic,
        p_value=p_value,
        adjusted_p_value=p_value,
        psi_drifted=psi_drifted,
        test_drifted=test_drifted,
        drifted=psi_drifted and (test_drifted or p_value is None),
        reference_rows=int(ref.size),
        window_rows=int(win.size),
        reference_missing_share=_missing_share(ref),
        window_missing_share=_missing_share(win),
        reference_mean=means[0],
        window_mean=means[1],
    )


def _numbers(column: pd.Series) -> npt.NDArray[np.float64]:
    return pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _labels(column: pd.Series) -> list[str | None]:
    return [None if _is_missing(v) else str(v) for v in column.tolist()]


def _is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _mean(values: npt.NDArray[np.float64]) -> float | None:
    return float(values.mean()) if values.size else None


def _missing_share(values: npt.NDArray[np.float64]) -> float:
    return float(np.isnan(values).mean()) if values.size else 0.0
