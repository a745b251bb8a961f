"""The ledger loses its index on ``entry``: 11 bytes per shared record for `ledger show --job`.

Revision ID: 0018_ledger_entry_index
Revises: 0016_fingerprint_blocks
Create Date: 2026-12-04

Frozen on purpose: it names the index instead of importing connector_core.sync.tables.
`ledger show --job` reads the ledger in seq order and keeps the job's rows (one pass over the
ledger, about a second per million rows), as every other ledger read already does. Rows are
not touched: they verify as before, and new ones are written in format 4 (128-bit hashes).
"""

from __future__ import annotations

from alembic import op

revision = "0018_ledger_entry_index"
down_revision = "0016_fingerprint_blocks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Drop ix_ledger_entry."""
    op.drop_index("ix_ledger_entry", table_name="ledger")


def downgrade() -> None:
    """Create ix_ledger_entry again."""
    op.create_index("ix_ledger_entry", "ledger", ["entry"])
