"""No error about a record carries a value of that record (issue 11, "No values in messages").

Targets and servers quote what they were sent in their errors (MySQL's ``Duplicate entry
'...'``, CiviCRM's ``'...' is not a valid option``). The runner scrubs every value of the
record's projection and source record from the error before reporting it anywhere: the
``failed:`` lines, ``run --json`` failures and the state's outstanding changes.
"""

from __future__ import annotations

import json
import logging
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector_core.scrub import scrub_values
from connector_core.sync.state import StateStore
from connector_core.testing import TEST_LEDGER_KEY, reset_memory_stores
from connector_core.testing.checks import log_text
from tests.unit.sync.test_runner import Network

# Sentinels: text no fixed message holds, in any case, with quotes and escapes inside.
SENTINEL = st.text(alphabet=string.ascii_letters + "'\"\\ éßЖ", min_size=3, max_size=10).map(
    lambda t: f"Zq{t}Qz"
)


def forms(value: str) -> set[str]:
    return {value, value.lower(), repr(value)[1:-1], json.dumps(value)[1:-1]}


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(first_name=SENTINEL, city=SENTINEL, street=SENTINEL)
def test_a_target_error_quoting_values_reports_none_of_them(
    first_name: str,
    city: str,
    street: str,
    tmp_path_factory: pytest.TempPathFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    reset_memory_stores()
    root = tmp_path_factory.mktemp("net")
    net = Network(root)
    net.configure(target="echoing")
    store = StateStore.open(f"sqlite:///{root / 'state.db'}", ledger_key=TEST_LEDGER_KEY)
    caplog.set_level(logging.DEBUG)
    try:
        net.put("p1", first_name=first_name, city=city, street_address=street)
        result = net.run(store)
        assert result.counts.failed == 1
        [failure] = result.failures
        assert failure.startswith("p1: Duplicate entry '***' for key 'UI'")
        stored = [o.error or "" for o in store.outstanding("north").values()]
        runs = json.dumps(store.runs("north"), default=str)
        said = "\n".join([*result.failures, *stored, runs, log_text(caplog.records)])
        for value in (first_name, city, street, "+44 113 496 0123", "********0123"):
            for form in forms(value):
                if len(form) >= 3:
                    assert form not in said, (form, said)
    finally:
        store.close()


def test_scrub_values_catches_the_forms_servers_write() -> None:
    values = ["Wen O'Brien", "Zhōu", 1234, ["alpha", "be"], {"k": "nested-val"}]
    text = (
        "Duplicate entry '{'first_name': \"Wen O'Brien\", 'x': 'Zh\\u014du'}' "
        'json {"n": "Zh\\u014du"} \'WEN O\'BRIEN\' 1234 alpha be nested-val'
    )
    out = scrub_values(text, values)
    for gone in ("Wen O", "Zh\\u014du", "WEN", "1234", "alpha", "nested-val"):
        assert gone not in out, out
    assert out.endswith(" be ***")  # "be" is too short to look for: left alone


def test_our_own_words_are_not_taken_for_values() -> None:
    text = "civicrm connection 'organizers-north': Contact.save failed: 'North' is not valid"
    out = scrub_values(text, ["North", "city"], keep=["organizers-north", "city"])
    assert out == "civicrm connection 'organizers-north': Contact.save failed: '***' is not valid"


def test_a_value_holding_one_of_our_words_is_scrubbed_whole() -> None:
    """A first name "Davida" holds the field name "id": the kept word must not split it."""
    text = "Duplicate entry 'ZqAidQz' for key 'UI' (id, city)"
    out = scrub_values(text, ["ZqAidQz", "Davida"], keep=["id", "city", "organizers-north"])
    assert out == "Duplicate entry '***' for key 'UI' (id, city)"
    assert scrub_values("was: Davida", ["Davida"], keep=["id"]) == "was: ***"


@settings(max_examples=200, deadline=None)
@given(
    value=st.text(alphabet="abcdINORTHinorth- '", min_size=3, max_size=12),
    before=st.text(alphabet="abc idnorth-:'", max_size=8),
    after=st.text(alphabet="abc idnorth-:'", max_size=8),
    keep=st.lists(st.sampled_from(["id", "north", "organizers-north", "city", "a", "b c"])),
)
def test_no_kept_word_lets_a_value_through(
    value: str, before: str, after: str, keep: list[str]
) -> None:
    """Whatever our own words are, a value is gone from the text, unless the only place it
    appears is inside one of those words (a region "North" in connection "organizers-north")."""
    out = scrub_values(before + value + after, [value], keep=keep)
    if value.strip() and not any(value.lower() in k.lower() for k in keep):
        assert value.lower() not in out.lower(), (before, value, after, keep, out)
