"""Share requests: signed requests for data, received, decided, materialised and ended.

Revision ID: 0011_share_requests
Revises: 0010_approval_sets
Create Date: 2026-12-03

Frozen on purpose: it spells out its types instead of importing connector_core.sync.tables.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_share_requests"
down_revision = "0010_approval_sets"
branch_labels = None
depends_on = None

HASH = sa.String(64)
TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Add the share_requests table."""
    op.create_table(
        "share_requests",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("request_hash", HASH, nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("review", sa.JSON(), nullable=False),
        sa.Column("set_id", sa.BigInteger()),
        sa.Column("received_at", TIME, nullable=False),
        sa.Column("decided_at", TIME),
        sa.Column("expires_at", TIME),
        sa.Column("ended_at", TIME),
        sa.Column("note", sa.Text()),
        sa.PrimaryKeyConstraint("id", name="pk_share_requests"),
    )


def downgrade() -> None:
    """Drop the share_requests table (received requests are forgotten)."""
    op.drop_table("share_requests")
