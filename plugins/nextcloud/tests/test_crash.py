"""A CSV -> CardDAV job SIGKILLed at any point and run again ends like an uninterrupted run.

On each real server, the job first mirrors a member list into a book that also holds a
personal card; then the list changes (people move, withdraw consent, leave, join) and the
second run is killed (SIGKILL, in a forked child) at an event: a source page read, a card
PUT or DELETE the server acknowledged but the state does not know of yet, a write batch
acknowledged, a state transaction. Run again to completion, the book (by canonical content),
the id map, the ledger and the cursor must equal those of an uninterrupted run, and the
personal card must be untouched.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from connector_csv import CsvAdapter
from connector_nextcloud import NextcloudAdapter
from connector_nextcloud.carddav import CardDavClient
from connector_nextcloud.testing import DavServer, book_cards
from connector_nextcloud.vcard import CardFormat, parse_card

from connector_core.config import load_config
from connector_core.masks import MaskContext
from connector_core.sync.job import LoadedJob, load_job
from connector_core.sync.runner import RunResult
from connector_core.sync.state import StateStore
from connector_core.testing import TEST_LEDGER_KEY, crash

JOB = "north"
BOOK = "crash-book"
PEOPLE, BATCH = 16, 4
PERSONAL = (
    "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:friend\r\nFN:Personal Friend\r\n"
    "N:Friend;Personal;;;\r\nEND:VCARD\r\n"
)

CONFIG = """\
version: 1
network: {name: Crash test network, key_secret: {env: CONNECTOR_TEST_KEY_SECRET}}
consent:
  purposes:
    local_organizing: {description: Local organizers may contact me}
connections:
  crm:
    adapter: csv
    settings: {path: crm.csv, page_size: 6}
    mapping: {consent.local_organizing: local_ok}
  out:
    adapter: nextcloud
    settings: {address_book_url: "%(book)s"}
jobs:
  north: {source: crm, target: out, policy: north.yaml}
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
  email: show
  phone: last4
