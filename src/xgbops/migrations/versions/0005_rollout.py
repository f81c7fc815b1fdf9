# pylint: disable=invalid-name,no-member  # alembic names the file and the globals; op is a proxy
"""Rollouts: the arm of each prediction, its shadowed prediction, and the decisions table.

Existing predictions were all the champion's: the column's server default says so.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 13:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade the schema."""
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(
            sa.Column("arm", sa.String(length=16), server_default="champion", nullable=False)
        )
        batch.add_column(sa.Column("shadow_of", sa.String(length=32), nullable=True))
        batch.create_index(batch.f("ix_predictions_shadow_of"), ["shadow_of"])
    op.create_table(
        "rollout_decisions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_name", sa.String(), nullable=False),
        sa.Column("rollout_id", sa.String(length=32), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("share", sa.Float(), nullable=False),
        sa.Column("champion_version", sa.String(), nullable=True),
        sa.Column("challenger_version", sa.String(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollout_decisions")),
    )
    op.create_index(op.f("ix_rollout_decisions_at"), "rollout_decisions", ["at"])


def downgrade() -> None:
    """Downgrade the schema."""
    op.drop_index(op.f("ix_rollout_decisions_at"), table_name="rollout_decisions")
    op.drop_table("rollout_decisions")
    with op.batch_alter_table("predictions") as batch:
        batch.drop_index(batch.f("ix_predictions_shadow_of"))
        batch.drop_column("shadow_of")
        batch.drop_column("arm")
