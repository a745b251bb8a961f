"""The state store on SQLite and PostgreSQL: schema, job state, id map, batches, runs, errors."""

from __future__ import annotations

import collections
import datetime as dt
import re
import threading
from collections.abc import Callable
from typing import Any

import alembic.command
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from connector_core.errors import ConfigError, ExitCode
from connector_core.sync.ledger import LedgerKeyError
from connector_core.sync.migrations import alembic_config
from connector_core.sync.model import AppliedChange, JobState, Outstanding, RunCounts
from connector_core.sync.state import KEEP, SavedBlocks, StateStore, StateStoreError
from connector_core.sync.tables import (
    fingerprint_blocks,
    intents,
    job_state,
    lock_fences,
    metadata,
    row_fingerprints,
    runs,
)
from connector_core.testing import TEST_LEDGER_KEY
from tests.unit.sync.conftest import change, statements

Change = Callable[..., AppliedChange]
T0 = dt.datetime(2024, 5, 1, 10, 2, 3, 456789, tzinfo=dt.UTC)


def record(store: StateStore, changes: list[AppliedChange], **kwargs: Any) -> None:
    store.record_batch("members", "nextcloud", "members.yaml", "p" * 64, changes, **kwargs)


# -- schema ------------------------------------------------------------------------------


def test_opening_twice_keeps_the_data_and_the_schema(state_url: str, make_change: Change) -> None:
    with StateStore.open(state_url, ledger_key=TEST_LEDGER_KEY) as first:
        record(first, [make_change("1")], cursor="c1")
    with StateStore.open(state_url, ledger_key=TEST_LEDGER_KEY) as second:
        assert second.job_state("members").cursor == "c1"
        assert list(second.source_ids("members")) == ["1"]
        assert second.verify_ledger().ok


def test_the_migration_creates_exactly_the_tables_module(store: StateStore, state_url: str) -> None:
    engine = sa.create_engine(state_url, poolclass=sa.NullPool)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, metadata) == []
        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        assert context.get_current_revision() == head
        tables = set(sa.inspect(conn).get_table_names())
    engine.dispose()
    assert tables == set(metadata.tables) | {"alembic_version"}


def test_workers_opening_a_fresh_store_at_once_migrate_it_once(state_url: str) -> None:
    errors: list[BaseException] = []

    def open_store() -> None:
        try:
            StateStore.open(state_url).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_an_upgraded_store_keeps_its_rows_and_gets_a_target_key_secret_of_its_own(
    state_url: str, tmp_path: Any
) -> None:
    engine = sa.create_engine(state_url, poolclass=sa.NullPool)
    with engine.begin() as conn:  # a store an earlier version left, at revision 0002
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        alembic.command.upgrade(cfg, "0002")
        row: dict[str, Any] = {"job": "members", "source_id": "1", "target_key": "legacy-key"}
        row |= {"projection_hash": "a" * 64, "fields": {}, "consent_basis": {}}
        old_map = sa.Table("id_map", sa.MetaData(), autoload_with=conn)  # as 0002 made it
        conn.execute(
            old_map.insert().values(policy_hash="p" * 64, created_at=T0, updated_at=T0, **row)
        )
        interrupted = {"last_run_at": T0 + dt.timedelta(hours=1), "last_success_at": T0}
        conn.execute(job_state.insert().values(job="members", **interrupted))
        conn.execute(job_state.insert().values(job="done", last_run_at=T0, last_success_at=T0))
    engine.dispose()
    with StateStore.open(state_url) as upgraded:
        secret = upgraded.key_secret()
        assert upgraded.mapped("members", ["1"])["1"].target_key == "legacy-key"
        assert upgraded.legacy_keys("members")  # its last run was interrupted
        assert not upgraded.legacy_keys("done")
    with StateStore.open(state_url) as again:
        assert again.key_secret() == secret  # kept: the keys of new records stay stable
    with StateStore.open(f"sqlite:///{tmp_path / 'other.db'}") as other:
        assert len(secret) == 32
        assert other.key_secret() != secret


# -- job state ---------------------------------------------------------------------------


def test_an_unknown_job_has_a_blank_state(store: StateStore) -> None:
    assert store.job_state("never-ran") == JobState("never-ran")


def test_job_state_round_trips_with_aware_utc_times(store: StateStore) -> None:
    paris = dt.timezone(dt.timedelta(hours=2))
    state = JobState(
        "members",
        policy_hash="p" * 64,
        config_hash="c" * 64,
        last_run_at=T0.astimezone(paris),
        last_success_at=T0,
        last_reconciled_at=None,
    )
    store.set_job_state(state)
    back = store.job_state("members")
    assert back == state
    assert back.last_run_at is not None
    assert back.last_run_at.tzinfo == dt.UTC


def test_set_job_state_never_moves_the_cursor(store: StateStore) -> None:
    record(store, [], cursor="recorded")
    stale = JobState("members", cursor="stale", policy_hash="p" * 64)
    store.set_job_state(stale)
    assert store.job_state("members").cursor == "recorded"
    assert store.job_state("members").policy_hash == "p" * 64


