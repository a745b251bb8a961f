"""The state store's compact forms: binary hashes, and values many rows share stored once.

An id map row holds its fields, policy hash and field-hash names as one ``map`` term, and a
ledger row its job, target, action, fields, policy, approvals and reason as one ``entry`` term:
a run writes a handful of distinct ones, however many records it shares. Consent bases are
``consent`` terms. A term is canonical JSON, found by the SHA-256 of its kind and text, and is
never changed or deleted, so a store caches what it has read or written (only once the
transaction that wrote it has committed).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from connector_core.sync import dialect
from connector_core.sync.dialect import chunks
from connector_core.sync.tables import terms


def _json_default(value: object) -> str:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


_dumps = functools.partial(
    json.dumps, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_json_default
)
_SURROGATE = re.compile("[\ud800-\udfff]")


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: what the ledger hashes, and how terms are
    stored. Text stays as it is, except a lone surrogate (undecodable bytes a source kept),
    written as its JSON escape: no store holds it raw, and it reads back the same."""
    text = _dumps(value)
    if text.isascii() or _SURROGATE.search(text) is None:
        return text
    return _SURROGATE.sub(lambda found: f"\\u{ord(found.group()):04x}", text)


_HEX64 = re.compile(r"[0-9a-f]{32}|[0-9a-f]{64}")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_TEXT_MARK = b"\xff"  # never in UTF-8: tells a 16-byte text key from a packed UUID
_FIELD_HASH_WIDTHS = frozenset({8, 16})  # a packable field hash: 8 or 16 lowercase hex digits
_HEX = re.compile(r"[0-9a-f]*")
_SEEN_MAX = 65_536  # the most values a store finds again by repr (a memo, not the cache)


def pack_hash(text: str) -> bytes:
    """A SHA-256 hex digest (whole, or its 128-bit prefix) as bytes; ValueError for anything
    else."""
    if not _HEX64.fullmatch(text):
        raise ValueError(f"not a SHA-256 hex digest: {text[:70]!r}")
    return bytes.fromhex(text)


def unpack_hash(raw: bytes | str) -> str:
    """The hex form of a stored digest (text written into the column is given back as is)."""
    return raw if isinstance(raw, str) else bytes(raw).hex()


def pack_key(key: str) -> bytes:
    """A target key as stored (schema 0008): a lowercase UUID as its 16 bytes, anything else
    as its UTF-8 text, marked with a 0xFF byte when that text is itself 16 bytes long."""
    if len(key) == 36 and _UUID.fullmatch(key):
        return bytes.fromhex(key.replace("-", ""))
    raw = key.encode("utf-8", "surrogatepass")
    return raw + _TEXT_MARK if len(raw) == 16 else raw


def unpack_key(raw: bytes | str) -> str:
    """The target key :func:`pack_key` packed (text that someone wrote into the column is
    given back as it is: SQLite keeps what it is given, and verification reports it)."""
    if isinstance(raw, str):
        return raw
    raw = bytes(raw)
    if len(raw) == 16:
        h = raw.hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    if len(raw) == 17 and raw.endswith(_TEXT_MARK):
        raw = raw[:-1]
    return raw.decode("utf-8", "surrogatepass")


def pack_field_hashes(hashes: Mapping[str, str] | None) -> tuple[dict[str, Any], bytes | None]:
    """The shape part (names, or the whole dict unless every hash is 8 or every hash is 16
    hex digits) and the blob of the hashes' bytes in name order, for an id map row's field
    hashes."""
    if hashes is None:
        return {"hashed": None}, None
    names = sorted(hashes)
    values = list(map(hashes.__getitem__, names))
    widths = set(map(len, values))
    joined = "".join(values)  # one check and one conversion for all of them
    if len(widths) <= 1 and widths <= _FIELD_HASH_WIDTHS and _HEX.fullmatch(joined):
        return {"hashed": names}, bytes.fromhex(joined)
    return {"hashes": dict(hashes)}, b""  # not packable hashes: kept whole in the shape


def unpack_field_hashes(shape: Mapping[str, Any], blob: bytes | None) -> dict[str, str] | None:
    """The field hashes :func:`pack_field_hashes` packed."""
    names: list[str] | None = shape.get("hashed")
    if blob is None:
        return None  # none recorded, or forgotten (StateStore.forget_contents)
    if "hashes" in shape:
        return dict(shape["hashes"])
    if names is None:
        return None
    raw = bytes(blob)
    width = len(raw) // len(names) if names else 0
    return {name: raw[width * i : width * i + width].hex() for i, name in enumerate(names)}


def _key(kind: str, text: str) -> bytes:
    return hashlib.sha256(f"{kind}\n{text}".encode("utf-8", "surrogatepass")).digest()


