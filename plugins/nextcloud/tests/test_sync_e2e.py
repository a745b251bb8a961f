"""Jobs through connector_core.sync: CSV → CardDAV and CardDAV → CSV on real servers."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from connector_csv import CsvAdapter
from connector_nextcloud import NextcloudAdapter
from connector_nextcloud.carddav import CardDavClient
from connector_nextcloud.testing import book_cards

from connector_core.config import load_config
from connector_core.masks import MaskContext
from connector_core.sync.job import load_job
from connector_core.sync.keys import target_key
from connector_core.sync.runner import RunResult, run_job
from connector_core.sync.state import StateStore
from connector_core.testing import TEST_LEDGER_KEY

ADAPTERS = {"csv": CsvAdapter, "nextcloud": NextcloudAdapter}

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

CONFIG = """\
version: 1
network: {name: Test network}
consent:
  purposes:
    local_organizing: {description: Local organizers may contact me}
connections:
  crm: %(crm)s
  out: %(out)s
jobs:
  north: {source: crm, target: out, policy: north.yaml}
"""

CSV_SOURCE = """\
id,first_name,city,email,phone,region,local_ok
p1,Ana,Leeds,ana@example.org,+44 113 496 0123,North,yes
p2,Bruno,York,bruno@example.org,+44 113 496 0456,North,yes
p3,Chloé,Bath,chloe@example.org,+44 113 496 0789,South,yes
"""

PERSONAL = (
    "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:friend\r\nFN:Personal Friend\r\n"
    "N:Friend;Personal;;;\r\nEND:VCARD\r\n"
)


def _card(uid: str, name: str, region: str, consent: str) -> str:
    return (
        f"BEGIN:VCARD\r\nVERSION:4.0\r\nUID:{uid}\r\nFN:{name}\r\nN:;{name};;;\r\n"
        f"EMAIL:{uid}@example.org\r\nADR:;;;Leeds;{region};;GB\r\n"
        f"X-COMMONS-CONSENT:local_organizing={consent}\r\nEND:VCARD\r\n"
    )


class Network:
    """A connector.yaml in `root` with the job `north` from `crm` to `out`."""

    def __init__(self, root: Path, crm: dict[str, Any], out: dict[str, Any]) -> None:
        self.root = root
        text = CONFIG % {"crm": json.dumps(crm), "out": json.dumps(out)}
        (root / "connector.yaml").write_text(text, encoding="utf-8")
        (root / "north.yaml").write_text(POLICY, encoding="utf-8")

    def run(self, store: StateStore, *, reconcile: bool | None = None) -> RunResult:
        config = load_config(self.root / "connector.yaml", ADAPTERS)
        job = load_job(config, "north", context=MaskContext.with_key(b"key"))
        try:
            return run_job(job, store, reconcile=reconcile)
        finally:
            job.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    opened = StateStore.open(f"sqlite:///{tmp_path / 'state.db'}", ledger_key=TEST_LEDGER_KEY)
    yield opened
    opened.close()


def _csv(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "crm.csv").write_text(CSV_SOURCE, encoding="utf-8")
    return {
        "adapter": "csv",
        "settings": {"path": "crm.csv"},
        "mapping": {"consent.local_organizing": "local_ok"},
    }


def _book(book_url: str) -> dict[str, Any]:
    return {"adapter": "nextcloud", "settings": {"address_book_url": book_url}}


def key(store: StateStore, source_id: str) -> str:
    """The key the job `north` writes `source_id` under, with the store's own secret."""
    return target_key("north", source_id, store.key_secret())


def test_csv_to_carddav_mirrors_and_takes_back(
    tmp_path: Path, book_url: str, store: StateStore
) -> None:
    assert requests.put(book_url + "friend.vcf", data=PERSONAL).status_code == 201
    net = Network(tmp_path, _csv(tmp_path), _book(book_url))
    first = net.run(store)
    assert first.counts.created == 2
    cards = book_cards(book_url)
    assert set(cards) == {"friend", key(store, "p1"), key(store, "p2")}
    assert "ana@example.org" in cards[key(store, "p1")]
    # phone masked to its last 4 digits; the card's UID is its key, hex digits that may
    # hold "496" by chance (a CI run failed so), so the UID line is left out of the check
    lines = re.sub(r"\r?\n[ \t]", "", cards[key(store, "p1")]).splitlines()  # unfolded
    assert not [line for line in lines if "496" in line and not line.startswith("UID")]
    assert "TEL:********0123" in lines
    assert "X-COMMONS-CONNECTOR" in cards[key(store, "p1")]

    second = net.run(store)
    assert (second.counts.read, second.counts.created, second.counts.updated) == (0, 0, 0)

    source = CSV_SOURCE.replace("North,yes\np2", "North,no\np2")  # Ana withdraws consent
    (tmp_path / "crm.csv").write_text(source, encoding="utf-8")
    third = net.run(store)
    assert third.counts.deleted == 1
    assert set(book_cards(book_url)) == {"friend", key(store, "p2")}
    assert "Personal Friend" in book_cards(book_url)["friend"]