def test_a_naive_time_is_refused(store: StateStore) -> None:
    with pytest.raises(ValueError, match="naive"):
        store.set_job_state(JobState("members", last_run_at=dt.datetime(2024, 1, 1)))


# -- id map and batches ------------------------------------------------------------------


def test_a_batch_creates_updates_and_deletes_id_map_rows(
    store: StateStore, make_change: Change
) -> None:
    record(store, [make_change("1"), make_change("2")], now=T0)
    later = T0 + dt.timedelta(hours=1)
    record(store, [make_change("1", "update", digest="b"), make_change("2", "delete")], now=later)
    mapped = store.mapped("members", ["1", "2"])
    assert list(mapped) == ["1"]
    one = mapped["1"]
    assert (one.target_key, one.projection_hash, one.updated_at) == (
        "key-1",
        "b" * 64,
        later.replace(microsecond=0),
    )
    assert one.fields == {"email": "show", "phone": "mask:last4"}
    assert one.consent_basis["contact_me"]["granted"] is True
    assert [e.action for e in store.ledger_entries()] == ["create", "create", "update", "delete"]


def test_a_failing_batch_records_nothing_at_all(store: StateStore, make_change: Change) -> None:
    record(store, [make_change("1")], cursor="c1")
    broken = [make_change("2"), make_change(None)]  # a source id the database refuses
    with pytest.raises(StateStoreError) as failed:
        record(store, broken, cursor="c2")
    assert failed.value.exit_code == ExitCode.UNAVAILABLE
    assert store.job_state("members").cursor == "c1"
    assert list(store.source_ids("members")) == ["1"]
    assert [e.source_id for e in store.ledger_entries()] == ["1"]
    report = store.verify_ledger()
    assert report.ok
    assert report.head_seq == 1


def test_duplicate_target_keys_within_one_batch_roll_back_too(
    store: StateStore, make_change: Change
) -> None:
    with pytest.raises(StateStoreError):
        record(store, [make_change("1", key="same"), make_change("2", key="same")], cursor="c")
    assert store.mapped_count("members") == 0
    assert store.job_state("members").cursor is None
    assert store.verify_ledger().checked == 0


@pytest.mark.parametrize(
    ("cursor", "expected"),
    [(KEEP, "before"), (None, None), ("after", "after")],
    ids=["keep", "reset", "set"],
)
def test_the_cursor_is_kept_reset_or_set(
    store: StateStore, make_change: Change, cursor: Any, expected: str | None
) -> None:
    record(store, [], cursor="before")
    record(store, [make_change("1")], cursor=cursor)
    assert store.job_state("members").cursor == expected


def test_the_last_change_of_a_record_in_a_batch_wins(
    store: StateStore, make_change: Change
) -> None:
    record(store, [make_change("1"), make_change("1", "update", digest="c")])
    record(store, [make_change("2"), make_change("2", "delete")])
    assert store.mapped("members", ["1"])["1"].projection_hash == "c" * 64
    assert store.mapped("members", ["2"]) == {}
    assert store.verify_ledger().checked == 4


def test_ids_are_queried_in_chunks_and_listed_in_python_order(
    store: StateStore, make_change: Change, monkeypatch: pytest.MonkeyPatch
) -> None:
    import connector_core.sync.state

    monkeypatch.setattr(connector_core.sync.state, "_ID_PAGE", 500)  # listed in 3 pages
    ids = [f"{n:05d}" for n in range(1234)] + ["Zoë", "zoe", "Émile", "a b", "_x", "ü"]
    record(store, [make_change(i) for i in ids])
    store.record_batch("other", "csv", "other.yaml", "o" * 64, [make_change("x")])
    assert list(store.source_ids("members")) == sorted(ids)
    found = store.mapped("members", [*ids, "missing", *ids[:10]])
    assert sorted(found) == sorted(ids)
    assert store.mapped_count("members") == len(ids)
    assert store.mapped("members", []) == {}
    assert list(store.source_ids("nobody")) == []


def test_who_has_lists_every_job_holding_a_person(store: StateStore, make_change: Change) -> None:
    store.record_batch("regional", "csv", "regional.yaml", "r" * 64, [make_change("7")])
    store.record_batch("partner", "csv", "partner.yaml", "q" * 64, [make_change("7")])
    store.record_batch("partner", "csv", "partner.yaml", "q" * 64, [make_change("8")])
    holders = store.who_has("7")
    assert [(m.job, m.policy_hash) for m in holders] == [
        ("partner", "q" * 64),
        ("regional", "r" * 64),
    ]
    assert [m.job for m in store.who_has("7", job="regional")] == ["regional"]
    store.record_batch("partner", "csv", "partner.yaml", "q" * 64, [make_change("7", "delete")])
    assert [m.job for m in store.who_has("7")] == ["regional"]
    assert store.who_has("nobody") == []


# -- runs --------------------------------------------------------------------------------


