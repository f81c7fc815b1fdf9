"""The model artifact: a numpy featuriser and an XGBoost booster, saved as two plain files.

The featuriser is built from the dataset configuration and is the only code that turns input
values into the matrix the booster sees, at training and at prediction time alike. A saved
model is a directory holding ``booster.ubj`` (XGBoost's own UBJSON format) and ``model.json``
(the featuriser, the labels and the decision threshold); loading it needs numpy and xgboost only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import xgboost as xgb

from xgbops import XgbopsError, compiled
from xgbops.config import DatasetConfig

SPEC_FILE = "model.json"
BOOSTER_FILE = "booster.ubj"
SPEC_FORMAT = 1

Matrix = npt.NDArray[np.float32]


#: Rows from which XGBoost scores a matrix rather than the compiled trees: below, XGBoost's
#: fixed cost per call loses (1 row: 250 us against the trees' 8 us); from a few hundred rows its
#: blocked traversal is faster (300 rows: 3.8 us a row against 4.2; 10^5 rows: 2.6 against 3.3;
#: one thread each, the default model's 288 trees, measured in process).
COMPILED_MOST_ROWS = 256


class ModelFormatError(XgbopsError):
    """A saved model directory is missing a file or holds a spec this version cannot read."""


@dataclass(frozen=True)
class Column:
    """One input column as the featuriser sees it."""

    name: str
    kind: Literal["numeric", "categorical"]
    categories: tuple[str, ...] = ()


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


class Featurizer:
    """Turns input values into a float32 matrix: numbers as they are, categories one-hot.

    A missing value, and a category the featuriser does not know, become NaN, which XGBoost
    routes down each split's learned default branch.
    """

    def __init__(self, columns: Sequence[Column]) -> None:
        self.columns = tuple(columns)
        self.output_names: list[str] = []
        # Each input owns the output block [start, stop): one cell if numeric, one per category.
        self._blocks: dict[str, slice] = {}
        self._category_index: dict[str, dict[str, int]] = {}
        for column in self.columns:
            start = len(self.output_names)
            if column.kind == "numeric":
                self.output_names.append(column.name)
            else:
                self._category_index[column.name] = {
                    category: start + offset for offset, category in enumerate(column.categories)
                }
                self.output_names.extend(f"{column.name}={c}" for c in column.categories)
            self._blocks[column.name] = slice(start, len(self.output_names))

    @classmethod
    def from_dataset(cls, dataset: DatasetConfig) -> Featurizer:
        """Build the featuriser that the dataset configuration describes."""
        columns = [
            (
                Column(f.name, "categorical", tuple(f.categories))
                if f.type == "categorical"
                else Column(f.name, "numeric")
            )
            for f in dataset.features
        ]
        return cls(columns)

    def block(self, name: str) -> slice:
        """The output columns that input ``name`` fills."""
        return self._blocks[name]

    @property
    def input_names(self) -> list[str]:
        """Names of the input columns, in order."""
        return [c.name for c in self.columns]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description from which :meth:`from_dict` rebuilds this featuriser."""
        return {
            "columns": [
                {"name": c.name, "kind": c.kind, "categories": list(c.categories)}
                for c in self.columns
            ]
        }

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> Featurizer:
        """Rebuild a featuriser from :meth:`to_dict` output."""
        return cls(
            [Column(c["name"], c["kind"], tuple(c.get("categories", ()))) for c in spec["columns"]]
        )

    def transform_columns(self, columns: Mapping[str, Sequence[Any] | npt.NDArray[Any]]) -> Matrix:
        """Featurise column-oriented data (e.g. ``{name: df[name].to_numpy()}``).

        Raises:
            KeyError: an input column is absent.
        """
        n_rows = len(next(iter(columns.values()))) if columns else 0
        out = np.zeros((n_rows, len(self.output_names)), dtype=np.float32)
        for column in self.columns:
            values, block = columns[column.name], self._blocks[column.name]
            if column.kind == "numeric":
                out[:, block.start] = _as_float(values)
                continue
            where = self._category_columns(column.name, values, n_rows)
            known = where >= 0
            out[np.flatnonzero(known), where[known]] = 1.0
            out[~known, block] = np.nan
        return out

    def _category_columns(
        self, name: str, values: Sequence[Any] | npt.NDArray[Any], n_rows: int
    ) -> npt.NDArray[np.int64]:
        """The output column of each value's category, -1 where it is missing or unknown."""
        index = self._category_index[name]
        try:  # one dict lookup per value, in C
            return np.fromiter(map(index.get, values, repeat(-1)), dtype=np.int64, count=n_rows)
        except TypeError:  # an unhashable value (a list, say): unknown, like any other
            return np.array(
                [index.get(v, -1) if isinstance(v, str) else -1 for v in values], dtype=np.int64
            )

    def transform_records(self, records: Sequence[Mapping[str, Any]]) -> Matrix:
        """Featurise row-oriented data (``[{name: value}]``); absent keys count as missing."""
        out = np.zeros((len(records), len(self.output_names)), dtype=np.float32)
        for row, record in enumerate(records):
            for name, block in self._blocks.items():
                value = record.get(name)
                categories = self._category_index.get(name)
                if categories is None:
                    out[row, block.start] = _scalar_float(value)
                elif isinstance(value, str) and value in categories:
                    out[row, categories[value]] = 1.0
                else:
                    out[row, block] = np.nan
        return out


