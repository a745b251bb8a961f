"""The keyed, hash-chained ledger: append a batch, read it back, verify the chain, export it.

Each row's ``row_hash`` is an HMAC-SHA256, under the network's ledger key, of a frozen canonical
payload (:data:`PAYLOADS`) of its other columns, ``seq`` and the previous row's hash included,
so a row cannot be edited, moved, removed or slipped in without breaking either its own hash or
that of the row after it, and nobody without the key can compute a replacement chain. A row's
previous hash is not stored with it (schema 0008): it is the ``row_hash`` of the row before.
The key never enters the database: the ``ledger_head`` row keeps only a check value of it, so
a store opened with another key says so. ``ledger_head`` names the last row; a written-down
anchor (seq and hash, see :func:`export_anchor`) catches what no database-internal check can:
rows cut from the end with the head moved back, or a ledger wiped and restarted.

Rows written before the key (format 1, unkeyed SHA-256) verify as they are and are re-chained
with the key by :func:`migrate`, an explicit admin step: automatic re-chaining would bless an
unkeyed chain that anyone with write access to the database had forged. Rows hold field names
with their outcome labels, never field values.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import datetime as dt
import hashlib
import hmac
import itertools
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal, TextIO

import sqlalchemy as sa
from sqlalchemy import Connection

from connector_core.cells import neutralize
from connector_core.errors import ConfigError, ConnectorError, ExitCode
from connector_core.files import append_file
from connector_core.sync import bulk, dialect
from connector_core.sync.model import LedgerEntry
from connector_core.sync.tables import GENESIS_HASH, id_map, ledger, ledger_head
from connector_core.sync.terms import (
    Terms,
    ids_of_kind,
    pack_hash,
    pack_key,
    unpack_hash,
    unpack_key,
)
from connector_core.sync.terms import canonical_json as canonical_json  # what is hashed

_string = json.encoder.encode_basestring  # a JSON string, as canonical_json writes one

COLUMNS = tuple(f.name for f in dataclasses.fields(LedgerEntry))
CURRENT: Final = 4
"""The format new rows are written in."""
_V1: Final = (
    "seq",
    "at",
    "job",
    "target",
    "record_key",
    "source_id",
    "action",
    "fields",
    "policy",
    "policy_hash",
    "consent_basis",
    "approvals",
    "reason",
    "prev_hash",
)
# The columns a ledger row keeps in its "entry" term (see connector_core.sync.terms); the
# payload is rebuilt from them, byte for byte as when they were columns of their own.
ENTRY: Final = ("job", "target", "action", "fields", "policy", "policy_hash", "approvals", "reason")
PAYLOADS: Final[Mapping[int, tuple[str, ...]]] = {
    1: _V1,  # unkeyed SHA-256, the rows written before the ledger key
    2: ("version", *_V1),  # HMAC-SHA256 under the ledger key
    # HMAC-SHA256 of the JSON array of these, "entry" being the object of the ENTRY columns:
    # the entry and consent parts are the texts of their terms, serialised once per batch.
    3: ("version", "seq", "at", "record_key", "source_id", "entry", "consent_basis", "prev_hash"),
    # Format 3's payload (with 4 as its version), hashed with HMAC-SHA256 truncated to its
    # first 128 bits, as HMAC-SHA-256-128 of RFC 4868: half the bytes per row to store.
    4: ("version", "seq", "at", "record_key", "source_id", "entry", "consent_basis", "prev_hash"),
}
"""The columns hashed by each format, frozen: a new column needs a new format, never an edit."""
_COMPACT: Final = frozenset({3, 4})  # the formats of payload_v3
SHORT: Final = frozenset({4})  # the formats whose hash is a 128-bit prefix
SHORT_BYTES: Final = 16
KEY_MIN_BYTES: Final = 16
_KEY_CHECK_LABEL = b"commons-connector ledger key check"
_JSON_COLUMNS = ("fields", "consent_basis", "approvals")
_REORDER_WINDOW = 16  # how far from its place a moved row is looked for
_RECENT = 4096  # how many recent row hashes are kept to spot a row that moved forward
_DIAGNOSED = 64  # how many mismatching rows are searched for where they came from
_HELD = frozenset({"create", "update"})  # actions after which the target holds the record
_PAGE = 1000


class LedgerBroken(ConnectorError):
    """The ledger cannot be appended to or migrated: its head row is gone or its chain broken."""

    exit_code = ExitCode.CONFIG


class LedgerKeyError(ConfigError):
    """The ledger key is missing, too short, or not the one this ledger is written with."""


class LedgerNeedsMigration(ConfigError):
    """The ledger ends with unkeyed rows: `connector ledger migrate` must re-chain them first."""


@dataclasses.dataclass
class LedgerReport:
    """What `verify` found: `ok` when the chain, its head, the anchors and the id map agree."""

    ok: bool
    checked: int
    problems: list[str]
    head_seq: int | None = None  # worth writing down: an anchor for a later verification
    head_hash: str | None = None


def timestamp(value: dt.datetime) -> str:
    """The ISO form of a ledger time in the hash: UTC, always with microseconds."""
    return value.astimezone(dt.UTC).isoformat(timespec="microseconds")


def check_key(key: bytes | None) -> bytes:
    """`key`, if it is a usable ledger key; LedgerKeyError saying how to set one otherwise."""
    if key is None:
        raise LedgerKeyError(
            "no ledger key was given, so the ledger can be neither written nor verified",
            hint="Store one with `connector credentials set network ledger_key` (or export "
            "CONNECTOR_SECRET_NETWORK_LEDGER_KEY); see docs/operations.md, 'The ledger key'.",
        )
    if len(key) < KEY_MIN_BYTES:
        raise LedgerKeyError(
            f"the ledger key is shorter than {KEY_MIN_BYTES} bytes",
            hint="Use a long random value, e.g. `python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'`.",
        )
    return key


def key_check(key: bytes) -> str:
    """A check value of `key` (an HMAC of a fixed label): stored to spot a wrong key."""
    return hmac.new(key, _KEY_CHECK_LABEL, hashlib.sha256).hexdigest()


def payload(row: Mapping[str, Any], version: int) -> bytes:
    """The canonical bytes format `version` hashes: exactly the columns PAYLOADS names."""
    if version in _COMPACT:
        entry = canonical_json({name: row[name] for name in ENTRY})
        at = timestamp(row["at"])
        consent = canonical_json(row["consent_basis"])
        return payload_v3(
            row["seq"],
            at,
            row["record_key"],
            row["source_id"],
            entry,
            consent,
            row["prev_hash"],
            version=version,
        )
    data = {name: row[name] for name in PAYLOADS[version]}
    data["at"] = timestamp(row["at"])
    return canonical_json(data).encode("utf-8")


def payload_v3(
    seq: int,
    at: str,
    record_key: str,
    source_id: str,
    entry: str,
    consent: str,
    prev: str,
    *,
    version: int = 3,
) -> bytes:
    """Format 3's (or 4's) payload from its parts (`entry` and `consent` as canonical JSON):
    the canonical JSON of ``[version, seq, at, record_key, source_id, entry, consent, prev]``."""
    text = (
        f"[{version},{seq},{_string(at)},{_string(record_key)},{_string(source_id)},"
        f"{entry},{consent},{_string(prev)}]"
    )
    return text.encode("utf-8", "surrogatepass")


def row_hash(row: Mapping[str, Any], key: bytes | None) -> str:
    """The hash (hex) of `row` in its own format (``row["version"]``): formats 2 to 4 need
    `key`; format 4's is the first 128 bits of the HMAC."""
    version = row["version"]
    if version == 1:
        return hashlib.sha256(payload(row, 1)).hexdigest()
    if version not in PAYLOADS:
        raise ValueError(f"unknown ledger row format {version!r}")
    return _kept(version, hmac.new(check_key(key), payload(row, version), hashlib.sha256)).hex()