def test_runs_are_listed_newest_first_with_their_counts(store: StateStore) -> None:
    first = store.start_run("members")
    store.finish_run(first, status="ok", counts=RunCounts(read=10, created=3))
    second = store.start_run("members", dry_run=True)
    other = store.start_run("partner")
    store.finish_run(other, status="aborted", counts=RunCounts(), error="target unavailable")
    listed = store.runs("members")
    assert [r["id"] for r in listed] == [second, first]
    assert listed[0]["status"] == "running"
    assert listed[0]["dry_run"] is True
    assert listed[0]["finished_at"] is None
    assert listed[1]["counts"]["created"] == 3
    assert listed[1]["finished_at"] >= listed[1]["started_at"]
    assert [r["id"] for r in store.runs(limit=1)] == [other]
    assert store.runs("partner")[0]["error"] == "target unavailable"


@given(
    st.builds(
        RunCounts,
        read=st.integers(0, 10**6),
        withheld=st.dictionaries(st.text(max_size=8), st.integers(0, 99), max_size=3),
        created=st.integers(0, 9),
        held=st.integers(0, 9),
    )
)
def test_counts_as_stored_are_the_dataclass_fields(counts: RunCounts) -> None:
    """RunCounts.as_dict, made at every run's end without asdict's deep copy, is asdict's;
    the withheld counts are a copy (the stored dict does not follow the run's)."""
    import dataclasses

    found = counts.as_dict()
    assert found == dataclasses.asdict(counts)
    assert found["withheld"] is not counts.withheld


def test_many_jobs_id_maps_are_read_at_once(store: StateStore, make_change: Change) -> None:
    record(store, [make_change("1"), make_change("2")])
    store.record_batch("south", "t", "p.yaml", "p" * 64, [make_change("2")])
    jobs = ["members", "south", "never-ran"]
    assert store.mapped_counts(jobs) == {"members": 2, "south": 1, "never-ran": 0}
    everything = store.mapped_all(jobs)
    assert everything["members"] == store.mapped("members", ["1", "2"])
    assert everything["south"] == store.mapped("south", ["2"])
    assert everything["never-ran"] == {}


def test_many_jobs_id_map_ids_and_the_rows_of_some_ids_are_read_at_once(
    store: StateStore, make_change: Change
) -> None:
    """mapped_ids lists every id each job holds (the ids alone); mapped_all `among` some
    ids reads only their rows, the same rows as a whole read (600 ids: two statements)."""
    record(store, [make_change(str(n)) for n in range(700)])
    # ids an array's text could misread (PostgreSQL reads each job's ids as one array)
    odd = ["NULL", '"', "\\", "{a,b}", " x ", "é", "a,b", "''"]
    store.record_batch("south", "t", "p.yaml", "p" * 64, [make_change(i) for i in ["2", *odd]])
    jobs = ["members", "south", "never-ran"]
    ids = store.mapped_ids(jobs)
    assert {job: sorted(found) for job, found in ids.items()} == {
        "members": sorted(str(n) for n in range(700)),
        "south": sorted(["2", *odd]),
        "never-ran": [],
    }
    whole = store.mapped_all(jobs)
    among = [str(n) for n in range(0, 1200, 2)]
    some = store.mapped_all(jobs, among=among)
    assert dict(some["members"]) == {sid: whole["members"][sid] for sid in among if int(sid) < 700}
    assert dict(some["south"]) == {"2": whole["south"]["2"]}
    assert sorted(whole["south"]) == sorted(ids["south"])
    assert some["never-ran"] == {}


def test_a_jobs_source_ids_come_page_by_page_in_str_order(
    store: StateStore, make_change: Change, monkeypatch: pytest.MonkeyPatch
) -> None:
    """source_ids (a take-back check lists every id a job holds) gives every id once, in
    Python's str order, page after page (PostgreSQL: each page as one array)."""
    from connector_core.sync import state as state_module

    monkeypatch.setattr(state_module, "_ID_PAGE", 3)
    odd = ["NULL", '"', "\\", "{a,b}", " x ", "é", "Z", "a,b", "''", "10", "9", "日本"]
    record(store, [make_change(i) for i in odd])
    assert list(store.source_ids("members")) == sorted(odd)
    assert list(store.source_ids("never-ran")) == []


def test_a_joined_block_looks_up_its_jobs_id_map_terms_once(
    state_url: str, make_change: Change
) -> None:
    """Twenty jobs with a policy each (a partner's own hash): their id map rows' terms are
    interned when the block writes them, in one look-up for all (not one per job: 20,000
    partners would make 20,000 round trips), and read back as recorded one by one."""
    jobs = [f"partner-{n:02d}" for n in range(20)]
    with StateStore.open(state_url, ledger_key=TEST_LEDGER_KEY) as store:
        looked_up = statements(store, "FROM terms")
        with store.joined():
            store.read_ahead(jobs)
            for n, job in enumerate(jobs):
                store.record_batch(job, f"out-{job}", "p.yaml", f"{n:064x}", [make_change("1")])
        # one each: the job names (read ahead), the map and consent terms, the ledger entries
        assert len(looked_up) <= 4
        for n, job in enumerate(jobs):
            assert store.mapped(job, ["1"])["1"].policy_hash == f"{n:064x}"


