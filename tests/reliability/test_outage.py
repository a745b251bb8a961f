"""A remote outage stops a run cleanly; what was recorded stays; the next run completes it."""

from __future__ import annotations

import collections
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from connector_core.adapters import Adapter, Change, Page, WriteResult
from connector_core.config import load_config
from connector_core.errors import AdapterUnavailable, AuthenticationFailed, ExitCode
from connector_core.masks import MaskContext
from connector_core.query import Condition
from connector_core.sync.job import load_job
from connector_core.sync.keys import target_key
from connector_core.sync.runner import RunResult, run_job
from connector_core.sync.state import StateStore
from connector_core.testing import (
    TEST_LEDGER_KEY,
    MemoryAdapter,
    MemorySettings,
    reset_memory_stores,
)

PEOPLE = 60
BATCH = 7

CONFIG = """\
version: 1
network: {name: Outage network, key_secret: {env: CONNECTOR_TEST_KEY_SECRET}}
consent:
  purposes:
    local_organizing: {description: Local organizers may contact me}
connections:
  crm: {adapter: flaky-source, settings: {store: crm, page_size: 10}}
  out: {adapter: flaky-target, settings: {store: out}}
jobs:
  north: {source: crm, target: out, policy: north.yaml}
"""


KEY_SECRET = b"outage tests' key secret"


@pytest.fixture(scope="module", autouse=True)
def _key_secret() -> Iterator[None]:
    """One network.key_secret for every store here, so runs on fresh stores compare by key."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONNECTOR_TEST_KEY_SECRET", KEY_SECRET.decode())
        yield


POLICY = """\
policy: north
require_consent: [local_organizing]
rules:
  - allow: in the North
    when: {region: North}
fields:
  first_name: show
  city: show
"""


class Faults:
    """What the flaky adapters do next: fail after so many writes or pages."""

    writes_left: int | None = None  # changes the target applies before it goes down
    pages_left: int | None = None  # pages the source yields before it goes down
    error: type[Exception] = AdapterUnavailable

    @classmethod
    def reset(cls) -> None:
        cls.writes_left = cls.pages_left = None
        cls.error = AdapterUnavailable


class FlakyTarget(MemoryAdapter):
    """A memory target that goes down after `Faults.writes_left` changes, mid-batch or not."""

    name: ClassVar[str] = "flaky-target"

    def write(self, changes: Sequence[Change]) -> Iterator[WriteResult]:
        for change in changes:
            if Faults.writes_left is not None:
                if Faults.writes_left <= 0:
                    raise Faults.error("out: the server did not answer in time")
                Faults.writes_left -= 1
            yield self._apply(change)


class FlakySource(MemoryAdapter):
    """A memory source that goes down after `Faults.pages_left` pages."""

    name: ClassVar[str] = "flaky-source"

    def read(
        self,
        *,
        cursor: str | None = None,
        fields: frozenset[str] | None = None,
        where: Condition | None = None,
    ) -> Iterator[Page]:
        for page in super().read(cursor=cursor, fields=fields, where=where):
            if Faults.pages_left is not None:
                if Faults.pages_left <= 0:
                    raise AdapterUnavailable("crm: the server did not answer in time")
                Faults.pages_left -= 1
            yield page


ADAPTERS: dict[str, type[Adapter]] = {"flaky-source": FlakySource, "flaky-target": FlakyTarget}
CRM = MemoryAdapter(MemorySettings(store="crm"))
OUT = MemoryAdapter(MemorySettings(store="out"))


def person(n: int, **fields: Any) -> Change:
    granted = fields.pop("granted", True)
    record = {
        "first_name": f"Name{n}",
        "city": f"City {n % 7}",
        "region": "North" if n % 4 else "South",
        "consent": {"local_organizing": {"granted": granted, "source": "crm", "at": None}},
        **fields,
    }
    return Change.upsert(f"P{n:03d}", record)


class Scenario:
    """A fresh network, state store and memory stores in one folder (reused, for equal hashes)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        reset_memory_stores()
        Faults.reset()
        for leftover in root.glob("state.db*"):
            leftover.unlink() if leftover.is_file() else None
        (root / "connector.yaml").write_text(CONFIG, encoding="utf-8")
        (root / "north.yaml").write_text(POLICY, encoding="utf-8")
        list(CRM.write([person(n) for n in range(PEOPLE)]))
        self.store = StateStore.open(f"sqlite:///{root / 'state.db'}", ledger_key=TEST_LEDGER_KEY)

    def run(self) -> RunResult:
        config = load_config(self.root / "connector.yaml", ADAPTERS)
        job = load_job(config, "north", context=MaskContext.with_key(b"k"))
        try:
            return run_job(job, self.store, batch_size=BATCH)
        finally:
            job.close()

    def change_source(self) -> list[Change]:
        """Fifteen shared records change city, then fifteen withdraw consent: three pages."""
        changes = [person(n, city="Elsewhere") for n in range(1, PEOPLE, 4)]
        changes += [person(n, granted=False) for n in range(2, PEOPLE, 4)]
        list(CRM.write(changes))
        return changes

    def target(self) -> dict[str, Any]:
        return {r["id"]: r for page in OUT.read() for r in page.records}

    def mapped_keys(self) -> set[str]:
        ids = list(self.store.source_ids("north"))
        return {m.target_key for m in self.store.mapped("north", ids).values()}

    def ledger(self) -> list[tuple[str, str, str]]:
        return [(e.action, e.source_id, e.reason) for e in self.store.ledger_entries(job="north")]

    def outcome(self) -> dict[str, Any]:
        """What must equal an uninterrupted run's: target, id map, ledger, cursor, hashes."""
        assert self.store.verify_ledger().ok
        ids = list(self.store.source_ids("north"))
        mapped = sorted(
            (m.source_id, m.target_key, m.projection_hash, json.dumps(m.fields))
            for m in self.store.mapped("north", ids).values()
        )
        state = self.store.job_state("north")
        assert set(self.target()) == self.mapped_keys(), "orphans or losses in the target"
        return {
            "target": self.target(),
            "id_map": mapped,
            "ledger": sorted(self.ledger()),
            "state": (state.cursor, state.policy_hash, state.config_hash),
        }

    def close(self) -> None:
        self.store.close()