def _kept(version: int, mac: hmac.HMAC) -> bytes:
    """What a row of format `version` keeps of its HMAC: a 128-bit prefix (SHORT) or all."""
    digest = mac.digest()
    return digest[:SHORT_BYTES] if version in SHORT else digest


def _head(conn: Connection, *, lock: bool) -> Any:
    query = sa.select(ledger_head.c.seq, ledger_head.c.row_hash, ledger_head.c.key_check).where(
        ledger_head.c.id == 1
    )
    return conn.execute(query.with_for_update() if lock else query).one_or_none()


def _locked_head(conn: Connection, key: bytes, *, lock: bool = True) -> Any:
    """The head row, locked (concurrent appenders take turns); refused if gone or another key."""
    head = _head(conn, lock=lock)
    if head is None:
        raise LedgerBroken(
            "the ledger head is missing, so nothing more can be recorded",
            hint="Run `connector ledger verify` and restore the state store from a backup.",
        )
    if head.key_check not in (None, key_check(key)):
        raise LedgerKeyError(
            "the ledger key is not the one this ledger was written with",
            hint="Give this machine the network's ledger key (`connector credentials set "
            "network ledger_key`, from where it was first stored); never generate a new one "
            "for an existing ledger.",
        )
    return head


def _last_version(conn: Connection, seq: int) -> int | None:
    return conn.scalar(sa.select(ledger.c.version).where(ledger.c.seq == seq))


