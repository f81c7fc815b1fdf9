"""Raw data: read the CSV, check it against the dataset configuration, split it.

The checks are a pandera schema derived from ``config/dataset.yaml`` plus dataset-level checks
(duplicate rows, class balance). A failed check is a :class:`DataReport` listing every offending
column and row with the reason, never a traceback. Nothing here knows about models.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from xgbops import XgbopsError
from xgbops.config import DatasetConfig, Settings, Split

#: At most this many offending rows and values are listed per issue.
SAMPLE_SIZE = 10
_HEADER_LINES = 1


class DataError(XgbopsError):
    """The data file cannot be read as a CSV (missing, empty, unparseable)."""


class DataValidationError(XgbopsError):
    """The data was read but failed its checks; ``report`` says which and why."""

    def __init__(self, report: DataReport) -> None:
        super().__init__(f"data check failed: {len(report.issues)} issue(s) in {report.path}")
        self.report = report


@dataclass
class Issue:
    """One failed check: what, where (column, CSV lines) and why."""

    check: str
    reason: str
    column: str | None = None
    count: int = 0
    lines: list[int] = field(default_factory=list)
    values: list[Any] = field(default_factory=list)


@dataclass
class DataReport:
    """The outcome of a data check, serialisable to JSON and readable text."""

    dataset: str
    path: str
    sha256: str
    rows: int
    columns: int
    positive_rate: float | None
    issues: list[Issue] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when no check failed."""
        return not self.issues

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with the verdict."""
        return {"passed": self.passed, **asdict(self)}

    def to_text(self) -> str:
        """A report a person reads: verdict first, then each issue."""
        verdict = "PASSED" if self.passed else f"FAILED ({len(self.issues)} issue(s))"
        rate = "n/a" if self.positive_rate is None else f"{self.positive_rate:.3f}"
        lines = [
            f"Data check {verdict}",
            f"dataset: {self.dataset}",
            f"file: {self.path} (sha256 {self.sha256})",
            f"rows: {self.rows}, columns: {self.columns}, positive rate: {rate}",
        ]
        for issue in self.issues:
            where = f"column {issue.column!r}" if issue.column else "dataset"
            lines.append(f"- [{issue.check}] {where}: {issue.reason} ({issue.count} case(s))")
            if issue.lines:
                lines.append(f"    CSV lines: {', '.join(map(str, issue.lines))}")
            if issue.values:
                lines.append(f"    values: {', '.join(map(repr, issue.values))}")
        lines.extend(f"- warning: {warning}" for warning in self.warnings)
        return "\n".join(lines) + "\n"


class Splits(NamedTuple):
    """Train rows fit the booster, validation rows stop it early, holdout rows judge it."""

    train: pd.DataFrame
    validation: pd.DataFrame
    holdout: pd.DataFrame


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, the dataset's identity in reports and MLflow."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def read_csv(path: Path, dataset: DatasetConfig) -> pd.DataFrame:
    """Read the CSV with categorical and target columns as text, so no label is reinterpreted.

    Raises:
        DataError: the file is missing, empty or not a CSV.
    """
    text_columns = [f.name for f in dataset.features if f.type == "categorical"]
    text_columns.append(dataset.target.column)
    try:
        return pd.read_csv(path, dtype={name: "string" for name in text_columns})
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path}: the file is empty") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise DataError(f"{path}: cannot be read as CSV ({exc})") from exc


def build_schema(dataset: DatasetConfig) -> pa.DataFrameSchema:
    """The pandera schema the dataset configuration describes (features and target)."""
    columns: dict[str, pa.Column] = {}
    for feature in dataset.features:
        if feature.type == "categorical":
            checks = [pa.Check.isin(feature.categories, error="unknown category")]
            columns[feature.name] = pa.Column(
                "string", checks, nullable=feature.nullable, coerce=True
            )
            continue
        checks = []
        if feature.min is not None or feature.max is not None:
            low = float("-inf") if feature.min is None else feature.min
            high = float("inf") if feature.max is None else feature.max
            checks.append(pa.Check.in_range(low, high, error=f"out of range [{low}, {high}]"))
        if feature.integer:
            checks.append(pa.Check(lambda s: s % 1 == 0, error="not a whole number"))
        columns[feature.name] = pa.Column("float64", checks, nullable=feature.nullable, coerce=True)
    target = dataset.target
    columns[target.column] = pa.Column(
        "string",
        pa.Check.isin([target.positive, target.negative], error="unknown target label"),
        nullable=False,
        coerce=True,
    )
    return pa.DataFrameSchema(columns, name=dataset.name)


def check_data(frame: pd.DataFrame, dataset: DatasetConfig, path: Path) -> DataReport:
    """Run every check on ``frame`` and report all failures at once.

    Args:
        frame: the data as read by :func:`read_csv`.
        dataset: its configuration.
        path: the file it came from, for the report.

    Returns:
        The report; ``report.passed`` is the verdict.
    """
    report = DataReport(
        dataset=dataset.name,
        path=str(path),
        sha256=file_sha256(path) if path.is_file() else "",
        rows=len(frame),
        columns=frame.shape[1],
        positive_rate=None,
    )
    try:
        build_schema(dataset).validate(frame, lazy=True)
    except SchemaErrors as exc:
        report.issues.extend(_schema_issues(exc.failure_cases))
    expected = set(dataset.feature_names) | {dataset.target.column}
    extra = [c for c in frame.columns if c not in expected]
    if extra:
        report.warnings.append(f"columns not in the dataset config are ignored: {extra}")
    if not dataset.checks.allow_duplicate_rows:
        report.issues.extend(_duplicate_issues(frame))
    report.positive_rate, balance = _balance(frame, dataset)
    report.issues.extend(balance)
    if frame.empty:
        report.issues.append(Issue("empty", "the file has a header but no rows"))
    return report


def load_dataset(dataset: DatasetConfig, path: Path) -> tuple[pd.DataFrame, DataReport]:
    """Read and check the dataset; returns typed columns ready for the featuriser.

    Raises:
        DataError: the file cannot be read.
        DataValidationError: a check failed (the report is attached).
    """
    frame = read_csv(path, dataset)
    report = check_data(frame, dataset, path)
    if not report.passed:
        raise DataValidationError(report)
    columns = dataset.feature_names + [dataset.target.column]
    return build_schema(dataset).validate(frame[columns]), report


def labels(frame: pd.DataFrame, dataset: DatasetConfig) -> pd.Series:
    """The target as 0/1 integers (1 = the configured positive label)."""
    return (frame[dataset.target.column] == dataset.target.positive).astype("int64")


def split_dataset(frame: pd.DataFrame, dataset: DatasetConfig, split: Split, seed: int) -> Splits:
    """Split rows into train, validation and holdout, stratified on the target if configured."""
    # Imported here: scikit-learn is half of every `xgbops` command's start-up (2.4 s of 4.2 s
    # on a busy machine), and only splitting needs it.
    from sklearn.model_selection import train_test_split  # pylint: disable=import-outside-toplevel

    target = labels(frame, dataset) if split.stratify else None
    rest, holdout = train_test_split(
        frame, test_size=split.holdout_size, random_state=seed, stratify=target
    )
    target = labels(rest, dataset) if split.stratify else None
    train, validation = train_test_split(
        rest, test_size=split.validation_size, random_state=seed, stratify=target
    )
    return Splits(train, validation, holdout)


def load_splits(settings: Settings) -> Splits:
    """The project's dataset split exactly as training splits it (same rows, same seed): what
    the holdout re-scoring of promotions and the drift reference both need.

    Raises:
        DataError, DataValidationError: the dataset cannot be used.
    """
    frame, _ = load_dataset(settings.dataset, settings.data_path)
    return split_dataset(frame, settings.dataset, settings.train.split, settings.train.seed)


def write_report(report: DataReport, directory: Path, stem: str = "data-check") -> list[Path]:
    """Write the report as ``<stem>.json`` and ``<stem>.txt`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path, text_path = directory / f"{stem}.json", directory / f"{stem}.txt"
    json_path.write_text(json.dumps(report.to_dict(), indent=2, default=str), encoding="utf-8")
    text_path.write_text(report.to_text(), encoding="utf-8")
    return [json_path, text_path]


def _schema_issues(cases: pd.DataFrame) -> Iterable[Issue]:
    cases = cases.copy()
    missing = cases["check"] == "column_in_dataframe"
    cases.loc[missing, "column"] = cases.loc[missing, "failure_case"]
    # A value that cannot be coerced is reported once, as a wrong type: drop the echoes pandera
    # adds for it (the dtype check, and checks that errored on the uncoerced column).
    checks = cases["check"].astype(str)
    uncoerced = set(cases.loc[checks.str.startswith("coerce_dtype"), "column"])
    echoes = cases["column"].isin(uncoerced) & (
        checks.str.startswith("dtype(") | cases["index"].isna()
    )
    cases = cases[~echoes]
    for (column, check), group in cases.groupby(["column", "check"], sort=False, dropna=False):
        kind, reason = _explain(str(check), group)
        indexes = [int(i) for i in group["index"].dropna()]
        yield Issue(
            check=kind,
            reason=reason,
            column=column if isinstance(column, str) else None,
            count=max(len(group), 1),
            lines=[i + 1 + _HEADER_LINES for i in indexes[:SAMPLE_SIZE]],
            values=[_plain(v) for v in group["failure_case"].head(SAMPLE_SIZE)],
        )


_REASONS = {
    "column_in_dataframe": ("missing_column", "column is missing from the file"),
    "not_nullable": ("unexpected_null", "missing values in a column that may not be missing"),
    "unknown category": ("unknown_category", "unknown category; not in the configured list"),
    "unknown target label": (
        "unknown_category",
        "unknown target label; not in the configured list",
    ),
    "not a whole number": ("wrong_type", "values must be whole numbers"),
}


def _explain(check: str, group: pd.DataFrame) -> tuple[str, str]:
    """Map a pandera check name to an issue kind and a reason a person understands."""
    if check in _REASONS:
        return _REASONS[check]
    if check.startswith(("coerce_dtype", "dtype")):
        wanted = re.sub(r"^\w+\('?(.*?)'?\)$", r"\1", check)
        return "wrong_type", f"values cannot be read as {wanted}"
    if check.startswith("out of range"):
        return "out_of_range", check
    return "failed_check", f"{check} ({len(group)} case(s))"


def _duplicate_issues(frame: pd.DataFrame) -> list[Issue]:
    duplicated = frame.duplicated(keep="first")
    if not duplicated.any():
        return []
    rows = [int(i) for i in frame.index[duplicated]]
    return [
        Issue(
            check="duplicate_rows",
            reason="rows repeat an earlier row exactly",
            count=len(rows),
            lines=[i + 1 + _HEADER_LINES for i in rows[:SAMPLE_SIZE]],
        )
    ]


def _balance(frame: pd.DataFrame, dataset: DatasetConfig) -> tuple[float | None, list[Issue]]:
    column, checks = dataset.target.column, dataset.checks
    if column not in frame.columns or frame.empty:
        return None, []
    rate = float((frame[column] == dataset.target.positive).fillna(False).mean())
    if checks.min_positive_rate <= rate <= checks.max_positive_rate:
        return rate, []
    reason = (
        f"positive rate {rate:.3f} is outside the allowed band "
        f"[{checks.min_positive_rate}, {checks.max_positive_rate}]"
    )
    return rate, [Issue("target_imbalance", reason, column=column, count=1)]


def _plain(value: Any) -> Any:
    """Make a failure value JSON-friendly."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if hasattr(value, "item"):
        return value.item()
    return value