@pytest.fixture
def scenario(tmp_path: Path) -> Iterator[Scenario]:
    opened = Scenario(tmp_path)
    yield opened
    opened.close()
    reset_memory_stores()
    Faults.reset()


@pytest.fixture
def uninterrupted(tmp_path: Path) -> dict[str, Any]:
    """The outcome of a first run, then of a second after the source changed, unbroken."""
    first = Scenario(tmp_path)
    first.run()
    after_first = first.outcome()
    first.change_source()
    first.run()
    outcomes = {"first": after_first, "second": first.outcome()}
    first.close()
    return outcomes


def creates_per_key(ledger: list[tuple[str, str, str]]) -> collections.Counter[str]:
    return collections.Counter(source_id for action, source_id, _ in ledger if action == "create")


def test_an_outage_between_batches_keeps_exactly_what_was_written(
    uninterrupted: dict[str, Any], tmp_path: Path
) -> None:
    scenario = Scenario(tmp_path)
    Faults.writes_left = 3 * BATCH
    result = scenario.run()
    assert result.aborted == "out: the server did not answer in time"
    assert result.exit_code == ExitCode.UNAVAILABLE
    assert result.counts.created == 3 * BATCH
    assert len(scenario.target()) == 3 * BATCH
    assert set(scenario.target()) == scenario.mapped_keys()
    assert [action for action, _, _ in scenario.ledger()] == ["create"] * 3 * BATCH
    assert scenario.store.runs("north")[0]["status"] == "aborted"
    Faults.writes_left = None
    assert scenario.run().aborted is None
    assert scenario.outcome() == uninterrupted["first"]
    scenario.close()


def test_an_outage_in_mid_batch_is_completed_by_the_next_run(
    uninterrupted: dict[str, Any], tmp_path: Path
) -> None:
    scenario = Scenario(tmp_path)
    Faults.writes_left = 3 * BATCH + 3  # three changes of the fourth batch reach the target
    scenario.run()
    assert len(scenario.target()) == 3 * BATCH + 3
    assert len(scenario.mapped_keys()) == 3 * BATCH  # the fourth batch was never acknowledged
    Faults.writes_left = None
    scenario.run()
    outcome = scenario.outcome()
    assert outcome == uninterrupted["first"]
    assert set(creates_per_key(scenario.ledger()).values()) == {1}
    scenario.close()


def test_a_later_run_stopped_by_an_outage_resumes_from_its_cursor(
    uninterrupted: dict[str, Any], tmp_path: Path
) -> None:
    scenario = Scenario(tmp_path)
    scenario.run()
    changed = scenario.change_source()
    Faults.writes_left = 2 * BATCH  # the second batch completes the first page of ten
    stopped = scenario.run()
    assert stopped.aborted is not None
    assert not stopped.full
    assert stopped.counts.updated == 2 * BATCH
    Faults.writes_left = None
    resumed = scenario.run()
    assert not resumed.full
    assert resumed.counts.read == len(changed) - 10  # from the cursor after the first page
    assert scenario.outcome() == uninterrupted["second"]
    scenario.close()


def test_a_create_left_unrecorded_by_an_outage_is_taken_back_if_consent_goes(
    tmp_path: Path,
) -> None:
    scenario = Scenario(tmp_path)
    Faults.writes_left = BATCH + 2  # the target holds two creates the state never recorded
    scenario.run()
    orphans = set(scenario.target()) - scenario.mapped_keys()
    assert len(orphans) == 2
    orphan_ids = [
        sid
        for sid in (f"P{n:03d}" for n in range(PEOPLE))
        if target_key("north", sid, KEY_SECRET) in orphans
    ]
    list(CRM.write([person(int(sid[1:]), granted=False) for sid in orphan_ids]))
    Faults.writes_left = None
    result = scenario.run()
    assert result.aborted is None
    assert not orphans & set(scenario.target())
    assert set(scenario.target()) == scenario.mapped_keys()
    cleanup = [(a, sid) for a, sid, reason in scenario.ledger() if "interrupted" in reason]
    assert sorted(cleanup) == sorted(("delete", sid) for sid in orphan_ids)
    assert scenario.run().counts.deleted == 0  # the cleanup ends with the run that did it
    scenario.close()


def test_a_source_outage_keeps_the_pages_read_before(tmp_path: Path) -> None:
    scenario = Scenario(tmp_path)
    scenario.run()
    changed = scenario.change_source()
    Faults.pages_left = 1
    stopped = scenario.run()
    assert stopped.aborted == "crm: the server did not answer in time"
    assert stopped.counts.read == 10
    assert stopped.counts.updated + stopped.counts.deleted > 0  # the first page was recorded
    Faults.pages_left = None
    resumed = scenario.run()
    assert resumed.counts.read == len(changed) - 10
    scenario.close()


def test_refused_credentials_stop_the_run_with_the_hint(scenario: Scenario) -> None:
    Faults.writes_left, Faults.error = 0, AuthenticationFailed
    result = scenario.run()
    assert isinstance(result.error, AuthenticationFailed)
    assert result.exit_code == ExitCode.UNAVAILABLE
    assert scenario.mapped_keys() == set()
    assert scenario.store.job_state("north").policy_hash is None
