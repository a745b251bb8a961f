"""The first schema: job state, id map, runs, ledger and its head, approvals.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Frozen on purpose: it spells out its types instead of importing connector_core.sync.tables,
so that a later change there cannot silently change what this revision created.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

KEY = sa.String().with_variant(sa.String(collation="C"), "postgresql")
SERIAL = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
HASH = sa.String(64)
TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create every table, and the ledger head pointing at the empty chain."""
    op.create_table(
        "job_state",
        sa.Column("job", sa.String(), nullable=False),
        sa.Column("cursor", sa.Text()),
        sa.Column("policy_hash", HASH),
        sa.Column("config_hash", HASH),
        sa.Column("last_run_at", TIME),
        sa.Column("last_success_at", TIME),
        sa.Column("last_reconciled_at", TIME),
        sa.PrimaryKeyConstraint("job", name="pk_job_state"),
    )
    op.create_table(
        "id_map",
        sa.Column("job", sa.String(), nullable=False),
        sa.Column("source_id", KEY, nullable=False),
        sa.Column("target_key", KEY, nullable=False),
        sa.Column("projection_hash", HASH, nullable=False),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("consent_basis", sa.JSON(), nullable=False),
        sa.Column("policy_hash", HASH, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("job", "source_id", name="pk_id_map"),
        sa.UniqueConstraint("job", "target_key", name="uq_id_map_job_target_key"),
    )
    op.create_index("ix_id_map_source_id", "id_map", ["source_id"])
    op.create_table(
        "runs",
        sa.Column("id", SERIAL, autoincrement=True, nullable=False),
        sa.Column("job", sa.String(), nullable=False),
        sa.Column("started_at", TIME, nullable=False),
        sa.Column("finished_at", TIME),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("counts", sa.JSON()),
        sa.Column("error", sa.Text()),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
    )
    op.create_index("ix_runs_job_id", "runs", ["job", "id"])
    _create_ledger()
    _create_approvals()


def _create_ledger() -> None:
    op.create_table(
        "ledger",
        sa.Column("seq", SERIAL, autoincrement=True, nullable=False),
        sa.Column("at", TIME, nullable=False),
        sa.Column("job", sa.String(), nullable=False),
        sa.Column("target", sa.String(), nullable=False),
        sa.Column("record_key", KEY, nullable=False),
        sa.Column("source_id", KEY, nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("policy", sa.String(), nullable=False),
        sa.Column("policy_hash", HASH, nullable=False),
        sa.Column("consent_basis", sa.JSON(), nullable=False),
        sa.Column("approvals", sa.JSON(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("prev_hash", HASH, nullable=False),
        sa.Column("row_hash", HASH, nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_ledger"),
    )
    op.create_index("ix_ledger_source_id", "ledger", ["source_id"])
    op.create_index("ix_ledger_job", "ledger", ["job"])
    head = op.create_table(
        "ledger_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", SERIAL, nullable=False),
        sa.Column("row_hash", HASH, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ledger_head"),
    )
    op.bulk_insert(head, [{"id": 1, "seq": 0, "row_hash": "0" * 64}])


def _create_approvals() -> None:
    op.create_table(
        "approvals",
        sa.Column("id", SERIAL, autoincrement=True, nullable=False),
        sa.Column("job", sa.String(), nullable=False),
        sa.Column("record_key", KEY, nullable=False),
        sa.Column("source_id", KEY, nullable=False),
        sa.Column("change", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("requested_at", TIME, nullable=False),
        sa.Column("decided_at", TIME),
        sa.Column("decided_by", sa.String()),
        sa.Column("quorum", sa.Integer(), nullable=False),
        sa.Column("approvals", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_approvals"),
    )
    op.create_index("ix_approvals_job_status", "approvals", ["job", "status"])


def downgrade() -> None:
    """Drop everything (the state store's data goes with it)."""
    for table in ("approvals", "ledger_head", "ledger", "runs", "id_map", "job_state"):
        op.drop_table(table)
