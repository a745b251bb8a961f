"""A group of jobs sharing a source: one read, and each job ends as if it had run alone."""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from connector_core.adapters import Adapter, Change, Page, WriteResult, WriteSession
from connector_core.config import load_config
from connector_core.errors import AdapterError, AdapterUnavailable, ConnectorError, ExitCode
from connector_core.masks import MaskContext
from connector_core.query import Condition
from connector_core.records import usable_id
from connector_core.sync import fanout
from connector_core.sync.fanout import GroupResult, run_jobs
from connector_core.sync.job import LoadedJob, load_job
from connector_core.sync.locks import JobLocked
from connector_core.sync.runner import run_job
from connector_core.sync.state import StateStore
from connector_core.testing import TEST_LEDGER_KEY, MemoryAdapter, memory, reset_memory_stores
from tests.unit.sync.conftest import finished_runs_uncollected
from tests.unit.sync.test_runner import OddCursorAdapter


class CountingAdapter(OddCursorAdapter):
    """A memory source that counts the reads started on any of its instances (its cursors
    carry `mark`, none unless a test sets one)."""

    name: ClassVar[str] = "counting"
    reads: ClassVar[list[str | None]] = []
    fail_after: ClassVar[int | None] = None  # pages a read gives before the source fails

    def read(
        self,
        *,
        cursor: str | None = None,
        fields: frozenset[str] | None = None,
        where: Condition | None = None,
    ) -> Iterator[Page]:
        self.reads.append(cursor)
        pages = super().read(cursor=cursor, fields=fields, where=where)
        return pages if self.fail_after is None else self._failing(pages, self.fail_after)

    @staticmethod
    def _failing(pages: Iterator[Page], count: int) -> Iterator[Page]:
        for n, page in enumerate(pages):
            if n == count:
                break
            yield page
        raise AdapterUnavailable("the source went away")


class RejectingAdapter(MemoryAdapter):
    """A memory target that refuses anyone called Reject (their change stays outstanding)."""

    name: ClassVar[str] = "rejecting"

    def write(self, changes: Sequence[Change]) -> Iterator[WriteResult]:
        for change in changes:
            if change.record is not None and change.record.get("first_name") == "Reject":
                yield WriteResult(change.key, "failed", error="the target refused it")
            else:
                yield self._apply(change)


class DownAdapter(MemoryAdapter):
    """A memory target that is unreachable while `down` is set."""

    name: ClassVar[str] = "down"
    down: ClassVar[bool] = False

    def write(self, changes: Sequence[Change]) -> Iterator[WriteResult]:
        if self.down:
            raise AdapterError("the target is down", hint="try later")
        yield from super().write(changes)


ADAPTERS: dict[str, type[Adapter]] = {
    cls.name: cls for cls in (MemoryAdapter, CountingAdapter, RejectingAdapter, DownAdapter)
}

#: The network, its consent purpose and its source: each test network's start
HEAD = """\
version: 1
network: {name: Fan-out network, key_secret: {env: CONNECTOR_TEST_KEY_SECRET}}
consent:
  purposes:
    local_organizing: {description: Local organizers may contact me}
connections:
  crm: {adapter: counting, settings: {store: crm, page_size: 7}}
"""
CONFIG = (
    HEAD
    + """\
  out-north: {adapter: memory, settings: {store: out-north}}
  out-south: {adapter: memory, settings: {store: out-south}}
  out-group: {adapter: memory, settings: {store: out-group}}
  out-mixed: {adapter: memory, settings: {store: out-mixed}}
  out-picky: {adapter: rejecting, settings: {store: out-picky}}
  out-down: {adapter: down, settings: {store: out-down}}
jobs:
  north: {source: crm, target: out-north, policy: north.yaml}
  south: {source: crm, target: out-south, policy: south.yaml}
  group: {source: crm, target: out-group, policy: group.yaml}
  mixed: {source: crm, target: out-mixed, policy: mixed.yaml}
  picky: {source: crm, target: out-picky, policy: north.yaml}
  down: {source: crm, target: out-down, policy: south.yaml}
"""
)

TEMPLATE = """\
policy: {name}
require_consent: [local_organizing]
rules:
  - allow: chosen
    when: {when}
  - forbid: deceased
    when: {{is_deceased: true}}
fields:
{fields}
"""

POLICIES = {
    "north": ("{region: North}", "  first_name: show\n  city: show\n  phone: last4"),
    "south": ("{region: South}", "  first_name: show\n  city: show"),
    "group": ("{groups: {any_of: [local-1, local-2]}}", "  first_name: show"),
    # not indexable: two allow-tests on different fields under any
    "mixed": (
        "{any: [{region: North}, {city: York}]}",
        "  first_name: initial\n  city: show",
    ),
}

