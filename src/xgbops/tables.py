"""The tables of the serving database, defined once: the API writes them (its Alembic
migrations compare and migrate this one metadata whole), monitoring reads them."""

from __future__ import annotations

from sqlalchemy import JSON, Column, DateTime, Float, Integer, MetaData, String, Table, Text
from sqlalchemy.dialects import postgresql

#: The value of ``retrain_jobs.active`` for a queued or running job (NULL otherwise): a unique
#: column that only active jobs fill makes "one job at a time" hold across worker processes.
ACTIVE = 1

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "pk": "pk_%(table_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
    }
)

predictions = Table(
    "predictions",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
    Column("model_name", String, nullable=False),
    Column("model_version", String, nullable=False, index=True),
    Column("input", JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
    Column("probability", Float, nullable=False),
    Column("label", String, nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("request_id", String, nullable=False),
    # Who scored it (champion or challenger) and, for a shadow scoring, the champion prediction
    # the client got: feedback on that one judges both (xgbops.rollout.comparison).
    Column("arm", String(16), nullable=False, server_default="champion"),
    Column("shadow_of", String(32), nullable=True, index=True),
)

retrain_jobs = Table(
    "retrain_jobs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("status", String(16), nullable=False),  # queued | running | succeeded | failed
    Column("active", Integer, nullable=True, unique=True),
    Column("client", String, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("host", String, nullable=True),
    Column("pid", Integer, nullable=True),
    Column("result", JSON, nullable=True),
    Column("error", Text, nullable=True),
)

#: The true outcome of a served prediction, reported later by the client (POST /feedback).
#: Not a foreign key: a prediction may still be buffered or spooled when its label arrives.
prediction_feedback = Table(
    "prediction_feedback",
    metadata,
    Column("prediction_id", String(32), primary_key=True),
    Column("label", String, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False, index=True),
    Column("request_id", String, nullable=False),
)

#: What was decided about a rollout, by whom and why (``xgbops rollout``, ``PUT /rollout``, the
#: guard); the registry's version tags say the same, this keeps the order.
rollout_decisions = Table(
    "rollout_decisions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False, index=True),
    Column("model_name", String, nullable=False),
    Column("rollout_id", String(32), nullable=False),
    Column("action", String(16), nullable=False),  # start | mode | promote | rollback | guard_stop
    Column("mode", String(16), nullable=False),
    Column("share", Float, nullable=False),
    Column("champion_version", String, nullable=True),
    Column("challenger_version", String, nullable=True),
    Column("reason", Text, nullable=False),
    Column("actor", String, nullable=False),
)

#: API keys (``xgbops keys``): the secret is stored only as its SHA-256 (a key is 32 random
#: bytes, so a fast hash is enough: there is nothing to guess), the id is public, for lookup.
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(16), primary_key=True),
    Column("name", String, nullable=False),
    Column("secret_sha256", String(64), nullable=False),
    Column("scopes", String, nullable=False),  # space-separated, as an OAuth scope claim
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)
