"""The one consent parser: a state mapping holds only granted, source and at."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector_core.consent import AmbiguousConsent, consent_block

STATE_KEYS = ("granted", "source", "at")


def test_a_state_with_only_known_keys_is_read() -> None:
    block = consent_block({"x": {"granted": "yes", "source": "form", "at": "2026-01-01"}}, "s")
    assert block == {"x": {"granted": True, "source": "form", "at": "2026-01-01"}}


@given(
    key=st.text(min_size=1, max_size=12).filter(lambda k: k not in STATE_KEYS),
    extra=st.one_of(st.booleans(), st.none(), st.text(max_size=8).map("SENTINEL-".__add__)),
    granted=st.sampled_from(["yes", True, 1, "granted"]),
)
def test_an_unknown_key_in_a_state_makes_it_ambiguous(
    key: str, extra: object, granted: object
) -> None:
    with pytest.raises(AmbiguousConsent) as caught:
        consent_block({"local_organizing": {"granted": granted, key: extra}}, "s")
    assert caught.value.purpose == "local_organizing"
    assert caught.value.field == "consent.local_organizing"
    assert "SENTINEL" not in str(caught.value)


def test_withdrawn_beside_granted_is_no_consent() -> None:
    with pytest.raises(AmbiguousConsent):
        consent_block({"contact_me": {"granted": "yes", "withdrawn": True}}, "s")