def keyed(conn: Connection) -> bool:
    """Whether the head holds a key check or any row is keyed."""
    head = _head(conn, lock=False)
    if head is not None and head.key_check is not None:
        return True
    return conn.scalar(sa.select(ledger.c.seq).where(ledger.c.version >= 2).limit(1)) is not None


def check_writable(conn: Connection, key: bytes | None, *, lock: bool = True) -> Any:
    """Raise what `append` would raise for a missing or wrong key, or an unmigrated ledger;
    return the head row (locked when `lock`)."""
    key = check_key(key)
    head = _locked_head(conn, key, lock=lock)
    if _last_version(conn, head.seq) == 1:
        raise LedgerNeedsMigration(
            "the ledger holds rows written before the ledger key; they must be re-chained "
            "with it before anything more is recorded",
            hint="Run `connector ledger migrate` once (see docs/operations.md, "
            "'Upgrading an unkeyed ledger').",
        )
    return head


def append(
    conn: Connection, rows: Sequence[dict[str, Any]], key: bytes | None, cache: Terms | None = None
) -> None:
    """Chain and insert `rows` (all columns but seq, prev_hash, row_hash, version) in `conn`'s
    transaction, keyed with `key`; `cache` holds the store's terms.

    Locking the head row makes concurrent appenders on PostgreSQL take turns; on SQLite the
    caller's write transaction (BEGIN IMMEDIATE) already does.
    """
    if not rows:
        return
    key = check_key(key)
    head = check_writable(conn, key)
    cache = cache or Terms()
    entries = cache.intern_texts(conn, "entry", [{n: row[n] for n in ENTRY} for row in rows])
    consents = cache.intern_texts(conn, "consent", [row["consent_basis"] for row in rows])
    seq, prev = int(head.seq), str(head.row_hash)
    keyed = hmac.new(key, digestmod=hashlib.sha256)
    times: dict[dt.datetime, str] = {}
    stored = []
    for row, (entry, entry_text), (consent, consent_text) in zip(
        rows, entries, consents, strict=True
    ):
        seq += 1
        at = row["at"]
        when = times.get(at) or times.setdefault(at, timestamp(at))
        mac = keyed.copy()
        mac.update(
            payload_v3(
                seq,
                when,
                row["record_key"],
                row["source_id"],
                entry_text,
                consent_text,
                prev,
                version=CURRENT,
            )
        )
        digest = _kept(CURRENT, mac)
        prev = digest.hex()
        stored.append(
            {
                "seq": seq,
                "at": at,
                "record_key": pack_key(row["record_key"]),
                "source_id": row["source_id"],
                "entry": entry,
                "consent": consent,
                "row_hash": digest,
                "version": CURRENT,
            }
        )
    bulk.insert_many(conn, ledger, stored)
    _move_head(conn, seq, prev, key)


