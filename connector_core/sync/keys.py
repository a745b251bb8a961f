"""Deterministic, pseudonymous target keys and projection hashes.

A job derives the key of each record it writes from its own name and the record's source id,
so a re-run after a crash upserts the same key instead of creating a duplicate. The key is a
UUID5, which tells the recipient nothing about the source id (a policy that wants the
recipient to see it shows ``id``). Both functions run once per record, so they avoid the
general-purpose paths (``uuid.uuid5``, ``json.dumps`` with options) that cost several times
more.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from connector_core.records import Record

#: Fixed forever: changing it would give every job new keys, and duplicate every record.
KEY_NAMESPACE = uuid.UUID("f477f0f3-8a76-4814-99e5-c10b5ce2d55d")
_NAMESPACE = KEY_NAMESPACE.bytes
_VARIANT = "89ab"  # RFC 4122 variant: the top two bits of the 17th hex digit are 10

#: JSON with sorted keys and no spaces, so equal values give equal text.
canonical_json = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
).encode


def target_key(job: str, source_id: str) -> str:
    """The key job `job` writes the record `source_id` under, in every target and every run.

    Equal to ``str(uuid.uuid5(KEY_NAMESPACE, f"{job}\\0{source_id}"))``, computed directly
    (and also for ids holding undecodable bytes, which uuid5 refuses).
    """
    name = f"{job}\0{source_id}".encode("utf-8", "surrogatepass")
    h = hashlib.sha1(_NAMESPACE + name, usedforsecurity=False).hexdigest()
    variant = _VARIANT[int(h[16], 16) & 3]
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{variant}{h[17:20]}-{h[20:32]}"


def field_hashes(projection: Record, salt: str = "") -> dict[str, str]:
    """A short salted hash per shared field, so a plan can say which fields an update
    changes without the state ever holding a recipient's values."""
    return {
        field: hashlib.sha256(
            f"{salt}\n{field}\n{canonical_json(value)}".encode("utf-8", "surrogatepass")
        ).hexdigest()[:16]
        for field, value in projection.items()
        if value is not None
    }


def projection_hash(projection: Any, salt: str = "") -> str:
    """SHA-256 (hex) of the canonical JSON of a projection, prefixed by `salt`.

    The runner salts with the target's fingerprint, so that a change in how the target
    stores records (its mapping or settings) makes every record look changed and be written
    again.
    """
    text = f"{salt}\n{canonical_json(projection)}" if salt else canonical_json(projection)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