"""

HEADER = ["id", "first_name", "city", "email", "phone", "region", "local_ok"]


class KillSwitch(crash.KillSwitch):
    """The shared kill switch, plus an event after every card PUT and DELETE answered."""

    def install(self, job: LoadedJob, store: StateStore) -> None:
        """Count every event of a run of `job`, including each card written or deleted."""
        super().install(job, store)
        assert isinstance(job.target, NextcloudAdapter)
        client: CardDavClient = job.target.client
        client.put = self.after(client.put)  # type: ignore[method-assign]
        client.delete = self.after(client.delete)  # type: ignore[method-assign]


def person(n: int, version: int) -> list[str]:
    """Row n of the member list; in version 1 some move in or out of the North, some
    withdraw consent, some move to another city."""
    region = "North" if n % 3 else "South"
    consent = "no" if n % 7 == 0 else "yes"
    city = f"City {n % 5}"
    if version:
        region = {0: "North", 1: "South"}.get(n % 6, region)
        consent = "no" if n % 7 == 3 else consent
        city = f"New {city}" if n % 4 == 2 else city
    return [
        f"M{n:03d}",
        f"Name{n}",
        city,
        f"m{n}@example.org",
        f"+44 113 496 {n:04d}",
        region,
        consent,
    ]


def write_members(root: Path, version: int) -> None:
    """Version 0: members 0..15; version 1: the first two left, three joined, others changed."""
    numbers = range(PEOPLE) if version == 0 else range(2, PEOPLE + 3)
    rows = [person(n, version) for n in numbers]
    with (root / "crm.csv").open("w", encoding="utf-8", newline="") as out:
        csv.writer(out).writerows([HEADER, *rows])


def network(root: Path, server: DavServer) -> str:
    """A fresh network folder and a fresh book, always at the same places (both are part of
    the job's fingerprint), with a personal card in the book; returns the book's URL."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    book = f"{server.home_url}{BOOK}/"
    requests.delete(book, timeout=10)
    assert server.new_address_book(BOOK) == book
    assert requests.put(book + "friend.vcf", data=PERSONAL, timeout=10).status_code == 201
    (root / "connector.yaml").write_text(CONFIG % {"book": book}, encoding="utf-8")
    (root / "north.yaml").write_text(POLICY, encoding="utf-8")
    write_members(root, 0)
    return book


def url(root: Path) -> str:
    return f"sqlite:///{root / 'state.db'}"


def run(root: Path, switch: KillSwitch | None = None) -> RunResult:
    """One run of the job; with a `switch`, every event goes through it."""
    config = load_config(
        root / "connector.yaml", {"csv": CsvAdapter, "nextcloud": NextcloudAdapter}
    )
    job = load_job(config, JOB, context=MaskContext.with_key(b"crash-test-key"))
    return crash.run_with_switch(job, url(root), switch, batch_size=BATCH)


def finish(root: Path) -> RunResult:
    result = run(root)
    assert result.aborted is None
    assert result.counts.failed == 0
    return result


def book_contents(book: str) -> dict[str, Any]:
    """Every card in the book by name: its canonical record and whether it is ours."""
    out: dict[str, Any] = {}
    for name, data in book_cards(book).items():
        parsed = parse_card(data, CardFormat(), card_id=name)
        out[name] = (parsed.record, parsed.ours)
    return out


def outcome(root: Path, book: str) -> dict[str, Any]:
    """Everything an interruption must not change: the book, id map, ledger and cursor."""
    cards = book_contents(book)
    with StateStore.open(url(root), ledger_key=TEST_LEDGER_KEY) as store:
        mapped = store.mapped(JOB, list(store.source_ids(JOB)))
        entries = list(store.ledger_entries(job=JOB))
        assert store.verify_ledger().ok
        state = store.job_state(JOB)
    id_map = sorted(
        (m.source_id, m.target_key, m.projection_hash, json.dumps(m.fields), m.policy_hash)
        for m in mapped.values()
    )
    ours = sorted(name for name, (_record, is_ours) in cards.items() if is_ours)
    assert ours == sorted(row[1] for row in id_map), "orphaned or lost cards"
    ledger = sorted(
        (e.action, e.source_id, e.record_key, json.dumps(e.fields), e.reason) for e in entries
    )
    creates = [entry[2] for entry in ledger if entry[0] == "create"]
    assert len(creates) == len(set(creates)), "a card was created twice"
    return {"book": cards, "id_map": id_map, "ledger": ledger, "cursor": state.cursor}


def the_day_after(root: Path, server: DavServer) -> str:
    """A fresh network after its first run, with the member list changed; the book's URL."""
    book = network(root, server)
    finish(root)
    write_members(root, 1)
    return book


def test_a_run_killed_anywhere_converges(carddav_server: DavServer, tmp_path: Path) -> None:
    root = tmp_path / "net"
    book = the_day_after(root, carddav_server)
    switch = KillSwitch(0)
    second = run(root, switch)
    counts = second.counts
    assert all(n > 0 for n in (counts.created, counts.updated, counts.deleted)), counts
    expected = outcome(root, book)
    assert expected["book"]["friend"][1] is False
    events = switch.events
    assert events > counts.created + counts.updated + counts.deleted  # every write is an event

    for kill_at in sorted({1, 2, events // 3, events // 2, 2 * events // 3, events - 1, events}):
        book = the_day_after(root, carddav_server)
        doomed = KillSwitch(kill_at)
        assert crash.killed_in_fork(lambda: run(root, doomed)), f"no event {kill_at}"  # noqa: B023
        finish(root)
        assert outcome(root, book) == expected, f"killed at event {kill_at} of {events}"
        after = finish(root).counts
        assert (after.read, after.created, after.updated, after.deleted) == (0, 0, 0, 0)