def test_a_joined_block_checks_a_whole_groups_fences_in_one_read(
    state_url: str, make_change: Change
) -> None:
    """A group of 200 jobs, each holding its two locks, records a batch each in a joined
    block: the first check reads every fence the store holds (400 rows, one statement), the
    others need none (they stay locked FOR UPDATE on PostgreSQL until the block commits)."""
    jobs = [f"partner-{n:03d}" for n in range(200)]
    with StateStore.open(state_url, ledger_key=TEST_LEDGER_KEY) as store:
        pairs = [(job, f"out-{job}") for job in jobs]
        with store.lock_many(pairs) as refused:
            assert refused == {}
            read = statements(store, "FROM lock_fences")
            with store.joined():
                for job in jobs:
                    store.record_batch(job, f"out-{job}", "p.yaml", "p" * 64, [make_change("1")])
            assert len(read) == 1
        assert all(store.mapped(job, ["1"]) for job in jobs)


def test_taking_a_groups_locks_returns_each_new_token_from_its_own_upsert(
    store: StateStore, raw_engine: sa.Engine
) -> None:
    """take_many gives each lock a new token and reads it back from the upsert itself
    (RETURNING): one statement per 500 locks (on PostgreSQL the same text whatever their
    count), none reading lock_fences again; the tokens are the table's; a lock named twice
    is taken once, by its last holder."""
    from connector_core.sync import fences

    locks = [(f"job:p{n}", f"p{n}") for n in range(600)] + [("target:t", "p1"), ("target:t", "p2")]
    sent: list[str] = []
    sa.event.listen(raw_engine, "before_cursor_execute", lambda *a: sent.append(a[2]))
    with raw_engine.begin() as conn:
        first = fences.take_many(conn, locks)
        again = fences.take_many(conn, locks[:3])
        assert len(sent) == 3  # 601 locks, then 3: two statements and one, all upserts
        assert all(sql.lstrip().upper().startswith("INSERT") for sql in sent)
        if raw_engine.dialect.name == "postgresql":  # from two arrays: one text for any count
            assert len(set(sent)) == 1
            assert "unnest(" in sent[0]
        assert fences.writer(conn, "target:t") == "p2"
    with raw_engine.connect() as conn:
        held = dict(conn.execute(sa.select(lock_fences.c.name, lock_fences.c.token)).all())
    assert first == dict.fromkeys(dict(locks), 1)
    assert again == dict.fromkeys(dict(locks[:3]), 2)
    assert held == {**first, **again}


def test_a_joined_block_writes_its_jobs_intents_in_one_statement(
    state_url: str, make_change: Change
) -> None:
    """Intents written ahead not durable (a deferred target's) are inserted together at the
    block's next flush, durable at durable(), and deleted by the batches they cover, which
    name them by the provisional ids write_ahead gave."""
    jobs = [f"partner-{n:02d}" for n in range(20)]
    count = sa.select(sa.func.count()).select_from(intents)
    engine = sa.create_engine(state_url, poolclass=sa.NullPool)
    with StateStore.open(state_url, ledger_key=TEST_LEDGER_KEY) as store:
        inserts = statements(store, "INTO intents")
        with store.joined():
            ahead = [("1", "key-1", "create", "shared:members")]
            ids = [store.write_ahead(job, ahead, durable=False) for job in jobs]
            assert len(set(ids)) == len(jobs)
            store.durable()
            with engine.connect() as conn:  # committed: another connection sees them
                assert conn.scalar(count) == len(jobs)
            for job, intent in zip(jobs, ids, strict=True):
                store.record_batch(job, f"out-{job}", "p.yaml", "p" * 64, [make_change("1")],
                                   intent=intent)  # fmt: skip
        # one statement on PostgreSQL (on SQLite, in process, SQLAlchemy keeps RETURNING in
        # order with one execute per row)
        assert len(inserts) == 1 or state_url.startswith("sqlite")
        assert all(store.mapped(job, ["1"]) for job in jobs)
    with engine.connect() as conn:
        assert conn.scalar(count) == 0
    engine.dispose()


