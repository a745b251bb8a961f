"""The hash-chained ledger: append a batch, read it back, verify the chain, export it.

Each row's ``row_hash`` is the SHA-256 of a canonical JSON of all its other columns, ``seq`` and
``prev_hash`` included, so a row cannot be edited, moved, removed or slipped in without breaking
either its own hash or the link from the row after it. The ``ledger_head`` row names the last
row and is updated in the appending transaction, so removing rows from the end shows too.
Rows hold field names with their outcome labels, never field values.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import datetime as dt
import functools
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, TextIO

import sqlalchemy as sa
from sqlalchemy import Connection

from connector_core.errors import ConnectorError, ExitCode
from connector_core.sync.model import LedgerEntry
from connector_core.sync.tables import GENESIS_HASH, ledger, ledger_head

COLUMNS = tuple(f.name for f in dataclasses.fields(LedgerEntry))
_HASHED = tuple(name for name in COLUMNS if name != "row_hash")
_JSON_COLUMNS = ("fields", "consent_basis", "approvals")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_REORDER_WINDOW = 16  # how far from its place a moved row is looked for
_RECENT = 4096  # how many recent row hashes are kept to spot a row that moved forward


class LedgerBroken(ConnectorError):
    """The ledger cannot be appended to: its head row is gone."""

    exit_code = ExitCode.CONFIG


@dataclasses.dataclass
class LedgerReport:
    """What `verify` found: `ok` when the chain and its head are intact."""

    ok: bool
    checked: int
    problems: list[str]
    head_seq: int | None = None  # worth writing down: an anchor for a later verification
    head_hash: str | None = None


def _json_default(value: object) -> str:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


canonical_json = functools.partial(
    json.dumps, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_json_default
)
"""JSON with sorted keys and no whitespace: what is hashed, and how JSON columns are stored."""


def timestamp(value: dt.datetime) -> str:
    """The ISO form of a ledger time in the hash: UTC, always with microseconds."""
    return value.astimezone(dt.UTC).isoformat(timespec="microseconds")


def row_hash(row: Mapping[str, Any]) -> str:
    """The SHA-256 (hex) of every column of `row` except ``row_hash``."""
    payload = {name: row[name] for name in _HASHED}
    payload["at"] = timestamp(row["at"])
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


def append(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Chain and insert `rows` (all columns but seq, prev_hash, row_hash) in `conn`'s transaction.

    Locking the head row makes concurrent appenders on PostgreSQL take turns; on SQLite the
    caller's write transaction (BEGIN IMMEDIATE) already does.
    """
    if not rows:
        return
    head = conn.execute(
        sa.select(ledger_head.c.seq, ledger_head.c.row_hash)
        .where(ledger_head.c.id == 1)
        .with_for_update()
    ).one_or_none()
    if head is None:
        raise LedgerBroken(
            "the ledger head is missing, so nothing more can be recorded",
            hint="Run `connector ledger verify` and restore the state store from a backup.",
        )
    seq, prev = head
    for row in rows:
        seq += 1
        row["seq"], row["prev_hash"] = seq, prev
        row["row_hash"] = prev = row_hash(row)
    conn.execute(sa.insert(ledger), list(rows))
    conn.execute(sa.update(ledger_head).where(ledger_head.c.id == 1).values(seq=seq, row_hash=prev))


def page(conn: Connection, *, job: str | None, after_seq: int, size: int) -> list[LedgerEntry]:
    """Up to `size` entries after `after_seq`, in order (one keyset page)."""
    query = sa.select(ledger).where(ledger.c.seq > after_seq).order_by(ledger.c.seq).limit(size)
    if job is not None:
        query = query.where(ledger.c.job == job)
    return [LedgerEntry(**row._mapping) for row in conn.execute(query)]


def stream(conn: Connection) -> Iterator[LedgerEntry]:
    """Every entry in order, read with a server-side cursor where the backend has one."""
    for row in _rows(conn):
        yield LedgerEntry(**row)


def _rows(conn: Connection) -> Iterator[dict[str, Any]]:
    query = sa.select(ledger).order_by(ledger.c.seq)
    for row in conn.execution_options(yield_per=1000).execute(query).mappings():
        yield dict(row)


def as_dict(entry: LedgerEntry) -> dict[str, Any]:
    """The columns of `entry` (a shallow copy: dataclasses.asdict deep-copies, and is slow)."""
    return {name: getattr(entry, name) for name in COLUMNS}


def verify(conn: Connection) -> LedgerReport:
    """Recompute the chain and compare its end with the head; read in one snapshot."""
    head = conn.execute(
        sa.select(ledger_head.c.seq, ledger_head.c.row_hash).where(ledger_head.c.id == 1)
    ).one_or_none()
    head_seq, head_hash = (None, None) if head is None else (int(head.seq), str(head.row_hash))
    chain = _Chain()
    for row in _rows(conn):
        chain.check(row)
    chain.check_head(head_seq, head_hash)
    return LedgerReport(
        ok=not chain.problems,
        checked=chain.count,
        problems=chain.problems,
        head_seq=head_seq,
        head_hash=head_hash,
    )


class _Chain:
    """Walks the rows in seq order, remembering the previous row, and lists what is wrong."""

    def __init__(self) -> None:
        self.seq = 0
        self.hash = GENESIS_HASH
        self.count = 0
        self.problems: list[str] = []
        self.recent: collections.OrderedDict[str, int] = collections.OrderedDict()

    def check(self, row: dict[str, Any]) -> None:
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
        if row_hash(row) != row["row_hash"]:
            self.problems.append(self._mismatch(row))
        self.seq, self.hash, self.count = seq, row["row_hash"], self.count + 1
        self.recent[row["row_hash"]] = seq
        if len(self.recent) > _RECENT:
            self.recent.popitem(last=False)

    def _mismatch(self, row: dict[str, Any]) -> str:
        seq = row["seq"]
        follows = 0 if row["prev_hash"] == GENESIS_HASH else self.recent.get(row["prev_hash"])
        candidates = [] if follows is None else [follows + 1]
        candidates += range(max(1, seq - _REORDER_WINDOW), seq + _REORDER_WINDOW + 1)
        for original in candidates:
            if original != seq and row_hash({**row, "seq": original}) == row["row_hash"]:
                return f"seq {seq}: holds the row written as seq {original} (rows reordered)"
        return f"seq {seq}: content does not match its row_hash (row edited)"

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


def _span(first: int, last: int) -> str:
    return f"seq {first}" if first == last else f"seq {first}-{last}"


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
    # Auditors open this in a spreadsheet: a record key such as "=HYPERLINK(...)" must stay text.
    return "'" + text if text.startswith(_FORMULA_START) else text
