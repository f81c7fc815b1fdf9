"""A served prediction as the API hands it over, and as a row: the checks a row must pass and
the JSON-lines form the spool and the journal keep."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from itertools import repeat
from typing import Any, Final

import orjson
from sqlalchemy import RowMapping


@dataclass(slots=True)
class PredictionRecord:
    """One served prediction, as stored; the caller generates ``id`` (uuid4 hex)."""

    id: str
    created_at: datetime  # timezone-aware UTC
    model_name: str
    model_version: str
    input: dict[str, Any]  # the validated record, JSON-serialisable
    probability: float
    label: str
    latency_ms: float
    request_id: str
    #: Who scored it: ``champion`` or ``challenger`` (:mod:`api.core.rollout`).
    arm: str = "champion"
    #: A shadow scoring's champion prediction (the one the client got), else None.
    shadow_of: str | None = None


@dataclass(slots=True)
class PredictionBatch:
    """The predictions of one request, column by column: what the request path hands over.

    Building one record object per prediction cost a batch request 8 % of its time; the writer
    thread turns the columns into rows instead.
    """

    ids: list[str]
    created_at: datetime
    model_name: str
    model_version: str
    inputs: list[dict[str, Any]]
    probabilities: list[float]
    labels: list[str]
    latency_ms: float
    request_id: str
    arm: str = "champion"
    #: Per record, the champion prediction each shadow scoring shadows (None: not a shadow).
    shadow_of: list[str] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def records(self) -> Iterator[PredictionRecord]:
        """One record per prediction."""
        shadowed: list[str | None] = [None] * len(self.ids)
        if self.shadow_of is not None:
            shadowed = list(self.shadow_of)
        for prediction_id, record, probability, label, shadow_of in zip(
            self.ids, self.inputs, self.probabilities, self.labels, shadowed
        ):
            yield PredictionRecord(
                prediction_id,
                self.created_at,
                self.model_name,
                self.model_version,
                record,
                probability,
                label,
                self.latency_ms,
                self.request_id,
                self.arm,
                shadow_of,
            )


Pending = PredictionRecord | PredictionBatch
FIELDS: Final = tuple(f.name for f in fields(PredictionRecord))
BATCH_FIELDS: Final = tuple(f.name for f in fields(PredictionBatch))
#: A checked record ready to insert: the values of ``FIELDS`` in order, ``created_at`` aware
#: UTC and ``input`` already JSON text (serialised once, by orjson).
Row = tuple[Any, ...]
INPUT: Final = FIELDS.index("input")
CREATED_AT: Final = FIELDS.index("created_at")
#: Fields a journal or spool line written before rollouts existed lacks (their defaults hold).
_LATER_FIELDS: Final = frozenset({"arm", "shadow_of"})


def utc(moment: datetime) -> datetime:
    """Aware UTC; naive values are taken as UTC (SQLite stores no offset)."""
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def to_row(record: PredictionRecord) -> Row:
    """Check a record and make it a row.

    Raises:
        TypeError, ValueError: the record can never be stored.
    """
    return _rows_of(
        record,
        [record.id],
        [record.input],
        [record.probability],
        [record.label],
        [record.shadow_of],
    )[0]


def batch_rows(batch: PredictionBatch) -> list[Row]:
    """The rows of ``batch``, each checked as :func:`to_row` checks a record.

    Raises:
        TypeError, ValueError: some record can never be stored (the caller finds which).
    """
    if not len(batch.inputs) == len(batch.probabilities) == len(batch.labels) == len(batch):
        raise ValueError("a batch's columns differ in length")
    shadowed: Sequence[str | None] = [None] * len(batch)
    if batch.shadow_of is not None:
        shadowed = list(batch.shadow_of)
    if len(shadowed) != len(batch):
        raise ValueError("a batch's columns differ in length")
    return _rows_of(batch, batch.ids, batch.inputs, batch.probabilities, batch.labels, shadowed)


def _rows_of(  # pylint: disable=too-many-arguments,too-many-positional-arguments
    shared: PredictionRecord | PredictionBatch,
    ids: Sequence[Any],
    inputs: Sequence[Any],
    probabilities: Sequence[Any],
    labels: Sequence[Any],
    shadowed: Sequence[Any],
) -> list[Row]:
    """Rows of the records given as columns, which share the time, model, arm, latency and
    request of ``shared``. Each column is checked whole (types with C-level ``map``, finiteness
    with one sum), so a 1,000-row batch costs about 1 µs a row.

    Raises:
        TypeError, ValueError: a value can never be stored.
    """
    for name in ("model_name", "model_version", "request_id", "arm"):
        if not isinstance(getattr(shared, name), str):
            raise TypeError(f"{name} must be a string")
    if not isinstance(shared.created_at, datetime):
        raise TypeError("created_at must be a datetime")
    created_at, latency_ms = utc(shared.created_at), float(shared.latency_ms)
    for name, column in (("id", ids), ("label", labels)):
        if not all(map(isinstance, column, repeat(str))):
            raise TypeError(f"{name} must be a string")
    if not all(map(isinstance, shadowed, repeat((str, type(None))))):
        raise TypeError("shadow_of must be a string")
    if not all(map(isinstance, inputs, repeat(dict))):
        raise TypeError("input must be a JSON object")
    for record in inputs:
        _check_finite(record)  # PostgreSQL's JSON has no NaN/Infinity (orjson writes null)
    numbers = [float(p) for p in probabilities]
    if not (math.isfinite(sum(numbers)) or all(map(math.isfinite, numbers))) or not (
        math.isfinite(latency_ms)
    ):
        raise ValueError("probability and latency_ms must be finite")
    name, version, request_id, arm = (
        shared.model_name,
        shared.model_version,
        shared.request_id,
        shared.arm,
    )
    return [
        (i, created_at, name, version, _input_json(r), p, label, latency_ms, request_id, arm, sh)
        for i, r, p, label, sh in zip(ids, inputs, numbers, labels, shadowed)
    ]


def _input_json(record: dict[str, Any]) -> str:
    """``record`` as JSON text: orjson, or the standard library for what orjson refuses
    (integers beyond 64 bits).

    Raises:
        TypeError: ``record`` holds a value JSON cannot represent.
    """
    try:
        return orjson.dumps(record).decode()
    except orjson.JSONEncodeError:
        return json.dumps(record, allow_nan=False)  # TypeError for what is not JSON at all


_FLAT = frozenset({str, int, float, bool, type(None)})


def _check_finite(value: Any) -> None:
    """Raises ValueError if ``value`` holds a NaN or infinite float at any depth."""
    # pylint: disable=unidiomatic-typecheck  # exact types: a subclass takes the slow path
    if type(value) is dict and set(map(type, value.values())) <= _FLAT:
        # The usual record, flat: the sum of its floats is finite only if each of them is
        # (or, rarely, when huge ones overflow it: then they are looked at one by one).
        if math.isfinite(sum(v for v in value.values() if type(v) is float)):
            return
    _check_each_finite(value)


def _check_each_finite(value: Any) -> None:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("input holds NaN or Infinity, which JSON cannot store")
    elif isinstance(value, dict):
        for item in value.values():
            _check_each_finite(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_each_finite(item)


def fields_of(record: PredictionRecord) -> dict[str, Any]:
    """The record's fields by name, for the rejected-records file."""
    return {name: getattr(record, name) for name in FIELDS}


