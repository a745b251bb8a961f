"""Fence tokens for locks, and the store's own secret for target keys.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03

Frozen on purpose: it spells out its types instead of importing connector_core.sync.tables.
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

TIME = sa.DateTime(timezone=True)

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create lock_fences and store_secrets; generate the store's target-key secret."""
    op.create_table(
        "lock_fences",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.Column("job", sa.String(), nullable=False),
        sa.Column("holder", sa.String(), nullable=False),
        sa.Column("acquired_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_lock_fences"),
    )
    secrets_table = op.create_table(
        "store_secrets",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("value", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_store_secrets"),
    )
    # Records already in an id map keep their stored keys; only new ones use this secret.
    op.bulk_insert(secrets_table, [{"name": "target_keys", "value": secrets.token_hex(32)}])
    # A job whose last run was interrupted may have left records the state never recorded,
    # under unkeyed keys: its next run looks for them under those keys, and creates under
    # them, until one run finishes (StateStore.set_job_state clears the mark).
    op.execute(
        "INSERT INTO store_secrets (name, value) SELECT 'legacy_keys:' || job, 'interrupted' "
        "FROM job_state WHERE last_run_at IS NOT NULL "
        "AND (last_success_at IS NULL OR last_success_at <> last_run_at)"
    )


def downgrade() -> None:
    """Drop both tables (the target-key secret with them)."""
    op.drop_table("store_secrets")
    op.drop_table("lock_fences")
