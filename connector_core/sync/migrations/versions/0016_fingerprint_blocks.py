"""Fingerprint blocks: whole blocks of rows a job decided at its cursor, skipped unsplit.

Revision ID: 0016_fingerprint_blocks
Revises: 0015_partner_jobs
Create Date: 2026-12-03

Frozen on purpose: it spells out its types instead of importing connector_core.sync.tables.
Existing jobs have no blocks: their next changed read skips unchanged rows one by one, as
before, and saves blocks for the reads after it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016_fingerprint_blocks"
down_revision = "0015_partner_jobs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create fingerprint_blocks."""
    op.create_table(
        "fingerprint_blocks",
        sa.Column("job", sa.String(), nullable=False),
        sa.Column("digest", sa.LargeBinary(), nullable=False),
        sa.Column("ids", sa.LargeBinary(), nullable=False),
        sa.Column("fingerprints", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("job", "digest", name="pk_fingerprint_blocks"),
    )


def downgrade() -> None:
    """Drop fingerprint_blocks (the next changed reads skip rows one by one)."""
    op.drop_table("fingerprint_blocks")
