"""A group of jobs sharing one read, killed (SIGKILL) at any point and run again, ends
exactly like an uninterrupted group run, which ends like the jobs run one by one."""

from __future__ import annotations

import csv
import json
import random
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from connector_csv import CsvAdapter

from connector_core.config import load_config
from connector_core.masks import MaskContext
from connector_core.sync.fanout import run_jobs
from connector_core.sync.job import LoadedJob, load_job
from connector_core.sync.runner import run_job
from connector_core.sync.state import StateStore
from connector_core.testing import TEST_LEDGER_KEY, crash

PEOPLE = 240
BATCH = 9
KILLS = 8
JOBS = ("north", "south", "both")

CONFIG = """\
version: 1
network: {name: Fan-out crash network, key_secret: {env: CONNECTOR_TEST_KEY_SECRET}}
consent:
  purposes:
    local_organizing: {description: Local organizers may contact me}
connections:
  crm:
    adapter: csv
    settings: {path: crm.csv, page_size: 40}
    mapping: {consent.local_organizing: local_ok}
  out-north: {adapter: csv, settings: {path: north.csv}}
  out-south: {adapter: csv, settings: {path: south.csv}}
  out-both: {adapter: csv, settings: {path: both.csv}}
jobs:
  north: {source: crm, target: out-north, policy: north.yaml, options: {max_delete: 50%}}
  south: {source: crm, target: out-south, policy: south.yaml, options: {max_delete: 50%}}
  both: {source: crm, target: out-both, policy: both.yaml, options: {max_delete: 50%}}
"""

POLICY = """\
policy: {name}
require_consent: [local_organizing]
rules:
  - allow: chosen
    when: {when}
fields:
{fields}
"""

POLICIES = {
    "north": ("{region: North}", "  first_name: show\n  city: show\n  phone: last4"),
    "south": ("{region: South}", "  first_name: show"),
    "both": ("{any: [{region: North}, {city: City 3}]}", "  city: show\n  phone: last4"),
}

HEADER = ["id", "first_name", "city", "phone", "region", "local_ok"]


@pytest.fixture(scope="module", autouse=True)
def _key_secret() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONNECTOR_TEST_KEY_SECRET", "fan-out crash tests' key secret")
        yield


def person(n: int, version: int = 0) -> list[str]:
    region = ("North", "South", "East")[(n + version) % 3]
    consent = "no" if (n * 7 + version) % 10 == 0 else "yes"
    return [f"M{n:04d}", f"Name{n}", f"City {(n + version) % 7}", f"+44 {n:04d}", region, consent]


def write_source(root: Path, rows: list[list[str]]) -> None:
    with (root / "crm.csv").open("w", encoding="utf-8", newline="") as out:
        csv.writer(out).writerows([HEADER, *rows])


