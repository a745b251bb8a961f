"""Deterministic, pseudonymous target keys and projection hashes.

A job derives the key of each record it writes from its own name and the record's source id,
so a re-run after a crash upserts the same key instead of creating a duplicate. The key is an
HMAC-SHA256 under a secret the recipient never sees (``network.key_secret`` in connector.yaml,
else a secret the state store generated for itself), shaped as a UUID (version 8, RFC 9562):
a recipient who runs a job of the same name over guessed source ids gets other keys, so it
cannot tell which source id a key stands for (a policy that wants the recipient to see the
id shows ``id``).

Keys made by earlier versions (:func:`legacy_target_key`, a UUID5 of job name and source id, which
anyone could recompute) stay where they are: the id map holds each record's key, and
updates and deletes use the stored key; only new records get keyed keys.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from hashlib import sha256
from json.encoder import encode_basestring
from typing import Any

from connector_core.records import Record

#: The namespace of :func:`legacy_target_key`. Fixed forever: records written with it keep it.
KEY_NAMESPACE = uuid.UUID("f477f0f3-8a76-4814-99e5-c10b5ce2d55d")
_NAMESPACE = KEY_NAMESPACE.bytes
_VARIANT = "89ab"  # RFC 4122 variant: the top two bits of the 17th hex digit are 10

#: JSON with sorted keys and no spaces, so equal values give equal text.
canonical_json = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
).encode


class TargetKeys:
    """The key function of one job under one secret: ``keys(source_id)`` is the key job
    `job` writes the record `source_id` under, in every run. Its repr hides the secret."""

    __slots__ = ("_mac", "job")

    def __init__(self, job: str, secret: bytes) -> None:
        if not secret:
            raise ValueError("target keys need a non-empty secret")
        self.job = job
        self._mac = hmac.new(secret, _encode(f"{job}\0"), hashlib.sha256)

    def __call__(self, source_id: str) -> str:
        mac = self._mac.copy()  # the job's prefix is hashed once, not once per record
        mac.update(_encode(source_id))
        return _uuid_shaped(mac.hexdigest(), version="8")

    def __repr__(self) -> str:
        return f"TargetKeys(job={self.job!r}, secret=<hidden>)"


def target_key(job: str, source_id: str, secret: bytes) -> str:
    """The key job `job` writes the record `source_id` under, given the key `secret`."""
    return TargetKeys(job, secret)(source_id)


def legacy_target_key(job: str, source_id: str) -> str:
    """The unkeyed key of earlier versions: ``str(uuid.uuid5(KEY_NAMESPACE, f"{job}\\0{id}"))``.

    Anyone can recompute it from a job name and a guessed id; it is kept only to recognise
    records written before keys were keyed.
    """
    name = _encode(f"{job}\0{source_id}")
    return _uuid_shaped(hashlib.sha1(_NAMESPACE + name, usedforsecurity=False).hexdigest(), "5")


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # ids holding undecodable bytes, too


def _uuid_shaped(h: str, version: str) -> str:
    variant = _VARIANT[int(h[16], 16) & 3]
    return f"{h[:8]}-{h[8:12]}-{version}{h[13:16]}-{variant}{h[17:20]}-{h[20:32]}"


#: Hex digits kept of a field hash (32 bits: they only tell `plan` which fields an update
#: changes; what is written is decided by the projection hash) and of a projection hash (128
#: bits: a change goes unseen only if two projections of one record collide). Schema 0008
#: cut stored hashes to these prefixes, so stores keep matching.
FIELD_HASH_DIGITS = 8
PROJECTION_HASH_DIGITS = 32


def field_hashes(projection: Record, salt: str = "") -> dict[str, str]:
    """A short salted hash per shared field, so a plan can say which fields an update
    changes without the state ever holding a recipient's values."""
    return {
        field: hashlib.sha256(
            f"{salt}\n{field}\n{canonical_json(value)}".encode("utf-8", "surrogatepass")
        ).hexdigest()[:FIELD_HASH_DIGITS]
        for field, value in projection.items()
        if value is not None
    }


def projection_hashes(
    projection: Record, salt: str = "", memo: dict[str, str] | None = None
) -> tuple[str, dict[str, str]]:
    """``(projection_hash(projection, salt), field_hashes(projection, salt))``, with each
    value encoded as JSON once for both (a projection's keys are canonical field names).

    `memo` keeps field hashes by what they hash, for a caller that hashes many projections
    whose fields often hold the same values (a city, a first name); it never grows past
    :data:`MEMO_SIZE` entries."""
    texts: dict[str, str] = {}
    hashes: dict[str, str] = {}
    memo = {} if memo is None else memo
    try:
        for name, value in projection.items():
            if value is None:
                texts[name] = "null"
                continue
            text = encode_basestring(value) if value.__class__ is str else canonical_json(value)
            texts[name] = text
            hashed = f"{salt}\n{name}\n{text}"
            found = memo.get(hashed)
            if found is None:
                digest = sha256(hashed.encode("utf-8", "surrogatepass")).hexdigest()
                found = digest[:FIELD_HASH_DIGITS]
                if len(memo) >= MEMO_SIZE:
                    memo.clear()
                memo[hashed] = found
            hashes[name] = found
        pairs = [f"{encode_basestring(n)}:{texts[n]}" for n in sorted(texts)]
    except TypeError:  # a name that is not text: JSON has its own rules for those
        return projection_hash(projection, salt), field_hashes(projection, salt)
    whole = "{" + ",".join(pairs) + "}"
    data = (f"{salt}\n{whole}" if salt else whole).encode("utf-8", "surrogatepass")
    return sha256(data).hexdigest()[:PROJECTION_HASH_DIGITS], hashes


#: The most field hashes a memo of :func:`projection_hashes` keeps.
MEMO_SIZE = 65_536


def projection_hash(projection: Any, salt: str = "") -> str:
    """SHA-256 (the first 128 bits, as hex) of the canonical JSON of a projection, prefixed
    by `salt`.

    The runner salts with the target's fingerprint, so that a change in how the target
    stores records (its mapping or settings) makes every record look changed and be written
    again.
    """
    text = f"{salt}\n{canonical_json(projection)}" if salt else canonical_json(projection)
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return digest[:PROJECTION_HASH_DIGITS]
