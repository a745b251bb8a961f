"""Lean state: binary hashes, and shared values stored once in a terms table.

Revision ID: 0006_lean_state
Revises: 0005
Create Date: 2026-12-03

The id map's fields, policy hash and field-hash names become one "map" term per distinct
value, its consent basis a "consent" term, its hashes bytes; a ledger row's job, target,
action, fields, policy, policy hash, approvals and reason become one "entry" term, its
consent basis a "consent" term, its hashes bytes. Every row is kept and every ledger row
still hashes to what it hashed to (the payload is rebuilt from the same values).

Frozen on purpose: it spells out its types and encodings instead of importing
connector_core.sync (the encodings match connector_core.sync.terms as of this revision).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0006_lean_state"
down_revision = "0005"
branch_labels = None
depends_on = None

KEY = sa.String().with_variant(sa.String(collation="C"), "postgresql")
SERIAL = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIME = sa.DateTime(timezone=True)
# The id map's and ledger's times: microseconds since 1970 (UTC) on SQLite, 8 bytes.
COMPACT_TIME = sa.BigInteger().with_variant(sa.DateTime(timezone=True), "postgresql")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX16 = re.compile(r"[0-9a-f]{16}")
_UNKNOWN = "?" * 64
_PAGE = 2000
_ENTRY = ("job", "target", "action", "fields", "policy", "policy_hash", "approvals", "reason")


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _json(value: Any) -> Any:
    """A JSON column's value (always an object or array): parsed by the driver or still text."""
    return json.loads(value) if isinstance(value, str) else value


def _time(value: dt.datetime, pg: bool) -> Any:
    """A time as COMPACT_TIME stores it (0005 kept naive UTC on SQLite)."""
    aware = value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value
    return aware if pg else (aware - _EPOCH) // dt.timedelta(microseconds=1)


def _digest(text: str) -> bytes:
    """A ledger hash as bytes: 32 for a hex SHA-256; the text's own bytes for anything else
    (an edited row, which verification then reports as edited, as it did before)."""
    if _HEX64.fullmatch(text):
        return bytes.fromhex(text)
    return text.encode("utf-8", "surrogatepass")


class _Terms:
    """The terms written so far, by kind and text; ids given here (sequence set at the end)."""

    def __init__(self, table: sa.Table) -> None:
        self.table = table
        self.ids: dict[bytes, int] = {}
        self.new: list[dict[str, Any]] = []
        self.seen: dict[Any, int] = {}  # what a term was made of, as stored before: its id

    def id(self, kind: str, value: Any) -> int:
        text = _canonical(value)
        key = hashlib.sha256(f"{kind}\n{text}".encode("utf-8", "surrogatepass")).digest()
        found = self.ids.get(key)
        if found is None:
            found = self.ids[key] = len(self.ids) + 1
            self.new.append({"id": found, "kind": kind, "digest": key, "value": text})
        return found

    def of(self, kind: str, raw: Any, make: Any) -> int:
        """The id of the term `make()` builds from `raw` (hashable: the stored texts), made
        once per distinct `raw`."""
        found = self.seen.get((kind, raw))
        if found is None:
            found = self.seen[(kind, raw)] = self.id(kind, make())
        return found

    def flush(self, conn: sa.Connection) -> None:
        if self.new:
            conn.execute(sa.insert(self.table), self.new)
            self.new = []


_JSON_COLUMNS = ("fields", "consent_basis", "approvals", "field_hashes")


def _pages(conn: sa.Connection, table: str, order: str) -> Iterator[list[Any]]:
    """Every row of `table` a page at a time, its JSON columns as text (decoded only where a
    value is new), whatever the backend."""
    old = sa.Table(table, sa.MetaData(), autoload_with=conn)
    columns = [sa.cast(c, sa.Text()).label(c.name) if c.name in _JSON_COLUMNS else c for c in old.c]
    query = sa.select(*columns).order_by(*(old.c[name] for name in order.split(",")))
    for partition in conn.execute(query.execution_options(yield_per=_PAGE)).partitions():
        yield list(partition)


