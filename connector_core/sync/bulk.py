"""Many-row inserts for the tables with a row per record, without SQLAlchemy's per-row
parameter processing on SQLite (a third of the cost of recording a batch there).

PostgreSQL keeps SQLAlchemy's statements, whose driver batching is already what it wants.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from connector_core.sync import dialect
from connector_core.sync.tables import CompactTime


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
    columns = [_bound(table.c[n], [row[n] for row in rows], conn.dialect) for n in names]
    conn.exec_driver_sql(sql, list(zip(*columns, strict=True)))


def _bound(column: sa.Column[Any], values: list[Any], on: sa.Dialect) -> list[Any]:
    """`values` as SQLite takes them for `column`: times through their column type's own
    conversion (CompactTime, SecondTime: the one place that says how a time is stored), the
    rest as they are; a batch's rows mostly share one time, converted once."""
    kind = column.type
    if not isinstance(kind, CompactTime):
        return values
    done: dict[Any, Any] = {}
    return [
        done[v] if v in done else done.setdefault(v, kind.process_bind_param(v, on)) for v in values
    ]
