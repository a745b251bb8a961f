"""Writing ledger rows as someone with write access to the database would (tests only).

The ledger table stores a row's shared values as terms (connector_core.sync.terms): these
helpers take rows as LedgerEntry spells them and write them in the stored form.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from connector_core.sync import ledger
from connector_core.sync.terms import Terms

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


def copy_id_map_row(job: str, source_id: str, key: str, where: str = "") -> str:
    """SQL that copies an id map row under another job, source id and key."""
    return (
        f"INSERT INTO id_map SELECT '{job}', '{source_id}', '{key}', projection_hash, shape, "
        f"consent, field_hashes, created_at, updated_at FROM id_map {where}"
    )
