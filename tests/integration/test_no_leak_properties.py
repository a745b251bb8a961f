"""The promise that matters most, end to end through the sync engine, with hypothesis.

After any sequence of source edits and runs: the target holds exactly the shareable people,
each with only the fields the policy allows (masks applied, never the original value); nobody
without the required consent; no field value in any log line. A policy that fails to load
lets nothing through.
"""

from __future__ import annotations

import logging
import string
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from connector_core.errors import ConnectorError
from connector_core.sync.keys import target_key
from connector_core.sync.state import StateStore
from connector_core.testing import TEST_LEDGER_KEY, reset_memory_stores
from connector_core.testing.checks import log_text
from tests.unit.sync.test_runner import POLICY, Network

ALLOWED = {"id", "first_name", "city", "phone"}
# Values drawn from an alphabet no log line uses on its own: finding one in a log is a leak.
VALUES = st.text(alphabet="ÆØÅæøåÐðÞþ" + string.ascii_uppercase, min_size=6, max_size=12)
PHONES = st.from_regex(r"\+44 1\d\d 4\d\d \d{4}", fullmatch=True)
EDIT = st.one_of(
    st.tuples(
        st.just("put"),
        st.sampled_from(["p1", "p2", "p3", "p4"]),
        st.fixed_dictionaries(
            {
                "first_name": VALUES,
                "city": VALUES,
                "phone": PHONES,
                "street_address": VALUES,
                "email": VALUES,
                "region": st.sampled_from(["North", "South"]),
                "granted": st.sampled_from([True, False, None]),
            }
        ),
    ),
    st.tuples(st.just("remove"), st.sampled_from(["p1", "p2", "p3", "p4"]), st.just({})),
    st.tuples(st.just("run"), st.just(""), st.fixed_dictionaries({"reconcile": st.booleans()})),
)
EXAMPLES = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def expected(source: dict[str, dict[str, Any]], secret: bytes) -> dict[str, dict[str, Any]]:
    """What the target must hold, by key, computed by hand from the policy's meaning."""
    out = {}
    for source_id, r in source.items():
        consent = (r.get("consent") or {}).get("local_organizing") or {}
        if consent.get("granted") is True and r.get("region") == "North":
            out[target_key("north", source_id, secret)] = r
    return out


def put(
    net: Network, source: dict[str, dict[str, Any]], source_id: str, fields: dict[str, Any]
) -> None:
    fields = dict(fields)
    granted = fields.pop("granted")
    record = dict(fields)
    if granted is not None:
        record["consent"] = {"local_organizing": {"granted": granted, "source": "crm", "at": None}}
    net.put(source_id, **fields, granted=granted)
    if granted is None:  # no evidence at all: drop the consent the helper adds
        net.put(source_id, **fields, consent={})
        record.pop("consent", None)
    source[source_id] = record


P1 = {
    "first_name": "ÆØÅÆØÅ",
    "city": "ÆØÅÆØÅ",
    "phone": "+44 100 400 0000",
    "street_address": "ÆØÅÆØÅ",
    "email": "ÆØÅÆØÅ",
    "region": "North",
    "granted": True,
}


@EXAMPLES
@given(edits=st.lists(EDIT, min_size=1, max_size=12))
@example(edits=[("put", "p1", P1), ("run", "", {"reconcile": False}), ("remove", "p1", {})])
def test_targets_hold_only_what_the_policy_allows(
    edits: list[tuple[str, str, dict[str, Any]]],
    tmp_path_factory: pytest.TempPathFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    reset_memory_stores()
    root = tmp_path_factory.mktemp("net")
    net = Network(root)
    store = StateStore.open(f"sqlite:///{root / 'state.db'}", ledger_key=TEST_LEDGER_KEY)
    caplog.set_level(logging.DEBUG)
    source: dict[str, dict[str, Any]] = {}
    # An empty read takes nobody back (its deletes are held): after one, the target keeps
    # what the last run over a non-empty source left there.
    last: dict[str, dict[str, Any]] = {}
    try:
        for kind, source_id, data in [*edits, ("run", "", {"reconcile": True})]:
            if kind == "put":
                put(net, source, source_id, data)
            elif kind == "remove":
                net.remove(source_id)
                source.pop(source_id, None)
            else:
                net.run(store, reconcile=data["reconcile"] or None)
                if source:
                    last = {k: dict(r) for k, r in expected(source, store.key_secret()).items()}
        held = net.target()
        want = last
        assert set(held) == set(want)
        for key, record in held.items():
            assert set(record) - {"id"} <= ALLOWED - {"id"}
            assert record.get("first_name") == want[key]["first_name"]
            phone = record.get("phone")
            assert phone != want[key]["phone"]
            assert phone is None or phone.endswith(want[key]["phone"][-4:])
        logged = log_text(caplog.records)
        for record in source.values():
            for field in ("first_name", "city", "street_address", "email"):
                assert record[field] not in logged, field
    finally:
        store.close()


MUTATIONS = st.sampled_from(
    [
        ("require_consent: [local_organizing]", "require_consent: [local_organising]"),
        ("first_name: show", "first_nam: show"),
        ("phone: last4", "phone: last5"),
        ("when: {region: North}", "when: {region: {gt: [North]}}"),
        ("  - allow: in the North", "  - allow: in the North\n    forbid: oops"),
        ("fields:", "fields: [first_name]\nextra:"),
        ("policy: north", "policy: North Organizers"),
        ("    when: {region: North}", "    when: {region: North"),
    ]
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    mutation=MUTATIONS,
    garbage=st.text(max_size=30),
    position=st.integers(0, 400),
    mode=st.sampled_from(["mutate", "insert"]),
)
def test_a_policy_that_fails_to_load_lets_nothing_through(
    mutation: tuple[str, str],
    garbage: str,
    position: int,
    mode: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    reset_memory_stores()
    root = tmp_path_factory.mktemp("net")
    net = Network(root)
    net.put("p1")
    text = (
        POLICY.replace(*mutation)
        if mode == "mutate"
        else POLICY[:position] + garbage + POLICY[position:]
    )
    net.policy(text)
    store = StateStore.open(f"sqlite:///{root / 'state.db'}", ledger_key=TEST_LEDGER_KEY)
    try:
        try:
            job = net.job()
        except ConnectorError:
            assert net.target() == {}  # refused before anything was read or written
            return
        # It loaded (the mutation was harmless): then it must still keep the promise.
        try:
            net.run(store)
        finally:
            job.close()
        for record in net.target().values():
            assert set(record) <= {"id", "first_name", "city", "phone"}
            assert record.get("phone") != "+44 113 496 0123"
    finally:
        store.close()