def test_a_crash_mid_write_converges_on_rerun(
    tmp_path: Path, book_url: str, store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = Network(tmp_path, _csv(tmp_path), _book(book_url))
    put = CardDavClient.put
    calls: list[str] = []

    def crash_on_second(self: CardDavClient, href: str, data: str, etag: str | None) -> Any:
        calls.append(href)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed mid-run")
        return put(self, href, data, etag)

    monkeypatch.setattr(CardDavClient, "put", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        net.run(store)
    monkeypatch.setattr(CardDavClient, "put", put)
    net.run(store)
    cards = book_cards(book_url)
    assert set(cards) == {key(store, "p1"), key(store, "p2")}  # no duplicate, no loss
    assert net.run(store).counts.created == 0


def test_someone_elses_edit_survives_our_update(
    tmp_path: Path, book_url: str, store: StateStore
) -> None:
    net = Network(tmp_path, _csv(tmp_path), _book(book_url))
    net.run(store)
    url = book_url + key(store, "p2") + ".vcf"
    edited = requests.get(url).text.replace("END:VCARD", "NOTE:met at the rally\r\nEND:VCARD")
    assert requests.put(url, data=edited.encode()).status_code in (200, 201, 204)
    source = CSV_SOURCE.replace("Bruno,York", "Bruno,Hull")
    (tmp_path / "crm.csv").write_text(source, encoding="utf-8")
    assert net.run(store).counts.updated == 1
    card = requests.get(url).text
    assert "Hull" in card
    assert "met at the rally" in card


def test_a_reconciling_run_puts_right_what_another_client_changed(
    tmp_path: Path, book_url: str, store: StateStore
) -> None:
    net = Network(tmp_path, _csv(tmp_path), _book(book_url))
    net.run(store)
    url = book_url + key(store, "p1") + ".vcf"
    lines = requests.get(url).text.replace("ana@example.org", "ana.private@example.com")
    assert "TEL:" in lines  # the masked phone: replaced with the full number
    leaked = "\r\n".join(
        "TEL:+44 113 496 0123" if line.startswith("TEL") else line for line in lines.split("\r\n")
    )
    leaked = leaked.replace("END:VCARD", "NOTE:met at the rally\r\nEND:VCARD")
    assert requests.put(url, data=leaked.encode()).status_code in (200, 201, 204)
    requests.delete(book_url + key(store, "p2") + ".vcf")  # and someone deleted a card

    assert net.run(store).counts.updated == 0  # an ordinary run reads no change at the source
    result = net.run(store, reconcile=True)
    assert (result.counts.updated, result.counts.created, result.counts.unchanged) == (1, 1, 0)
    card = requests.get(url).text
    assert "ana@example.org" in card
    assert "private" not in card
    assert "496 0123" not in card  # the full number is gone, the masked one is back
    assert "met at the rally" in card  # what the connector does not manage stays
    assert key(store, "p2") in book_cards(book_url)
    again = net.run(store, reconcile=True)  # nothing differs now: nothing is PUT
    assert (again.counts.updated, again.counts.created, again.counts.unchanged) == (0, 0, 2)


def test_carddav_to_csv_follows_the_book(tmp_path: Path, book_url: str, store: StateStore) -> None:
    for uid, name, region, consent in [
        ("ana", "Ana", "North", "yes"),
        ("bea", "Bea", "North", "no"),
        ("cid", "Cid", "South", "yes"),
    ]:
        requests.put(book_url + f"{uid}.vcf", data=_card(uid, name, region, consent).encode())
    out = {"adapter": "csv", "settings": {"path": "out.csv"}}
    (tmp_path / "out.csv").touch()
    net = Network(tmp_path, _book(book_url), out)
    assert net.run(store).counts.created == 1
    text = (tmp_path / "out.csv").read_text(encoding="utf-8")
    assert "ana@example.org" in text
    assert "bea" not in text

    requests.put(book_url + "bea.vcf", data=_card("bea", "Bea", "North", "yes").encode())
    requests.delete(book_url + "ana.vcf")
    result = net.run(store)
    assert not result.full  # an incremental sync-collection read
    assert (result.counts.created, result.counts.deleted) == (1, 1)
    text = (tmp_path / "out.csv").read_text(encoding="utf-8")
    assert "bea@example.org" in text
    assert "ana@example.org" not in text


def test_a_card_deleted_in_the_book_is_a_deletion_not_a_withdrawal(
    tmp_path: Path, book_url: str, store: StateStore
) -> None:
    for uid, name in [("ana", "Ana"), ("bea", "Bea"), ("cid", "Cid")]:
        requests.put(book_url + f"{uid}.vcf", data=_card(uid, name, "North", "yes").encode())
    out = {"adapter": "csv", "settings": {"path": "out.csv"}}
    (tmp_path / "out.csv").touch()
    net = Network(tmp_path, _book(book_url), out)
    assert net.run(store).counts.created == 3
    requests.delete(book_url + "ana.vcf")  # deleted, no consent answer given
    assert net.run(store).counts.deleted == 1
    requests.delete(book_url + "bea.vcf")
    assert net.run(store, reconcile=True).counts.deleted == 1  # found by a full listing
    taken = {e.source_id: e.reason for e in store.ledger_entries() if e.action == "delete"}
    assert taken == {"ana": "deleted-at-source", "bea": "missing-at-source"}
    basis = [e.consent_basis for e in store.ledger_entries() if e.action == "delete"]
    assert basis == [{}, {}]  # no consent answer is recorded for either