def stored(
    conn: Connection, rows: Sequence[Mapping[str, Any]], cache: Terms
) -> list[dict[str, Any]]:
    """The ledger table's rows for ledger rows as hashed (their terms added as needed; the
    previous hash is not stored: it is the row before's)."""
    entries = cache.intern(conn, "entry", ({n: row[n] for n in ENTRY} for row in rows))
    consents = cache.intern(conn, "consent", (row["consent_basis"] for row in rows))
    return [
        {
            "seq": row["seq"],
            "at": row["at"],
            "record_key": pack_key(row["record_key"]),
            "source_id": row["source_id"],
            "entry": entry,
            "consent": consent,
            "row_hash": pack_hash(row["row_hash"]),
            "version": row["version"],
        }
        for row, entry, consent in zip(rows, entries, consents, strict=True)
    ]


def logical(
    conn: Connection, rows: Sequence[Any], cache: Terms, prev: str | None = None
) -> list[dict[str, Any]]:
    """The ledger rows (every column of LedgerEntry, as hashed) of the ledger table's `rows`
    in seq order: each row's previous hash is the row before's, `prev` that of the row before
    the first (None: the rows carry it, as a ``prev_hash`` column of the query)."""
    values = cache.values(conn, {r.entry for r in rows} | {r.consent for r in rows})
    found = []
    for r in rows:
        this = unpack_hash(r.row_hash)
        before = unpack_hash(r.prev_hash) if prev is None else prev
        found.append(
            {
                "seq": r.seq,
                "at": r.at,
                **values[r.entry],
                "record_key": unpack_key(r.record_key),
                "source_id": r.source_id,
                "consent_basis": values[r.consent],
                "prev_hash": before,
                "row_hash": this,
                "version": r.version,
            }
        )
        if prev is not None:
            prev = this
    return found


def _with_prev(query: sa.Select[Any]) -> sa.Select[Any]:
    """`query` of ledger rows with each row's previous hash (the genesis hash for the first)."""
    before = sa.alias(ledger, "before")
    prev = (
        sa.select(before.c.row_hash)
        .where(before.c.seq < ledger.c.seq)
        .order_by(before.c.seq.desc())
        .limit(1)
        .scalar_subquery()
    )
    genesis = sa.literal(bytes.fromhex(GENESIS_HASH), sa.LargeBinary())
    return query.add_columns(sa.func.coalesce(prev, genesis).label("prev_hash"))


def _move_head(conn: Connection, seq: int, digest: str, key: bytes) -> None:
    values = {"seq": seq, "row_hash": digest, "key_check": key_check(key)}
    conn.execute(sa.update(ledger_head).where(ledger_head.c.id == 1).values(values))


def anchor(conn: Connection) -> tuple[int, str]:
    """The head's (seq, hash): write it down outside the store to verify against later."""
    head = _head(conn, lock=False)
    if head is None:
        raise LedgerBroken(
            "the ledger head is missing",
            hint="Run `connector ledger verify` and restore the state store from a backup.",
        )
    return int(head.seq), str(head.row_hash)


