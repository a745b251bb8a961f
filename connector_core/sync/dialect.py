"""The store's SQL that differs by backend, with PostgreSQL's dialect imported only when a
PostgreSQL store asks for it: a run on SQLite never loads it (about 17 ms of start-up)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite


def is_pg(conn: sa.Connection) -> bool:
    """Whether `conn` talks to PostgreSQL."""
    return conn.dialect.name == "postgresql"


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


def among(conn: sa.Connection, column: Any, values: Iterable[Any]) -> Any:
    """``column IN (values)`` for `conn`'s backend; on PostgreSQL ``column = ANY(:array)``:
    one parameter and one statement text whatever the count. An ``IN`` of 500 values costs
    SQLAlchemy and the driver 500 placeholders rendered and converted on every execution
    (about 3x the time of the array's round trip, measured), and the server a new plan per
    count."""
    values = list(values)
    if is_pg(conn):
        array = sa.bindparam(None, values, type_=pg_array(column.type), unique=True)
        return column == sa.func.any(array)
    return column.in_(values)
