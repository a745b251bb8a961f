"""Target keys are keyed: stable under one secret, unrelated across secrets, UUID-shaped."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector_core.sync import keys
from connector_core.sync.keys import (
    TargetKeys,
    field_hashes,
    legacy_target_key,
    projection_hash,
    projection_hashes,
    target_key,
)

names = st.text(min_size=1, max_size=40)
ids = st.text(max_size=60)
secrets = st.binary(min_size=16, max_size=64)


@given(job=names, source_id=ids, one=secrets, other=secrets)
def test_keys_are_stable_for_one_secret_and_differ_across_secrets(
    job: str, source_id: str, one: bytes, other: bytes
) -> None:
    key = target_key(job, source_id, one)
    assert key == target_key(job, source_id, one) == TargetKeys(job, one)(source_id)
    if one != other:
        assert key != target_key(job, source_id, other)
    assert key != legacy_target_key(job, source_id)  # a guessed id and job name tell nothing
    parsed = uuid.UUID(key)
    assert (str(parsed), parsed.version, parsed.variant) == (key, 8, uuid.RFC_4122)


@given(job=names, first=ids, second=ids, secret=secrets)
def test_distinct_ids_get_distinct_keys(job: str, first: str, second: str, secret: bytes) -> None:
    if first != second:
        assert target_key(job, first, secret) != target_key(job, second, secret)


def test_a_key_is_the_hmac_sha256_of_job_and_id_shaped_as_a_uuid() -> None:
    digest = hmac.new(b"k" * 16, b"north\0P001", hashlib.sha256).hexdigest()
    raw = uuid.UUID(digest[:32])
    expected = uuid.UUID(int=(raw.int & ~(0xF << 76) | (8 << 76)) & ~(0x3 << 62) | (0x2 << 62))
    assert target_key("north", "P001", b"k" * 16) == str(expected)


def test_the_secret_never_shows() -> None:
    keys = TargetKeys("north", b"a very secret value")
    assert "secret value" not in repr(keys)
    assert repr(keys) == "TargetKeys(job='north', secret=<hidden>)"


# Projections as the planner hashes them: canonical names to text (any, with escapes,
# surrogates and controls), numbers, booleans, None, lists and the consent mapping.
values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)
field_names = st.sampled_from(["first_name", "city", "phone", "groups", "consent", "extra.a.b"])
projections = st.dictionaries(field_names | st.text(max_size=6), values, max_size=6)


@given(projection=projections, salt=st.sampled_from(["", "salt", "f" * 64, "é\n"]))
def test_projection_hashes_equal_the_two_hashes_they_stand_for(
    projection: dict[str, Any], salt: str
) -> None:
    """One pass over the projection, the very same hashes (stored states must still match),
    also when a memo shared with other projections answers for some fields."""
    expected = (projection_hash(projection, salt), list(field_hashes(projection, salt).items()))
    for memo in (None, MEMO, MEMO):
        digest, hashes = projection_hashes(projection, salt, memo)
        assert (digest, list(hashes.items())) == expected


MEMO: dict[str, str] = {}


def test_the_memo_stays_small(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keys, "MEMO_SIZE", 3)
    memo: dict[str, str] = {}
    for n in range(10):
        projection = {"city": f"c{n}", "first_name": f"f{n}"}
        assert projection_hashes(projection, "s", memo)[1] == field_hashes(projection, "s")
        assert len(memo) <= 3


def test_projection_hashes_of_names_that_are_not_text_fall_back_to_json() -> None:
    projection: dict[Any, Any] = {1: "x", 2: None}
    assert projection_hashes(projection) == (projection_hash(projection), field_hashes(projection))


def test_hashes_are_prefixes_of_what_stores_before_schema_0008_hold() -> None:
    """Schema 0008 cut stored hashes to these prefixes: a migrated record stays unchanged."""
    projection = {"city": "York", "email": "a@example.org", "phone": None}
    text = keys.canonical_json(projection)
    old = hashlib.sha256(f"salt\n{text}".encode()).hexdigest()  # as earlier versions hashed
    old_fields = {
        name: hashlib.sha256(f"salt\n{name}\n{keys.canonical_json(v)}".encode()).hexdigest()[:16]
        for name, v in projection.items()
        if v is not None
    }
    assert projection_hash(projection, "salt") == old[:32]
    assert projection_hashes(projection, "salt") == (
        old[:32],
        {name: h[:8] for name, h in old_fields.items()},
    )


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(), _JSON), st.dictionaries(st.text(), _JSON))
def test_a_config_hash_made_of_its_connections_json_is_the_hash_of_the_whole(
    source: dict[str, Any], target: dict[str, Any]
) -> None:
    """load_job hashes a job's connections from their canonical JSON, each encoded once
    per load (a national source, for 15,000 partners): the same hash as encoding both."""
    from connector_core.sync.job import _digest, config_digest

    whole = _digest({"source": source, "target": target})
    assert config_digest(keys.canonical_json(source), keys.canonical_json(target)) == whole
