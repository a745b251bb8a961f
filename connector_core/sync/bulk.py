"""Many-row inserts for the tables with a row per record, without SQLAlchemy's per-row
parameter processing on SQLite (a third of the cost of recording a batch there).

PostgreSQL keeps SQLAlchemy's statements, whose driver batching is already what it wants.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from connector_core.sync import dialect
from connector_core.sync.tables import CompactTime, to_micros


def insert_many(
    conn: Connection,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    conflict: Sequence[str] = (),
) -> None:
    """Insert `rows` (all with the same keys) into `table`; with `conflict` (the primary
    key's columns), a row whose key is there already replaces that row's other columns."""
    if not rows:
        return
    names = list(rows[0])
    updated = [n for n in names if n not in conflict]
    if conn.dialect.name != "sqlite":
        stmt = dialect.insert(table, pg=True)
        if conflict:
            stmt = stmt.on_conflict_do_update(
                index_elements=list(conflict), set_={n: stmt.excluded[n] for n in updated}
            )
        conn.execute(stmt, list(rows))
        return
    sql = f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
    if conflict:
        assignments = ", ".join(f"{n} = excluded.{n}" for n in updated)
        sql += f" ON CONFLICT ({', '.join(conflict)}) DO UPDATE SET {assignments}"
    # column by column, then zipped: a comprehension per column, not a generator per row
    columns = [_bound(table.c[n], [row[n] for row in rows]) for n in names]
    conn.exec_driver_sql(sql, list(zip(*columns, strict=True)))


def _bound(column: sa.Column[Any], values: list[Any]) -> list[Any]:
    """`values` as SQLite takes them for `column` (only CompactTime needs anything done;
    a batch's rows mostly share one time, converted once)."""
    bind = _binder(column)
    if bind is None:
        return values
    done: dict[Any, Any] = {}
    return [done[v] if v in done else done.setdefault(v, bind(v)) for v in values]


def _binder(column: sa.Column[Any]) -> Callable[[Any], Any] | None:
    """What SQLite needs done to a column's values (only CompactTime needs anything)."""
    if isinstance(column.type, CompactTime):
        return _micros
    return None


def _micros(value: Any) -> Any:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError(f"a naive datetime cannot be stored: {value!r}")
    return to_micros(value)
