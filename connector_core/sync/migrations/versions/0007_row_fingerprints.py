"""Row fingerprints: the rows a job decided at its cursor, for reads that skip unchanged rows.

Revision ID: 0007_row_fingerprints
Revises: 0006_lean_state
Create Date: 2026-12-03

Frozen on purpose: it spells out its types instead of importing connector_core.sync.tables.
Existing jobs have no fingerprints: their next changed read decodes every row, as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_row_fingerprints"
down_revision = "0006_lean_state"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create row_fingerprints."""
    op.create_table(
        "row_fingerprints",
        sa.Column("job", sa.String(), nullable=False),
        sa.Column("cursor", sa.Text(), nullable=False),
        sa.Column("fingerprints", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("job", name="pk_row_fingerprints"),
    )


def downgrade() -> None:
    """Drop row_fingerprints (the next changed reads decode every row)."""
    op.drop_table("row_fingerprints")
