"""Version each ledger row's hash format; remember which ledger key the chain is written with.

Rows written before are version 1 (unkeyed SHA-256); they are re-chained with the ledger key
(version 2, HMAC-SHA256) by the first keyed append or `connector ledger migrate`.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ledger.version (1 for the rows already there) and ledger_head.key_check (NULL)."""
    with op.batch_alter_table("ledger") as batch:
        batch.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="1"))
    with op.batch_alter_table("ledger_head") as batch:
        batch.add_column(sa.Column("key_check", sa.String(64), nullable=True))


def downgrade() -> None:
    """Drop them (a re-chained ledger then no longer verifies with the old code)."""
    with op.batch_alter_table("ledger_head") as batch:
        batch.drop_column("key_check")
    with op.batch_alter_table("ledger") as batch:
        batch.drop_column("version")
