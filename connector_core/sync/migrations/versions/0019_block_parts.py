"""Block parts: the digests of the runs of rows inside each fingerprint block.

Revision ID: 0019_block_parts
Revises: 0018_lean_state_v3
Create Date: 2026-12-08

Frozen on purpose: it spells out its type instead of importing connector_core.sync.tables.
Existing blocks have no parts (NULL): a block of theirs that changes is split row by row,
as before, and the blocks saved after it have parts.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019_block_parts"
down_revision = "0018_lean_state_v3"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add fingerprint_blocks.parts (NULL: none)."""
    with op.batch_alter_table("fingerprint_blocks") as batch:
        batch.add_column(sa.Column("parts", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    """Drop fingerprint_blocks.parts (changed blocks are split row by row)."""
    with op.batch_alter_table("fingerprint_blocks") as batch:
        batch.drop_column("parts")
