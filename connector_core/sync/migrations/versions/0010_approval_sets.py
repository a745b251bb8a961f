"""Approval sets: change sets held for people, their members and signed statements.

Revision ID: 0010_approval_sets
Revises: 0008_compact_state
Create Date: 2026-12-03

Frozen on purpose: it spells out its types instead of importing connector_core.sync.tables.
The `approvals` table of schema 0001 was never written to: it is dropped (a downgrade
recreates it empty).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_approval_sets"
down_revision = "0008_compact_state"
branch_labels = None
depends_on = None

KEY = sa.String().with_variant(sa.String(collation="C"), "postgresql")
SERIAL = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
HASH = sa.String(64)
TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Replace the unused approvals table with approval_sets, _members and _statements."""
    op.drop_index("ix_approvals_job_status", table_name="approvals")
    op.drop_table("approvals")
    op.create_table(
        "approval_sets",
        sa.Column("id", SERIAL, autoincrement=True, nullable=False),
        sa.Column("job", sa.String(), nullable=False),
        sa.Column("policy", sa.String(), nullable=False),
        sa.Column("policy_hash", HASH, nullable=False),
        sa.Column("set_hash", HASH, nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("escalated_at", TIME),
        sa.Column("decided_at", TIME),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("note", sa.Text()),
        sa.PrimaryKeyConstraint("id", name="pk_approval_sets"),
    )
    op.create_index("ix_approval_sets_job_status", "approval_sets", ["job", "status"])
    op.create_table(
        "approval_members",
        sa.Column("set_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("source_id", KEY, nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("target_key", KEY, nullable=False),
        sa.Column("digest", HASH, nullable=False),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("kinds", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("set_id", "source_id", name="pk_approval_members"),
    )
    op.create_table(
        "approval_statements",
        sa.Column("id", SERIAL, autoincrement=True, nullable=False),
        sa.Column("set_id", sa.BigInteger(), nullable=False),
        sa.Column("person", sa.String(), nullable=False),
        sa.Column("decision", sa.String(), nullable=False),
        sa.Column("at", TIME, nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
        sa.Column("digest", HASH, nullable=False),
        sa.Column("fingerprint", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_approval_statements"),
        sa.UniqueConstraint("set_id", "person", name="uq_approval_statements_set_id_person"),
    )


def downgrade() -> None:
    """Drop the approval tables (held sets are forgotten) and recreate the old one, empty."""
    for table in ("approval_statements", "approval_members"):
        op.drop_table(table)
    op.drop_index("ix_approval_sets_job_status", table_name="approval_sets")
    op.drop_table("approval_sets")
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
