"""Per-job locks across processes, on both backends: refusal naming the holder, recovery."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa

from connector_core.errors import ExitCode
from connector_core.sync import locks
from connector_core.sync.locks import JobLocked, LockLost, TargetLocked
from connector_core.sync.state import StateStore
from connector_core.testing import TEST_LEDGER_KEY
from tests.unit.sync.conftest import change

if TYPE_CHECKING:
    import subprocess

    from tests.unit.sync.conftest import Children

HOLDER = """
import sys, time
from connector_core.sync.state import StateStore
from connector_core.testing import TEST_LEDGER_KEY
from tests.unit.sync.conftest import change

with StateStore.open(sys.argv[1]) as store, store.lock(sys.argv[2]):
    print("locked", flush=True)
    time.sleep(600)
"""


def hold_in_child(children: Children, url: str, job: str) -> subprocess.Popen[str]:
    """A child process that holds `job`'s lock until it is killed."""
    child = children.start(HOLDER, url, job)
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line == "locked\n", child.stderr.read() if child.stderr else line
    return child


def acquire_soon(store: StateStore, job: str, seconds: float = 10) -> None:
    """Take and release `job`'s lock, retrying while the server notices a dead holder."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with store.lock(job):
                return
        except JobLocked:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_another_process_is_refused_naming_the_holder(
    store: StateStore, state_url: str, children: Children
) -> None:
    child = hold_in_child(children, state_url, "members")
    started = time.monotonic()
    with pytest.raises(JobLocked) as refused, store.lock("members"):
        pass
    assert time.monotonic() - started < 5  # refused at once, never waiting
    host = re.escape(socket.gethostname()[:40])
    pattern = (
        rf"^job 'members' is already running \(pid {child.pid} on host {host}.* since \d\d:\d\d\)$"
    )
    assert re.match(pattern, str(refused.value)), str(refused.value)
    assert (
        refused.value.hint
        == "Wait for it to finish; a killed run's lock is released automatically."
    )
    assert refused.value.exit_code == ExitCode.UNAVAILABLE
    with store.lock("other-job"):  # one job's lock does not hold back another
        pass


def test_a_killed_holder_s_lock_is_recovered(
    store: StateStore, state_url: str, children: Children
) -> None:
    child = hold_in_child(children, state_url, "members")
    with pytest.raises(JobLocked), store.lock("members"):
        pass
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    acquire_soon(store, "members")


def test_a_released_lock_can_be_taken_again(store: StateStore, state_url: str) -> None:
    with store.lock("members"):
        pass
    # Another store in this process is another holder, just as another process would be.
    with (
        StateStore.open(state_url) as other,
        other.lock("members"),
        pytest.raises(JobLocked),
        store.lock("members"),
    ):
        pass
    with store.lock("members"):
        pass


def test_threads_cannot_share_a_job_lock(store: StateStore) -> None:
    entered = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with store.lock("members"):
            entered.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert entered.wait(10)
        with pytest.raises(JobLocked, match=f"pid {os.getpid()} "), store.lock("members"):
            pass
    finally:
        release.set()
        thread.join()
    with store.lock("members"):
        pass


def test_lock_files_sit_beside_the_database_with_safe_names(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    assert locks.lock_path(db, "members-north") == tmp_path / "state.db.locks/members-north.lock"
    odd = locks.lock_path(db, "../../etc/passwd")
    assert odd.parent == tmp_path / "state.db.locks"
    assert re.fullmatch(r"[0-9a-f]{32}\.lock", odd.name)


def test_a_sqlite_lock_file_names_its_holder_only_while_held(tmp_path: Path) -> None:
    with StateStore.open(f"sqlite:///{tmp_path / 'state.db'}") as store:
        path = tmp_path / "state.db.locks" / "members.lock"
        with store.lock("members"):
            assert f'"pid": {os.getpid()}' in path.read_text()
        assert path.read_text() == ""


def test_an_in_memory_store_locks_within_the_process() -> None:
    with (
        StateStore.open("sqlite://") as store,
        store.lock("members"),
        pytest.raises(JobLocked),
        store.lock("members"),
    ):
        pass


def test_advisory_keys_are_stable_signed_64_bit_numbers() -> None:
    key = locks.advisory_key("members")
    assert key == locks.advisory_key("members") != locks.advisory_key("members2")
    assert -(2**63) <= key < 2**63


# -- target locks and fencing -------------------------------------------------------------


def test_a_second_job_on_a_busy_target_is_refused_naming_the_writer(
    store: StateStore, state_url: str
) -> None:
    with StateStore.open(state_url) as other, store.lock("first", target="north"):
        with pytest.raises(TargetLocked) as refused, other.lock("second", target="north"):
            pass
        pattern = rf"^target 'north' is being written by job 'first' \(pid {os.getpid()} "
        assert re.match(pattern, str(refused.value)), str(refused.value)
        assert refused.value.exit_code == ExitCode.UNAVAILABLE
        assert "two jobs never write one target at once" in (refused.value.hint or "")
        with other.lock("second", target="south"):  # its job lock was released on refusal
            pass
    with StateStore.open(state_url) as other, other.lock("second", target="north"):
        pass  # free again once the first job is done


def test_target_lock_files_sit_in_their_own_folder(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    assert locks.target_lock_path(db, "north") == tmp_path / "state.db.locks/targets/north.lock"
    with StateStore.open(f"sqlite:///{db}") as store, store.lock("north", target="north"):
        assert (tmp_path / "state.db.locks/north.lock").read_text()
        assert (tmp_path / "state.db.locks/targets/north.lock").read_text()


def drop_lock_connections(state_url: str) -> None:
    """Lose every lock held in the store's database: PostgreSQL ends the sessions holding
    advisory locks (as a network cut would); SQLite loses its lock files (as a careless
    cleanup would), so that another holder can take the locks while the first still runs."""
    if state_url.startswith("sqlite"):
        shutil.rmtree(Path(state_url.removeprefix("sqlite:///") + ".locks"))
        return
    engine = sa.create_engine(state_url, poolclass=sa.NullPool)
    with engine.connect() as conn:
        pids = conn.scalars(
            sa.text(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND database "
                "= (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
        ).all()
        assert pids, "no advisory lock is held"
        for pid in pids:
            # wait (up to 5 s) until the session has ended: a signalled backend keeps its
            # advisory locks for a moment, and the next holder would find them still taken
            conn.execute(sa.text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid})
    engine.dispose()


def record(store: StateStore, *ids: str) -> None:
    store.record_batch("north", "book", "p", "h" * 64, [change(i) for i in ids], cursor=ids[-1])


@pytest.mark.parametrize("target", [None, "book"], ids=["job-lock", "job-and-target-locks"])
def test_a_worker_whose_lock_was_taken_over_records_nothing(
    store: StateStore, state_url: str, target: str | None
) -> None:
    with store.lock("north", target=target):
        record(store, "a")  # while the lock is ours
        drop_lock_connections(state_url)
        with (
            StateStore.open(state_url, ledger_key=TEST_LEDGER_KEY) as other,
            other.lock("north", target=target),
        ):
            with pytest.raises(LockLost) as lost:
                record(store, "b")
            record(other, "c")  # the new holder records
    assert str(lost.value).startswith("job 'north' lost its lock: it was taken over by job ")
    assert lost.value.exit_code == ExitCode.UNAVAILABLE
    assert sorted(store.mapped("north", ["a", "b", "c"])) == ["a", "c"]
    assert [e.source_id for e in store.ledger_entries(job="north")] == ["a", "c"]
    assert store.job_state("north").cursor == "c"


@pytest.mark.parametrize("south_first", [False, True])
def test_in_a_joined_block_only_the_job_whose_lock_was_taken_over_records_nothing(
    store: StateStore, state_url: str, south_first: bool
) -> None:
    """A joined block reads every fence the store holds at its first check (and keeps them
    locked until it commits): a lock taken over before that is refused to its job alone,
    whichever job records first."""
    with store.lock_many([("north", "book"), ("south", "tray")]) as refused:
        assert not refused
        drop_lock_connections(state_url)
        with (
            StateStore.open(state_url, ledger_key=TEST_LEDGER_KEY) as other,
            other.lock("north", target="book"),
            store.joined(),
        ):
            if south_first:
                store.record_batch("south", "tray", "p", "h" * 64, [change("s")], cursor="s")
            with pytest.raises(LockLost, match="job 'north' lost its lock"):
                record(store, "b")
            if not south_first:
                store.record_batch("south", "tray", "p", "h" * 64, [change("s")], cursor="s")
            with pytest.raises(LockLost):  # still refused, from what the block read
                record(store, "c")
    assert store.job_state("south").cursor == "s"
    assert store.job_state("north").cursor is None
    assert list(store.mapped("north", ["b", "c"])) == []


def test_record_batch_without_a_lock_is_not_fenced(store: StateStore, state_url: str) -> None:
    with (
        StateStore.open(state_url, ledger_key=TEST_LEDGER_KEY) as other,
        other.lock("north", target="book"),
    ):
        record(store, "a")  # the caller says it holds the lock some other way
    assert list(store.mapped("north", ["a"])) == ["a"]


def _lock_sessions(url: str) -> int:
    """How many server sessions this process holds locks on (PostgreSQL)."""
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    with engine.connect() as conn:
        found = conn.scalar(
            sa.text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :name"),
            {"name": f"connector {os.getpid()}@{socket.gethostname()}"[:63]},
        )
    engine.dispose()
    return int(found or 0)


def test_a_process_holds_many_jobs_locks_on_one_postgresql_session(state_url: str) -> None:
    """A group of partner jobs holds two locks per job for one read: on PostgreSQL all on one
    connection (one per lock hit the server's connection limit at 32 jobs a read), and
    still exclusive: inside the process as across processes."""
    pg = state_url.startswith("postgresql")
    with StateStore.open(state_url) as store, StateStore.open(state_url) as other:
        with contextlib.ExitStack() as held:
            for n in range(120):
                held.enter_context(store.lock(f"partner.p{n:03d}", target=f"out.p{n:03d}"))
            if pg:
                assert _lock_sessions(state_url) == 1
            with pytest.raises(JobLocked, match=f"pid {os.getpid()} "), store.lock("partner.p007"):
                pass
            with pytest.raises(TargetLocked), store.lock("another", target="out.p007"):
                pass
            with pytest.raises(JobLocked), other.lock("partner.p119"):
                pass
            with store.lock("partner.p200", target="out.p200"):  # a new one beside them
                pass
        if pg:
            assert _lock_sessions(state_url) == 0  # the last release closes the session
        with other.lock("partner.p119", target="out.p119"):
            pass


def test_locks_are_taken_again_after_the_lock_session_dropped(state_url: str) -> None:
    """A dropped lock session (a network cut, a server restart) frees what it held; the
    process's next lock opens a new one, even while it still thinks it holds others."""
    with StateStore.open(state_url) as store, StateStore.open(state_url) as other:
        with store.lock("north", target="book"):
            drop_lock_connections(state_url)
            with store.lock("south", target="map"), other.lock("north"):
                pass  # freed by the drop: taken by another holder
        with store.lock("north", target="book"):
            pass


def test_two_jobs_of_one_lock_call_writing_one_target_take_it_once(
    store: StateStore, state_url: str
) -> None:
    with store.lock_many([("a", "same"), ("b", "same")]) as refused:
        assert list(refused) == ["b"]
        assert isinstance(refused["b"], TargetLocked)
        with StateStore.open(state_url) as other:
            with other.lock("b"):  # b kept no lock of its own
                pass
            with pytest.raises(JobLocked), other.lock("a"):
                pass
    with StateStore.open(state_url) as other, other.lock("a", target="same"), other.lock("b"):
        pass  # all released


def test_many_jobs_locked_at_once_refuse_only_those_held_elsewhere(
    store: StateStore, state_url: str
) -> None:
    """A group's locks (one fence transaction for all): a job locked elsewhere is refused
    and holds nothing (not its target either); the others hold both locks, fenced."""
    jobs = [("north", "book"), ("held", "shelf"), ("south", "tray"), ("late", "taken")]
    with (
        StateStore.open(state_url, ledger_key=TEST_LEDGER_KEY) as other,
        other.lock("held"),
        other.lock("writer", target="taken"),
    ):
        with store.lock_many(jobs) as refused:
            assert sorted(refused) == ["held", "late"]
            assert isinstance(refused["held"], JobLocked)
            assert isinstance(refused["late"], TargetLocked)
            assert "writer" in str(refused["late"])
            with other.lock("late"):  # the job refused its target kept no lock of its own
                pass
            record(store, "a")  # north's fence tokens are current
            for job, target in [("south", None), ("x", "book"), ("y", "tray")]:
                with pytest.raises((JobLocked, TargetLocked)), other.lock(job, target=target):
                    pass
            with other.lock("y", target="shelf"):  # the refused job took no lock
                pass
        with other.lock("north", target="book"), other.lock("south", target="tray"):
            pass  # all released
    assert list(store.mapped("north", ["a"])) == ["a"]
