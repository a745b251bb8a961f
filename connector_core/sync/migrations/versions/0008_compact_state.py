"""Compact state: per id map and ledger row, only what differs from row to row.

Revision ID: 0008_compact_state
Revises: 0007_row_fingerprints
Create Date: 2026-12-03

The id map's job becomes the id of a "job" term (its name, stored once), its target keys
bytes (a UUID in 16), its projection hashes their first 16 bytes and its field hashes their
first 4 (what the planner now computes: they only detect change), its unread
``created_at`` goes, and so do its two secondary indexes: every query names the job
(who-has asks each job's primary key) and none looks a record up by its target key. The
ledger's record keys become bytes, its ``prev_hash`` column goes (it repeated the row
before's ``row_hash``, which the chain is checked against instead) and so does its index on
source ids, which no query used. Every row is kept, and every ledger row still hashes to
what it hashed to.

Frozen on purpose: it spells out its types and encodings instead of importing
connector_core.sync (the encodings match connector_core.sync.terms as of this revision).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0008_compact_state"
down_revision = "0007_row_fingerprints"
branch_labels = None
depends_on = None

KEY = sa.String().with_variant(sa.String(collation="C"), "postgresql")
SERIAL = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
COMPACT_TIME = sa.BigInteger().with_variant(sa.DateTime(timezone=True), "postgresql")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_PAGE = 2000


def _pack_key(key: str) -> bytes:
    """A lowercase UUID as its 16 bytes; any other key as UTF-8, marked with 0xFF when that
    is 16 bytes long (0xFF never occurs in UTF-8)."""
    if len(key) == 36 and _UUID.fullmatch(key):
        return bytes.fromhex(key.replace("-", ""))
    raw = key.encode("utf-8", "surrogatepass")
    return raw + b"\xff" if len(raw) == 16 else raw


def _prefix(digest: bytes | None, size: int) -> bytes | None:
    """The first `size` bytes of a stored projection hash (the planner now keeps 128 bits)."""
    return None if digest is None else bytes(digest)[:size]


def _field_prefixes(blob: bytes | None) -> bytes | None:
    """The packed 8-byte field hashes of a row cut to their first 4 bytes each (the planner
    now keeps 32 bits); an empty blob (hashes kept whole in the shape term) stays as it is."""
    if not blob:
        return blob
    raw = bytes(blob)
    return b"".join(raw[i : i + 4] for i in range(0, len(raw), 8))


def _pages(conn: sa.Connection, table: str, order: str) -> Iterator[list[Any]]:
    old = sa.Table(table, sa.MetaData(), autoload_with=conn)
    query = sa.select(old).order_by(*(old.c[name] for name in order.split(",")))
    for partition in conn.execute(query.execution_options(yield_per=_PAGE)).partitions():
        yield list(partition)


def _job_ids(conn: sa.Connection) -> dict[str, int]:
    """A "job" term for every job the id map names, by name."""
    terms = sa.Table("terms", sa.MetaData(), autoload_with=conn)
    names = list(conn.scalars(sa.text("SELECT DISTINCT job FROM id_map")))
    ids: dict[str, int] = {}
    for name in names:
        text = json.dumps(name, ensure_ascii=False)
        digest = hashlib.sha256(f"job\n{text}".encode("utf-8", "surrogatepass")).digest()
        found = conn.scalar(sa.select(terms.c.id).where(terms.c.digest == digest))
        if found is None:
            conn.execute(sa.insert(terms).values(kind="job", digest=digest, value=text))
            found = conn.scalar(sa.select(terms.c.id).where(terms.c.digest == digest))
        ids[name] = int(found or 0)
    return ids


def _set_aside(table: str, indexes: list[str], constraints: list[str], pg: bool) -> None:
    for index in indexes:
        op.drop_index(index, table_name=table)
    op.rename_table(table, f"{table}_0007")
    if pg:  # constraint (and index) names are the schema's, not the table's
        for name in constraints:
            op.execute(f"ALTER TABLE {table}_0007 RENAME CONSTRAINT {name} TO {name}_0007")


def upgrade() -> None:
    """Rebuild id_map and ledger in the compact form, every row kept."""
    conn = op.get_bind()
    pg = conn.dialect.name == "postgresql"
    jobs = _job_ids(conn)
    _set_aside("id_map", ["ix_id_map_source_id"], ["pk_id_map", "uq_id_map_job_target_key"], pg)
    id_map = op.create_table(
        "id_map",
        sa.Column("job", sa.Integer(), nullable=False),
        sa.Column("source_id", KEY, nullable=False),
        sa.Column("target_key", sa.LargeBinary(), nullable=False),
        sa.Column("projection_hash", sa.LargeBinary(), nullable=True),
        sa.Column("shape", sa.Integer(), nullable=False),
        sa.Column("consent", sa.Integer(), nullable=False),
        sa.Column("field_hashes", sa.LargeBinary(), nullable=True),
        sa.Column("updated_at", COMPACT_TIME, nullable=False),
        sa.PrimaryKeyConstraint("job", "source_id", name="pk_id_map"),
        sqlite_with_rowid=False,
    )
    for rows in _pages(conn, "id_map_0007", "job,source_id"):
        new = [
            {
                "job": jobs[row.job],
                "source_id": row.source_id,
                "target_key": _pack_key(row.target_key),
                "projection_hash": _prefix(row.projection_hash, 16),
                "shape": row.shape,
                "consent": row.consent,
                "field_hashes": _field_prefixes(row.field_hashes),
                "updated_at": row.updated_at,
            }
            for row in rows
        ]
        conn.execute(sa.insert(id_map), new)
    op.drop_table("id_map_0007")

    _set_aside("ledger", ["ix_ledger_source_id", "ix_ledger_entry"], ["pk_ledger"], pg)
    ledger = op.create_table(
        "ledger",
        sa.Column("seq", SERIAL, autoincrement=True, nullable=False),
        sa.Column("at", COMPACT_TIME, nullable=False),
        sa.Column("record_key", sa.LargeBinary(), nullable=False),
        sa.Column("source_id", KEY, nullable=False),
        sa.Column("entry", sa.Integer(), nullable=False),
        sa.Column("consent", sa.Integer(), nullable=False),
        sa.Column("row_hash", sa.LargeBinary(), nullable=False),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_ledger"),
    )
    for rows in _pages(conn, "ledger_0007", "seq"):
        new = [
            {
                "seq": row.seq,
                "at": row.at,
                "record_key": _pack_key(row.record_key),
                "source_id": row.source_id,
                "entry": row.entry,
                "consent": row.consent,
                "row_hash": row.row_hash,
                "version": row.version,
            }
            for row in rows
        ]
        conn.execute(sa.insert(ledger), new)
    op.create_index("ix_ledger_entry", "ledger", ["entry"])
    op.drop_table("ledger_0007")
    if pg:  # seqs were given explicitly: move the sequence past them
        op.execute(
            "SELECT setval(pg_get_serial_sequence('ledger', 'seq'), "
            "COALESCE((SELECT max(seq) FROM ledger), 0) + 1, false)"
        )


def downgrade() -> None:
    """Not supported: restore a backup taken before the upgrade to go back."""
    raise NotImplementedError("0008_compact_state cannot be downgraded; restore a backup")