def migrate(conn: Connection, key: bytes | None) -> int:
    """Re-chain the unkeyed (format 1) rows with `key` after checking their chain; return how
    many were re-chained.

    Refused when the unkeyed chain does not verify, or when keyed rows exist already: unkeyed
    rows next to keyed ones were not written by this connector's migration path.
    """
    key = check_key(key)
    head = _locked_head(conn, key)
    versions: dict[int, int] = dict(
        conn.execute(sa.select(ledger.c.version, sa.func.count()).group_by(ledger.c.version)).all()
    )
    old = int(versions.pop(1, 0))
    if not old:
        _move_head(conn, int(head.seq), str(head.row_hash), key)
        return 0
    if versions:
        raise LedgerBroken(
            f"the ledger holds {old} unkeyed row(s) next to keyed ones, which no upgrade "
            "writes: they are not migrated",
            hint="Run `connector ledger verify` and restore the state store from a backup.",
        )
    chain = _Chain(None)
    for row, ahead in _ahead(_rows(conn)):
        chain.check(row, ahead)
    chain.check_head(int(head.seq), str(head.row_hash))
    if chain.problems:
        raise LedgerBroken(
            "the unkeyed ledger does not verify, so it is not re-chained: "
            + "; ".join(chain.problems[:5]),
            hint="Restore the state store from a backup taken before the damage.",
        )
    seq, digest = _rechain(conn, key)
    _move_head(conn, seq, digest, key)
    return old


def _rechain(conn: Connection, key: bytes) -> tuple[int, str]:
    seq, prev = 0, GENESIS_HASH
    update = (
        sa.update(ledger)
        .where(ledger.c.seq == sa.bindparam("b_seq"))
        .values(version=sa.bindparam("b_version"), row_hash=sa.bindparam("b_hash"))
    )
    while True:
        query = sa.select(ledger).where(ledger.c.seq > seq).order_by(ledger.c.seq).limit(_PAGE)
        rows = logical(conn, list(conn.execute(query)), Terms(), prev)
        if not rows:
            return seq, prev
        params = []
        for row in rows:
            row["version"], row["prev_hash"] = CURRENT, prev
            prev = row_hash(row, key)
            seq = row["seq"]
            params.append({"b_seq": seq, "b_version": CURRENT, "b_hash": pack_hash(prev)})
        conn.execute(update, params)


def page(conn: Connection, *, job: str | None, after_seq: int, size: int) -> list[LedgerEntry]:
    """Up to `size` entries after `after_seq`, in order (one keyset page)."""
    query = sa.select(ledger).where(ledger.c.seq > after_seq).order_by(ledger.c.seq).limit(size)
    if job is not None:
        entries = [i for i, value in ids_of_kind(conn, "entry").items() if value["job"] == job]
        query = query.where(dialect.among(conn, ledger.c.entry, entries))
    rows = logical(conn, list(conn.execute(_with_prev(query))), Terms())
    return [LedgerEntry(**row) for row in rows]


def stream(conn: Connection) -> Iterator[LedgerEntry]:
    """Every entry in order, read with a server-side cursor where the backend has one."""
    for row in _rows(conn):
        yield LedgerEntry(**row)


def _rows(conn: Connection) -> Iterator[dict[str, Any]]:
    """Every row in seq order, a keyset page at a time, its terms read fresh (no cache: a
    verification must see an edited term)."""
    seq: int | None = None
    prev = GENESIS_HASH
    while True:
        query = sa.select(ledger).order_by(ledger.c.seq).limit(_PAGE)
        if seq is not None:
            query = query.where(ledger.c.seq > seq)
        rows = list(conn.execute(query))
        found = logical(conn, rows, Terms(), prev)
        yield from found
        if len(rows) < _PAGE:
            return
        seq, prev = rows[-1].seq, found[-1]["row_hash"]


def _ahead(
    rows: Iterator[dict[str, Any]],
) -> Iterator[tuple[dict[str, Any], collections.deque[dict[str, Any]]]]:
    """Each row with the (up to _REORDER_WINDOW) rows after it: where a moved row came from."""
    window = collections.deque(itertools.islice(rows, _REORDER_WINDOW + 1))
    while window:
        row = window.popleft()
        following = next(rows, None)
        if following is not None:
            window.append(following)
        yield row, window


def as_dict(entry: LedgerEntry) -> dict[str, Any]:
    """The columns of `entry` (a shallow copy: dataclasses.asdict deep-copies, and is slow)."""
    return {name: getattr(entry, name) for name in COLUMNS}


