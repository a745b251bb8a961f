"""A sync killed (SIGKILL) at any point and run again ends exactly like an uninterrupted one.

A child process (``sync_child.py``) runs a multi-batch CSV -> CSV sync with a SQLite state
store and kills itself at a chosen event: between pages, in the middle of a target write,
after the target acknowledged a batch but before the state recorded it, after a state
transaction. The test then runs the job again to completion and compares the target file,
the id map, the ledger (verified, and with exactly the rows of an uninterrupted run: one
create per key, no duplicates, no losses) and the job's cursor and hashes.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import random
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connector_core.sync.state import StateStore
from connector_core.testing import TEST_LEDGER_KEY, crash

CHILD = Path(__file__).with_name("sync_child.py")
_spec = importlib.util.spec_from_file_location("sync_child", CHILD)
assert _spec is not None
assert _spec.loader is not None
child = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(child)

PEOPLE = 300
BATCH = 7
KILLS = 12  # kill points per scenario
SLOW_KILLS = 30

CONFIG = """\
version: 1
network: {name: Crash test network, key_secret: {env: CONNECTOR_TEST_KEY_SECRET}}
consent:
  purposes:
    local_organizing: {description: Local organizers may contact me}
connections:
  crm:
    adapter: csv
    settings: {path: crm.csv, page_size: 40}
    mapping: {consent.local_organizing: local_ok}
  out: {adapter: csv, settings: {path: out.csv}}
jobs:
  north:
    source: crm
    target: out
    policy: north.yaml
    options: {max_delete: 50%}  # the day after takes back more than the default allows
"""


@pytest.fixture(scope="module", autouse=True)
def _key_secret() -> Iterator[None]:
    """One network.key_secret for every store here, so runs on fresh stores compare by key."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONNECTOR_TEST_KEY_SECRET", "reliability tests' key secret")
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
  phone: last4
"""

HEADER = ["id", "first_name", "city", "phone", "region", "local_ok"]


def person(n: int, version: int = 0) -> list[str]:
    """Row n of the source; `version` shifts who consents, lives where, and their city."""
    region = "North" if (n + version) % 3 else "South"
    consent = "no" if (n * 7 + version) % 10 == 0 else "yes"
    city = f"City {(n + version) % 17}"
    return [f"M{n:04d}", f"Name{n}", city, f"+44 113 496 {n:04d}", region, consent]


def write_source(root: Path, rows: list[list[str]]) -> None:
    with (root / "crm.csv").open("w", encoding="utf-8", newline="") as out:
        csv.writer(out).writerows([HEADER, *rows])


def network(root: Path) -> Path:
    """A fresh network at `root` (always the same folder: settings hold absolute paths, and
    a target's path is part of the job's fingerprint)."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    (root / "connector.yaml").write_text(CONFIG, encoding="utf-8")
    (root / "north.yaml").write_text(POLICY, encoding="utf-8")
    write_source(root, [person(n) for n in range(PEOPLE)])
    return root


def change_source(root: Path) -> None:
    """The next day: some withdraw or move (version 1), ten are deleted, fifteen join."""
    rows = [person(n, 1 if n % 4 == 0 else 0) for n in range(10, PEOPLE + 15)]
    write_source(root, rows)


def url(root: Path) -> str:
    return f"sqlite:///{root / 'state.db'}"