JOBS = ["north", "south", "group", "mixed", "picky", "down"]
OUTPUTS = ["out-north", "out-south", "out-group", "out-mixed", "out-picky", "out-down"]


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("CONNECTOR_TEST_KEY_SECRET", "fan-out tests' key secret 0123")
    reset_memory_stores()
    CountingAdapter.reads.clear()
    CountingAdapter.fail_after = None
    CountingAdapter.mark = ""
    DownAdapter.down = False
    yield
    reset_memory_stores()


def person(n: int, version: int = 0) -> dict[str, Any]:
    """Source record n; `version` moves some, withdraws some, renames one to Reject."""
    shift = n + version
    region = ("North", "South", "East")[shift % 3]
    granted = (n * 7 + version) % 10 != 0
    return {
        "first_name": "Reject" if n == 3 and version == 0 else f"Name{n}",
        "city": ("Leeds", "York", "Hull")[(n * 5 + version) % 3],
        "phone": f"+44 113 496 {n:04d}",
        "region": region,
        "groups": [f"local-{shift % 4}"],
        "is_deceased": n % 11 == 10,
        "consent": {"local_organizing": {"granted": granted, "source": "crm", "at": None}},
    }


class World:
    """The fan-out network in a folder; runs its jobs one by one or as a group."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "connector.yaml").write_text(CONFIG, encoding="utf-8")
        for name, (when, fields) in POLICIES.items():
            self.policy(name, when, fields)
        self.source = CountingAdapter(CountingAdapter.settings_model(store="crm"))

    def policy(self, name: str, when: str, fields: str) -> None:
        text = TEMPLATE.format(name=name, when=when, fields=fields)
        (self.root / f"{name}.yaml").write_text(text, encoding="utf-8")

    def put(self, n: int, version: int = 0, **extra: Any) -> None:
        list(self.source.write([Change.upsert(f"P{n:03d}", {**person(n, version), **extra})]))

    def load(self, names: Sequence[str] = JOBS) -> list[LoadedJob]:
        config = load_config(self.root / "connector.yaml", ADAPTERS)
        context = MaskContext.with_key(b"key")
        return [load_job(config, name, context=context) for name in names]

    def one_by_one(self, store: StateStore, **options: Any) -> dict[str, int]:
        codes = {}
        for job in self.load():
            try:
                codes[job.name] = int(run_job(job, store, **options).exit_code)
            except JobLocked as exc:
                codes[job.name] = int(exc.exit_code)
            finally:
                job.close()
        return codes

    def group(self, store: StateStore, **options: Any) -> GroupResult:
        """Every job's run as one group (:func:`run_jobs`)."""
        jobs = self.load()
        try:
            return run_jobs(jobs, store, **options)
        finally:
            for job in jobs:
                job.close()

    def grouped(self, store: StateStore, **options: Any) -> dict[str, int]:
        group = self.group(store, **options)
        codes = {r.job: int(r.exit_code) for r in group.results}
        codes.update({name: int(err.exit_code) for name, err in group.refused})
        return codes


def outcome(store: StateStore) -> dict[str, Any]:
    """Targets, id maps, ledger rows and outstanding changes, without times or order."""
    from connector_core.testing.memory import _STORES

    found: dict[str, Any] = {
        "targets": {
            name: sorted(json.dumps(r, sort_keys=True) for r in _STORES[name].records.values())
            for name in OUTPUTS
            if name in _STORES
        }
    }
    for job in JOBS:
        ids = list(store.source_ids(job))
        found[f"{job} id map"] = sorted(
            (m.source_id, m.target_key, m.projection_hash, json.dumps(m.fields))
            for m in store.mapped(job, ids).values()
        )
        found[f"{job} ledger"] = sorted(
            (e.action, e.source_id, e.record_key, json.dumps(e.fields), e.reason)
            for e in store.ledger_entries(job=job)
        )
        found[f"{job} outstanding"] = sorted(
            (o.source_id, o.action, o.status, o.reason) for o in store.outstanding(job).values()
        )
        found[f"{job} cursor"] = store.job_state(job).cursor
    assert store.verify_ledger().ok
    return found


def scenario(world: World, store: StateStore, mode: str) -> list[Any]:
    """Three runs: a first run; a day of changes with one policy changed, one job locked
    elsewhere and one target down; and the day after. Modes: "single" (one job after the
    other), "group" (one read for all), "pairs" (groups of two jobs fed one read)."""
    if mode == "single":
        run = world.one_by_one
    else:
        run = functools.partial(world.grouped, group_size=2 if mode == "pairs" else None)
    for n in range(30):
        world.put(n)
    seen = [run(store), outcome(store)]
    for n in range(0, 30, 4):
        world.put(n, version=1)
    world.put(9, deleted=True)
    world.put(31)
    world.policy("south", "{region: South}", "  first_name: show")  # the policy changed
    DownAdapter.down = True
    other = StateStore.open(str(store.url), ledger_key=TEST_LEDGER_KEY)
    with other.lock("north"):
        seen += [run(store), outcome(store)]
    other.close()
    DownAdapter.down = False
    world.put(5, version=2)
    seen += [run(store), outcome(store)]
    return seen