def test_what_a_joined_block_reads_ahead_is_what_the_store_holds(store: StateStore) -> None:
    """read_ahead serves job states, outstanding changes, intents and fingerprint marks as
    the queries would, and a write drops what it changes."""
    store.set_job_state(JobState("members", last_run_at=T0))
    store.write_ahead("members", [("7", "key-7", "create", "shared:members")])
    store.hold([Outstanding("south", "9", "key-9", "delete", "held", "consent withdrawn")])
    store.keep_fingerprints("south", "c1", [1, 2])
    jobs = ["members", "south", "new"]
    plain = {job: (store.job_state(job), store.outstanding(job)) for job in jobs}
    marks = {(job, c): store.has_fingerprints(job, c) for job in jobs for c in ("c1", "c2")}
    with store.joined():
        store.read_ahead(jobs)
        assert {job: (store.job_state(job), store.outstanding(job)) for job in jobs} == plain
        assert {(j, c): store.has_fingerprints(j, c) for j in jobs for c in ("c1", "c2")} == marks
        assert store.adopt_intents("south") == 0
        assert store.adopt_intents("members") == 1  # read as the query would
        assert store.outstanding("members")["7"].status == "sent"
        later = T0 + dt.timedelta(hours=1)
        store.set_job_state(JobState("south", last_run_at=later))
        assert store.job_state("south").last_run_at == later
    assert store.outstanding("members")["7"].status == "sent"
    assert store.job_state("south").last_run_at == later


def test_a_joined_block_reads_ahead_each_kind_when_it_first_asks_for_it(
    state_url: str,
) -> None:
    """read_ahead reads a kind of row for all its jobs when the block first asks for it, in
    one statement per 500 jobs, and none the block never asks for: a block ending 600
    jobs' runs reads their states and outstanding changes (with the intents those count),
    not their fingerprints, unfinished runs or approval sets."""
    jobs = [f"partner-{n:03d}" for n in range(600)]
    with StateStore.open(state_url, ledger_key=TEST_LEDGER_KEY) as store:
        store.set_job_state(JobState(jobs[1], last_run_at=T0))
        sent = statements(store, "FROM ")
        with store.joined():
            store.read_ahead(jobs)
            assert not [sql for sql in sent if "FROM terms" not in sql]  # nothing asked yet
            assert store.job_state(jobs[1]).last_run_at == T0
            assert all(store.job_state(job) == JobState(job) for job in jobs[2:])
            assert not any(store.outstanding(job) for job in jobs)
    read = collections.Counter(
        table for sql in sent for table in re.findall(r"FROM (\w+)", sql) if table != "terms"
    )
    assert read == {"job_state": 2, "outstanding": 2, "intents": 2}


def test_read_ahead_knows_unkeyed_keys_unfinished_runs_and_open_sets_as_the_queries(
    store: StateStore, state_url: str
) -> None:
    """legacy_keys, has_open_sets, start_run (marking an unfinished run killed) and
    set_job_state (ending unkeyed keys) answer and write the same with what read_ahead read."""
    engine = sa.create_engine(state_url, poolclass=sa.NullPool)
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO store_secrets (name, value) VALUES ('legacy_keys:a', 'x')")
        )
    engine.dispose()
    store.start_run("b")  # never finished: killed, as the next run of b starts
    book = store.approvals()
    for job, status in (("c", "waiting"), ("d", "lapsed")):
        set_id = book.create(
            job=job, policy="p", policy_hash="h", set_hash=job, members=[], summary={}, now=T0
        )
        book.update(set_id, status=status)
    jobs = ["a", "b", "c", "d", "e"]
    plain = {job: (store.legacy_keys(job), store.has_open_sets(job)) for job in jobs}
    assert plain == {
        "a": (True, False),
        "b": (False, False),
        "c": (False, True),
        "d": (False, False),
        "e": (False, False),
    }
    with store.joined():
        store.read_ahead(jobs)
        assert {job: (store.legacy_keys(job), store.has_open_sets(job)) for job in jobs} == plain
        started = {job: store.start_run(job) for job in jobs}
        for job in jobs:
            store.set_job_state(JobState(job, last_run_at=T0, last_success_at=T0))
    statuses = {(r["job"], r["id"]): r["status"] for r in store.runs(limit=100)}
    assert sorted(s for (job, _), s in statuses.items() if job == "b") == ["killed", "running"]
    assert all(statuses[(job, run)] == "running" for job, run in started.items())
    assert not any(store.legacy_keys(job) for job in jobs)  # a finished run ends them


def test_a_joined_block_commits_every_call_at_its_end(store: StateStore, state_url: str) -> None:
    with StateStore.open(state_url, ledger_key=TEST_LEDGER_KEY) as other:
        with store.joined():
            run = store.start_run("members")
            store.set_job_state(JobState("members", last_run_at=T0))
            assert [r["id"] for r in store.runs()] == [run]  # the block sees its own writes
            assert other.runs() == []  # nobody else does before the commit
            assert other.job_state("members").last_run_at is None
        assert [r["id"] for r in other.runs()] == [run]
        assert other.job_state("members").last_run_at == T0


def test_a_joined_block_that_raises_keeps_nothing(store: StateStore) -> None:
    def interrupted() -> None:
        with store.joined():
            store.start_run("members")
            with store.joined():  # a nested block joins the outer one
                store.set_job_state(JobState("members", last_run_at=T0))
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted()
    assert store.runs() == []
    assert store.job_state("members").last_run_at is None


