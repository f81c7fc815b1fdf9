"""Ground truth for served predictions: the label a client learns later, kept for live accuracy.

``POST /feedback`` takes ``{"prediction_id": "<id /predict returned>", "label": "<true label>"}``.
A second label for the same prediction replaces the first (a correction). Labels are written at
once, not buffered like predictions: they are few, and the client must know whether one was
kept, so a database outage is a 503 it can retry rather than a spool it cannot see. The
prediction itself need not be stored yet (it may sit in the writer's buffer or spool for a
while); :mod:`xgbops.monitoring` joins the two when it ships live accuracy.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import Engine
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from xgbops.tables import prediction_feedback

from api.core.errors import FieldError, HistoryUnavailable, ValidationFailed, field_path
from api.core.history import reason_of
from api.core.schema import MISSING, NOT_AN_OBJECT, UNKNOWN

log = structlog.get_logger(__name__)

#: The form of the ids ``/predict`` hands out (32 lower-case hexadecimal digits).
PREDICTION_ID = re.compile(r"^[0-9a-f]{32}$")
FIELDS = ("prediction_id", "label")


def check_feedback(body: Any, labels: tuple[str, ...]) -> tuple[str, str]:
    """The prediction id and label of a feedback body; every offending field named at once.

    Args:
        body: the parsed JSON body.
        labels: the dataset's target labels (negative, positive).

    Raises:
        ValidationFailed: not an object, a field missing, unknown, or not as documented.
    """
    if not isinstance(body, dict):
        raise ValidationFailed([FieldError("body", NOT_AN_OBJECT)])
    errors = [FieldError(field_path(key), UNKNOWN) for key in body if key not in FIELDS]
    prediction_id, label = body.get("prediction_id"), body.get("label")
    if "prediction_id" not in body:
        errors.append(FieldError("prediction_id", MISSING))
    elif not isinstance(prediction_id, str) or not PREDICTION_ID.match(prediction_id):
        errors.append(FieldError("prediction_id", "must be the 32-hex-digit id /predict returned"))
    if "label" not in body:
        errors.append(FieldError("label", MISSING))
    elif not isinstance(label, str) or label not in labels:
        errors.append(FieldError("label", f"must be one of: {', '.join(labels)}"))
    if errors:
        raise ValidationFailed(errors)
    return str(prediction_id), str(label)


class FeedbackStore:
    """Writes labels into ``prediction_feedback`` (an upsert on the prediction id).

    It writes through an engine it is given (the history reader's, in the service), so labels
    cost no connection pool of their own; whoever made the engine disposes of it.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def record(self, prediction_id: str, label: str, request_id: str) -> datetime:
        """Store (or replace) the label of one prediction; returns when it was received.

        Raises:
            HistoryUnavailable: the database cannot be written now.
        """
        received_at = datetime.now(UTC)
        values = {
            "prediction_id": prediction_id,
            "label": label,
            "received_at": received_at,
            "request_id": request_id,
        }
        dialect = postgresql if self._engine.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(prediction_feedback).values(**values)
        statement = statement.on_conflict_do_update(
            index_elements=[prediction_feedback.c.prediction_id],
            set_={k: statement.excluded[k] for k in ("label", "received_at", "request_id")},
        )
        try:
            with self._engine.begin() as connection:
                connection.execute(statement)
        except SQLAlchemyError as exc:
            log.error("feedback.write_failed", error=reason_of(exc))
            raise HistoryUnavailable("the label cannot be stored") from None
        return received_at
