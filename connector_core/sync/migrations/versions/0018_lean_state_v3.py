"""Lean state, third step: no index on the ledger's entry term; id map times to the second.

Revision ID: 0018_lean_state_v3
Revises: 0017_fan_in
Create Date: 2026-12-04

Frozen on purpose: it names the index and spells out the conversion instead of importing
connector_core.sync.tables.

- The ledger loses ``ix_ledger_entry`` (11 bytes per shared record), which no command read
  by: reading one job's rows goes through the ledger in seq order, as every ledger read does.
  Rows are not touched: they verify as before; new ones are written in format 4 (128-bit hashes).
- The id map's ``updated_at`` (since when a target holds the record; shown by `who-has`) is
  kept to the second: on SQLite, seconds since 1970 instead of microseconds (4 bytes instead
  of 8), every row converted in place; PostgreSQL keeps its ``timestamptz`` (same size either
  way), read back without the fraction.
"""

from __future__ import annotations

from alembic import op

revision = "0018_lean_state_v3"
down_revision = "0017_fan_in"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Drop ix_ledger_entry; id map times in seconds on SQLite."""
    op.drop_index("ix_ledger_entry", table_name="ledger")
    if op.get_bind().dialect.name == "sqlite":
        op.execute("UPDATE id_map SET updated_at = updated_at / 1000000")


def downgrade() -> None:
    """Create ix_ledger_entry again; id map times in microseconds on SQLite."""
    if op.get_bind().dialect.name == "sqlite":
        op.execute("UPDATE id_map SET updated_at = updated_at * 1000000")
    op.create_index("ix_ledger_entry", "ledger", ["entry"])