def readable(row: Row) -> dict[str, Any]:
    """The row as plain JSON values, for the rejected-records file a person reads."""
    return {**jsonable(row), "input": orjson.loads(row[INPUT])}


def jsonable(row: Row) -> dict[str, Any]:
    """The spool format: the record's fields, ``created_at`` in ISO 8601 with its offset."""
    values = dict(zip(FIELDS, row))
    values["created_at"] = row[CREATED_AT].isoformat()
    values["input"] = orjson.Fragment(row[INPUT])  # already JSON: embedded, not re-encoded
    return values


def from_json(line: bytes) -> PredictionRecord | PredictionBatch:
    """A record from one spool line, or a request's predictions from one journal line.

    Raises:
        ValueError, TypeError: the line is neither (e.g. torn by a crash).
    """
    data = json.loads(line)
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    created_at = datetime.fromisoformat(data.get("created_at", ""))
    if set(FIELDS) - _LATER_FIELDS <= set(data) <= set(FIELDS):
        return PredictionRecord(**{**data, "created_at": created_at})
    if set(BATCH_FIELDS) - _LATER_FIELDS <= set(data) <= set(BATCH_FIELDS):
        return PredictionBatch(**{**data, "created_at": created_at})
    raise ValueError(f"expected the fields {', '.join(FIELDS)}")


def from_row(row: RowMapping) -> PredictionRecord:
    """A record from a row the reader selected (``created_at`` aware UTC)."""
    values = {name: row[name] for name in FIELDS}
    values["created_at"] = utc(values["created_at"])
    return PredictionRecord(**values)
