"""The mirror promise as a hypothesis state machine (issue #10).

Steps interleave source edits, new people, hard deletes, consent withdrawals and grants,
missing consent evidence, policy narrowing and widening, target rejections and SIGKILL at
any counted point of a run (in a forked child process). A reference network receives the
same source and policy and runs without faults. After every step:

- the ledger verifies, and its holdings (the last action per record) equal the id map;
- the id map's keys equal the records in the target;
- nothing is outstanding but the changes the target rejected in that very step;
- when nothing is outstanding, the target holds exactly what the reference target holds.

It runs on SQLite and PostgreSQL: a few examples in CI, many more under ``-m slow``.
"""

from __future__ import annotations

import csv
import shutil
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import pytest
from connector_csv import CsvAdapter
from connector_csv.session import CsvWrites
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from connector_core.adapters import Adapter, Change, WriteResult
from connector_core.config import load_config
from connector_core.masks import MaskContext
from connector_core.sync.job import LoadedJob, load_job
from connector_core.sync.keys import target_key
from connector_core.sync.state import StateStore
from connector_core.testing import TEST_LEDGER_KEY, crash
from tests.postgres import PG_SERVER, new_schema

KEY_SECRET = "property test target-key secret"  # both sides: their targets compare key by key
HEADER = ["id", "first_name", "city", "phone", "region", "local_ok"]
CONFIG = """\
version: 1
network: {name: Property network, key_secret: {env: PROPERTY_KEY_SECRET}}
consent:
  purposes:
    local_organizing: {description: Local organizers may contact me}
connections:
  crm:
    adapter: csv
    settings: {path: crm.csv, page_size: 4}
    mapping: {consent.local_organizing: local_ok}
  out: {adapter: %(target)s, settings: {path: out.csv}}
jobs:
  north:
    source: crm
    target: out
    policy: north.yaml
    options: {batch_size: 3, max_delete: 100%%}
"""
POLICY = """\
policy: north
require_consent: [local_organizing]
rules:
  - allow: in scope
    when: {region: {in: %s}}
fields:
  first_name: show
  city: show
  phone: last4
"""
NARROW, WIDE = '["North"]', '["North", "South"]'
REGIONS = ("North", "South", "East")
CITIES = ("Leeds", "York", "Hull")
CHANGES = ("add", "city", "move", "consent", "hard_delete", "narrow", "widen")
CONSENT = ("yes", "no", "")  # granted, withdrawn, no evidence


class RejectingCsvAdapter(CsvAdapter):
    """A CSV target that rejects the keys listed in ``reject.txt`` beside it."""

    name: ClassVar[str] = "rejecting_csv"

    def open_writes(self) -> CsvWrites:
        columns = self._columns
        natives = (c.native for c in columns.columns)
        return _RejectingWrites(
            self.settings.path, self.settings, self._render, columns.default_header, natives
        )


class _RejectingWrites(CsvWrites):
    """The CSV session, failing the changes of the keys listed in reject.txt."""

    def _apply(self, change: Change) -> WriteResult:
        listed = self.path.with_name("reject.txt")
        if listed.exists() and change.key in listed.read_text(encoding="utf-8").split():
            return WriteResult(change.key, "failed", error="rejected by the test target")
        return super()._apply(change)


ADAPTERS: dict[str, type[Adapter]] = {"csv": CsvAdapter, "rejecting_csv": RejectingCsvAdapter}


class Side:
    """One network folder: config, policy, source and target files, and its state store."""

    def __init__(self, root: Path, target: str, url: str) -> None:
        self.root, self.url = root, url
        root.mkdir(parents=True)
        (root / "connector.yaml").write_text(CONFIG % {"target": target}, encoding="utf-8")

    def write(self, people: dict[str, list[str]], regions: str) -> None:
        (self.root / "north.yaml").write_text(POLICY % regions, encoding="utf-8")
        with (self.root / "crm.csv").open("w", encoding="utf-8", newline="") as out:
            csv.writer(out).writerows([HEADER, *people.values()])

    def load(self) -> LoadedJob:
        config = load_config(self.root / "connector.yaml", ADAPTERS)
        return load_job(config, "north", context=MaskContext.with_key(b"property-key"))

    def run(self, switch: crash.KillSwitch | None = None) -> Any:
        return crash.run_with_switch(self.load(), self.url, switch)

    def target(self) -> list[tuple[str, ...]]:
        path = self.root / "out.csv"
        if not path.exists():
            return []
        with path.open(encoding="utf-8", newline="") as text:
            rows = list(csv.DictReader(text))
        return sorted(tuple(sorted(r.items())) for r in rows)


