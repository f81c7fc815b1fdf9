"""Data checks: every offending column and row is reported with its reason, never a traceback."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from xgbops.data import (
    DataError,
    DataValidationError,
    check_data,
    labels,
    load_dataset,
    read_csv,
    split_dataset,
    write_report,
)

from .conftest import REPO


def _edit_csv(path: Path, edits: dict[tuple[int, str], str], append: list[int] = ()) -> Path:
    """Set cells (data row index, column) of the CSV at ``path``; append copies of rows."""
    lines = path.read_text(encoding="utf-8").splitlines()
    header = lines[0].split(",")
    for (row, column), value in edits.items():
        cells = lines[row + 1].split(",")
        cells[header.index(column)] = value
        lines[row + 1] = ",".join(cells)
    lines.extend(lines[row + 1] for row in append)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _check(settings):
    frame = read_csv(settings.data_path, settings.dataset)
    return check_data(frame, settings.dataset, settings.data_path)


def _issue(report, check, column):
    found = [i for i in report.issues if i.check == check and i.column == column]
    assert found, f"no {check} issue for {column}: {report.to_text()}"
    return found[0]


def test_shipped_dataset_passes(settings):
    report = _check(settings)
    assert report.passed, report.to_text()
    assert report.rows == 5000
    assert report.columns == 20
    assert 0.13 < report.positive_rate < 0.15
    # the checksum data/README.md documents is the file's
    documented = re.search(
        r"\*\*sha256\*\*: `([0-9a-f]{64})`", (REPO / "data" / "README.md").read_text()
    )
    assert report.sha256 == documented.group(1)


def test_every_bad_value_is_reported_with_column_line_and_reason(settings):
    _edit_csv(
        settings.data_path,
        {
            (2, "account_length"): "-5",
            (4, "total_day_calls"): "abc",
            (6, "state"): "ZZ",
            (7, "voice_mail_plan"): "",
            (8, "total_eve_calls"): "3.5",
            (9, "total_day_minutes"): "inf",
            (10, "churn"): "maybe",
        },
        append=[0],
    )
    report = _check(settings)
    assert not report.passed
    out_of_range = _issue(report, "out_of_range", "account_length")
    assert out_of_range.lines == [4]  # CSV line = data row + header + 1
    assert out_of_range.values == [-5.0]
    assert "[0.0, 600.0]" in out_of_range.reason
    wrong_type = _issue(report, "wrong_type", "total_day_calls")
    assert (wrong_type.lines, wrong_type.values) == ([6], ["abc"])
    assert "float64" in wrong_type.reason
    assert _issue(report, "unknown_category", "state").values == ["ZZ"]
    assert _issue(report, "unexpected_null", "voice_mail_plan").lines == [9]
    assert "whole numbers" in _issue(report, "wrong_type", "total_eve_calls").reason
    assert _issue(report, "out_of_range", "total_day_minutes").values == [float("inf")]
    assert _issue(report, "unknown_category", "churn").values == ["maybe"]
    duplicate = _issue(report, "duplicate_rows", None)
    assert duplicate.lines == [5002]
    # a value that cannot be read is reported once, not echoed by the checks that follow
    assert len([i for i in report.issues if i.column == "total_day_calls"]) == 1
    assert len(report.issues) == 8


def test_missing_and_extra_columns(settings):
    frame = read_csv(settings.data_path, settings.dataset).drop(columns=["area_code"])
    frame["comment"] = "x"
    report = check_data(frame, settings.dataset, settings.data_path)
    assert _issue(report, "missing_column", "area_code").reason == "column is missing from the file"
    assert any("comment" in warning for warning in report.warnings)


def test_target_imbalance_beyond_the_band_fails(settings):
    full = read_csv(settings.data_path, settings.dataset)
    frame = pd.concat(
        [full[full["churn"] == "no"].head(980), full[full["churn"] == "yes"].head(20)]
    )
    report = check_data(frame, settings.dataset, settings.data_path)
    issue = _issue(report, "target_imbalance", "churn")
    assert "0.020 is outside the allowed band [0.05, 0.5]" in issue.reason


def test_header_only_file_fails(settings):
    header = settings.data_path.read_text(encoding="utf-8").splitlines()[0]
    settings.data_path.write_text(header + "\n", encoding="utf-8")
    assert any(i.check == "empty" for i in _check(settings).issues)


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "file not found"), ("", "the file is empty"), (b"\xff\xfe\x00bad", "cannot be read")],
)
def test_unreadable_files_raise_data_error(settings, content, message):
    if content is None:
        settings.data_path.unlink()
    elif isinstance(content, bytes):
        settings.data_path.write_bytes(content)
    else:
        settings.data_path.write_text(content)
    with pytest.raises(DataError, match=message):
        read_csv(settings.data_path, settings.dataset)


def test_load_dataset_raises_with_the_report_attached(settings):
    _edit_csv(settings.data_path, {(0, "state"): "ZZ"})
    with pytest.raises(DataValidationError) as error:
        load_dataset(settings.dataset, settings.data_path)
    assert error.value.report.issues[0].column == "state"


def test_load_dataset_returns_typed_columns(settings):
    frame, report = load_dataset(settings.dataset, settings.data_path)
    assert report.passed
    assert list(frame.columns) == settings.dataset.feature_names + ["churn"]
    assert str(frame["account_length"].dtype) == "float64"


def test_split_is_stratified_deterministic_and_disjoint(settings):
    frame, _ = load_dataset(settings.dataset, settings.data_path)
    splits = split_dataset(frame, settings.dataset, settings.train.split, seed=7)
    again = split_dataset(frame, settings.dataset, settings.train.split, seed=7)
    assert [len(s) for s in splits] == [3200, 800, 1000]
    assert list(splits.holdout.index) == list(again.holdout.index)
    indexes = [set(s.index) for s in splits]
    assert not (indexes[0] & indexes[1]) and not (indexes[0] & indexes[2])
    rates = [labels(s, settings.dataset).mean() for s in splits]
    assert max(rates) - min(rates) < 0.01


def test_report_is_written_as_json_and_text(settings, tmp_path):
    _edit_csv(settings.data_path, {(0, "state"): "ZZ"})
    paths = write_report(_check(settings), tmp_path / "out")
    data = json.loads(paths[0].read_text())
    assert data["passed"] is False
    assert data["issues"][0]["column"] == "state"
    text = paths[1].read_text()
    assert text.startswith("Data check FAILED (1 issue(s))")
    assert "column 'state': unknown category" in text
