"""Exact take-back (issue #10): the intent log, truthful outcomes and the mass-delete guard.

Each test reproduces something seen on the code before the intent log: a run killed after
the target acknowledged a batch, followed by a hard delete at the source or a narrowed
policy, left the record in the target forever; recovery cost one delete per withheld
record read; a rejected change was forgotten until the daily reconciliation; an empty read
took everyone back with exit 0; a killed run stayed "running"; a dry run wrote a run row.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import pytest

from connector_core.adapters import Change, WriteResult
from connector_core.errors import ExitCode
from connector_core.sync.state import StateStore
from tests.unit.sync.test_runner import ADAPTERS, Network, PickyAdapter, key, ledger


class Killed(BaseException):
    """Stands for SIGKILL inside one process: nothing after it runs (tests/reliability
    kills real processes; this keeps the scenarios here fast and exact)."""


class DoomedAdapter(PickyAdapter):
    """A memory target that applies the changes of write number `die_after`, acknowledges
    nothing of it, and dies; it counts the changes it is sent."""

    name: ClassVar[str] = "doomed"
    die_after: ClassVar[int | None] = None
    writes: ClassVar[int] = 0
    sent: ClassVar[list[Change]] = []

    def write(self, changes: Sequence[Change]) -> Iterator[WriteResult]:
        type(self).writes += 1
        self.sent.extend(changes)
        results = list(super().write(changes))
        if self.writes == self.die_after:
            raise Killed
        return iter(results)


ADAPTERS["doomed"] = DoomedAdapter


@pytest.fixture(autouse=True)
def _reset_doomed() -> Iterator[None]:
    yield
    DoomedAdapter.die_after, DoomedAdapter.writes = None, 0
    DoomedAdapter.sent = []


def people(net: Network, n: int, **fields: Any) -> None:
    for i in range(n):
        net.put(f"q{i:04d}", **fields)


def crash(net: Network, store: StateStore, after_write: int) -> None:
    DoomedAdapter.die_after, DoomedAdapter.writes = after_write, 0
    with pytest.raises(Killed):
        net.run(store)
    DoomedAdapter.die_after = None


def consistent(net: Network, store: StateStore) -> None:
    """The target holds exactly what the id map says, and the ledger's holdings agree."""
    held = {m.target_key for m in store.mapped("north", store.source_ids("north")).values()}
    assert set(net.target()) == held
    holdings: dict[str, str] = {}
    for action, source_id, _ in ledger(store):
        holdings[source_id] = action
    assert {key(store, s) for s, a in holdings.items() if a != "delete"} == held


@pytest.fixture
def doomed(net: Network) -> Network:
    net.configure(target="doomed", options={"batch_size": 2})
    return net


def test_a_create_acknowledged_but_unrecorded_then_deleted_at_the_source_is_taken_back(
    doomed: Network, store: StateStore
) -> None:
    crash(doomed, store, after_write=1)  # p1 and p2 reached the target, the state knows none
    assert {key(store, "p1"), key(store, "p2")} <= set(doomed.target())
    assert store.mapped_count("north") == 0
    doomed.remove("p1")  # a hard delete before the rerun
    result = doomed.run(store)
    assert result.exit_code == ExitCode.OK
    assert key(store, "p1") not in doomed.target()
    assert set(doomed.target()) == {key(store, "p2")}
    assert store.who_has("p1") == []
    assert ("delete", "p1") in [(a, s) for a, s, _ in ledger(store)]
    assert store.outstanding("north") == {}
    consistent(doomed, store)


def test_a_crash_then_a_narrowed_policy_on_a_full_read_leaves_no_orphan(
    doomed: Network, store: StateStore
) -> None:
    crash(doomed, store, after_write=1)
    doomed.put("p1", region="South")  # p1 leaves the scope before the rerun
    doomed.run(store)
    assert set(doomed.target()) == {key(store, "p2")}
    consistent(doomed, store)


def test_an_update_sent_before_a_crash_is_rewritten_even_if_the_source_reverted(
    doomed: Network, store: StateStore
) -> None:
    doomed.run(store)
    doomed.put("p1", city="Hull")
    crash(doomed, store, after_write=1)  # the target has Hull, the id map still Leeds
    assert doomed.target()[key(store, "p1")]["city"] == "Hull"
    doomed.put("p1", city="Leeds")  # reverted at the source
    doomed.run(store)
    assert doomed.target()[key(store, "p1")]["city"] == "Leeds"
    consistent(doomed, store)


