"""The store's SQL that differs by backend, with PostgreSQL's dialect imported only when a
PostgreSQL store asks for it: a run on SQLite never loads it (about 17 ms of start-up)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite


def insert(table: sa.Table, *, pg: bool) -> Any:
    """``INSERT`` for `table` that knows ``ON CONFLICT`` on either backend."""
    if pg:
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)
    return sqlite.insert(table)


def pg_array(item: Any) -> Any:
    """PostgreSQL's ``ARRAY`` of `item` (only a PostgreSQL store binds arrays)."""
    from sqlalchemy.dialects import postgresql

    return postgresql.ARRAY(item)
