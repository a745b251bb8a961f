"""The store's SQL that differs by backend, with PostgreSQL's dialect imported only when a
PostgreSQL store asks for it: a run on SQLite never loads it (about 17 ms of start-up); and
how many values one statement takes (:func:`chunks`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

#: Values per statement (an ``IN`` list, an insert's rows): well under every backend's
#: parameter limit (SQLite's 32,766, PostgreSQL's 65,535).
CHUNK = 500

_T = TypeVar("_T")


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


def chunks(items: Sequence[_T], size: int = CHUNK) -> Iterator[Sequence[_T]]:
    """`items` `size` at a time, in order (slices: a list gives lists)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
