"""Writing ledger rows as someone with write access to the database would (tests only).

The ledger table stores a row's shared values as terms (connector_core.sync.terms): these
helpers take rows as LedgerEntry spells them and write them in the stored form.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from connector_core.sync import ledger
from connector_core.sync.terms import Terms, pack_key

STORED = ", ".join(c.name for c in ledger.ledger.c)
"""The ledger table's columns, in order (for INSERT ... SELECT)."""


def insert_rows(conn: sa.Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ledger rows (LedgerEntry's columns) as they are."""
    conn.execute(sa.insert(ledger.ledger), ledger.stored(conn, rows, Terms()))


def update_rows(conn: sa.Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Overwrite the rows of the same seq with `rows` (LedgerEntry's columns)."""
    for row in ledger.stored(conn, rows, Terms()):
        conn.execute(sa.update(ledger.ledger).where(ledger.ledger.c.seq == row["seq"]).values(row))


def edit(engine: sa.Engine, store: Any, seq: int, **changes: Any) -> dict[str, Any]:
    """Change row `seq`'s values (its hashes too, if given); return the edited row."""
    row = next(ledger.as_dict(e) for e in store.ledger_entries() if e.seq == seq) | changes
    with engine.begin() as conn:
        update_rows(conn, [row])
    return row


def job_id(name: str) -> str:
    """SQL for the id the id map knows job `name` by (its "job" term)."""
    return f"(SELECT id FROM terms WHERE kind = 'job' AND value = '{json.dumps(name)}')"


def copy_id_map_row(engine: sa.Engine, job: str, source_id: str, key: str, where: str = "") -> None:
    """Copy an id map row under another job, source id and key (`where` picks the row)."""
    sql = (
        f"INSERT INTO id_map SELECT {job_id(job)}, :source_id, :key, projection_hash, shape, "
        f"consent, field_hashes, updated_at FROM id_map {where}"
    )
    with engine.begin() as conn:
        conn.execute(sa.text(sql), {"source_id": source_id, "key": pack_key(key)})


def set_target_key(engine: sa.Engine, job: str, source_id: str, key: str) -> None:
    """Overwrite the target key of an id map row."""
    sql = f"UPDATE id_map SET target_key = :key WHERE job = {job_id(job)} AND source_id = :sid"
    with engine.begin() as conn:
        conn.execute(sa.text(sql), {"key": pack_key(key), "sid": source_id})