def test_recovery_costs_one_batch_not_one_delete_per_withheld_record(
    tmp_path: Any, store: StateStore
) -> None:
    net = Network(tmp_path)
    net.configure(target="doomed", options={"batch_size": 50})
    people(net, 100)
    for i in range(1900):
        net.put(f"w{i:04d}", region="South")
    crash(net, store, after_write=1)
    DoomedAdapter.sent = []
    net.run(store)
    deletes = [c for c in DoomedAdapter.sent if c.action == "delete"]
    assert deletes == []  # before: 1,900 deletes of keys the target never held
    assert len(net.target()) == 100
    consistent(net, store)


def test_a_rejected_change_is_retried_by_the_next_run_though_nothing_changed(
    net: Network, store: StateStore
) -> None:
    net.configure(target="picky")
    net.put("p4", first_name="Reject")
    first = net.run(store)
    assert first.exit_code == ExitCode.RECORDS_FAILED
    net.put("p4", first_name="Accepted")  # fixed at the source; the change is the retry
    assert store.outstanding("north")["p4"].status == "failed"
    second = net.run(store)
    assert second.counts.created == 1
    assert second.exit_code == ExitCode.OK
    assert store.outstanding("north") == {}


def test_a_failure_keeps_exiting_1_until_it_is_resolved(net: Network, store: StateStore) -> None:
    net.configure(target="picky")
    net.put("p4", first_name="Reject")
    net.run(store)
    again = net.run(store)  # nothing changed at the source: the change is still owed
    assert again.full
    assert again.exit_code == ExitCode.RECORDS_FAILED
    assert again.counts.outstanding == 1
    assert store.runs("north")[0]["status"] == "failed-records"


def test_an_empty_read_holds_every_delete_back(net: Network, store: StateStore) -> None:
    net.run(store)
    for source_id in ("p1", "p2", "p3"):
        net.remove(source_id)  # the export came back empty
    result = net.run(store, reconcile=True)
    assert (result.counts.held, result.counts.deleted) == (2, 0)
    assert result.exit_code == ExitCode.DELETES_HELD
    assert result.held is not None
    assert "empty read" in result.held
    assert len(net.target()) == 2
    assert {o.status for o in store.outstanding("north").values()} == {"held"}
    assert store.runs("north")[0]["status"] == "deletes-held"
    held_again = net.run(store)  # held deletes are decided again, and held again
    assert held_again.counts.held == 2
    assert len(net.target()) == 2
    accepted = net.run(store, accept_deletes=2)
    assert accepted.counts.deleted == 2
    assert net.target() == {}
    assert accepted.exit_code == ExitCode.OK
    assert store.outstanding("north") == {}


def test_a_shrunken_read_over_the_limit_is_held_and_a_fixed_export_clears_it(
    tmp_path: Any, store: StateStore
) -> None:
    net = Network(tmp_path)
    people(net, 40)
    net.run(store)
    for i in range(15):
        net.put(f"q{i:04d}", region="South")  # 15 of 40 leave the scope: more than 10%
    held = net.run(store)
    assert (held.counts.held, len(net.target())) == (15, 40)
    for i in range(15):
        net.put(f"q{i:04d}")  # the export is fixed: nobody left after all
    fixed = net.run(store)
    assert (fixed.counts.held, fixed.counts.deleted, fixed.counts.updated) == (0, 0, 0)
    assert fixed.exit_code == ExitCode.OK
    assert store.outstanding("north") == {}


def test_withdrawals_are_never_held_back(tmp_path: Any, store: StateStore) -> None:
    net = Network(tmp_path)
    people(net, 40)
    net.run(store)
    people(net, 40, granted=False)  # everyone said no
    result = net.run(store)
    assert (result.counts.deleted, result.counts.held) == (40, 0)
    assert net.target() == {}
    assert {r for _, _, r in ledger(store)[40:]} == {"withdrawn:local_organizing"}


@pytest.mark.parametrize(("limit", "held"), [(5, 6), ("10%", 6), (6, 0), ("15%", 0)])
def test_max_delete_sets_the_limit(
    tmp_path: Any, store: StateStore, limit: int | str, held: int
) -> None:
    net = Network(tmp_path)
    net.configure(options={"max_delete": limit})
    people(net, 40)
    net.run(store)
    for i in range(6):
        net.remove(f"q{i:04d}")
    assert net.run(store, reconcile=True).counts.held == held


def test_a_killed_run_is_shown_as_killed(doomed: Network, store: StateStore) -> None:
    crash(doomed, store, after_write=1)
    assert store.runs("north")[0]["status"] == "aborted"  # an exception still unwinds here
    run_id = store.start_run("north")  # a process killed outright leaves "running" behind
    store.start_run("north")
    statuses = {r["id"]: r["status"] for r in store.runs("north")}
    assert statuses[run_id] == "killed"


def test_a_dry_run_writes_nothing_to_the_state(net: Network, store: StateStore) -> None:
    net.run(store, dry_run=True)
    assert store.runs("north") == []
    assert store.outstanding("north") == {}
    assert store.job_state("north").last_run_at is None
