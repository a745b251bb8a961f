"""The hash-chained ledger: reading, verification against each kind of tampering, export."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import itertools
import json
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from connector_core.sync import ledger
from connector_core.sync.model import AppliedChange
from connector_core.sync.state import StateStore
from connector_core.sync.tables import GENESIS_HASH
from connector_core.testing import TEST_LEDGER_KEY
from tests.unit.sync import tamper
from tests.unit.sync.conftest import change

if TYPE_CHECKING:
    from tests.unit.sync.conftest import Children

Change = Callable[..., AppliedChange]


@pytest.fixture
def five(store: StateStore, make_change: Change) -> StateStore:
    """A store whose ledger holds seq 1-5, written in two batches."""
    store.record_batch(
        "members", "nc", "members.yaml", "p" * 64, [make_change(str(i)) for i in (1, 2, 3)]
    )
    store.record_batch(
        "partner", "csv", "partner.yaml", "q" * 64, [make_change("1"), make_change("2")]
    )
    return store


def test_an_untouched_ledger_verifies(five: StateStore) -> None:
    entries = list(five.ledger_entries())
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.row_hash for a, b in itertools.pairwise(entries))
    report = five.verify_ledger()
    assert (report.ok, report.checked, report.problems) == (True, 5, [])
    assert (report.head_seq, report.head_hash) == (5, entries[-1].row_hash)


def test_an_empty_ledger_verifies(store: StateStore) -> None:
    report = store.verify_ledger()
    assert (report.ok, report.checked, report.head_seq, report.head_hash) == (
        True,
        0,
        0,
        GENESIS_HASH,
    )


def test_entries_are_filtered_by_job_and_position(five: StateStore) -> None:
    assert [e.seq for e in five.ledger_entries(job="partner")] == [4, 5]
    assert [e.seq for e in five.ledger_entries(after_seq=3)] == [4, 5]
    assert [e.seq for e in five.ledger_entries(job="members", after_seq=2)] == [3]
    entry = next(five.ledger_entries(job="partner"))
    assert (entry.job, entry.target, entry.policy, entry.action) == (
        "partner",
        "csv",
        "partner.yaml",
        "create",
    )
    assert entry.fields == {"email": "show", "phone": "mask:last4"}
    assert entry.record_key == "key-1"
    assert entry.approvals == []


def test_a_long_ledger_is_read_page_by_page(store: StateStore, make_change: Change) -> None:
    store.record_batch(
        "members", "nc", "m.yaml", "p" * 64, [make_change(str(i)) for i in range(2345)]
    )
    assert [e.seq for e in store.ledger_entries()] == list(range(1, 2346))
    assert len(list(store.ledger_entries(after_seq=2000))) == 345
    assert store.verify_ledger().checked == 2345


def _sql(engine: sa.Engine, *statements: str) -> None:
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement))


def _forge_after_last(engine: sa.Engine, store: StateStore) -> None:
    """Append a well-chained row without moving the head, as a forger with a key would."""
    last = list(store.ledger_entries())[-1]
    row = {**dataclasses.asdict(last), "seq": last.seq + 1, "prev_hash": last.row_hash}
    row["row_hash"] = ledger.row_hash(row, TEST_LEDGER_KEY)
    with engine.begin() as conn:
        tamper.insert_rows(conn, [row])


def _edit_and_rehash(engine: sa.Engine, store: StateStore) -> None:
    """Edit row 3 and fix its own hash: only the link from row 4 can tell."""
    row = dataclasses.asdict(list(store.ledger_entries())[2])
    row["reason"] = "shared:nothing to see"
    row["row_hash"] = ledger.row_hash(row, TEST_LEDGER_KEY)
    tamper.edit(engine, store, 3, reason=row["reason"], row_hash=row["row_hash"])


def _copy(source: int, seq: int) -> Callable[[sa.Engine, StateStore], None]:
    """Insert a verbatim copy of row `source` as row `seq`."""
    rest = tamper.STORED.removeprefix("seq, ")
    sql = f"INSERT INTO ledger SELECT {seq}, {rest} FROM ledger WHERE seq = {source}"
    return lambda engine, _store: _sql(engine, sql)


EDITED = "content does not match its row_hash (row edited, or the row before it replaced)"
SWAP = (
    "UPDATE ledger SET seq = -2 WHERE seq = 2",
    "UPDATE ledger SET seq = 2 WHERE seq = 3",
    "UPDATE ledger SET seq = 3 WHERE seq = -2",
)
TAMPERING: dict[str, tuple[Callable[[sa.Engine, StateStore], None], list[str]]] = {
    "edited text": (
        lambda e, s: tamper.edit(e, s, 2, target="elsewhere"),
        [f"seq 2: {EDITED}"],
    ),
    "edited json": (
        lambda e, s: tamper.edit(e, s, 4, fields=[]),
        [f"seq 4: {EDITED}"],
    ),
    "edited and rehashed": (
        _edit_and_rehash,
        [f"seq 4: {EDITED}"],  # row 4 is hashed after the original row 3
    ),
    "deleted middle": (
        lambda e, s: _sql(e, "DELETE FROM ledger WHERE seq = 3"),
        ["seq 3: missing (row deleted)"],
    ),
    "deleted two": (
        lambda e, s: _sql(e, "DELETE FROM ledger WHERE seq IN (2, 3)"),
        ["seq 2-3: missing (row deleted)"],
    ),
    "deleted first": (
        lambda e, s: _sql(e, "DELETE FROM ledger WHERE seq = 1"),
        ["seq 1: missing (row deleted)"],
    ),
    "deleted tail": (
        lambda e, s: _sql(e, "DELETE FROM ledger WHERE seq >= 4"),
        ["seq 4-5: missing at the end; the head records seq 5 (rows deleted)"],
    ),
    "reordered": (
        lambda e, s: _sql(e, *SWAP),
        [
            "seq 2: holds the row written as seq 3 (rows reordered)",
            "seq 3: holds the row written as seq 2 (rows reordered)",
        ],
    ),
    "inserted after": (_forge_after_last, ["seq 6: after the recorded head seq 5 (rows inserted)"]),
    "inserted copy": (
        _copy(5, 6),
        ["seq 6: after the recorded head seq 5 (rows inserted)"],
    ),
    "inserted before": (
        _copy(1, 0),
        ["seq 0: comes before the first row (row inserted)"],
    ),
    "head moved back": (
        lambda e, s: _sql(e, "UPDATE ledger_head SET seq = 4"),
        ["seq 5: after the recorded head seq 4 (rows inserted)"],
    ),
    "edited shared entry": (
        lambda e, s: _sql(
            e, "UPDATE terms SET value = replace(value, 'shared:', 'hidden:') WHERE kind = 'entry'"
        ),
        [f"seq {n}: {EDITED}" for n in range(1, 6)],
    ),
    "edited shared consent": (
        lambda e, s: _sql(
            e, "UPDATE terms SET value = replace(value, 'true', 'false') WHERE kind = 'consent'"
        ),
        [f"seq {n}: {EDITED}" for n in range(1, 6)],
    ),
    "head hash": (
        lambda e, s: _sql(e, f"UPDATE ledger_head SET row_hash = '{'f' * 64}'"),
        ["seq 5: the head records another hash for it (head mismatch: last row replaced)"],
    ),
    "head deleted": (
        lambda e, s: _sql(e, "DELETE FROM ledger_head"),
        ["ledger head: missing (the ledger_head row was deleted)"],
    ),
}


@pytest.mark.parametrize("kind", list(TAMPERING))
def test_verify_detects_tampering(five: StateStore, raw_engine: sa.Engine, kind: str) -> None:
    tamper, expected = TAMPERING[kind]
    tamper(raw_engine, five)
    report = five.verify_ledger()
    assert not report.ok
    for problem in expected:
        assert problem in report.problems, report.problems


def test_appending_after_the_head_was_deleted_is_refused(
    five: StateStore, raw_engine: sa.Engine, make_change: Change
) -> None:
    _sql(raw_engine, "DELETE FROM ledger_head")
    with pytest.raises(ledger.LedgerBroken, match="ledger head is missing"):
        five.record_batch("members", "nc", "m.yaml", "p" * 64, [make_change("9")])
    assert five.mapped("members", ["9"]) == {}  # the id map rolled back with it


def test_every_column_but_the_hash_is_hashed(five: StateStore) -> None:
    row = dataclasses.asdict(next(five.ledger_entries()))
    digest = ledger.row_hash(row, TEST_LEDGER_KEY)
    assert digest == row["row_hash"]
    assert ledger.row_hash({**row, "row_hash": "x"}, TEST_LEDGER_KEY) == digest
    assert set(ledger.PAYLOADS[2]) == set(ledger.COLUMNS) - {"row_hash"}
    for name in ledger.COLUMNS:
        if name not in ("row_hash", "at", "version"):
            assert ledger.row_hash({**row, name: "changed"}, TEST_LEDGER_KEY) != digest, name


def test_export_jsonl_round_trips(five: StateStore) -> None:
    out = io.StringIO()
    assert five.export_ledger(out) == 5
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    entries = list(five.ledger_entries())
    assert [line["row_hash"] for line in lines] == [e.row_hash for e in entries]
    assert lines[0]["at"] == ledger.timestamp(entries[0].at)
    assert lines[0]["fields"] == entries[0].fields
    assert list(lines[0]) == list(ledger.COLUMNS)


def test_export_csv_is_safe_to_open_in_a_spreadsheet(
    store: StateStore, make_change: Change
) -> None:
    store.record_batch(
        "members",
        "nc",
        "m.yaml",
        "p" * 64,
        [make_change("=HYPERLINK(1)", key="k1"), make_change("2")],
    )
    out = io.StringIO()
    assert store.export_ledger(out, fmt="csv") == 2
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert list(rows[0]) == list(ledger.COLUMNS)
    assert rows[0]["source_id"] == "'=HYPERLINK(1)"
    assert rows[1]["source_id"] == "2"
    assert json.loads(rows[1]["fields"]) == {"email": "show", "phone": "mask:last4"}


@pytest.mark.parametrize(
    ("source_id", "written"),
    [
        ("\uff1dHYPERLINK(1)", "'\uff1dHYPERLINK(1)"),  # FULLWIDTH EQUALS SIGN
        (" =1+1", "' =1+1"),
        ("\u00a0@SUM(A1)", "'\u00a0@SUM(A1)"),
        ("\n-1+2", "'\n-1+2"),
        ("\x01=1+1", "'=1+1"),  # (PostgreSQL text cannot hold NUL)
        ("M\x1b12", "M12"),
    ],
)
def test_export_csv_catches_formulas_in_disguise_and_drops_controls(
    store: StateStore, make_change: Change, source_id: str, written: str
) -> None:
    store.record_batch("members", "nc", "m.yaml", "p" * 64, [make_change(source_id, key="k1")])
    out = io.StringIO()
    store.export_ledger(out, fmt="csv")
    rows = list(csv.DictReader(io.StringIO(out.getvalue(), newline="")))
    assert rows[0]["source_id"] == written


def test_export_refuses_an_unknown_format(five: StateStore) -> None:
    with pytest.raises(ValueError, match="unknown ledger export format"):
        five.export_ledger(io.StringIO(), fmt="xml")  # type: ignore[arg-type]


WRITER = """
import sys
from connector_core.sync.model import AppliedChange
from connector_core.sync.state import StateStore
from connector_core.testing import TEST_LEDGER_KEY
from tests.unit.sync import tamper

