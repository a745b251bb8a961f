"""Any text a source or a target hands the engine never stops a run: NULs, controls and lone
surrogates (what undecodable bytes become) in ids, values, consent evidence and a target's
errors, on both state stores, with hypothesis. An id no store can hold is a read problem
(records.usable_id); free text is stored escaped (tables.Message); the ledger still verifies."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from connector_core.records import storable, usable_id
from connector_core.sync.keys import target_key
from connector_core.sync.state import StateStore
from connector_core.testing import TEST_LEDGER_KEY, reset_memory_stores
from tests.postgres import drop_schema, new_schema
from tests.unit.sync.test_runner import FailingAdapter, Network, OddCursorAdapter

#: any text at all: hypothesis's text() leaves lone surrogates out unless asked
ODD = st.text(st.characters(), max_size=5)
PERSON = st.fixed_dictionaries(
    {"first_name": ODD, "city": ODD, "source": ODD, "granted": st.booleans()}
)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_urls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A fresh state store URL per call (hypothesis runs many examples in one test)."""
    made: list[str] = []
    count = iter(range(1_000_000))

    def fresh() -> str:
        if request.param == "sqlite":
            return f"sqlite:///{tmp_path / f'state-{next(count)}.db'}"
        schema, url = new_schema(request.getfixturevalue("pg_database"))
        made.append(schema)
        return url

    yield fresh
    for schema in made:
        drop_schema(request.getfixturevalue("pg_database"), schema)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(people=st.dictionaries(ODD, PERSON, min_size=1, max_size=4), error=ODD)
@example(
    people={
        "p\x00": {"first_name": "A\ud800", "city": "\x00", "source": "caf\udce9", "granted": True},
        "p1": {"first_name": "Ann", "city": "Leeds", "source": "\ud800", "granted": True},
    },
    error="refused \udce9\x00",
)
def test_any_text_from_a_source_or_a_target_never_stops_a_run(
    store_urls: Any, tmp_path_factory: pytest.TempPathFactory, people: dict[str, Any], error: str
) -> None:
    reset_memory_stores()
    net = Network(tmp_path_factory.mktemp("net"))
    for source_id, person in people.items():
        consent = {"local_organizing": {"granted": person["granted"], "source": person["source"]}}
        fields = {"first_name": person["first_name"], "city": person["city"]}
        net.put(source_id, consent={k: {**v, "at": None} for k, v in consent.items()}, **fields)
    store = StateStore.open(store_urls(), ledger_key=TEST_LEDGER_KEY)
    try:
        FailingAdapter.error = error
        net.configure(target="failing")  # every write fails with the target's odd text
        failed = net.run(store)
        net.configure(target="memory")
        done = net.run(store, reconcile=True)
        for result in (failed, done):
            assert result.error is None, result.error
        assert store.verify_ledger().ok
        usable = {i for i in people if usable_id(i)}
        shared = {i for i in usable if people[i]["granted"]}
        assert set(net.target()) == {target_key("north", i, store.key_secret()) for i in shared}
        if len(usable) < len(people):
            assert "crm: a record without a usable id" in done.problems
    finally:
        store.close()


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(mark=ODD)
@example(mark="\x00")
@example(mark="\udce9")
def test_a_cursor_no_store_holds_stops_the_run_before_anything_is_written(
    store_urls: Any, tmp_path_factory: pytest.TempPathFactory, mark: str
) -> None:
    """A third-party source's cursor is stored as it is (it must come back the same): one
    holding a NUL or a lone surrogate is the adapter's error, said before any write; the
    adapter mended, the next run ends as an uninterrupted one."""
    reset_memory_stores()
    net = Network(tmp_path_factory.mktemp("net"))
    for number in range(3):
        net.put(f"p{number}")
    store = StateStore.open(store_urls(), ledger_key=TEST_LEDGER_KEY)
    try:
        OddCursorAdapter.mark = mark
        net.configure(source="oddcursor")
        odd = net.run(store)
        if storable(mark):
            assert odd.error is None, odd.error
        else:
            assert odd.error is not None
            assert "crm: the oddcursor adapter's read gave a cursor" in str(odd.error)
            assert net.target() == {}
            assert list(store.ledger_entries()) == []
        net.put("p3")
        OddCursorAdapter.mark = mark if storable(mark) else ""  # mended
        done = net.run(store)
        assert done.error is None, done.error
        assert set(net.target()) == {
            target_key("north", f"p{n}", store.key_secret()) for n in range(4)
        }
        assert store.verify_ledger().ok
    finally:
        OddCursorAdapter.mark = ""
        store.close()
