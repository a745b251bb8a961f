"""The write-ahead intent log (intents) and outstanding changes (sent, failed, held back).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# Frozen like 0001: types spelled out, not imported from connector_core.sync.tables.
KEY = sa.String().with_variant(sa.String(collation="C"), "postgresql")
TIME = sa.DateTime(timezone=True)
SERIAL = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the intents and outstanding tables."""
    op.create_table(
        "intents",
        sa.Column("id", SERIAL, autoincrement=True, nullable=False),
        sa.Column("job", sa.String(), nullable=False),
        sa.Column("at", TIME, nullable=False),
        sa.Column("changes", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_intents"),
    )
    op.create_index("ix_intents_job", "intents", ["job"])
    op.create_table(
        "outstanding",
        sa.Column("job", sa.String(), nullable=False),
        sa.Column("source_id", KEY, nullable=False),
        sa.Column("target_key", KEY, nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("since", TIME, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("job", "source_id", name="pk_outstanding"),
    )


def downgrade() -> None:
    """Drop the intents and outstanding tables."""
    op.drop_table("outstanding")
    op.drop_index("ix_intents_job", table_name="intents")
    op.drop_table("intents")
