"""Schema 0006 (lean state): a store written at 0005 keeps every row, its ledger verifies,
and the API answers as before; the compact forms round-trip whatever they hold."""

from __future__ import annotations

import datetime as dt
from typing import Any

import alembic.command
import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from connector_core.sync import ledger
from connector_core.sync.migrations import alembic_config
from connector_core.sync.model import UNKNOWN_HASH, LedgerEntry, Mapped, Outstanding
from connector_core.sync.state import StateStore
from connector_core.sync.tables import GENESIS_HASH, from_micros, to_micros
from connector_core.sync.terms import pack_field_hashes, pack_key, unpack_field_hashes, unpack_key
from connector_core.testing import TEST_LEDGER_KEY
from tests.unit.sync.conftest import statements

T0 = dt.datetime(2024, 5, 1, 10, 2, 3, 456789, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(minutes=5)
CONSENT = {"contact_me": {"at": "2024-05-01", "granted": True, "source": "civicrm"}}
ODD_CONSENT = {"local": {"at": None, "granted": True, "note": "ünïcode ✓", "n": 1.5}}
FIELDS = {"email": "show", "phone": "mask:last4"}

# The id map rows as 0005 stored them (JSON columns, hex hashes).
OLD_MAP: list[dict[str, Any]] = [
    {
        "job": "members",
        "source_id": "1",
        "target_key": "0a1b2c3d-0000-8000-8000-000000000001",
        "projection_hash": "a" * 64,
        "fields": FIELDS,
        "consent_basis": CONSENT,
        "policy_hash": "p" * 64,
        "field_hashes": {"email": "0123456789abcdef", "phone": "fedcba9876543210"},
    },
    {
        "job": "members",
        "source_id": "2",
        "target_key": "legacy-key-00002",  # 16 bytes of text: not a packed UUID
        "projection_hash": UNKNOWN_HASH,  # forgotten: the next run rewrites it
        "fields": FIELDS,
        "consent_basis": ODD_CONSENT,
        "policy_hash": "p" * 64,
        "field_hashes": None,
    },
    {
        "job": "partner",
        "source_id": "1",
        "target_key": "clé-p1",
        "projection_hash": "b" * 64,
        "fields": {"email": "show"},
        "consent_basis": {},
        "policy_hash": "q" * 64,
        "field_hashes": {"email": "not-16-hex"},  # kept whole, whatever it holds
    },
]


def _ledger_rows() -> list[dict[str, Any]]:
    """A keyed (format 2) chain as 0005 wrote it: shares, and a take-back."""
    base = {"target": "nc", "policy": "members.yaml", "approvals": [], "version": 2}
    rows: list[dict[str, Any]] = []
    for n, (job, sid, key, action, fields, basis, reason) in enumerate(
        [
            ("members", "1", OLD_MAP[0]["target_key"], "create", FIELDS, CONSENT, "shared:all"),
            ("members", "2", "legacy-key-00002", "create", FIELDS, ODD_CONSENT, "shared:all"),
            ("members", "3", "key-3", "create", FIELDS, CONSENT, "shared:all"),
            ("members", "3", "key-3", "delete", {}, {}, "consent withdrawn: contact_me"),
            ("partner", "1", "clé-p1", "create", {"email": "show"}, {}, "shared:partner"),
        ],
        start=1,
    ):
        policy_hash = "q" * 64 if job == "partner" else "p" * 64
        rows.append(
            {
                **base,
                "seq": n,
                "at": T0 + dt.timedelta(seconds=n),
                "job": job,
                "record_key": key,
                "source_id": sid,
                "action": action,
                "fields": fields,
                "policy_hash": policy_hash,
                "consent_basis": basis,
                "reason": reason,
            }
        )
    prev = GENESIS_HASH
    for row in rows:
        row["prev_hash"] = prev
        row["row_hash"] = prev = ledger.row_hash(row, TEST_LEDGER_KEY)
    return rows


def _store_at_0005(url: str) -> list[dict[str, Any]]:
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    rows = _ledger_rows()
    with engine.begin() as conn:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        alembic.command.upgrade(cfg, "0005")
        old = sa.MetaData()
        id_map, led, head, outstanding = (
            sa.Table(name, old, autoload_with=conn)
            for name in ("id_map", "ledger", "ledger_head", "outstanding")
        )
        times = {"created_at": T0, "updated_at": T1}
        conn.execute(sa.insert(id_map), [{**row, **times} for row in OLD_MAP])
        conn.execute(sa.insert(led), rows)
        conn.execute(
            sa.update(head).values(
                seq=5, row_hash=rows[-1]["row_hash"], key_check=ledger.key_check(TEST_LEDGER_KEY)
            )
        )
        conn.execute(
            sa.insert(outstanding),
            {
                "job": "members",
                "source_id": "4",
                "target_key": "key-4",
                "action": "create",
                "status": "failed",
                "reason": "shared:all",
                "error": "HTTP 500",
                "fields": FIELDS,
                "since": T0,
                "attempts": 2,
            },
        )
    engine.dispose()
    return rows


def _as_migrated(row: dict[str, Any]) -> dict[str, Any]:
    """An OLD_MAP row as schema 0008 keeps it: the planner's 128-bit projection hash and
    32-bit field hashes are prefixes of what earlier versions stored."""
    digest, hashes = row["projection_hash"], row["field_hashes"]
    packed = hashes is not None and all(len(h) == 16 for h in hashes.values())
    return {
        **row,
        "projection_hash": digest if digest == UNKNOWN_HASH else digest[:32],
        "field_hashes": {k: h[:8] for k, h in hashes.items()} if packed else hashes,
    }


def test_a_0005_store_keeps_every_row_and_its_ledger_verifies(state_url: str) -> None:
    rows = _store_at_0005(state_url)
    with StateStore.open(state_url, ledger_key=TEST_LEDGER_KEY) as store:
        report = store.verify_ledger(expect=[(5, rows[-1]["row_hash"]), (2, rows[1]["row_hash"])])
        assert (report.ok, report.checked, report.problems) == (True, 5, [])
        assert list(store.ledger_entries()) == [LedgerEntry(**row) for row in rows]
        assert [e.seq for e in store.ledger_entries(job="partner")] == [5]
        mapped = [
            *store.mapped("members", ["1", "2", "3"]).values(),
            *store.mapped("partner", ["1", "2"]).values(),
        ]
        expected = [
            Mapped(**_as_migrated(row), updated_at=T1.replace(microsecond=0)) for row in OLD_MAP
        ]
        assert sorted(mapped, key=lambda m: (m.job, m.source_id)) == expected
        assert [m.job for m in store.who_has("1")] == ["members", "partner"]
        assert store.outstanding("members") == {
            "4": Outstanding(
                "members",
                "4",
                "key-4",
                "create",
                "failed",
                "shared:all",
                FIELDS,
                "HTTP 500",
                T0,
                2,
            )
        }
        assert store.ledger_anchor() == (5, rows[-1]["row_hash"])


def test_a_0007_store_becomes_compact_keeps_every_row_and_verifies(
    state_url: str, make_change: Any
) -> None:
    """Schema 0008: job ids, binary keys, no stored previous hash, no unused index."""
    rows = _store_at_0005(state_url)
    engine = sa.create_engine(state_url, poolclass=sa.NullPool)
    with engine.begin() as conn:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        alembic.command.upgrade(cfg, "0007_row_fingerprints")
        assert conn.scalar(sa.text("SELECT count(*) FROM id_map WHERE job = 'members'")) == 2
    with StateStore.open(state_url, ledger_key=TEST_LEDGER_KEY) as store:
        assert store.verify_ledger(expect=[(5, rows[-1]["row_hash"])]).ok
        assert [e.prev_hash for e in store.ledger_entries()] == [r["prev_hash"] for r in rows]
        assert {m.target_key for m in store.mapped("members", ["1", "2"]).values()} == {
            OLD_MAP[0]["target_key"],
            "legacy-key-00002",
        }
        assert [m.target_key for m in store.who_has("1", job="partner")] == ["clé-p1"]
        store.record_batch("members", "nc", "members.yaml", "p" * 64, [make_change("5")])
        store.record_batch("partner", "nc", "partner.yaml", "q" * 64, [make_change("5")])
        entries = list(store.ledger_entries())
        assert [e.version for e in entries] == [2] * 5 + [ledger.CURRENT] * 2
        assert entries[5].prev_hash == rows[-1]["row_hash"]
        assert [m.job for m in store.who_has("5")] == ["members", "partner"]
        assert store.verify_ledger(expect=[(5, rows[-1]["row_hash"])]).ok
    inspector = sa.inspect(engine)
    assert "prev_hash" not in {c["name"] for c in inspector.get_columns("ledger")}
    assert "created_at" not in {c["name"] for c in inspector.get_columns("id_map")}
    assert inspector.get_indexes("ledger") == []  # schema 0018 dropped ix_ledger_entry
    assert inspector.get_indexes("id_map") == []
    assert inspector.get_unique_constraints("id_map") == []
    engine.dispose()


def test_a_migrated_ledger_keeps_chaining(state_url: str, make_change: Any) -> None:
    rows = _store_at_0005(state_url)
    with StateStore.open(state_url, ledger_key=TEST_LEDGER_KEY) as store:
        store.record_batch("members", "nc", "members.yaml", "p" * 64, [make_change("5")])
        entries = list(store.ledger_entries())
        assert entries[5].prev_hash == rows[-1]["row_hash"]
        assert store.verify_ledger(expect=[(5, rows[-1]["row_hash"])]).ok


HEX16 = st.text("0123456789abcdef", min_size=16, max_size=16)
HEX8 = st.text("0123456789abcdef", min_size=8, max_size=8)


@settings(max_examples=200, deadline=None)
@given(
    st.none()
    | st.dictionaries(st.text(max_size=8), HEX8, max_size=6)
    | st.dictionaries(st.text(max_size=8), HEX16 | HEX8 | st.text(max_size=20), max_size=6)
)
def test_field_hashes_round_trip_whatever_they_hold(hashes: dict[str, str] | None) -> None:
    shape, blob = pack_field_hashes(hashes)
    assert unpack_field_hashes(shape, blob) == hashes
    assert unpack_field_hashes(shape, None) is None  # what forget_contents leaves


def test_postgresql_statistics_follow_a_growing_id_map(state_url: str, make_change: Any) -> None:
    """A fresh table's planner statistics say "empty": the store analyzes it as it grows."""
    if not state_url.startswith("postgresql"):
        return
    with StateStore.open(state_url, ledger_key=TEST_LEDGER_KEY) as store:
        store.record_batch(
            "members", "nc", "m.yaml", "p" * 64, [make_change(str(i)) for i in range(600)]
        )
        engine = sa.create_engine(state_url, poolclass=sa.NullPool)
        query = sa.text("SELECT reltuples FROM pg_class WHERE oid = to_regclass('id_map')")
        with engine.connect() as conn:
            assert conn.scalar(query) < 1  # never analyzed (-1) yet
        store.record_batch(
            "members", "nc", "m.yaml", "p" * 64, [make_change(str(i)) for i in range(600, 1200)]
        )
        with engine.connect() as conn:
            assert conn.scalar(query) == 1200  # 2,400 rows recorded: id map and ledger
        engine.dispose()


@pytest.mark.parametrize("state_url", ["postgresql"], indirect=True)
def test_postgresql_statistics_follow_an_id_map_grown_by_many_small_jobs(
    state_url: str, make_change: Any
) -> None:
    """Rows are counted for the store, not per job: 90 partner jobs recording 15 records
    each in a group's joined block (2,700 rows with their ledger entries, none of a job
    near 2,000) have the id map analyzed once the block committed (ANALYZE sees committed
    rows only); unanalyzed, every later group's id map read scanned the whole table."""
    query = sa.text("SELECT reltuples FROM pg_class WHERE oid = to_regclass('id_map')")
    engine = sa.create_engine(state_url, poolclass=sa.NullPool)
    with StateStore.open(state_url, ledger_key=TEST_LEDGER_KEY) as store:
        with store.joined():
            for n in range(90):
                changes = [make_change(f"{n}-{i}") for i in range(15)]
                store.record_batch(f"p{n:02d}", f"out-{n}", "p.yaml", "p" * 64, changes)
            with engine.connect() as conn:
                assert conn.scalar(query) < 1  # not yet: nothing committed
        with engine.connect() as conn:
            assert conn.scalar(query) == 1350
    engine.dispose()


def test_sqlite_syncs_every_commit_but_a_batch_its_intent_covers(
    tmp_path: Any, make_change: Any
) -> None:
    """WAL with synchronous=FULL, except a batch recorded after its write-ahead intent
    (NORMAL: it survives a crash of the process; a power loss leaves the synced intent)."""
    with StateStore.open(f"sqlite:///{tmp_path / 's.db'}", ledger_key=TEST_LEDGER_KEY) as store:
        seen = statements(store, "PRAGMA sync")
        intent = store.write_ahead("members", [("1", "key-1", "create", "shared:all")])
        store.record_batch("members", "nc", "m.yaml", "p" * 64, [make_change("1")], intent=intent)
        store.record_batch("members", "nc", "m.yaml", "p" * 64, [make_change("2")])
        store.mapped("members", ["1"])
    assert seen == [
        "PRAGMA synchronous=FULL",
        "PRAGMA synchronous=NORMAL",
        "PRAGMA synchronous=FULL",
        "PRAGMA synchronous=FULL",
    ]


@given(
    st.datetimes(
        min_value=dt.datetime(1900, 1, 1),
        max_value=dt.datetime(2200, 1, 1),
        timezones=st.timezones(),
    )
)
def test_compact_times_round_trip_to_the_microsecond(value: dt.datetime) -> None:
    back = from_micros(to_micros(value))
    # the same instant, in UTC (as the stored time is: equal even for a local time in a gap)
    assert (back, back.tzinfo) == (value.astimezone(dt.UTC), dt.UTC)


KEYS = (
    st.uuids().map(str)
    | st.text(st.characters(codec="utf-8"), max_size=40)
    | st.text("0123456789abcdef-", min_size=16, max_size=17)
)


@settings(max_examples=300, deadline=None)
@given(KEYS, KEYS)
def test_target_keys_round_trip_and_never_share_a_packed_form(one: str, other: str) -> None:
    """Schema 0008 packs a UUID key in 16 bytes and any other key as marked text."""
    assert unpack_key(pack_key(one)) == one
    assert (pack_key(one) == pack_key(other)) == (one == other)


@given(st.uuids())
def test_a_uuid_key_takes_16_bytes(key: Any) -> None:
    assert len(pack_key(str(key))) == 16


@pytest.mark.parametrize("state_url", ["postgresql"], indirect=True)
def test_id_map_reads_by_arrays_are_planned_for_their_arrays(state_url: str) -> None:
    """A group's id map reads (``= ANY`` of jobs and of source ids) are planned for their
    own arrays, prepared or not, in their transaction only: a generic plan, blind to an
    array's length, read a group's rows five times slower; the session keeps the server's
    default for everything else (a batch's rows would each be planned again)."""
    show = sa.text("SHOW plan_cache_mode")
    with StateStore.open(state_url, ledger_key=TEST_LEDGER_KEY) as store:
        with store.joined():
            assert store.mapped_ids(["members"]) == {"members": []}
            assert store._joined is not None
            assert store._joined.scalar(show) == "force_custom_plan"
        with store._engine.connect() as conn:
            assert conn.scalar(show) == "auto"
        with store._transaction() as conn:
            assert conn.scalar(show) == "auto"