def network(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    (root / "connector.yaml").write_text(CONFIG, encoding="utf-8")
    for name, (when, fields) in POLICIES.items():
        text = POLICY.format(name=name, when=when, fields=fields)
        (root / f"{name}.yaml").write_text(text, encoding="utf-8")
    write_source(root, [person(n) for n in range(PEOPLE)])


def change_source(root: Path) -> None:
    write_source(root, [person(n, 1 if n % 4 == 0 else 0) for n in range(10, PEOPLE + 15)])


def url(root: Path) -> str:
    return f"sqlite:///{root / 'state.db'}"


def load(root: Path) -> list[LoadedJob]:
    config = load_config(root / "connector.yaml", {"csv": CsvAdapter})
    return [load_job(config, name, context=MaskContext.with_key(b"k")) for name in JOBS]


def install(switch: crash.KillSwitch, jobs: Sequence[LoadedJob], store: StateStore) -> None:
    """Count every page read, target write and state transaction of the group."""
    for job in jobs:
        read, write = job.source.read, job.target.write

        def pages(read: Any = read, **kwargs: Any) -> Iterator[Any]:
            for page in read(**kwargs):
                switch.tick()
                yield page

        job.source.read = pages  # type: ignore[method-assign]
        job.target.write = lambda changes, write=write: iter(  # type: ignore[method-assign]
            switch.after(list)(write(changes))
        )
    store.write_ahead = switch.after(store.write_ahead)  # type: ignore[method-assign]
    store.record_batch = switch.after(store.record_batch)  # type: ignore[method-assign]
    store.set_job_state = switch.after(store.set_job_state)  # type: ignore[method-assign]


def run_group(root: Path, switch: crash.KillSwitch | None = None) -> None:
    jobs = load(root)
    with StateStore.open(url(root), ledger_key=TEST_LEDGER_KEY) as store:
        if switch is not None:
            install(switch, jobs, store)
        group = run_jobs(jobs, store, batch_size=BATCH)
    for job in jobs:
        job.close()
    assert not group.refused
    assert all(r.aborted is None and not r.counts.failed for r in group.results)


def run_one_by_one(root: Path) -> None:
    jobs = load(root)
    with StateStore.open(url(root), ledger_key=TEST_LEDGER_KEY) as store:
        for job in jobs:
            assert run_job(job, store, batch_size=BATCH).aborted is None
            job.close()


def outcome(root: Path) -> dict[str, Any]:
    found: dict[str, Any] = {}
    with StateStore.open(url(root), ledger_key=TEST_LEDGER_KEY) as store:
        assert store.verify_ledger().ok
        for job in JOBS:
            with (root / f"{job}.csv").open(encoding="utf-8", newline="") as text:
                header, *rows = list(csv.reader(text))
            mapped = store.mapped(job, list(store.source_ids(job)))
            id_map = sorted(
                (m.source_id, m.target_key, m.projection_hash, json.dumps(m.fields))
                for m in mapped.values()
            )
            assert sorted(r[0] for r in rows) == sorted(m[1] for m in id_map), job
            ledger = sorted(
                (e.action, e.source_id, e.record_key, json.dumps(e.fields), e.reason)
                for e in store.ledger_entries(job=job)
            )
            creates = [entry[2] for entry in ledger if entry[0] == "create"]
            assert len(creates) == len(set(creates)), job
            state = store.job_state(job)
            found[job] = {
                "target": (header, sorted(rows)),
                "id_map": id_map,
                "ledger": ledger,
                "state": (state.cursor, state.policy_hash, state.config_hash),
                "outstanding": sorted(store.outstanding(job)),
            }
    return found


def events_of(root: Path) -> int:
    switch = crash.KillSwitch(0)
    run_group(root, switch)
    return switch.events


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fanout-crash") / "net"


@pytest.fixture(scope="module")
def reference(root: Path) -> dict[str, Any]:
    """Uninterrupted group runs (a first run, and one after the source changed), and the
    same two runs of the jobs one by one."""
    network(root)
    first_events = events_of(root)
    first = outcome(root)
    change_source(root)
    second_events = events_of(root)
    second = outcome(root)
    network(root)
    run_one_by_one(root)
    alone_first = outcome(root)
    change_source(root)
    run_one_by_one(root)
    alone_second = outcome(root)
    return {
        "first": (first_events, first, alone_first),
        "second": (second_events, second, alone_second),
    }


def test_a_group_ends_like_its_jobs_one_by_one(reference: dict[str, Any]) -> None:
    for scenario in ("first", "second"):
        _, grouped, alone = reference[scenario]
        assert grouped == alone, scenario
        assert all(grouped[job]["id_map"] for job in JOBS)
    assert any(e[0] == "delete" for e in reference["second"][1]["north"]["ledger"])


def kill_points(events: int, seed: int) -> list[int]:
    return sorted({1, events} | set(random.Random(seed).sample(range(2, events), KILLS - 2)))


@pytest.mark.parametrize("scenario", ["first", "second"])
def test_a_group_killed_anywhere_converges(
    reference: dict[str, Any], root: Path, scenario: str
) -> None:
    events, expected, _ = reference[scenario]
    for kill_at in kill_points(events, seed=len(scenario)):
        network(root)
        if scenario == "second":
            run_group(root)
            change_source(root)
        killed = crash.killed_in_fork(lambda k=kill_at: run_group(root, crash.KillSwitch(k)))
        assert killed, f"the run ended before event {kill_at}"
        run_group(root)
        assert outcome(root) == expected, kill_at