def run_child(root: Path, kill_at: int) -> dict[str, Any] | None:
    """Run the job in a fresh interpreter; None when it was killed, else its report."""
    proc = subprocess.run(
        [sys.executable, str(CHILD), str(root), url(root), str(BATCH), str(kill_at)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode == -signal.SIGKILL:
        return None
    assert proc.returncode == 0, proc.stderr
    report: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    return report


def run_forked(root: Path, kill_at: int) -> bool:
    """Run the job in a forked child (fast: nothing to import); True if it was killed."""
    return crash.killed_in_fork(
        lambda: child.run(root, url(root), BATCH, child.KillSwitch(kill_at))
    )


def finish(root: Path) -> None:
    """Run the job to completion, in this process."""
    result = child.run(root, url(root), BATCH)
    assert result.aborted is None
    assert result.counts.failed == 0


def outcome(root: Path) -> dict[str, Any]:
    """Everything an interruption must not change: target, id map, ledger, cursor, hashes."""
    with (root / "out.csv").open(encoding="utf-8", newline="") as text:
        header, *rows = list(csv.reader(text))
    with StateStore.open(url(root), ledger_key=TEST_LEDGER_KEY) as store:
        ids = list(store.source_ids(child.JOB))
        mapped = store.mapped(child.JOB, ids)
        entries = list(store.ledger_entries(job=child.JOB))
        assert store.verify_ledger().ok
        state = store.job_state(child.JOB)
    id_map = sorted(
        (m.source_id, m.target_key, m.projection_hash, json.dumps(m.fields), m.policy_hash)
        for m in mapped.values()
    )
    assert sorted(r[0] for r in rows) == sorted(m[1] for m in id_map), "orphans or losses"
    ledger = sorted(
        (
            e.action,
            e.source_id,
            e.record_key,
            json.dumps(e.fields),
            e.reason,
            json.dumps(e.consent_basis, sort_keys=True),
        )
        for e in entries
    )
    return {
        "target": (header, sorted(rows)),
        "id_map": id_map,
        "ledger": ledger,
        "state": (state.cursor, state.policy_hash, state.config_hash),
    }


def assert_one_create_per_key(result: dict[str, Any]) -> None:
    keys = [entry[2] for entry in result["ledger"] if entry[0] == "create"]
    assert len(keys) == len(set(keys))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one folder every scenario runs in, in turn."""
    return tmp_path_factory.mktemp("crash") / "net"


@pytest.fixture(scope="module")
def reference(root: Path) -> dict[str, Any]:
    """Uninterrupted runs: the first run, and a second one after the source changed."""
    network(root)
    first = run_child(root, 0)
    assert first is not None
    after_first = outcome(root)
    change_source(root)
    second = run_child(root, 0)
    assert second is not None
    assert second["counts"]["deleted"] > 10
    assert second["counts"]["created"] > 0
    assert second["counts"]["updated"] > 0
    return {"first": (first["events"], after_first), "second": (second["events"], outcome(root))}


def kill_points(events: int, count: int, seed: int) -> list[int]:
    """The first and last events, and `count` more at random (seeded), in order."""
    chosen = {1, events} | set(random.Random(seed).sample(range(2, events), count - 2))
    return sorted(chosen)


def crash_first_run(root: Path, kills: list[int]) -> dict[str, Any]:
    """Kill the first run at `kills` (one run each), finish it, and return the outcome."""
    network(root)
    for kill_at in kills:
        assert run_forked(root, kill_at), f"the run ended before event {kill_at}"
    finish(root)
    return outcome(root)


def crash_second_run(root: Path, kills: list[int]) -> dict[str, Any]:
    """Likewise for the run after the source changed."""
    network(root)
    finish(root)
    change_source(root)
    for kill_at in kills:
        assert run_forked(root, kill_at), f"the run ended before event {kill_at}"
    finish(root)
    return outcome(root)


def test_the_uninterrupted_runs_are_sane(reference: dict[str, Any]) -> None:
    events, first = reference["first"]
    assert len(first["id_map"]) > PEOPLE // 2
    assert events > 3 * len(first["id_map"]) // BATCH  # many batches: write, record, ...
    assert {entry[0] for entry in first["ledger"]} == {"create"}
    assert_one_create_per_key(first)
    assert_one_create_per_key(reference["second"][1])


def test_a_run_killed_in_a_fresh_interpreter_converges(
    reference: dict[str, Any], root: Path
) -> None:
    events, expected = reference["first"]
    network(root)
    assert run_child(root, events // 2) is None
    assert run_child(root, 0) is not None
    assert outcome(root) == expected


def test_a_first_run_killed_anywhere_converges(reference: dict[str, Any], root: Path) -> None:
    events, expected = reference["first"]
    for kill_at in kill_points(events, KILLS, seed=1):
        assert crash_first_run(root, [kill_at]) == expected, kill_at


def test_a_later_run_killed_anywhere_converges(reference: dict[str, Any], root: Path) -> None:
    events, expected = reference["second"]
    for kill_at in kill_points(events, KILLS, seed=2):
        assert crash_second_run(root, [kill_at]) == expected, kill_at


def test_a_run_killed_again_while_recovering_converges(
    reference: dict[str, Any], root: Path
) -> None:
    events, expected = reference["first"]
    for pair in [(events // 3, 5), (events // 2, events // 2), (7, 3)]:
        got = crash_first_run(root, list(pair))
        assert got == expected, pair


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["first", "second"])
def test_many_more_kill_points_converge(
    reference: dict[str, Any], root: Path, scenario: str
) -> None:
    """30 more kill points per scenario; CONNECTOR_CRASH_EVERY_EVENT=1 tries every one."""
    events, expected = reference[scenario]
    crash = crash_first_run if scenario == "first" else crash_second_run
    every = os.environ.get("CONNECTOR_CRASH_EVERY_EVENT") == "1"
    points = range(1, events + 1) if every else kill_points(events, SLOW_KILLS, seed=3)
    for kill_at in points:
        assert crash(root, [kill_at]) == expected, kill_at


class KillBeforeCommit(child.KillSwitch):
    """Kills the run when its write session is about to commit: every batch was written
    ahead and answered by the (deferred) target, none is in the file or recorded."""

    def install(self, job: Any, store: StateStore) -> None:
        super().install(job, store)
        open_writes = job.target.open_writes

        def opened() -> Any:
            session = open_writes()
            session.commit = lambda: os.kill(os.getpid(), signal.SIGKILL)
            return session

        job.target.open_writes = opened


def intents(root: Path) -> int:
    """How many batches were written ahead and never recorded."""
    with StateStore.open(url(root), ledger_key=TEST_LEDGER_KEY) as store:
        return len(store.outstanding(child.JOB)) + store.adopt_intents(child.JOB)


@pytest.mark.parametrize("scenario", ["first", "second"])
def test_a_run_killed_before_its_commit_converges(
    reference: dict[str, Any], root: Path, scenario: str
) -> None:
    """Many batches written ahead, the target file untouched, nothing recorded: the rerun
    decides them all again and ends as the uninterrupted run."""
    _, expected = reference[scenario]
    network(root)
    if scenario == "second":
        finish(root)
        change_source(root)
    before = outcome(root) if scenario == "second" else None
    doomed = lambda: child.run(root, url(root), BATCH, KillBeforeCommit(0))  # noqa: E731
    assert crash.killed_in_fork(doomed)
    if before is None:
        assert not (root / "out.csv").exists()
    else:
        with StateStore.open(url(root), ledger_key=TEST_LEDGER_KEY) as store:
            assert len(list(store.ledger_entries(job=child.JOB))) == len(before["ledger"])
    assert intents(root) > 3  # several batches were written ahead
    finish(root)
    assert outcome(root) == expected
