"""NUL and other control characters never reach a target (issue 11, "Safe files").

The sync engine removes them, in one place, from every string of the projection it hands to
an adapter's write(), before hashing it: so CSV, vCard, CiviCRM and any third-party target get
the same clean values, and the state stays stable from run to run.
"""

from __future__ import annotations

import string
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector_core.cells import CONTROL_CHARACTERS
from connector_core.sync.state import StateStore
from connector_core.testing import TEST_LEDGER_KEY, reset_memory_stores
from tests.unit.sync.test_runner import Network

CONTROLS = "".join(chr(c) for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)])
TEXT = st.text(alphabet=CONTROLS + string.ascii_letters + " ", min_size=1, max_size=12)


def assert_clean(value: Any) -> None:
    if isinstance(value, str):
        assert CONTROL_CHARACTERS.search(value) is None, repr(value)
    elif isinstance(value, list | tuple):
        for item in value:
            assert_clean(item)
    elif isinstance(value, dict):
        for item in value.values():
            assert_clean(item)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(first_name=TEXT, city=TEXT)
def test_no_control_character_reaches_a_target(
    first_name: str, city: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    reset_memory_stores()
    root = tmp_path_factory.mktemp("net")
    net = Network(root)
    store = StateStore.open(f"sqlite:///{root / 'state.db'}", ledger_key=TEST_LEDGER_KEY)
    try:
        net.put("p1", first_name=first_name, city=city)
        first = net.run(store)
        assert first.exit_code == 0, first.failures
        for record in net.target().values():
            assert_clean(record)
        again = net.run(store, reconcile=True)  # the state holds the hash of what was sent
        assert again.counts.updated == 0
        assert again.counts.created == 0
    finally:
        store.close()


def test_the_vcard_of_a_projection_holds_no_control_character(tmp_path: Any) -> None:
    render = pytest.importorskip("connector_nextcloud.vcard")
    reset_memory_stores()
    net = Network(tmp_path)
    store = StateStore.open(f"sqlite:///{tmp_path / 'state.db'}", ledger_key=TEST_LEDGER_KEY)
    try:
        net.put("p1", first_name="Ana\x00\x1b[31m\x07", city="Le\x85eds")
        net.run(store)
    finally:
        store.close()
    [record] = net.target().values()
    card = render.render_card(
        record, render.CardFormat(), uid=record["id"], fields=["first_name", "city"]
    )
    assert "FN:Ana[31m\r\n" in card
    assert CONTROL_CHARACTERS.search(card.replace("\r\n", "")) is None, repr(card)