class Terms:
    """One store's cache of the terms table; :meth:`settle` or :meth:`discard` after each
    transaction keeps what a rolled-back transaction wrote out of it.

    Values already interned are found again by their ``repr`` (a third of the cost of
    canonical JSON, and a value's repr tells its types apart as JSON does): a batch of
    records sharing a handful of terms serialises each of them once per process.
    """

    def __init__(self) -> None:
        self._ids: dict[bytes, int] = {}
        self._values: dict[int, Any] = {}
        self._seen: dict[tuple[str, str], tuple[int, str]] = {}
        self._new_ids: dict[bytes, int] = {}
        self._new_values: dict[int, Any] = {}
        self._new_seen: dict[tuple[str, str], tuple[int, str]] = {}

    def settle(self) -> None:
        """The transaction committed: keep what it read and wrote."""
        self._ids.update(self._new_ids)
        self._values.update(self._new_values)
        if len(self._seen) > _SEEN_MAX:  # values seldom repeated (per-record consent times)
            self._seen.clear()
        self._seen.update(self._new_seen)
        self.discard()

    def discard(self) -> None:
        """The transaction failed: forget what it read and wrote."""
        self._new_ids.clear()
        self._new_values.clear()
        self._new_seen.clear()

    def _id(self, key: bytes) -> int | None:
        return self._ids.get(key) or self._new_ids.get(key)

    def intern(self, conn: Connection, kind: str, values: Iterable[Any]) -> list[int]:
        """The term ids of `values` (of `kind`), adding the missing ones, in order."""
        return [found[0] for found in self.intern_texts(conn, kind, values)]

    def intern_texts(
        self, conn: Connection, kind: str, values: Iterable[Any]
    ) -> list[tuple[int, str]]:
        """The term id and canonical JSON text of each of `values` (of `kind`), in order,
        adding the missing terms."""
        seen, new_seen = self._seen, self._new_seen
        values = values if isinstance(values, list) else list(values)
        marks = [(kind, repr(v)) for v in values]
        todo = {
            mark: value
            for mark, value in zip(marks, values, strict=True)
            if mark not in seen and mark not in new_seen
        }
        if todo:
            texts = {mark: canonical_json(value) for mark, value in todo.items()}
            keys = {mark: _key(kind, text) for mark, text in texts.items()}
            self._store(conn, kind, {keys[m]: texts[m] for m in todo})
            for mark in todo:
                new_seen[mark] = (self._found(keys[mark]), texts[mark])
        return [seen.get(mark) or new_seen[mark] for mark in marks]

    def find(self, conn: Connection, kind: str, value: Any) -> int | None:
        """The id of the term `value` (of `kind`) if it is stored; None otherwise."""
        key = _key(kind, canonical_json(value))
        if self._id(key) is None:
            self._fetch(conn, [key])
        return self._id(key)

    def _store(self, conn: Connection, kind: str, texts: dict[bytes, str]) -> None:
        """Make sure the terms `texts` (by key) are stored and their ids known."""
        missing = [k for k in texts if self._id(k) is None]
        if not missing:
            return
        self._fetch(conn, missing)
        new = [k for k in missing if not self._id(k)]
        if new and not conn.dialect.insert_executemany_returning:  # SQLite before 3.35
            insert = dialect.insert(terms, pg=False)
            rows = [{"kind": kind, "digest": k, "value": texts[k]} for k in new]
            conn.execute(insert.on_conflict_do_nothing(index_elements=["digest"]), rows)
            self._fetch(conn, new)
        elif new:  # the ids come back with the insert
            insert = dialect.insert(terms, pg=dialect.is_pg(conn))
            stmt = insert.on_conflict_do_nothing(index_elements=["digest"]).returning(
                terms.c.id, terms.c.digest
            )
            for chunk in chunks(new):
                rows = [{"kind": kind, "digest": k, "value": texts[k]} for k in chunk]
                for id_, digest in conn.execute(stmt, rows):
                    key = bytes(digest)
                    self._new_ids[key] = int(id_)
                    self._new_values[int(id_)] = json.loads(texts[key])
            raced = [k for k in new if self._id(k) is None]  # another writer stored them first
            if raced:
                self._fetch(conn, raced)

    def _found(self, key: bytes) -> int:
        found = self._id(key)
        if found is None:  # pragma: no cover - _store guarantees it
            raise RuntimeError("a term was not stored")
        return found

    def _fetch(self, conn: Connection, keys: list[bytes]) -> None:
        for chunk in chunks(keys):
            query = sa.select(terms.c.id, terms.c.digest, terms.c.value).where(
                dialect.among(conn, terms.c.digest, chunk)
            )
            for id_, digest, value in conn.execute(query):
                self._new_ids[bytes(digest)] = int(id_)
                self._new_values[int(id_)] = json.loads(value)

    def values(self, conn: Connection, ids: Iterable[int]) -> dict[int, Any]:
        """The values of term `ids` (read from the database when not cached)."""
        wanted = set(ids)
        found = {i: self._values[i] for i in wanted if i in self._values}
        found.update((i, self._new_values[i]) for i in wanted if i in self._new_values)
        missing = sorted(wanted - found.keys())
        for chunk in chunks(missing):
            query = sa.select(terms.c.id, terms.c.value).where(
                dialect.among(conn, terms.c.id, chunk)
            )
            for id_, value in conn.execute(query):
                found[int(id_)] = self._new_values[int(id_)] = json.loads(value)
        return found


def read_values(conn: Connection, ids: Iterable[int]) -> dict[int, Any]:
    """The values of term `ids`, read now (for verification: no cache)."""
    return Terms().values(conn, ids)


def ids_of_kind(conn: Connection, kind: str) -> dict[int, Any]:
    """Every term of `kind`, by id."""
    query = sa.select(terms.c.id, terms.c.value).where(terms.c.kind == kind)
    return {int(i): json.loads(v) for i, v in conn.execute(query)}