def verify(
    conn: Connection, key: bytes | None, expect: Iterable[tuple[int, str]] = ()
) -> LedgerReport:
    """Recompute the chain with `key`, compare its end with the head and each anchor in
    `expect`, and cross-check the id map; read in one snapshot."""
    key = check_key(key)
    head = _head(conn, lock=False)
    head_seq, head_hash = (None, None) if head is None else (int(head.seq), str(head.row_hash))
    if head is not None and head.key_check not in (None, key_check(key)):
        problem = "the ledger key given is not the one this ledger was written with"
        return LedgerReport(False, 0, [problem], head_seq, head_hash)
    chain = _Chain(key, list(expect))
    for row, ahead in _ahead(_rows(conn)):
        chain.check(row, ahead)
    chain.check_head(head_seq, head_hash)
    chain.check_unkeyed()
    chain.check_anchors()
    chain.problems.extend(_id_map_problems(conn, chain.holdings))
    return LedgerReport(
        ok=not chain.problems,
        checked=chain.count,
        problems=chain.problems,
        head_seq=head_seq,
        head_hash=head_hash,
    )


def _id_map_problems(
    conn: Connection, holdings: Mapping[tuple[str, str], tuple[int, str, str]]
) -> Iterator[str]:
    """What the id map and the ledger disagree on: the ledger's last action for each record
    says whether its target holds it, and under which key."""
    seen: set[tuple[str, str]] = set()
    jobs = ids_of_kind(conn, "job")
    query = sa.select(id_map.c.job, id_map.c.source_id, id_map.c.target_key)
    for job_id, source_id, packed in conn.execute(query.execution_options(yield_per=_PAGE)):
        job, target_key = jobs.get(job_id, f"#{job_id}"), unpack_key(packed)
        seen.add((job, source_id))
        held = holdings.get((job, source_id))
        if held is None or held[1] not in _HELD:
            how = "no ledger row" if held is None else f"ledger seq {held[0]} took it back"
            yield f"job {job}: id map holds {source_id!r}, but {how} (id map row inserted)"
        elif held[2] != target_key:
            yield (
                f"job {job}: id map holds {source_id!r} under another key than ledger "
                f"seq {held[0]} (id map row edited)"
            )
    for (job, source_id), (seq, action, _key) in holdings.items():
        if action in _HELD and (job, source_id) not in seen:
            yield (
                f"job {job}: ledger seq {seq} shared {source_id!r} and nothing took it back, "
                "but the id map lacks it (id map row deleted: a withdrawal would miss it)"
            )


