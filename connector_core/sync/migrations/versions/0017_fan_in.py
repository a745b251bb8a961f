"""Fan-in: what each partner contributed to the merged records of a fan-in job.

Revision ID: 0017_fan_in
Revises: 0016_fingerprint_blocks
Create Date: 2026-12-04

Frozen on purpose: it spells out its types instead of importing connector_core.sync.tables.
One row per (fan-in job, partner, partner's source id): the person it was matched to and the
record's match keys (keyed hashes, never an email or a phone number), the fields the
partner's policy let it give and a keyed hash of what it gave. No value is kept.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017_fan_in"
down_revision = "0016_fingerprint_blocks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create fan_in_contributions."""
    op.create_table(
        "fan_in_contributions",
        sa.Column("job", sa.String(), nullable=False),
        sa.Column("partner", sa.String(), nullable=False),
        sa.Column("source_id", sa.String(), nullable=False),
        sa.Column("person", sa.String(), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("keys", sa.JSON(), nullable=False),
        sa.Column("digest", sa.String(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("job", "partner", "source_id", name="pk_fan_in_contributions"),
    )


def downgrade() -> None:
    """Drop fan_in_contributions."""
    op.drop_table("fan_in_contributions")
