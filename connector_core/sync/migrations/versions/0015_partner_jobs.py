"""Partner jobs: the registry rows of job templates' partners, for retiring them.

Revision ID: 0015_partner_jobs
Revises: 0011_share_requests
Create Date: 2026-12-03

Frozen on purpose: it spells out its types instead of importing connector_core.sync.tables.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015_partner_jobs"
down_revision = "0011_share_requests"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create partner_jobs."""
    op.create_table(
        "partner_jobs",
        sa.Column("job", sa.String(), nullable=False),
        sa.Column("template", sa.String(), nullable=False),
        sa.Column("partner", sa.String(), nullable=False),
        sa.Column("row", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("job", name="pk_partner_jobs"),
    )


def downgrade() -> None:
    """Drop partner_jobs."""
    op.drop_table("partner_jobs")
