"""Write prediction rows into a history database the way the API does (its own writer)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from api.core.history import HistoryWriter, PredictionRecord, migrate


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