def upgrade() -> None:
    """Create terms; rebuild id_map and ledger in the lean form, every row kept."""
    conn = op.get_bind()
    pg = conn.dialect.name == "postgresql"
    terms = op.create_table(
        "terms",
        sa.Column("id", SERIAL, autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("digest", sa.LargeBinary(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_terms"),
        sa.UniqueConstraint("digest", name="uq_terms_digest"),
    )
    op.create_index("ix_terms_kind", "terms", ["kind"])
    made = _Terms(terms)

    for table, indexes, constraints in (
        ("id_map", ["ix_id_map_source_id"], ["pk_id_map", "uq_id_map_job_target_key"]),
        ("ledger", ["ix_ledger_source_id", "ix_ledger_job"], ["pk_ledger"]),
    ):
        for index in indexes:
            op.drop_index(index, table_name=table)
        op.rename_table(table, f"{table}_0005")
        if pg:  # constraint (and index) names are the schema's, not the table's
            for name in constraints:
                op.execute(f"ALTER TABLE {table}_0005 RENAME CONSTRAINT {name} TO {name}_0005")

    id_map = op.create_table(
        "id_map",
        sa.Column("job", sa.String(), nullable=False),
        sa.Column("source_id", KEY, nullable=False),
        sa.Column("target_key", KEY, nullable=False),
        sa.Column("projection_hash", sa.LargeBinary(), nullable=True),
        sa.Column("shape", sa.Integer(), nullable=False),
        sa.Column("consent", sa.Integer(), nullable=False),
        sa.Column("field_hashes", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", COMPACT_TIME, nullable=False),
        sa.Column("updated_at", COMPACT_TIME, nullable=False),
        sa.PrimaryKeyConstraint("job", "source_id", name="pk_id_map"),
        sa.UniqueConstraint("job", "target_key", name="uq_id_map_job_target_key"),
        sqlite_with_rowid=False,
    )
    for rows in _pages(conn, "id_map_0005", "job,source_id"):
        new = [_id_row(row, made, pg) for row in rows]
        made.flush(conn)
        conn.execute(sa.insert(id_map), new)
    op.create_index("ix_id_map_source_id", "id_map", ["source_id"])
    op.drop_table("id_map_0005")

    ledger = op.create_table(
        "ledger",
        sa.Column("seq", SERIAL, autoincrement=True, nullable=False),
        sa.Column("at", COMPACT_TIME, nullable=False),
        sa.Column("record_key", KEY, nullable=False),
        sa.Column("source_id", KEY, nullable=False),
        sa.Column("entry", sa.Integer(), nullable=False),
        sa.Column("consent", sa.Integer(), nullable=False),
        sa.Column("prev_hash", sa.LargeBinary(), nullable=False),
        sa.Column("row_hash", sa.LargeBinary(), nullable=False),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_ledger"),
    )
    for rows in _pages(conn, "ledger_0005", "seq"):
        new = [_ledger_row(row, made, pg) for row in rows]
        made.flush(conn)
        conn.execute(sa.insert(ledger), new)
    op.create_index("ix_ledger_source_id", "ledger", ["source_id"])
    op.create_index("ix_ledger_entry", "ledger", ["entry"])
    op.drop_table("ledger_0005")
    if pg:  # ids and seqs were given explicitly: move the sequences past them
        for table, column in (("terms", "id"), ("ledger", "seq")):
            op.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "
                f"COALESCE((SELECT max({column}) FROM {table}), 0) + 1, false)"
            )


def _id_row(row: Any, made: _Terms, pg: bool) -> dict[str, Any]:
    hashes = _json(row.field_hashes)
    names = None if hashes is None else tuple(sorted(hashes))
    blob: bytes | None = None
    packed = hashes is not None and all(
        isinstance(v, str) and _HEX16.fullmatch(v) for v in hashes.values()
    )
    if packed:
        blob = b"".join(bytes.fromhex(hashes[n]) for n in names or ())
    elif hashes is not None:
        blob = b""  # not 8-byte hashes: kept whole in the shape

    def shape() -> dict[str, Any]:
        made_shape: dict[str, Any] = {"fields": _json(row.fields), "policy_hash": row.policy_hash}
        if hashes is None:
            made_shape["hashed"] = None
        elif packed:
            made_shape["hashed"] = list(names or ())
        else:
            made_shape["hashes"] = hashes
        return made_shape

    raw_shape = (row.fields, row.policy_hash, names if packed else row.field_hashes, packed)
    digest = row.projection_hash
    return {
        "job": row.job,
        "source_id": row.source_id,
        "target_key": row.target_key,
        # anything but a SHA-256 (the unknown mark) is unknown: the next run rewrites it
        "projection_hash": bytes.fromhex(digest) if _HEX64.fullmatch(digest) else None,
        "shape": made.of("map", raw_shape, shape),
        "consent": made.of("consent", row.consent_basis, lambda: _json(row.consent_basis)),
        "field_hashes": blob,
        "created_at": _time(row.created_at, pg),
        "updated_at": _time(row.updated_at, pg),
    }


def _ledger_row(row: Any, made: _Terms, pg: bool) -> dict[str, Any]:
    values = row._mapping

    def entry() -> dict[str, Any]:
        made_entry = {name: values[name] for name in _ENTRY}
        made_entry["fields"], made_entry["approvals"] = _json(row.fields), _json(row.approvals)
        return made_entry

    raw_entry = tuple(values[name] for name in _ENTRY)
    return {
        "seq": row.seq,
        "at": _time(row.at, pg),
        "record_key": row.record_key,
        "source_id": row.source_id,
        "entry": made.of("entry", raw_entry, entry),
        "consent": made.of("consent", row.consent_basis, lambda: _json(row.consent_basis)),
        "prev_hash": _digest(row.prev_hash),
        "row_hash": _digest(row.row_hash),
        "version": row.version,
    }


def downgrade() -> None:
    """Not supported: restore a backup taken before the upgrade to go back."""
    raise NotImplementedError("0006_lean_state cannot be downgraded; restore a backup")
