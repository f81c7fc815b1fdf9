"""Score records with a saved model, using numpy and xgboost only.

This is the serving path: the API and ``xgbops predict`` load a model directory once with
:class:`Predictor` and score plain ``{feature: value}`` records. It imports neither pandas nor
MLflow, so a serving process stays small and each request stays cheap.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from xgbops import XgbopsError
from xgbops.model import Model

Record = Mapping[str, Any]


class RecordFormatError(XgbopsError):
    """Input records cannot be parsed (bad JSON/CSV, or not objects)."""


@dataclass(frozen=True)
class Prediction:
    """One scored record."""

    probability: float
    label: str


class Predictor:
    """A loaded model ready to score records; thread-safe for concurrent reads."""

    def __init__(self, model: Model) -> None:
        self.model = model

    @classmethod
    def from_directory(cls, directory: Path) -> Predictor:
        """Load the model saved in ``directory`` (``model.json`` + ``booster.ubj``)."""
        return cls(Model.load(directory))

    @property
    def threshold(self) -> float:
        """Probability at or above which the label is positive."""
        return self.model.threshold

    @property
    def metadata(self) -> dict[str, Any]:
        """Free-form metadata saved with the model (name, run id, training time)."""
        return self.model.metadata

    def predict_proba(self, records: Sequence[Record]) -> npt.NDArray[np.float64]:
        """Positive-class probability for each record."""
        return self.model.predict_proba(self.model.featurizer.transform_records(records))

    def predict_proba_columns(
        self, columns: Mapping[str, Sequence[Any] | npt.NDArray[Any]]
    ) -> npt.NDArray[np.float64]:
        """Positive-class probability for column-oriented input (``{name: values}``)."""
        return self.model.predict_proba(self.model.featurizer.transform_columns(columns))

    def predict(self, records: Sequence[Record]) -> list[Prediction]:
        """Probability and label for each record."""
        return [
            Prediction(probability=float(p), label=self.model.label(p))
            for p in self.predict_proba(records)
        ]


def parse_records(text: str, fmt: str, numeric: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Parse records from JSON (an object, a list of objects, or ``{"records": [...]}``) or CSV.

    Args:
        text: the input.
        fmt: ``"json"`` or ``"csv"``.
        numeric: CSV columns to read as numbers (empty cells become missing values).

    Raises:
        RecordFormatError: the text is not valid in that format or holds no records.
    """
    if fmt == "csv":
        records: list[Any] = [_csv_row(row, numeric) for row in csv.DictReader(io.StringIO(text))]
    elif fmt == "json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RecordFormatError(f"invalid JSON: {exc}") from exc
        if isinstance(data, dict) and isinstance(data.get("records"), list):
            data = data["records"]
        records = data if isinstance(data, list) else [data]
    else:
        raise RecordFormatError(f"unknown format {fmt!r}; use json or csv")
    if not records:
        raise RecordFormatError("no records in the input")
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise RecordFormatError(f"record {index} is not an object")
    return records


def _csv_row(row: dict[str, str], numeric: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = dict(row)
    for name in numeric:
        value = row.get(name)
        if value is None or value.strip() == "":
            out[name] = None
            continue
        try:
            out[name] = float(value)
        except ValueError as exc:
            raise RecordFormatError(f"column {name!r}: {value!r} is not a number") from exc
    return out
