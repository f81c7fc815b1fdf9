"""Reading the prediction history for the API: a page, newest first, and the count."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, func, or_, select

from xgbops.tables import predictions

from api.core.history.records import PredictionRecord, from_row, utc
from api.core.history.store import create_engine_for


class HistoryReader:
    """Reads the prediction history for the API."""

    def __init__(self, database_url: str, engine: Engine | None = None) -> None:
        """``engine``: the worker's pool, shared with the writer (one is made if not given)."""
        self._engine = engine or create_engine_for(database_url)

    def page(
        self,
        *,
        limit: int = 50,
        offset: int = 0,
        since: datetime | None = None,
        until: datetime | None = None,
        model_version: str | None = None,
    ) -> tuple[list[PredictionRecord], int]:
        """One page of records, newest first (ties by id, so pages are stable).

        Args:
            since: earliest ``created_at``, inclusive; a naive value is taken as UTC.
            until: latest ``created_at``, exclusive.

        Returns:
            The records and how many match the filters in all.

        Raises:
            ValueError: ``limit`` or ``offset`` is negative.
            sqlalchemy.exc.SQLAlchemyError: the database cannot be read.
        """
        if limit < 0 or offset < 0:
            raise ValueError("limit and offset must be >= 0")
        where = []
        if since is not None:
            where.append(predictions.c.created_at >= utc(since))
        if until is not None:
            where.append(predictions.c.created_at < utc(until))
        if model_version is not None:
            where.append(predictions.c.model_version == model_version)
        query = (
            select(predictions)
            .where(*where)
            .order_by(predictions.c.created_at.desc(), predictions.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        with self._engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
            total = connection.execute(select(func.count()).where(*where).select_from(predictions))
            return [from_row(row) for row in rows], int(total.scalar_one())

    def labels_of(self, prediction_id: str) -> list[tuple[str, str]]:
        """Each arm's label for a served prediction: the arm that answered, and a challenger
        that shadowed it (empty if it is not stored, or not yet)."""
        query = select(predictions.c.arm, predictions.c.label).where(
            or_(predictions.c.id == prediction_id, predictions.c.shadow_of == prediction_id)
        )
        with self._engine.connect() as connection:
            return [(str(arm), str(label)) for arm, label in connection.execute(query)]

    def count(self) -> int:
        """How many records are stored."""
        with self._engine.connect() as connection:
            query = select(func.count()).select_from(predictions)
            return int(connection.execute(query).scalar_one())

    @property
    def engine(self) -> Engine:
        """The pooled engine the reader queries with (the feedback store writes through it)."""
        return self._engine

    def close(self) -> None:
        """Close the pooled connections."""
        self._engine.dispose()