def test_a_failing_batch_in_a_joined_block_keeps_nothing_of_the_block(
    store: StateStore, make_change: Change
) -> None:
    """A batch's database error (after it interned terms) breaks the block: the block keeps
    nothing since its last commit, as a crash there would; the next block starts afresh,
    and the terms the failed one interned are not believed to be stored. The batch's id
    map rows are held back with the block's others: the error comes when they are written,
    here at the block's end; a call that reads the id map first meets it, and every call
    after it is refused."""

    def broken(read_between: bool) -> None:
        with store.joined():
            store.start_run("members")
            record(store, [make_change("1")], cursor="c1")
            record(store, [make_change("2"), make_change(None)], cursor="c2")
            if read_between:
                with pytest.raises(StateStoreError):
                    store.mapped("members", ["1"])
                with pytest.raises(StateStoreError, match="in the middle of recording"):
                    record(store, [make_change("3")], cursor="c3")
            else:
                record(store, [make_change("3")], cursor="c3")

    for read_between in (False, True):
        with pytest.raises(StateStoreError, match="was not kept"):
            broken(read_between)

    assert store.runs() == []
    assert store.job_state("members").cursor is None
    assert list(store.source_ids("members")) == []
    assert list(store.ledger_entries()) == []
    with store.joined():
        run = store.start_run("members")
        record(store, [make_change("1")], cursor="c1")  # the same terms again
    assert [r["id"] for r in store.runs()] == [run]
    assert store.job_state("members").cursor == "c1"
    assert list(store.source_ids("members")) == ["1"]
    assert [e.source_id for e in store.ledger_entries()] == ["1"]
    assert store.verify_ledger().ok
    with StateStore.open(
        store._engine.url.render_as_string(False), ledger_key=TEST_LEDGER_KEY
    ) as fresh:
        assert fresh.who_has("1")[0].fields == store.who_has("1")[0].fields


def test_a_batch_refused_in_a_joined_block_leaves_the_rest_of_it(
    store: StateStore, make_change: Change
) -> None:
    """What a batch raises of its own (here: no ledger key) it raises before writing: the
    block goes on and keeps the other batches."""
    keyless = StateStore.open(store._engine.url.render_as_string(False))
    try:
        with keyless.joined():
            keyless.set_job_state(JobState("members", last_run_at=T0))
            with pytest.raises(LedgerKeyError):
                record(keyless, [make_change("1")], cursor="c1")
            record(keyless, [], cursor="c0")  # no ledger rows: no key needed
    finally:
        keyless.close()
    state = store.job_state("members")
    assert (state.cursor, state.last_run_at) == ("c0", T0)
    assert list(store.source_ids("members")) == []


def test_a_database_error_outside_a_savepoint_breaks_the_whole_joined_block(
    store: StateStore,
) -> None:
    """Calls without a savepoint of their own (most: see StateStore._transaction) run
    straight in the block's transaction, which a database error aborts on PostgreSQL: the
    block keeps nothing since its last commit, refuses every later call and raises at its
    end, on every backend alike."""
    store.set_job_state(JobState("members", last_run_at=T0))
    T1 = T0 + dt.timedelta(hours=1)

    def broken() -> None:
        with store.joined():
            store.start_run("members")
            with pytest.raises(StateStoreError), store._transaction() as conn:
                conn.execute(sa.text("SELECT * FROM no_such_table"))
            with pytest.raises(StateStoreError, match="in the middle of recording"):
                store.set_job_state(JobState("members", last_run_at=T1))

    with pytest.raises(StateStoreError, match="was not kept") as failed:
        broken()
    assert "no_such_table" in str(failed.value)
    assert store.runs() == []
    assert store.job_state("members").last_run_at == T0
    with store.joined():  # the next block starts afresh
        store.set_job_state(JobState("members", last_run_at=T1))
    assert store.job_state("members").last_run_at == T1


def test_an_unknown_run_status_is_refused(store: StateStore) -> None:
    with pytest.raises(ValueError, match="unknown run status"):
        store.finish_run(store.start_run("members"), status="done", counts=RunCounts())


# -- opening errors and secrets ----------------------------------------------------------


def test_an_unreachable_postgresql_never_shows_the_password() -> None:
    url = "postgresql://admin:Sup3r-s3cret@127.0.0.1:1/state"
    with pytest.raises(ConfigError) as failed:
        StateStore.open(url)
    shown = f"{failed.value} {failed.value.hint} {failed.value!r}"
    assert (
        "cannot open the state store at postgresql+psycopg://admin:***@127.0.0.1:1/state" in shown
    )
    assert "Sup3r-s3cret" not in shown
    assert "PostgreSQL server is running" in (failed.value.hint or "")


def test_the_store_url_hides_its_password(pg_database: str) -> None:
    url = sa.make_url(pg_database).set(password="fake-pw")  # trust auth ignores it
    with StateStore.open(url.render_as_string(hide_password=False)) as store:
        assert "fake-pw" not in store.url
        assert "fake-pw" not in repr(store)
        assert ":***@" in store.url


def test_a_sqlite_file_in_a_missing_folder_is_a_config_error(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match="cannot open the state store") as failed:
        StateStore.open(f"sqlite:///{tmp_path}/missing/state.db")
    assert "folder must exist" in (failed.value.hint or "")


