# pylint: disable=invalid-name,no-member  # alembic names the file and the globals; op is a proxy
"""Create the retrain_jobs table.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 23:55:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade the schema."""
    op.create_table(
        "retrain_jobs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("active", sa.Integer(), nullable=True),
        sa.Column("client", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("host", sa.String(), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_retrain_jobs")),
        sa.UniqueConstraint("active", name=op.f("uq_retrain_jobs_active")),
    )
    op.create_index(op.f("ix_retrain_jobs_created_at"), "retrain_jobs", ["created_at"])


def downgrade() -> None:
    """Downgrade the schema."""
    op.drop_index(op.f("ix_retrain_jobs_created_at"), table_name="retrain_jobs")
    op.drop_table("retrain_jobs")
