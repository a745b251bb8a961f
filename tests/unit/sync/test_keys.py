"""Target keys are keyed: stable under one secret, unrelated across secrets, UUID-shaped."""

from __future__ import annotations

import hashlib
import hmac
import uuid

from hypothesis import given
from hypothesis import strategies as st

from connector_core.sync.keys import TargetKeys, legacy_target_key, target_key

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
