"""Keep a short salted hash of each shared field, so plans show which fields change.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add id_map.field_hashes (NULL for rows written before: plans list all their fields)."""
    with op.batch_alter_table("id_map") as batch:
        batch.add_column(sa.Column("field_hashes", sa.JSON(), nullable=True))


def downgrade() -> None:
    """Drop id_map.field_hashes."""
    with op.batch_alter_table("id_map") as batch:
        batch.drop_column("field_hashes")