class _Chain:
    """Walks the rows in seq order, remembering the previous row, and lists what is wrong."""

    def __init__(self, key: bytes | None, expect: Sequence[tuple[int, str]] = ()) -> None:
        self.key = key
        self.seq = 0
        self.hash = GENESIS_HASH
        self.count = 0
        self.problems: list[str] = []
        self.recent: collections.OrderedDict[str, int] = collections.OrderedDict()
        self.expect = sorted(set(expect))
        self.expect_seqs = {seq for seq, _digest in self.expect}
        self.found: dict[int, str] = {}
        self.unkeyed: list[int] = []
        self.holdings: dict[tuple[str, str], tuple[int, str, str]] = {}
        self.diagnosed = 0

    def check(self, row: dict[str, Any], ahead: Iterable[dict[str, Any]] = ()) -> None:
        seq = row["seq"]
        if seq < 1:
            self.problems.append(f"seq {seq}: comes before the first row (row inserted)")
        elif seq > self.seq + 1:
            self.problems.append(f"{_span(self.seq + 1, seq - 1)}: missing (row deleted)")
        elif row["prev_hash"] != self.hash:
            after = f"seq {self.seq}" if self.seq else "the start of the ledger"
            self.problems.append(
                f"seq {seq}: does not follow {after} (a row was inserted, replaced or reordered)"
            )
        self._check_hash(row, ahead)
        self.seq, self.hash, self.count = seq, row["row_hash"], self.count + 1
        if seq in self.expect_seqs:
            self.found[seq] = row["row_hash"]
        self.holdings[(row["job"], row["source_id"])] = (seq, row["action"], row["record_key"])
        self.recent[row["row_hash"]] = seq
        if len(self.recent) > _RECENT:
            self.recent.popitem(last=False)

    def _check_hash(self, row: dict[str, Any], ahead: Iterable[dict[str, Any]]) -> None:
        version = row["version"]
        if version not in PAYLOADS:
            self.problems.append(f"seq {row['seq']}: unknown row format {version} (row edited)")
            return
        if version == 1 and self.key is not None:
            self.unkeyed.append(row["seq"])
        if row_hash(row, self.key) != row["row_hash"]:
            self.problems.append(self._mismatch(row, ahead))

    def _mismatch(self, row: dict[str, Any], ahead: Iterable[dict[str, Any]]) -> str:
        """Why `row` does not hash to its row_hash: moved from another seq (after which row?),
        or edited (or the row before it replaced: the previous hash is the row before's)."""
        seq = row["seq"]
        self.diagnosed += 1
        if self.diagnosed <= _DIAGNOSED:
            recent = list(itertools.islice(reversed(self.recent), _REORDER_WINDOW))
            prevs = [*recent, GENESIS_HASH, *(r["row_hash"] for r in ahead)]
            seqs = range(max(1, seq - _REORDER_WINDOW), seq + _REORDER_WINDOW + 1)
            for original, prev in itertools.product(seqs, dict.fromkeys(prevs)):
                moved = {**row, "seq": original, "prev_hash": prev}
                if original != seq and row_hash(moved, self.key) == row["row_hash"]:
                    return f"seq {seq}: holds the row written as seq {original} (rows reordered)"
        return (
            f"seq {seq}: content does not match its row_hash "
            "(row edited, or the row before it replaced)"
        )

    def check_head(self, seq: int | None, digest: str | None) -> None:
        if seq is None:
            self.problems.append("ledger head: missing (the ledger_head row was deleted)")
        elif seq > self.seq:
            self.problems.append(
                f"{_span(self.seq + 1, seq)}: missing at the end; the head records "
                f"seq {seq} (rows deleted)"
            )
        elif seq < self.seq:
            self.problems.append(
                f"{_span(seq + 1, self.seq)}: after the recorded head seq {seq} (rows inserted)"
            )
        elif digest != self.hash:
            self.problems.append(
                f"seq {seq}: the head records another hash for it "
                "(head mismatch: last row replaced)"
            )

    def check_unkeyed(self) -> None:
        """Unkeyed rows prove nothing (anyone can hash): a keyed ledger must have none."""
        if self.unkeyed:
            first, last = self.unkeyed[0], self.unkeyed[-1]
            where = (
                _span(first, last)
                if len(self.unkeyed) == last - first + 1
                else (f"{len(self.unkeyed)} rows from seq {first} to {last}")
            )
            self.problems.append(
                f"{where}: unkeyed (format 1) rows, which anyone could have written; "
                "`connector ledger migrate` re-chains a ledger written before the ledger key"
            )

    def check_anchors(self) -> None:
        for seq, digest in self.expect:
            if seq == 0 and digest == GENESIS_HASH:
                continue
            found = self.found.get(seq)
            if found is None:
                self.problems.append(
                    f"anchor {seq}: the ledger has no seq {seq} any more; it ends at seq "
                    f"{self.seq} (rows deleted from the end, or the ledger restarted)"
                )
            elif found != digest:
                self.problems.append(
                    f"anchor {seq}: seq {seq} now has another hash than the one written "
                    "down (the ledger was rewritten up to there)"
                )


def _span(first: int, last: int) -> str:
    return f"seq {first}" if first == last else f"seq {first}-{last}"


# -- anchors ---------------------------------------------------------------------------


def format_anchor(seq: int, digest: str) -> str:
    """``SEQ:HASH``, as `ledger verify` prints it and ``--expect`` reads it."""
    return f"{seq}:{digest}"


