"""Prediction history: every served prediction, written in batches to SQLite or PostgreSQL.

The request path only appends to an in-memory queue (:mod:`.writer`). One background thread per
process writes batches in one transaction each. When the database cannot be reached, batches go
to a local JSON-lines spool (:mod:`.spool`, one fsync'ed file per process) and are replayed
later; inserts ignore ids that are already stored (:mod:`.store`), so a replay after an
ambiguous failure never duplicates a prediction. :mod:`.records` holds the row format,
:mod:`.reader` the API's queries.
"""

from api.core.history.reader import HistoryReader
from api.core.history.records import PredictionBatch, PredictionRecord
from api.core.history.store import create_engine_for, migrate, reason_of
from api.core.history.writer import HistoryWriter

__all__ = [
    "HistoryReader",
    "HistoryWriter",
    "PredictionBatch",
    "PredictionRecord",
    "create_engine_for",
    "migrate",
    "reason_of",
]