url, job, batches = sys.argv[1], sys.argv[2], int(sys.argv[3])
with StateStore.open(url, ledger_key=TEST_LEDGER_KEY) as store:
    for b in range(batches):
        changes = [
            AppliedChange("create", f"{b}-{i}", f"{b}-{i}", "a" * 64, {"email": "show"}, {}, "x")
            for i in range(10)
        ]
        store.record_batch(job, "csv", "p.yaml", "p" * 64, changes, cursor=str(b))
"""


def test_concurrent_appends_from_several_processes_keep_one_chain(
    state_url: str, store: StateStore, children: Children
) -> None:
    procs = [children.start(WRITER, state_url, f"job{n}", "25") for n in range(3)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    report = store.verify_ledger()
    assert (report.ok, report.checked, report.head_seq) == (True, 750, 750), report.problems
    jobs = [e.job for e in store.ledger_entries()]
    assert sorted(set(jobs)) == ["job0", "job1", "job2"]
    assert all(store.mapped_count(f"job{n}") == 250 for n in range(3))


# -- any tampering, on any ledger (format 3: no stored previous hash) ----------------------

TAMPER_KINDS = st.sampled_from(["edit", "delete", "swap", "copy", "rehash"])


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=4), min_size=1, max_size=3),
    kind=TAMPER_KINDS,
    picks=st.tuples(st.integers(min_value=0), st.integers(min_value=0)),
    column=st.sampled_from(["reason", "source_id", "record_key", "target", "fields", "at"]),
)
def test_verify_detects_any_edit_deletion_reordering_or_insertion(
    sizes: list[int], kind: str, picks: tuple[int, int], column: str
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/state.db"
        with StateStore.open(url, ledger_key=TEST_LEDGER_KEY) as store:
            for n, size in enumerate(sizes):
                changes = [change(f"{n}-{i}", key=f"k{n}-{i}") for i in range(size)]
                store.record_batch(f"job{n % 2}", "nc", "p.yaml", "p" * 64, changes)
            assert store.verify_ledger().ok
            rows = [ledger.as_dict(e) for e in store.ledger_entries()]
            first, second = (p % len(rows) + 1 for p in picks)
            engine = sa.create_engine(url, poolclass=sa.NullPool)
            _tamper(engine, store, rows, kind, first, second, column)
            engine.dispose()
            report = store.verify_ledger()
            if kind == "swap" and first == second:
                assert report.ok  # nothing moved
            else:
                assert not report.ok, (kind, first, second, column)


def _tamper(
    engine: sa.Engine,
    store: StateStore,
    rows: list[dict[str, Any]],
    kind: str,
    first: int,
    second: int,
    column: str,
) -> None:
    last = len(rows)
    if kind in ("edit", "rehash"):
        row = rows[first - 1]
        value: Any = {"fields": {"email": "show"}, "at": row["at"] + dt.timedelta(seconds=1)}.get(
            column, f"{row[column]}x"
        )
        edited = {**row, column: value}
        if kind == "rehash":  # a forger who has the key fixes the row's own hash
            edited["row_hash"] = ledger.row_hash(edited, TEST_LEDGER_KEY)
            if first == last:  # and the head's, so only anchors could tell
                return _tamper(engine, store, rows, "edit", first, second, column)
        with engine.begin() as conn:
            tamper.update_rows(conn, [edited])
    elif kind == "delete":
        _sql(engine, f"DELETE FROM ledger WHERE seq = {first}")
    elif kind == "swap":
        _sql(
            engine,
            f"UPDATE ledger SET seq = -1 WHERE seq = {first}",
            f"UPDATE ledger SET seq = {first} WHERE seq = {second}",
            f"UPDATE ledger SET seq = {second} WHERE seq = -1",
        )
    else:  # a verbatim copy of a row, after the end or before the start
        _copy(first, last + 1 if second % 2 else 0)(engine, store)
    return None