def parse_anchor(text: str) -> tuple[int, str]:
    """Read ``SEQ:HASH``; ValueError saying what is wrong otherwise."""
    seq, sep, digest = text.strip().partition(":")
    if not sep or not seq.isdigit() or len(digest) not in (32, 64) or not _is_hex(digest):
        raise ValueError(f"{text.strip()!r} is not SEQ:HASH (a number, ':', 32 or 64 hex digits)")
    return int(seq), digest.lower()


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def export_anchor(path: Path, seq: int, digest: str, *, now: dt.datetime | None = None) -> str:
    """Append ``TIME SEQ:HASH`` to the anchor file at `path` (created if missing), synced to
    disk; return the line. Keep the file outside the state store's reach."""
    at = timestamp(now or dt.datetime.now(dt.UTC))
    line = f"{at} {format_anchor(seq, digest)}\n"
    append_file(path, line.encode("ascii"))  # no link followed, no hard link or FIFO
    return line.rstrip("\n")


def read_anchors(path: Path) -> list[tuple[int, str]]:
    """Every anchor in the file at `path` (blank and ``#`` lines skipped); a ConfigError
    naming file:line for a line that is not ``TIME SEQ:HASH``."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the anchor file {path}: {exc.strerror}",
            hint="Check the path given to --anchors or `ledger: anchors:` in connector.yaml.",
        ) from None
    anchors = []
    for number, raw in enumerate(data.splitlines(), 1):  # lines as `last_anchor` reads them
        line = raw.decode("utf-8", "replace")  # a byte that is not UTF-8: its line is named
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            anchors.append(parse_anchor(line.split()[-1]))
        except ValueError as exc:
            raise ConfigError(
                f"{path}:{number}: {exc}",
                hint="Each line is `TIME SEQ:HASH`, as `connector run` appends them.",
            ) from None
    return anchors


#: how much of an anchor file's end :func:`last_anchor` reads (a line is ~90 bytes)
_TAIL = 8192


def last_anchor(path: Path) -> tuple[int, str] | None:
    """The newest anchor in the file at `path` (its last ``TIME SEQ:HASH`` line, read from
    the end: the file grows by a line a run); None when the file or any anchor is missing.
    A last line that is not an anchor is the ConfigError of :func:`read_anchors`."""
    try:
        with path.open("rb") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(max(0, size - _TAIL))
            tail = file.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(
            f"cannot read the anchor file {path}: {exc.strerror}",
            hint="Check `ledger: anchors:` in connector.yaml and the file's permissions.",
        ) from None
    lines = tail.splitlines()
    for line in reversed(lines[1:] if size > _TAIL else lines):  # [0]: a cut line
        text = line.decode("utf-8", "replace").strip()
        if not text or text.startswith("#"):
            continue
        try:
            return parse_anchor(text.split()[-1])
        except ValueError:
            break
    else:
        if size <= _TAIL:
            return None
    anchors = read_anchors(path)  # names the line that is not an anchor
    return anchors[-1] if anchors else None


def export(entries: Iterable[LedgerEntry], out: TextIO, fmt: Literal["jsonl", "csv"]) -> int:
    """Write `entries` as JSON lines or CSV for an auditor; return how many were written."""
    if fmt not in ("jsonl", "csv"):
        raise ValueError(f"unknown ledger export format {fmt!r}: use 'jsonl' or 'csv'")
    writer = csv.writer(out, lineterminator="\n") if fmt == "csv" else None
    if writer is not None:
        writer.writerow(COLUMNS)
    count = 0
    for entry in entries:
        row = as_dict(entry)
        row["at"] = timestamp(entry.at)
        if writer is None:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
        else:
            writer.writerow(_csv_cell(row[name], name in _JSON_COLUMNS) for name in COLUMNS)
        count += 1
    return count


def _csv_cell(value: Any, is_json: bool) -> str:
    text = canonical_json(value) if is_json else str(value)
    # Auditors open this in a spreadsheet: a record key such as "=HYPERLINK(...)" must stay
    # text, however disguised, and control characters stay out (connector_core.cells).
    return neutralize(text)
