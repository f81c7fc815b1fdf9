"""Write prediction rows into a history database the way the API does (its own writer), and the
true labels clients report for them (rows of the API's ``prediction_feedback`` table)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, delete, insert
from sqlalchemy.pool import NullPool

from api.core.history import HistoryWriter, PredictionRecord, migrate
from xgbops.tables import prediction_feedback
from xgbops.config import to_sqlalchemy_url


def records(
    inputs: Sequence[dict[str, Any]],
    probabilities: Sequence[float],
    start: datetime,
    step: timedelta = timedelta(seconds=1),
    version: str = "1",
    model_name: str = "churn-xgboost",
) -> list[PredictionRecord]:
    """One record per input, ``step`` apart from ``start``; label from a 0.5 threshold."""
    return [
        PredictionRecord(
            id=uuid.uuid4().hex,
            created_at=start + i * step,
            model_name=model_name,
            model_version=version,
            input=dict(record),
            probability=float(probability),
            label="yes" if probability >= 0.5 else "no",
            latency_ms=1.0 + i % 7,
            request_id=f"req-{i}",
        )
        for i, (record, probability) in enumerate(zip(inputs, probabilities, strict=True))
    ]


def write_history(database_url: str, spool: Path, rows: Iterable[PredictionRecord]) -> None:
    """Migrate the database and write ``rows`` through the API's HistoryWriter."""
    migrate(database_url)
    writer = HistoryWriter(database_url, spool)
    writer.start()
    for row in rows:
        writer.record(row)
    assert writer.flush(), "the history writer did not flush in time"
    writer.close()


def label(
    prediction_id: str, actual: str, received_at: datetime, request_id: str | None = None
) -> dict[str, Any]:
    """One row of ``prediction_feedback``: the true label of a prediction, received then."""
    return {
        "prediction_id": prediction_id,
        "label": actual,
        "received_at": received_at,
        "request_id": request_id or f"fb-{prediction_id[:8]}",
    }


def other(label_value: str) -> str:
    """The other label of the churn dataset (a wrong answer)."""
    return "no" if label_value == "yes" else "yes"


def write_feedback(database_url: str, rows: Iterable[dict[str, Any]]) -> None:
    """Migrate the database and store ``rows`` (see :func:`label`) with plain inserts; a row for
    a prediction already labelled replaces its label, as POST /feedback's upsert does."""
    migrate(database_url)
    engine = create_engine(to_sqlalchemy_url(database_url), poolclass=NullPool)
    table = prediction_feedback
    try:
        with engine.begin() as connection:
            for row in rows:
                connection.execute(
                    delete(table).where(table.c.prediction_id == row["prediction_id"])
                )
                connection.execute(insert(table).values(**row))
    finally:
        engine.dispose()
