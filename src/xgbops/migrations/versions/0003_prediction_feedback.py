# pylint: disable=invalid-name,no-member  # alembic names the file and the globals; op is a proxy
"""Create the prediction_feedback table.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 03:50:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade the schema."""
    op.create_table(
        "prediction_feedback",
        sa.Column("prediction_id", sa.String(length=32), nullable=False),
        sa.Column("label", sa.String(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_id", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("prediction_id", name=op.f("pk_prediction_feedback")),
    )
    op.create_index(
        op.f("ix_prediction_feedback_received_at"), "prediction_feedback", ["received_at"]
    )


def downgrade() -> None:
    """Downgrade the schema."""
    op.drop_index(op.f("ix_prediction_feedback_received_at"), table_name="prediction_feedback")
    op.drop_table("prediction_feedback")