def _url(kind: str, root: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{root / 'state.db'}"
    return new_schema(f"{PG_SERVER}/{Machine.pg_database}", "prop")[1]


class Machine(RuleBasedStateMachine):
    """The subject (faults injected) against the reference (no faults)."""

    backend: ClassVar[str] = "sqlite"
    pg_database: ClassVar[str] = ""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="takeback-"))
        self.subject = Side(self.tmp / "subject", "rejecting_csv", _url(self.backend, self.tmp))
        self.reference = Side(self.tmp / "reference", "csv", f"sqlite:///{self.tmp / 'ref.db'}")
        self.people: dict[str, list[str]] = {}
        self.regions = WIDE
        self.next_id = 0
        self.rejected = False

    def teardown(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _publish(self) -> None:
        for side in (self.subject, self.reference):
            side.write(self.people, self.regions)

    @initialize(n=st.integers(4, 12))
    def start(self, n: int) -> None:
        for _ in range(n):
            self._add("North", "yes")
        self._sync(kill_at=None, reject=0)

    def _add(self, region: str, consent: str) -> None:
        sid = f"P{self.next_id:03d}"
        self.next_id += 1
        self.people[sid] = [
            sid,
            f"Name{self.next_id}",
            "Leeds",
            f"+44 113 496 {self.next_id:04d}",
            region,
            consent,
        ]

    @rule(
        data=st.data(),
        changes=st.lists(st.sampled_from(CHANGES), min_size=1, max_size=3),
        kill_at=st.one_of(st.none(), st.integers(1, 12), st.integers(1, 12)),
        reject=st.sampled_from((0, 0, 4, 8)),
    )
    def change_then_sync(
        self, data: st.DataObject, changes: list[str], kill_at: int | None, reject: int
    ) -> None:
        """Change the source or the policy, then run (maybe killed, maybe rejected)."""
        for change in changes:
            self._change(data, change)
        self._sync(kill_at, reject)

    def _change(self, data: st.DataObject, change: str) -> None:
        if change == "add":
            self._add(data.draw(st.sampled_from(REGIONS)), data.draw(st.sampled_from(CONSENT)))
        elif change == "narrow" or change == "widen":
            self.regions = NARROW if change == "narrow" else WIDE
        elif change == "hard_delete":
            if len(self.people) > 1:  # an empty source is held back by the guard: another test
                del self.people[data.draw(st.sampled_from(sorted(self.people)))]
        else:
            column, values = {"city": (2, CITIES), "move": (4, REGIONS), "consent": (5, CONSENT)}[
                change
            ]
            person = self.people[data.draw(st.sampled_from(sorted(self.people)))]
            person[column] = data.draw(st.sampled_from(values))

    def _sync(self, kill_at: int | None, reject: int) -> None:
        """Run the subject (killed at `kill_at`, then run again; rejecting about
        `reject` in 16 keys), and the reference without faults."""
        self._publish()
        listed = self.subject.root / "reject.txt"
        keys = [k for k in self._keys() if int(k[0], 16) < reject]
        listed.write_text("\n".join(keys), encoding="utf-8")
        if kill_at is not None:
            killed = crash.killed_in_fork(lambda: self.subject.run(crash.KillSwitch(kill_at)))
            if killed:
                listed.write_text("", encoding="utf-8")  # the recovery run is not rejected
        result = self.subject.run()
        assert result.aborted is None, result.aborted
        self.rejected = result.counts.failed > 0
        listed.write_text("", encoding="utf-8")
        assert self.reference.run().aborted is None

    def _keys(self) -> list[str]:
        return [target_key("north", sid, KEY_SECRET.encode()) for sid in self.people]

    @invariant()
    def the_state_agrees_with_the_target_and_the_ledger(self) -> None:
        with StateStore.open(self.subject.url, ledger_key=TEST_LEDGER_KEY) as store:
            assert store.verify_ledger().ok
            mapped = store.mapped("north", list(store.source_ids("north")))
            holdings: dict[str, tuple[str, str]] = {}
            for entry in store.ledger_entries(job="north"):
                holdings[entry.source_id] = (entry.action, entry.record_key)
            owed = store.outstanding("north")
        held = {sid: m.target_key for sid, m in mapped.items()}
        assert {s: k for s, (a, k) in holdings.items() if a != "delete"} == held
        assert sorted(held.values()) == sorted(dict(r)["id"] for r in self.subject.target())
        assert {o.status for o in owed.values()} <= ({"failed"} if self.rejected else set())
        if not owed:
            assert self.subject.target() == self.reference.target()


def _run(backend: str, examples: int, steps: int) -> None:
    Machine.backend = backend
    machine = type(f"Machine_{backend}", (Machine,), {})
    machine.TestCase.settings = settings(
        max_examples=examples, stateful_step_count=steps, deadline=None, derandomize=False
    )
    machine.TestCase().runTest()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("PROPERTY_KEY_SECRET", KEY_SECRET)
    if request.param == "postgresql":
        Machine.pg_database = request.getfixturevalue("pg_database").rsplit("/", 1)[1]
    return str(request.param)


def test_the_mirror_promise_holds_through_faults(backend: str) -> None:
    _run(backend, examples=6, steps=8)


@pytest.mark.slow
def test_the_mirror_promise_holds_through_many_more_faults(backend: str) -> None:
    _run(backend, examples=60, steps=20)