def test_a_group_reads_its_source_once(tmp_path: Path) -> None:
    world = World(tmp_path)
    for n in range(30):
        world.put(n)
    with StateStore.open(f"sqlite:///{tmp_path / 'state.db'}", ledger_key=TEST_LEDGER_KEY) as s:
        codes = world.grouped(s)
        assert CountingAdapter.reads == [None]
        assert codes == dict.fromkeys(JOBS, 0) | {"picky": int(ExitCode.RECORDS_FAILED)}
        world.put(3, version=1)
        world.grouped(s)
        # picky owes a change: the whole group reads everything, once
        assert CountingAdapter.reads == [None, None]
        world.put(3, version=1)  # no longer called Reject: picky's change goes through
        world.grouped(s)
        cursor = s.job_state("north").cursor
        assert {s.job_state(job).cursor for job in JOBS} == {cursor}
        world.put(7, version=1)
        world.grouped(s)
        assert CountingAdapter.reads[-1] == cursor is not None  # incremental, for all
        assert len(CountingAdapter.reads) == 4


def test_one_by_one_reads_once_per_job(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.put(1)
    with StateStore.open(f"sqlite:///{tmp_path / 'state.db'}", ledger_key=TEST_LEDGER_KEY) as s:
        world.one_by_one(s)
    assert len(CountingAdapter.reads) == len(JOBS)


def count_replays(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count the pages of kept reads fed to later groups, and those of them unpickled."""
    from connector_core.sync import fanout

    replayed = {"pages": 0, "unpickled": 0}
    unpack, replay = fanout._Read._unpack, fanout._Group._replay

    def counted_unpack(read: Any, n: int, *args: Any) -> Page:
        replayed["unpickled"] += 1  # whole, or a group's part of it
        return unpack(read, n, *args)

    def counted_replay(group: Any, kept: Any, decider: Any) -> None:
        replayed["pages"] += len(kept.metas)
        replay(group, kept, decider)

    monkeypatch.setattr(fanout._Read, "_unpack", counted_unpack)
    monkeypatch.setattr(fanout._Group, "_replay", counted_replay)
    return replayed


@pytest.mark.parametrize("grouped", ["group", "pairs"])
def test_a_group_ends_exactly_as_its_jobs_run_one_by_one(
    tmp_path: Path, grouped: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Different policies (indexed and not), a changed policy, an outstanding change, a job
    locked by another process, a target down: targets, id maps, ledgers, outstanding changes,
    cursors and exit codes equal those of running the jobs one after another; also when
    groups of two are fed the first group's read (and pass its pages that hold nothing for
    them without unpickling them)."""
    replayed = count_replays(monkeypatch)
    results = {}
    for mode in ("single", grouped):
        reset_memory_stores()
        root = tmp_path / mode
        root.mkdir()
        world = World(root)
        with StateStore.open(f"sqlite:///{root / 'state.db'}", ledger_key=TEST_LEDGER_KEY) as s:
            results[mode] = scenario(world, s, mode)
    single, group = results["single"], results[grouped]
    assert single[2]["north"] == int(ExitCode.UNAVAILABLE)  # locked elsewhere
    assert single[2]["down"] == int(ExitCode.UNAVAILABLE)  # its target was down
    assert single[0]["picky"] == int(ExitCode.RECORDS_FAILED)
    for index, (alone, together) in enumerate(zip(single, group, strict=True)):
        assert together == alone, index
    if grouped == "pairs":
        assert replayed["pages"] > 0  # fed the first group's read


def test_a_failing_target_stops_only_its_job(tmp_path: Path, store: StateStore) -> None:
    """On SQLite and PostgreSQL (where each job's locks are connections of their own)."""
    world = World(tmp_path)
    for n in range(30):
        world.put(n)
    DownAdapter.down = True
    with store as s:
        jobs = world.load()
        group: GroupResult = run_jobs(jobs, s)
        by_job = {r.job: r for r in group.results}
        assert by_job["down"].exit_code == ExitCode.UNAVAILABLE
        assert by_job["down"].aborted is not None
        assert by_job["north"].exit_code == ExitCode.OK
        assert by_job["north"].counts.created > 0
        runs = {r["job"]: r["status"] for r in s.runs()}
        assert runs["down"] == "aborted"
        assert runs["north"] == "ok"
        assert s.job_state("down").cursor is None
        assert s.job_state("north").cursor is not None


class StagedWrites(WriteSession):
    """A deferred session of a memory target: changes staged in a copy of its store, which
    replaces the store at the commit; the commit of a store in `failing` raises."""

    deferred: ClassVar[bool] = True
    groups: ClassVar[list[list[str]]] = []  # the stores of each commit_many call
    failing: ClassVar[set[str]] = set()

    def __init__(self, adapter: MemoryAdapter) -> None:
        self.real, self.shadow = adapter.store_name, f"{adapter.store_name}.staged"
        memory._STORES[self.shadow] = copy.deepcopy(adapter._store)
        self.staging = MemoryAdapter(MemoryAdapter.settings_model(store=self.shadow))

    def write(self, changes: Sequence[Change]) -> Iterator[WriteResult]:
        return iter(list(self.staging.write(changes)))

    def commit(self) -> None:
        if self.real in self.failing:
            raise AdapterError(f"{self.real} refused the commit")
        memory._STORES[self.real] = memory._STORES.pop(self.shadow)

    def abort(self) -> None:
        memory._STORES.pop(self.shadow, None)

    @classmethod
    def commit_many(cls, sessions: Sequence[WriteSession]) -> list[ConnectorError | None]:
        cls.groups.append(sorted(s.real for s in sessions if isinstance(s, StagedWrites)))
        return super().commit_many(sessions)


class StagedAdapter(MemoryAdapter):
    name: ClassVar[str] = "staged"

    def open_writes(self) -> WriteSession:
        return StagedWrites(self)


STAGED = (
    HEAD
    + """\
  out-a: {adapter: staged, settings: {store: out-a}}
  out-b: {adapter: staged, settings: {store: out-b}}
  out-c: {adapter: staged, settings: {store: out-c}}
  out-m: {adapter: memory, settings: {store: out-m}}
jobs:
  a: {source: crm, target: out-a, policy: north.yaml}
  b: {source: crm, target: out-b, policy: south.yaml}
  c: {source: crm, target: out-c, policy: group.yaml}
  m: {source: crm, target: out-m, policy: mixed.yaml}
"""
)


def test_a_groups_targets_are_committed_together_by_kind_and_fail_alone(
    tmp_path: Path, store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sessions of a group's targets of one class go to one commit_many, once every
    intent is durable; a session that fails there stops its job alone, which records
    nothing, and the next run puts it right."""
    world = World(tmp_path)
    (tmp_path / "connector.yaml").write_text(STAGED, encoding="utf-8")
    monkeypatch.setitem(ADAPTERS, "staged", StagedAdapter)
    monkeypatch.setattr(StagedWrites, "groups", [])
    monkeypatch.setattr(StagedWrites, "failing", {"out-b"})
    for n in range(30):
        world.put(n)
    names = ["a", "b", "c", "m"]
    with store as s:
        jobs = world.load(names)
        by_job = {r.job: r for r in run_jobs(jobs, s).results}
        assert StagedWrites.groups == [["out-a", "out-b", "out-c"]]
        assert by_job["b"].aborted == "out-b refused the commit"
        assert [job for job, r in by_job.items() if r.aborted] == ["b"]
        assert memory._STORES["out-b"].records == {}
        assert s.mapped_count("b") == 0
        assert s.mapped_count("a") == len(memory._STORES["out-a"].records) > 0
        assert s.mapped_count("c") == len(memory._STORES["out-c"].records) > 0
        StagedWrites.failing = set()
        again = {r.job: r for r in run_jobs(world.load(names), s).results}
        assert [job for job, r in again.items() if r.aborted] == []
        assert s.mapped_count("b") == len(memory._STORES["out-b"].records) > 0
        assert again["b"].counts.created == s.mapped_count("b")
        assert again["a"].counts.created == 0


def test_a_group_dry_run_writes_nothing_and_plans_what_each_job_would(tmp_path: Path) -> None:
    world = World(tmp_path)
    for n in range(30):
        world.put(n)
    url = f"sqlite:///{tmp_path / 'state.db'}"
    with StateStore.open(url, ledger_key=TEST_LEDGER_KEY) as s:
        alone = {}
        for job in world.load():
            alone[job.name] = sorted(
                (c.action, c.source_id) for c in run_job(job, s, dry_run=True).planned
            )
        group = run_jobs(world.load(), s, dry_run=True)
        together = {
            r.job: sorted((c.action, c.source_id) for c in r.planned) for r in group.results
        }
        assert together == alone
        assert s.runs() == []
    assert CountingAdapter.reads.count(None) == len(JOBS) + 1


def reconciled(
    root: Path, mode: str, edit: Callable[[World], None] = lambda world: None
) -> tuple[dict[str, int], dict[str, Any], list[int]]:
    """A first run over 30 people; 5 of them removed at the source, then `edit`; a run that
    reconciles. One by one ("single"), as one group ("group") or in groups of two
    ("pairs"): the exit codes, the outcome, and each job's problems in the last run."""
    reset_memory_stores()
    world = World(root)
    if mode == "single":
        run: Callable[..., dict[str, int]] = world.one_by_one
    else:
        run = functools.partial(world.grouped, group_size=2 if mode == "pairs" else None)
    with StateStore.open(f"sqlite:///{root / 'state.db'}", ledger_key=TEST_LEDGER_KEY) as s:
        for n in range(30):
            world.put(n)
        run(s)
        for n in (0, 1, 2, 6, 12):
            list(world.source.write([Change.delete(f"P{n:03d}")]))
        edit(world)
        codes = run(s, reconcile=True)
        problems = [r["counts"]["problems"] for r in s.runs(limit=len(JOBS))]
        return codes, outcome(s), problems


def test_hard_deletes_found_by_a_forced_reconciliation_match_too(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Records removed at the source (which incremental reads cannot report) are taken back
    alike when every job reconciles, grouped or one by one."""
    results = {
        mode: reconciled(tmp_path_factory.mktemp(mode), mode)[:2] for mode in ("single", "group")
    }
    assert results["group"] == results["single"]
    deletes = [e for e in results["group"][1]["north ledger"] if e[0] == "delete"]
    assert {e[4] for e in deletes} == {"missing-at-source"}


#: any text at all (hypothesis's text() leaves lone surrogates out unless asked)
ODD = st.text(st.characters(), max_size=4)


@settings(max_examples=10, deadline=None)
@given(odd=ODD, names=st.lists(ODD, min_size=3, max_size=3), source=ODD)
@example(odd="P\x00", names=["A\ud800", "\x00", "caf\udce9"], source="\udce9")
@example(odd="\ud800", names=["Ann", "Bob", "Cy"], source="crm")
@example(odd="caf\udce9", names=["Ann", "Bob", "Cy"], source="crm")
def test_any_text_in_a_shared_read_ends_grouped_as_alone(
    tmp_path_factory: pytest.TempPathFactory, odd: str, names: list[str], source: str
) -> None:
    """Any text in ids, values and consent evidence (NULs, lone surrogates): a group ends as
    its jobs one by one; an id no state store can hold is a read problem for every job
    (each reports it) and nobody is taken back as missing in that run."""
    odd = odd or "P\x00"

    def edit(world: World) -> None:
        for n, name in enumerate(names):
            consent = {"local_organizing": {"granted": True, "source": source, "at": None}}
            world.put(20 + n, first_name=name, consent=consent)
        list(world.source.write([Change.upsert(odd, person(40))]))

    results = {}
    for mode in ("single", "group", "pairs"):
        codes, found, problems = reconciled(tmp_path_factory.mktemp(mode), mode, edit)
        results[mode] = (codes, found)
        if not usable_id(odd):
            assert problems == [1] * len(JOBS)
    assert results["group"] == results["single"]
    assert results["pairs"] == results["single"]
    if not usable_id(odd):
        ledgers = [e for job in JOBS for e in results["group"][1][f"{job} ledger"]]
        assert not [e for e in ledgers if e[0] == "delete" and e[4] == "missing-at-source"]


def test_groups_of_one_source_are_fed_one_read(tmp_path: Path) -> None:
    """Groups of at most `group_size` jobs; the later groups of the same source, reading
    from the same cursor, are fed the first group's read instead of reading again."""
    world = World(tmp_path)
    for n in range(10):
        world.put(n)
    with StateStore.open(f"sqlite:///{tmp_path / 'state.db'}", ledger_key=TEST_LEDGER_KEY) as s:
        jobs = world.load()
        first = run_jobs(jobs, s, group_size=2)
        world.put(3, version=1)
        again = run_jobs(jobs, s, group_size=2)
        evenly = run_jobs(jobs[:5], s, group_size=4)  # groups of 3 and 2 (not 4 and 1)
        for job in jobs:
            job.close()
    assert [r.job for r in first.results] == [r.job for r in again.results] == JOBS
    assert first.reads == 1
    # picky owes a change (its first run failed one): its group reads everything, the
    # other groups read from their common cursor, once for all of them
    assert again.reads == 2
    assert evenly.reads == 1  # a group of one would have read on its own
    assert len(CountingAdapter.reads) == 4


def test_groups_fed_a_read_with_nothing_new_read_no_id_map(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run whose source has nothing new since the jobs' cursor: the later groups, fed
    the first group's read (no record, not a whole listing), count what their jobs hold
    and read none of their ids (15,000 partners' unchanged run read every id map)."""
    world = World(tmp_path)
    for n in range(10):
        world.put(n)
    asked: list[list[str]] = []
    mapped_ids = StateStore.mapped_ids

    def spied(store: StateStore, jobs: Any) -> Any:
        asked.append(list(jobs))
        return mapped_ids(store, jobs)

    monkeypatch.setattr(StateStore, "mapped_ids", spied)
    with StateStore.open(f"sqlite:///{tmp_path / 'state.db'}", ledger_key=TEST_LEDGER_KEY) as s:
        jobs = world.load()
        run_jobs(jobs, s, group_size=2)
        world.put(3, version=1)
        changed = run_jobs(jobs, s, group_size=2)
        assert asked  # a read with records: the later groups read their jobs' ids
        asked.clear()
        unchanged = run_jobs(jobs, s, group_size=2)
        assert asked == []
        held = {job: s.mapped_count(job) for job in JOBS}
        alone = run_jobs(jobs, s, group_size=1)  # the same run again, each job on its own
        assert {job: s.mapped_count(job) for job in JOBS} == held
        for job in jobs:
            job.close()
    assert [r.job for r in changed.results] == [r.job for r in unchanged.results] == JOBS
    assert [r.counts for r in unchanged.results] == [r.counts for r in alone.results]
    assert [r.exit_code for r in unchanged.results] == [r.exit_code for r in alone.results]
    assert sum(held.values()) > 0


@given(
    sources=st.lists(st.sampled_from("abc"), max_size=60),
    limit=st.integers(1, 20),
    shared=st.integers(0, 3),
)
def test_groups_are_as_few_and_as_even_as_the_limit_allows(
    sources: list[str], limit: int, shared: int
) -> None:
    """Each source's jobs in the fewest groups of at most `limit`, sizes at most one apart,
    in order; a job whose target its group writes already (the first `shared` jobs write
    one target) goes to a later group."""
    jobs = [
        _Job(f"j{n}", source, "same" if n < shared else f"t{n}") for n, source in enumerate(sources)
    ]
    found = fanout.groups(jobs, limit)  # type: ignore[arg-type]
    assert sorted(j.name for g in found for j in g) == sorted(j.name for j in jobs)
    for group in found:
        assert len({j.config.source for j in group}) == 1
        assert len({j.config.target for j in group}) == len(group)
        assert [jobs.index(j) for j in group] == sorted(jobs.index(j) for j in group)
    if shared <= 1:  # no target shared: exactly the even sizes
        for source in "abc":
            sizes = [len(g) for g in found if g[0].config.source == source]
            assert sizes == fanout.even_sizes(sources.count(source), limit)


@dataclasses.dataclass
class _Job:
    """What groups() looks at of a job."""

    name: str
    source: str
    target: str

    @property
    def config(self) -> _Job:
        return self


def test_a_failed_read_is_not_fed_to_the_next_group(tmp_path: Path) -> None:
    world = World(tmp_path)
    for n in range(10):
        world.put(n)
    CountingAdapter.fail_after = 1  # the source fails after its first page
    with StateStore.open(f"sqlite:///{tmp_path / 'state.db'}", ledger_key=TEST_LEDGER_KEY) as s:
        jobs = world.load()
        failed = run_jobs(jobs, s, group_size=2)
        for job in jobs:
            job.close()
    assert failed.reads == 3  # each group read again
    assert {r.aborted is not None for r in failed.results} == {True}


@pytest.mark.parametrize("mark", ["\x00", "\udce9"])
def test_a_cursor_no_store_holds_stops_a_shared_read_before_anything_is_written(
    tmp_path: Path, mark: str
) -> None:
    """The one guard of every read (runner.checked_pages): each job of the group stops
    with the adapter's error, nothing written; mended, the group runs as a first run."""
    world = World(tmp_path)
    for n in range(10):
        world.put(n)
    with StateStore.open(f"sqlite:///{tmp_path / 'state.db'}", ledger_key=TEST_LEDGER_KEY) as s:
        CountingAdapter.mark = mark
        odd = world.group(s)
        assert len(odd.results) == len(JOBS)
        for result in odd.results:
            assert "crm: the counting adapter's read gave a cursor" in str(result.error)
        assert not any(outcome(s)["targets"].values())
        assert list(s.ledger_entries()) == []
        CountingAdapter.mark = ""
        mended = world.group(s)
        assert [r.error for r in mended.results] == [None] * len(JOBS)
        assert any(outcome(s)["targets"].values())


def test_a_group_keeps_the_garbage_collector_out_of_the_way_and_restores_it(
    tmp_path: Path, store: StateStore
) -> None:
    """As one job's run does (runner.fewer_collections): a group's read is as hot."""
    import gc

    world = World(tmp_path)
    for n in range(5):
        world.put(n)
    thresholds = gc.get_threshold()
    during: list[int] = []
    with store as s:
        jobs = world.load()
        try:
            run_jobs(jobs, s, progress=lambda _n: during.append(gc.get_threshold()[0]))
        finally:
            for job in jobs:
                job.close()
    assert during
    assert all(t > thresholds[0] for t in during)
    assert gc.get_threshold() == thresholds


def test_a_groups_finished_runs_are_freed_without_the_cyclic_collector(
    tmp_path: Path, store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each job's run of a group is freed by reference counting once the group is done
    (no cycle holds it: see runner's test of one run), not left to the collector."""
    world = World(tmp_path)
    for n in range(5):
        world.put(n)
    with finished_runs_uncollected(monkeypatch) as refs:
        with store as s:
            jobs = world.load()
            try:
                run_jobs(jobs, s)
            finally:
                for job in jobs:
                    job.close()
        assert len(refs) == len(jobs) > 1
        assert all(ref() is None for ref in refs)


def test_a_job_with_nothing_in_a_page_passes_it_unplanned_and_ends_as_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pages of 2 records: most hold nothing a given job may share, holds or owes, so it
    passes them without planning (the cost of a page for each of 15,000 partner jobs).
    Every count, target, id map, ledger, outstanding change and cursor equals that of the
    same group planning every page, and all but the counts those of one-by-one runs (a
    group reads everything when one job owes a change; a job alone reads incrementally)."""
    from connector_core.sync import fanout, runner

    passed: list[str] = []
    original, in_a_row = runner.JobRun.pass_page, runner.JobRun.pass_pages

    def counting(run: runner.JobRun, page: Page, withheld: Any) -> None:
        passed.append(run.job.name)
        original(run, page, withheld)

    def counting_many(run: runner.JobRun, *args: Any, **kwargs: Any) -> None:
        passed.append(run.job.name)
        in_a_row(run, *args, **kwargs)

    monkeypatch.setattr(runner.JobRun, "pass_page", counting)
    monkeypatch.setattr(runner.JobRun, "pass_pages", counting_many)
    idle, decide = fanout._PageDecisions.idle, fanout._PageDecisions.__init__

    def everyone_active(self: Any, decider: Any, page: Page) -> None:
        decide(self, decider, page)
        self.active = None  # every job visits every page, and plans it

    results = {}
    for mode in ("single", "planned", "group"):
        planned = mode == "planned"
        monkeypatch.setattr(fanout._PageDecisions, "idle", (lambda *_: None) if planned else idle)
        monkeypatch.setattr(
            fanout._PageDecisions, "__init__", everyone_active if planned else decide
        )
        reset_memory_stores()
        root = tmp_path / mode
        root.mkdir()
        world = World(root)
        (root / "connector.yaml").write_text(CONFIG.replace("page_size: 7", "page_size: 2"))
        url = f"sqlite:///{root / 'state.db'}"
        with StateStore.open(url, ledger_key=TEST_LEDGER_KEY) as s:
            seen: list[Any] = []
            for version in (0, 1):
                for n in range(0, 30, 1 + version * 3):
                    world.put(n, version)
                jobs = world.load()
                try:
                    if mode == "single":
                        done = [run_job(job, s) for job in jobs]
                    else:
                        done = run_jobs(jobs, s).results
                finally:
                    for job in jobs:
                        job.close()
                seen.append({r.job: (int(r.exit_code), r.counts.as_dict()) for r in done})
                seen.append(outcome(s))
            results[mode] = seen
        if mode == "planned":
            assert not passed
    assert results["group"] == results["planned"]
    assert results["group"][1::2] == results["single"][1::2]
    assert {"north", "south", "picky", "down"} <= set(passed)  # indexed policies pass pages
    assert "mixed" not in passed  # a policy the index cannot narrow plans every page


def test_a_cursor_covered_by_the_same_steps_replaces_the_mark_before_it() -> None:
    from connector_core.sync.batches import Batches

    written: list[tuple[int, str | None]] = []
    batches = Batches(lambda steps, cursor: written.append((len(steps), cursor)), size=10)
    for page in range(1000):  # a long read with nothing to write
        batches.mark(f"c{page}")
    assert len(batches.marks) == 1
    batches.finish("end")
    assert written == [(0, "end")]


#: CONFIG's network and consent, with a source of pages of 4 and no jobs yet
REGIONS_CONFIG = (
    CONFIG.split("connections:\n")[0]
    + """connections:
  crm: {adapter: counting, settings: {store: crm, page_size: 4}}
%(targets)s
jobs:
%(jobs)s
"""
)


def test_later_groups_pass_the_pages_that_hold_nothing_for_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Six regional jobs in groups of two, the people sorted by region: the second and
    third groups, fed the first group's read, unpickle only the pages with someone of their
    regions (or someone they hold); each policy names its reasons its own way. Counts,
    targets, id maps, ledgers and cursors equal those of groups that each read the source,
    and all but the counts those of one-by-one runs; over a first run, an incremental run
    (people moved, one deleted, one withdrew, one added) and a reconciliation."""
    from connector_core.sync import fanout

    names = [f"r{i}" for i in range(6)]
    config = REGIONS_CONFIG % {
        "targets": "\n".join(
            f"  out-{n}: {{adapter: memory, settings: {{store: out-{n}}}}}" for n in names
        ),
        "jobs": "\n".join(
            f"  {n}: {{source: crm, target: out-{n}, policy: {n}.yaml}}" for n in names
        ),
    }
    kept = fanout._Reads.kept
    replayed = count_replays(monkeypatch)
    among_reads: list[int] = []  # a later group reads the id map rows of its read's records
    mapped_all = StateStore.mapped_all

    def spied(store: StateStore, jobs: Any, among: Any = None) -> Any:
        if among is not None:
            among_reads.append(len(among))
        return mapped_all(store, jobs, among)

    monkeypatch.setattr(StateStore, "mapped_all", spied)
    counted: list[str] = []  # a group counts its jobs' holdings by a query (the first groups)
    mapped_counts = StateStore.mapped_counts

    def counting(store: StateStore, jobs: Any) -> Any:
        counted.append(mode)
        return mapped_counts(store, jobs)

    monkeypatch.setattr(StateStore, "mapped_counts", counting)

    def resident(n: int, region: int, **extra: Any) -> dict[str, Any]:
        record = {**person(n), "region": f"R{region}", "is_deceased": n == 13, **extra}
        record["consent"] = {"local_organizing": {"granted": n % 7 != 5, "source": "crm"}}
        return record

    results: dict[str, list[Any]] = {}
    for mode in ("single", "pairs", "pairs-read"):
        reset_memory_stores()
        monkeypatch.setattr(
            fanout._Reads, "kept", (lambda *_: None) if mode == "pairs-read" else kept
        )
        root = tmp_path / mode
        root.mkdir()
        (root / "connector.yaml").write_text(config, encoding="utf-8")
        for i, name in enumerate(names):
            text = TEMPLATE.format(name=name, when=f"{{region: R{i}}}", fields="  first_name: show")
            (root / f"{name}.yaml").write_text(text, encoding="utf-8")
        source = CountingAdapter(CountingAdapter.settings_model(store="crm"))

        def put(n: int, region: int, into: Adapter = source, **extra: Any) -> None:
            list(into.write([Change.upsert(f"P{n:03d}", resident(n, region, **extra))]))

        for n in range(36):
            put(n, n // 3 % 6)  # three of a region in a row: pages of 4 mix groups
        seen: list[Any] = []
        with StateStore.open(f"sqlite:///{root / 'state.db'}", ledger_key=TEST_LEDGER_KEY) as s:
            for step in range(3):
                if step == 1:
                    put(2, 5)  # moved from R0 to R5
                    put(20, 3, deleted=True)
                    put(31, 5, consent={"local_organizing": {"granted": False}})
                    put(40, 1)  # new, in R1
                config_ = load_config(root / "connector.yaml", ADAPTERS)
                jobs = [load_job(config_, n, context=MaskContext.with_key(b"key")) for n in names]
                options: dict[str, Any] = {"reconcile": True} if step == 2 else {}
                try:
                    if mode == "single":
                        done = [run_job(job, s, **options) for job in jobs]
                    else:
                        done = run_jobs(jobs, s, group_size=2, **options).results
                finally:
                    for job in jobs:
                        job.close()
                counts = {r.job: (int(r.exit_code), r.counts.as_dict()) for r in done}
                state = {}
                for name in names:
                    ids = list(s.source_ids(name))
                    state[name] = (
                        sorted((m.source_id, m.target_key) for m in s.mapped(name, ids).values()),
                        sorted(
                            (e.action, e.source_id, e.reason) for e in s.ledger_entries(job=name)
                        ),
                        s.job_state(name).cursor,
                    )
                seen.append((counts, state))
        results[mode] = seen
    assert results["pairs"] == results["pairs-read"]
    assert [state for _, state in results["pairs"]] == [state for _, state in results["single"]]
    assert 0 < replayed["unpickled"] < replayed["pages"], replayed
    assert among_reads  # and gave the same results
    # fed a kept read, a group counts its jobs' holdings from the ids it reads: only the
    # first group of each of the three steps counts them by a query (reading alone, each)
    assert counted.count("pairs") == 3
    assert counted.count("pairs-read") == 9


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.frozensets(st.integers(0, 3), max_size=3)),
        max_size=12,
    ),
    st.booleans(),
    st.frozensets(st.integers(0, 11)),
)
def test_a_kept_page_comes_back_whole_or_as_each_groups_part(
    records: list[tuple[int, frozenset[int]]], busy: bool, held: frozenset[int]
) -> None:
    """A kept page is pickled in parts by the groups that may share each record: put back
    together it equals the page read (without its row fingerprints), and a group's part
    holds exactly its records, in page order, with the page's other fields; with the
    places of records it holds, exactly those too."""
    from connector_core.sync import fanout

    page = Page(
        records=[{"id": f"P{n}", "region": region} for n, (region, _) in enumerate(records)],
        cursor="c9",
        snapshot=True,
        skipped=["S1", "S2"],
        fingerprints={"P0": 7},
    )
    members: dict[int, list[int]] = {}
    for at, (_, groups) in enumerate(records):
        for group in sorted(groups):
            members.setdefault(group, []).append(at)
    meta = fanout._PageMeta("c9", len(records), 2, True, busy, {} if busy else members)
    read = fanout._Read()
    read.add(page, meta)
    whole = read.page(0)
    assert whole == dataclasses.replace(page, fingerprints={})
    assert [p.records for p in read] == [page.records]
    for group in range(4) if not busy else ():
        part = read.part(0, group)
        assert part.records == [page.records[at] for at in members.get(group, [])]
        assert (part.cursor, part.snapshot, part.skipped) == ("c9", True, ["S1", "S2"])
        with_held = read.places(0, group, held)
        wanted = set(members.get(group, [])) | {at for at in held if at < len(records)}
        assert with_held.records == [page.records[at] for at in sorted(wanted)]
        assert with_held.skipped == ["S1", "S2"]
