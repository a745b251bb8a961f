"""The state store's schema (SQLAlchemy Core): one metadata for SQLite and PostgreSQL.

The Alembic migrations in :mod:`connector_core.sync.migrations` create exactly these tables; a
test compares the two on both backends, so a change here needs a new migration.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from connector_core.records import storable_text

metadata = sa.MetaData(
    # Named constraints make later migrations (and SQLite batch ALTERs) deterministic.
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UtcDateTime(sa.TypeDecorator[dt.datetime]):
    """A timezone-aware UTC timestamp on both backends (SQLite keeps naive UTC text)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        """Store UTC; refuse naive datetimes, whose zone nobody can know later."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"a naive datetime cannot be stored: {value!r}")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        """Read back an aware UTC datetime."""
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class Message(sa.TypeDecorator[str]):
    """Free text from outside the engine (a target's error, a note typed in): stored with
    what no store holds as text, a NUL or a lone surrogate, written as its escape
    (:func:`~connector_core.records.storable_text`), so an odd message never stops a run."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        """The text, escaped where a store could not hold it."""
        return None if value is None else storable_text(value)


class CompactTime(sa.TypeDecorator[dt.datetime]):
    """A UTC timestamp kept in 8 bytes: microseconds since 1970 on SQLite (where a
    DateTime is 26 characters of text), ``timestamptz`` on PostgreSQL. For the tables with a
    row per record (id map, ledger); lossless to the microsecond, as the ledger hashes it."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        """A BIGINT on SQLite."""
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.BigInteger())
        return dialect.type_descriptor(sa.DateTime(timezone=True))

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        """Refuse naive datetimes; microseconds since the epoch on SQLite."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"a naive datetime cannot be stored: {value!r}")
        return to_micros(value) if dialect.name == "sqlite" else value.astimezone(dt.UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        """Read back an aware UTC datetime."""
        if value is None:
            return None
        if isinstance(value, int):
            return from_micros(value)
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class SecondTime(CompactTime):
    """A UTC timestamp to the second: seconds since 1970 on SQLite (4 bytes until 2038, then
    6), ``timestamptz`` on PostgreSQL read back without its fraction. For the id map's
    `updated_at`, which says since when a target holds a record (schema 0018)."""

    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        """Whole seconds since the epoch on SQLite; the time cut to its second elsewhere."""
        stored = super().process_bind_param(value, dialect)
        if isinstance(stored, int):
            return stored // 1_000_000
        return None if stored is None else stored.replace(microsecond=0)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        """Read back an aware UTC datetime, to the second."""
        if isinstance(value, int):
            return from_micros(value * 1_000_000)
        read = super().process_result_value(value, dialect)
        return None if read is None else read.replace(microsecond=0)


def to_micros(value: dt.datetime) -> int:
    """Microseconds since 1970-01-01 UTC (exact: integer arithmetic on the timedelta)."""
    return (value - _EPOCH) // dt.timedelta(microseconds=1)


def from_micros(value: int) -> dt.datetime:
    """The aware UTC datetime :func:`to_micros` gave `value` for."""
    return _EPOCH + dt.timedelta(microseconds=value)


# Ids compare byte-wise on PostgreSQL (collation "C", as SQLite's BINARY does), so that "sorted"
# means Python's str order on both backends and keyset pages can walk the primary-key index.
Key = sa.String().with_variant(sa.String(collation="C"), "postgresql")
# SQLite only autoincrements an INTEGER PRIMARY KEY; PostgreSQL gets 64 bits.
Serial = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Hash = sa.String(64)

job_state = sa.Table(
    "job_state",
    metadata,
    sa.Column("job", sa.String(), primary_key=True),
    sa.Column("cursor", sa.Text()),
    sa.Column("policy_hash", Hash),
    sa.Column("config_hash", Hash),
    sa.Column("last_run_at", UtcDateTime()),
    sa.Column("last_success_at", UtcDateTime()),
    sa.Column("last_reconciled_at", UtcDateTime()),
)

# Binary SHA-256 digests: 32 bytes where hex text took 64 (see connector_core.sync.terms).
Digest = sa.LargeBinary()

# Values many rows share, stored once (schema 0006): a canonical JSON text per row, found by
# its SHA-256. `kind` says which: "job" (a job's name, schema 0008), "map" (an id map row's
# fields, policy hash and field-hash names), "entry" (a ledger row's job, target, action,
# fields, policy, reason, approvals) or "consent" (a consent basis). Rows are only ever
# added, so their ids can be cached.
terms = sa.Table(
    "terms",
    metadata,
    sa.Column("id", Serial, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(), nullable=False),
    sa.Column("digest", Digest, nullable=False),
    sa.Column("value", sa.Text(), nullable=False),
    sa.UniqueConstraint("digest"),
    sa.Index(None, "kind"),
)

# One row per record a job holds in its target (schema 0008: per record, only what differs
# from record to record). `job` is the id of the job's name as a "job" term; `target_key` is
# packed by terms.pack_key (a UUID in 16 bytes). `projection_hash` is NULL while what the
# target holds is unknown (model.UNKNOWN_HASH), else 16 bytes (keys.PROJECTION_HASH_DIGITS);
# `field_hashes` packs the 4-byte field hashes in the order of the names its `shape` term
# lists. No secondary index: every query names the
# job (who-has asks each job's primary key), and no query looks a record up by its target key
# (target keys are HMACs, unique without an index to say so).
id_map = sa.Table(
    "id_map",
    metadata,
    sa.Column("job", sa.Integer(), primary_key=True),
    sa.Column("source_id", Key, primary_key=True),
    sa.Column("target_key", sa.LargeBinary(), nullable=False),
    sa.Column("projection_hash", Digest, nullable=True),
    sa.Column("shape", sa.Integer(), nullable=False),
    sa.Column("consent", sa.Integer(), nullable=False),
    sa.Column("field_hashes", sa.LargeBinary(), nullable=True),
    sa.Column("updated_at", SecondTime(), nullable=False),  # to the second (schema 0018)
    sqlite_with_rowid=False,  # the primary key is the table: no second copy of its columns
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", Serial, primary_key=True, autoincrement=True),
    sa.Column("job", sa.String(), nullable=False),
    sa.Column("started_at", UtcDateTime(), nullable=False),
    sa.Column("finished_at", UtcDateTime()),
    sa.Column("status", sa.String(), nullable=False),
    sa.Column("dry_run", sa.Boolean(), nullable=False),
    sa.Column("counts", sa.JSON()),
    sa.Column("error", Message()),
    sa.Index(None, "job", "id"),
)

# The write-ahead intent log: one row per batch in flight, written in its own transaction
# before the batch goes to the target, deleted by the transaction that records the batch.
# `changes` lists [source_id, target_key, action, reason] per change (no values, no fields).
intents = sa.Table(
    "intents",
    metadata,
    sa.Column("id", Serial, primary_key=True, autoincrement=True),
    sa.Column("job", sa.String(), nullable=False),
    sa.Column("at", UtcDateTime(), nullable=False),
    sa.Column("changes", sa.JSON(), nullable=False),
    sa.Index(None, "job"),
)

# The changes still owed to a target, one row per record at most: "sent" (an intent left by
# an interrupted run, taken over by the next run), "failed" (the target rejected it), "held"
# (a delete the mass-delete guard held back). The next run resolves them all.
outstanding = sa.Table(
    "outstanding",
    metadata,
    sa.Column("job", sa.String(), primary_key=True),
    sa.Column("source_id", Key, primary_key=True),
    sa.Column("target_key", Key, nullable=False),
    sa.Column("action", sa.String(), nullable=False),
    sa.Column("status", sa.String(), nullable=False),
    sa.Column("reason", Message(), nullable=False),
    sa.Column("error", Message()),
    sa.Column("fields", sa.JSON(), nullable=False),
    sa.Column("since", UtcDateTime(), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
)

# The hash chain (connector_core.sync.ledger): what a row's payload holds besides its own
# columns (job, target, action, fields, policy, policy hash, approvals, reason) is its `entry`
# term, its consent basis its `consent` term (schema 0006); `record_key` is packed by
# terms.pack_key. A row's previous hash is the row_hash of the row before it (schema 0008
# dropped the copy each row kept).
ledger = sa.Table(
    "ledger",
    metadata,
    sa.Column("seq", Serial, primary_key=True, autoincrement=True),
    sa.Column("at", CompactTime(), nullable=False),
    sa.Column("record_key", sa.LargeBinary(), nullable=False),
    sa.Column("source_id", Key, nullable=False),
    sa.Column("entry", sa.Integer(), nullable=False),
    sa.Column("consent", sa.Integer(), nullable=False),
    sa.Column("row_hash", Digest, nullable=False),
    # The hash format (connector_core.sync.ledger.PAYLOADS): 1 unkeyed SHA-256, 2 HMAC-SHA256,
    # 3 HMAC-SHA256 of a compact payload, 4 the same cut to 128 bits (16 bytes in row_hash).
    # No index but the primary key (schema 0018): every read of the ledger goes in seq order.
    sa.Column("version", sa.Integer(), nullable=False, server_default="1"),
)

# One row (id = 1) naming the last ledger row; updated in the same transaction as each append,
# so deleting rows from the end of the ledger is detected. Its row lock serializes appends.
ledger_head = sa.Table(
    "ledger_head",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("seq", Serial, nullable=False),
    sa.Column("row_hash", Hash, nullable=False),
    # Which ledger key the chain is written with (a check value, never the key): a store
    # opened with another key says so instead of reporting every row as edited.
    sa.Column("key_check", Hash, nullable=True),
)

# Change sets waiting for people (connector_core.sync.approvals), schema 0010: one row per
# set, bound to its job, its policy's content hash and `set_hash` (the hash of its members'
# masked projections); `summary` holds counts, field labels and kinds (never a value).
approval_sets = sa.Table(
    "approval_sets",
    metadata,
    sa.Column("id", Serial, primary_key=True, autoincrement=True),
    sa.Column("job", sa.String(), nullable=False),
    sa.Column("policy", sa.String(), nullable=False),
    sa.Column("policy_hash", Hash, nullable=False),
    sa.Column("set_hash", Hash, nullable=False),
    sa.Column("status", sa.String(), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("escalated_at", UtcDateTime()),
    sa.Column("decided_at", UtcDateTime()),
    sa.Column("summary", sa.JSON(), nullable=False),
    sa.Column("note", Message()),
    sa.Index(None, "job", "status"),
)

# The held changes of each set: a source id, what would be sent (its projection's hash and
# field labels), never the values.
approval_members = sa.Table(
    "approval_members",
    metadata,
    sa.Column("set_id", sa.BigInteger(), primary_key=True, autoincrement=False),
    sa.Column("source_id", Key, primary_key=True),
    sa.Column("action", sa.String(), nullable=False),
    sa.Column("target_key", Key, nullable=False),
    sa.Column("digest", Hash, nullable=False),
    sa.Column("fields", sa.JSON(), nullable=False),
    sa.Column("kinds", sa.JSON(), nullable=False),
)

# Signed statements (SSHSIG) approving or denying a set: `digest` is the SHA-256 of the
# armored signature, the statement's hash the ledger rows of its shares carry.
approval_statements = sa.Table(
    "approval_statements",
    metadata,
    sa.Column("id", Serial, primary_key=True, autoincrement=True),
    sa.Column("set_id", sa.BigInteger(), nullable=False),
    sa.Column("person", sa.String(), nullable=False),
    sa.Column("decision", sa.String(), nullable=False),
    sa.Column("at", UtcDateTime(), nullable=False),
    sa.Column("signature", sa.Text(), nullable=False),
    sa.Column("digest", Hash, nullable=False),
    sa.Column("fingerprint", sa.String(), nullable=False),
    sa.UniqueConstraint("set_id", "person"),
)

# Share requests received (connector_core.sync.share_requests), schema 0011: the signed
# document as received (the requester's own name, contact and key, never a shared record),
# what the floor cut, and where the request stands; `set_id` is the approval set its
# decision is taken in (statements of the owner's approvers, as for any held change set).
share_requests = sa.Table(
    "share_requests",
    metadata,
    sa.Column("id", sa.String(), primary_key=True),
    sa.Column("request_hash", Hash, nullable=False),
    sa.Column("status", sa.String(), nullable=False),
    sa.Column("document", sa.JSON(), nullable=False),
    sa.Column("review", sa.JSON(), nullable=False),
    sa.Column("set_id", sa.BigInteger()),
    sa.Column("received_at", UtcDateTime(), nullable=False),
    sa.Column("decided_at", UtcDateTime()),
    sa.Column("expires_at", UtcDateTime()),
    sa.Column("ended_at", UtcDateTime()),
    sa.Column("note", Message()),
)

GENESIS_HASH = "0" * 64
"""The `prev_hash` of the first ledger row, and the head's hash while the ledger is empty."""

# One row per lock (``job:<name>``, ``target:<connection>``): its fence token, bumped by each
# new holder. record_batch checks, in its own transaction, that the token is still the one its
# store took, so a holder whose lock was lost (a dropped PostgreSQL connection) and taken by
# another worker records nothing more.
lock_fences = sa.Table(
    "lock_fences",
    metadata,
    sa.Column("name", sa.String(), primary_key=True),
    sa.Column("token", sa.BigInteger(), nullable=False),
    sa.Column("job", sa.String(), nullable=False),
    sa.Column("holder", sa.String(), nullable=False),
    sa.Column("acquired_at", UtcDateTime(), nullable=False),
)

# Secrets this store generated for itself: ``target_keys`` keys the HMAC of target keys when
# connector.yaml names no network.key_secret. Whoever reads it also reads the id map, which
# pairs every source id with its target key already, so keeping it here discloses nothing new.
store_secrets = sa.Table(
    "store_secrets",
    metadata,
    sa.Column("name", sa.String(), primary_key=True),
    sa.Column("value", sa.String(), nullable=False),
)

# The row fingerprints of a job's last complete read (Capability.ROW_FINGERPRINTS): the 64-bit
# fingerprints of the rows decided at `cursor`, as one blob of little-endian uint64
# (8 bytes a row). Saved with the cursor, in record_batch's transaction; valid only while
# the job's cursor is this one.
row_fingerprints = sa.Table(
    "row_fingerprints",
    metadata,
    sa.Column("job", sa.String(), primary_key=True),
    sa.Column("cursor", sa.Text(), nullable=False),
    sa.Column("fingerprints", sa.LargeBinary(), nullable=False),
)

# The partners of job templates (connector_core.templates) as the last run saw them, schema
# 0015: a partner job's registry row (what renders its target and its policy), so that a
# partner removed from its registry can still be taken back from; status "active" or
# "retired" (its data taken back).
partner_jobs = sa.Table(
    "partner_jobs",
    metadata,
    sa.Column("job", sa.String(), primary_key=True),
    sa.Column("template", sa.String(), nullable=False),
    sa.Column("partner", sa.String(), nullable=False),
    sa.Column("row", sa.JSON(), nullable=False),
    sa.Column("status", sa.String(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
)

# The blocks of rows of a job's last complete read (KnownBlocks): for each block, its digest,
# the source ids of its rows joined by "\n" (UTF-8, surrogates escaped) and their
# fingerprints (little-endian uint64, in the same order). Kept with row_fingerprints (the
# rows in no block), in the same transaction; valid only while that row's cursor is the job's.
fingerprint_blocks = sa.Table(
    "fingerprint_blocks",
    metadata,
    sa.Column("job", sa.String(), primary_key=True),
    sa.Column("digest", sa.LargeBinary(), primary_key=True),
    sa.Column("ids", sa.LargeBinary(), nullable=False),
    sa.Column("fingerprints", sa.LargeBinary(), nullable=False),
    # the digests of the block's parts (Block.parts), 16 bytes each; NULL: none
    sa.Column("parts", sa.LargeBinary(), nullable=True),
)

# What each partner of a fan-in job contributed (connector_core.sync.fanin): one row per
# partner source record, with the person it was matched to and the record's match keys
# (keyed hashes of a normalised email or phone, never the value), the fields the partner's
# policy let it give (field -> outcome label) and a keyed hash of what it gave. Rewritten
# after each run where they changed; a partner whose read failed keeps its rows.
fan_in_contributions = sa.Table(
    "fan_in_contributions",
    metadata,
    sa.Column("job", sa.String(), primary_key=True),
    sa.Column("partner", sa.String(), primary_key=True),
    sa.Column("source_id", sa.String(), primary_key=True),
    sa.Column("person", sa.String(), nullable=False),
    sa.Column("fields", sa.JSON(), nullable=False),
    sa.Column("keys", sa.JSON(), nullable=False),
    sa.Column("digest", sa.String(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
)