@pytest.mark.parametrize("url", ["mysql://u@h/db", "not a url"])
def test_other_databases_are_refused(url: str) -> None:
    with pytest.raises(ConfigError):
        StateStore.open(url)


def test_a_store_failure_names_the_store_and_what_to_do() -> None:
    gone = "sqlite:////nonexistent/folder/state.db"
    with (
        StateStore(sa.create_engine(gone), gone) as store,
        pytest.raises(StateStoreError) as failed,
    ):
        store.job_state("members")
    assert str(failed.value).startswith(f"the state store at {gone} failed: ")
    assert "next run resumes" in (failed.value.hint or "")


# -- writes a joined block holds back ----------------------------------------------------

_JOBS = st.sampled_from(["a", "b"])
_CURSORS = st.sampled_from(["c1", "c2"])
_ACTIONS = st.sampled_from(["create", "delete"])
_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("state"), _JOBS, st.integers(0, 3)),
        st.tuples(
            st.just("cursor"),
            _JOBS,
            st.sampled_from(["c1", "c2", None]),
            st.none() | st.lists(st.integers(0, 2**64 - 1), max_size=3),
        ),
        st.tuples(
            st.just("blocks"),
            _JOBS,
            st.sampled_from(["c1", "c2"]),
            st.binary(min_size=1, max_size=2),
        ),
        st.tuples(st.just("start"), _JOBS),
        st.tuples(st.just("finish"), _JOBS, st.sampled_from(["ok", "aborted"])),
        st.tuples(st.just("read"), _JOBS),
        st.tuples(
            st.just("share"),
            _JOBS,
            st.sampled_from(["1", "2"]),
            st.sampled_from(["create", "delete"]),
        ),
    ),
    max_size=14,
)
_EXAMPLES = iter(range(1_000_000))


def _steps(store: StateStore, steps: list[tuple[Any, ...]], prefix: str) -> list[Any]:
    """Apply `steps` to jobs named with `prefix`; return what each read saw."""
    seen: list[Any] = []
    started: dict[str, list[int]] = {}
    for step in steps:
        kind, job = step[0], prefix + step[1]
        if kind == "state":
            at = T0 + dt.timedelta(hours=step[2])
            store.set_job_state(JobState(job, last_run_at=at, last_success_at=at))
        elif kind in ("cursor", "blocks"):
            blocks = None
            if kind == "blocks":
                blocks = SavedBlocks()
                blocks.add(step[3], ["1", "2"], [7, 8])
            prints = [] if kind == "blocks" else step[3]
            store.record_batch(job, "t", "p.yaml", "p" * 64, [], cursor=step[2],
                               fingerprints=prints, blocks=blocks)  # fmt: skip
        elif kind == "start":
            started.setdefault(job, []).append(store.start_run(job))
        elif kind == "finish" and started.get(job):
            store.finish_run(started[job][-1], status=step[2], counts=RunCounts(read=1))
        elif kind == "share":  # an id map row and a ledger row
            store.record_batch(job, "t", "p.yaml", "p" * 64, [change(step[2], step[3])])
        elif kind == "read":
            seen.append(sorted(store.source_ids(job)))
            state = store.job_state(job)
            seen.append((state.cursor, state.last_run_at, store.has_fingerprints(job, "c1")))
            seen.append(sorted(store.block_digests(job)))
            seen.append([(r["status"], r["counts"]) for r in store.runs(job)])
    return seen


def _rows(store: StateStore, prefix: str) -> list[Any]:
    """Every row of the jobs named with `prefix` in the tables a block may hold writes for
    (the prefix cut off; not the times of the calls themselves)."""
    moot = ("id", "started_at", "finished_at")
    found: list[Any] = []
    with store._engine.connect() as conn:
        for table in (job_state, runs, row_fingerprints, fingerprint_blocks):
            rows = conn.execute(sa.select(table).where(table.c.job.startswith(prefix)))
            values = [
                tuple(v.removeprefix(prefix) if k == "job" else v for k, v in r._mapping.items()
                      if k not in moot)
                for r in rows
            ]  # fmt: skip
            found.append(sorted(values, key=repr))
    for job in ("a", "b"):
        found.append(sorted(store.source_ids(prefix + job)))
    shares = [e for e in store.ledger_entries() if e.job.startswith(prefix)]
    found.append([(e.job.removeprefix(prefix), e.source_id, e.action) for e in shares])
    return found


@given(steps=_STEPS)
@example(
    steps=[("cursor", "a", "c1", [1]), ("cursor", "a", "c1", None), ("cursor", "a", "c2", [2])]
)
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_a_joined_block_ends_as_the_same_calls_one_by_one(
    store: StateStore, steps: list[tuple[Any, ...]]
) -> None:
    """Whatever a joined block holds back (job states, cursors, fingerprint marks, runs'
    ends, ledger rows) its reads see, and it ends in the rows the same calls leave one by
    one (the ledger rows in the same order, its chain whole)."""
    n = next(_EXAMPLES)
    alone, together = f"x{n}-", f"y{n}-"
    seen_alone = _steps(store, steps, alone)
    with store.joined():
        seen_together = _steps(store, steps, together)
    assert seen_together == seen_alone
    assert _rows(store, together) == _rows(store, alone)
    assert store.verify_ledger().ok


