"""Alembic environment: online only, on the connection :func:`upgrade` hands over."""

from __future__ import annotations

from alembic import context

from connector_core.sync.tables import metadata

if context.is_offline_mode():
    raise RuntimeError("the state store migrates online only (StateStore.open does it)")

context.configure(
    connection=context.config.attributes["connection"],
    target_metadata=metadata,
    render_as_batch=True,  # SQLite can only ALTER by copying a table; batch mode does that
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