def _as_gain(value: float | list[float]) -> float:
    return float(sum(value)) if isinstance(value, list) else float(value)


def _scalar_float(value: Any) -> float:
    return float("nan") if _is_missing(value) else float(value)


def _as_float(values: Sequence[Any] | npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        return np.array([_scalar_float(v) for v in values], dtype=np.float64)


@dataclass
class Model:
    """A trained classifier: featuriser, booster, labels and threshold, plus free-form metadata."""

    featurizer: Featurizer
    booster: xgb.Booster
    positive_label: str
    negative_label: str
    threshold: float = 0.5
    metadata: dict[str, Any] = field(default_factory=dict)
    #: The same trees compiled to native code, when the model's folder holds them.
    trees: compiled.CompiledTrees | None = field(default=None, repr=False, compare=False)

    @property
    def scorer(self) -> str:
        """What computes the probabilities: ``compiled`` trees or ``xgboost``."""
        return "xgboost" if self.trees is None else "compiled"

    def predict_proba(self, features: Matrix) -> npt.NDArray[np.float64]:
        """Probability of the positive label for each row of a featurised matrix."""
        if features.shape[0] == 0:
            return np.empty(0, dtype=np.float64)
        if self.trees is not None and features.shape[0] < COMPILED_MOST_ROWS:
            return self.trees.predict(features)
        scores = self.booster.inplace_predict(features, missing=np.nan)
        return np.asarray(scores, dtype=np.float64)

    def feature_importance(self) -> dict[str, float]:
        """Total gain per input column (one-hot columns summed back), highest first."""
        gains = self.booster.get_score(importance_type="total_gain")
        width = len(self.featurizer.output_names)
        keys = self.booster.feature_names or [f"f{i}" for i in range(width)]
        totals = {}
        for column in self.featurizer.columns:
            block = keys[self.featurizer.block(column.name)]
            totals[column.name] = sum(_as_gain(gains.get(key, 0.0)) for key in block)
        return dict(sorted(totals.items(), key=lambda item: item[1], reverse=True))

    def label(self, probability: float) -> str:
        """The label a probability maps to under this model's threshold."""
        return self.positive_label if probability >= self.threshold else self.negative_label

    def labels(self, probabilities: npt.NDArray[np.float64]) -> list[str]:
        """:meth:`label` of every probability, compared with the threshold in one numpy pass."""
        positive, negative = self.positive_label, self.negative_label
        return [positive if p else negative for p in (probabilities >= self.threshold).tolist()]

    def spec(self) -> dict[str, Any]:
        """The JSON document saved beside the booster."""
        return {
            "format": SPEC_FORMAT,
            "featurizer": self.featurizer.to_dict(),
            "feature_names": self.featurizer.output_names,
            "target": {"positive": self.positive_label, "negative": self.negative_label},
            "threshold": self.threshold,
            "xgboost_version": xgb.__version__,
            "metadata": self.metadata,
        }

    def save(self, directory: Path) -> Path:
        """Write ``model.json`` and ``booster.ubj`` into ``directory`` (created if needed)."""
        directory.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(directory / BOOSTER_FILE)
        (directory / SPEC_FILE).write_text(json.dumps(self.spec(), indent=2), encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: Path) -> Model:
        """Load a model saved by :meth:`save`.

        Raises:
            ModelFormatError: a file is missing or the spec is of an unknown format.
        """
        spec_path, booster_path = directory / SPEC_FILE, directory / BOOSTER_FILE
        for path in (spec_path, booster_path):
            if not path.is_file():
                raise ModelFormatError(f"{path}: file not found; is {directory} a saved model?")
        try:
            spec = json.loads(spec_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ModelFormatError(f"{spec_path}: invalid JSON ({exc})") from exc
        if spec.get("format") != SPEC_FORMAT:
            raise ModelFormatError(f"{spec_path}: unsupported format {spec.get('format')!r}")
        booster = xgb.Booster()
        booster.load_model(booster_path)
        featurizer = Featurizer.from_dict(spec["featurizer"])
        return cls(
            featurizer=featurizer,
            booster=booster,
            positive_label=spec["target"]["positive"],
            negative_label=spec["target"]["negative"],
            threshold=float(spec["threshold"]),
            metadata=dict(spec.get("metadata", {})),
            trees=compiled.load(directory, booster, len(featurizer.output_names)),
        )