def test_a_group_s_runs_start_at_once_as_one_by_one(store: StateStore) -> None:
    """start_runs: each job's run noted (in the order given) and any run of theirs left
    "running" killed, as start_run does job by job; inside a joined block as outside."""
    left = store.start_run("b")  # a run a crash left "running"
    first = store.start_runs(["a", "b", "c"])
    with store.joined():
        store.read_ahead(["a", "d"])
        second = store.start_runs(["a", "d"])
    statuses = {r["id"]: (r["job"], r["status"]) for r in store.runs(limit=100)}
    assert statuses == {
        left: ("b", "killed"),
        first[0]: ("a", "killed"),  # the next start found it running
        first[1]: ("b", "running"),
        first[2]: ("c", "running"),
        second[0]: ("a", "running"),
        second[1]: ("d", "running"),
    }
    assert first + second == sorted(first + second)


@pytest.mark.parametrize("state_url", ["postgresql"], indirect=True)
def test_a_groups_held_back_writes_go_by_one_statement_as_job_by_job(
    state_url: str, make_change: Change, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL writes what a joined block of many jobs held back by one statement per
    kind: the fingerprint marks and blocks deleted (``job = ANY``), the job states and
    cursors upserted and the runs' ends updated from arrays; the tables end as when each
    job's rows are written by a statement of their own (a block of fewer jobs than
    _SET_WRITE)."""
    from connector_core.sync import state as state_module

    when = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)

    def scenario(store: StateStore, prefix: str) -> dict[str, list[Any]]:
        jobs = [f"{prefix}{n:02d}" for n in range(40)]
        with store.joined():
            ids = store.start_runs(jobs)
            for n, job in enumerate(jobs):  # marks for all, then for every other one
                store.record_batch(
                    job, f"out-{job}", "p.yaml", "p" * 64, [], cursor="a", fingerprints=[n]
                )
        with store.joined():
            for n, (job, run_id) in enumerate(zip(jobs, ids, strict=True)):
                store.record_batch(
                    job, f"out-{job}", "p.yaml", "p" * 64, [make_change(str(n))],
                    cursor=f"c{n}", now=when, fingerprints=[n, n + 1] if n % 2 else None,
                )  # fmt: skip
                store.set_job_state(
                    JobState(job, policy_hash=f"h{n}", config_hash="c", last_run_at=when,
                             last_success_at=None if n % 5 else when)
                )  # fmt: skip
                counts = RunCounts(read=n, withheld={"consent:x": n})
                error = None if n % 3 else f"error {n}"
                store.finish_run(
                    run_id, status="aborted" if error else "ok", counts=counts, error=error
                )
        with store._engine.connect() as conn:
            found: dict[str, list[Any]] = {}
            for table, order in ((job_state, "job"), (runs, "job"), (row_fingerprints, "job")):
                rows = conn.execute(
                    sa.select(table).where(table.c.job.startswith(prefix)).order_by(order)
                )
                found[table.name] = [
                    {
                        k: v
                        for k, v in row._mapping.items()
                        if k not in ("id", "started_at", "finished_at")
                    }
                    | {"job": row.job[len(prefix) :]}
                    for row in rows
                ]
            finished = sa.select(sa.func.count()).where(
                runs.c.job.startswith(prefix), runs.c.finished_at.is_not(None)
            )
            assert conn.scalar(finished) == 40
        return found

    with StateStore.open(state_url, ledger_key=TEST_LEDGER_KEY) as store:
        deletes = statements(store, "DELETE FROM row_fingerprints WHERE row_fingerprints.job = any")
        arrays = statements(store, "FROM unnest(")  # and the runs' starts (insert_ids)
        by_set = scenario(store, "set-")
        assert len(deletes) == 1

        # the first block's 40 cursors (with their marks), the second's cursors and job
        # states, its runs' ends: each kind by one statement (a start's runs: insert_ids)
        def written() -> list[str]:
            found = [sql.split(" (")[0].split(" SET")[0] for sql in arrays]
            return [sql for sql in found if not sql.startswith("WITH")]

        assert written() == ["INSERT INTO job_state"] * 3 + ["UPDATE runs"]
        monkeypatch.setattr(state_module, "_SET_WRITE", 1_000_000)
        by_row = scenario(store, "row-")
        assert len(deletes) == 1
        assert len(written()) == 4  # row by row
    assert by_set == by_row
    assert [r["cursor"] for r in by_set["row_fingerprints"]] == [f"c{n}" for n in range(1, 40, 2)]
    assert [r["status"] for r in by_set["runs"]][:4] == ["aborted", "ok", "ok", "aborted"]
