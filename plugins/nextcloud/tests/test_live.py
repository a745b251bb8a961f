"""The adapter's end-to-end checks against a real Nextcloud (marker ``live``; never in CI).

Skipped unless these environment variables point at a server, and deselected by the default
``-m "not live and not slow"``; run with ``-m live``::

    CONNECTOR_LIVE_NEXTCLOUD_URL=http://127.0.0.1:8282       # the server's base URL
    CONNECTOR_LIVE_NEXTCLOUD_USER=connector-bot              # a user of its own (a test account)
    CONNECTOR_LIVE_NEXTCLOUD_PASSWORD=...                    # an app password of that user
    CONNECTOR_LIVE_NEXTCLOUD_GROUP=organizers-north          # an existing group (share checks)

The suite creates two address books (``cc-live-…``) and one folder, and deletes them at the
end; the server's default limits allow 10 books per user and 10 creations per hour.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from connector_csv import CsvAdapter
from connector_nextcloud import NextcloudAdapter, NextcloudSettings
from connector_nextcloud.carddav import CardDavClient
from connector_nextcloud.files import FilesSettings, NextcloudFilesAdapter
from connector_nextcloud.testing import CountingSession

from connector_core.adapters import Change
from connector_core.config import load_config
from connector_core.credentials import SecretRef, StaticSecrets
from connector_core.errors import AdapterError
from connector_core.masks import MaskContext
from connector_core.sync.job import load_job
from connector_core.sync.keys import target_key
from connector_core.sync.runner import RunResult, run_job
from connector_core.sync.state import StateStore
from connector_core.testing import TEST_LEDGER_KEY

URL = os.environ.get("CONNECTOR_LIVE_NEXTCLOUD_URL", "").rstrip("/")
USER = os.environ.get("CONNECTOR_LIVE_NEXTCLOUD_USER", "")
PASSWORD = os.environ.get("CONNECTOR_LIVE_NEXTCLOUD_PASSWORD", "")
GROUP = os.environ.get("CONNECTOR_LIVE_NEXTCLOUD_GROUP", "")
RUN = uuid.uuid4().hex[:8]
NO_GROUP = f"cc-live-no-such-group-{RUN}"

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(
        not (URL and USER and PASSWORD),
        reason="set CONNECTOR_LIVE_NEXTCLOUD_URL, _USER and _PASSWORD to run against a server",
    ),
]
needs_group = pytest.mark.skipif(not GROUP, reason="set CONNECTOR_LIVE_NEXTCLOUD_GROUP")

RECORD = {"id": "p1", "first_name": "Ana", "last_name": "Lima", "email": "ana@example.org"}


def settings(book: str, **extra: Any) -> NextcloudSettings:
    return NextcloudSettings(
        url=URL,
        user=USER,
        app_password=SecretRef(secret="app_password"),
        address_book=book,
        **extra,
    )


def adapter(book: str, session: requests.Session | None = None, **extra: Any) -> NextcloudAdapter:
    return NextcloudAdapter(
        settings(book, **extra),
        StaticSecrets({"app_password": PASSWORD}),
        connection="live",
        session=session,
    )


def authed() -> CountingSession:
    session = CountingSession()
    session.auth = (USER, PASSWORD)
    return session


def actions(target: NextcloudAdapter, changes: list[Change]) -> list[str]:
    return [r.action for r in target.write(changes)]


def book_url(book: str) -> str:
    return f"{URL}/remote.php/dav/addressbooks/users/{USER}/{book}/"


def cards(book: str) -> dict[str, str]:
    with requests.Session() as session:
        session.auth = (USER, PASSWORD)
        client = CardDavClient(session, book_url(book), "live", 30)
        members = client.sync_collection(None, None).members
        found = client.multiget([m.href for m in members if not m.deleted])
    return {client.name_of(c.href).removesuffix(".vcf"): c.data for c in found}


def _delete_book(book: str) -> None:
    requests.delete(book_url(book), auth=(USER, PASSWORD), timeout=30)


@pytest.fixture(scope="module")
def book() -> Iterator[str]:
    """A new book for this run, made by the adapter's create_book (one creation)."""
    name = f"cc-live-{RUN}"
    assert actions(adapter(name, create_book=True), []) == []
    yield name
    _delete_book(name)


# -- CardDAV against the real server -------------------------------------------------------------


def test_check_changes_nothing_and_says_what_a_run_would_do() -> None:
    name = f"cc-live-never-{RUN}"
    note = adapter(name, create_book=True, share_with_group=GROUP or None).check()
    assert note is not None
    assert "does not exist yet: a run will create it" in note
    response = requests.request("PROPFIND", book_url(name), auth=(USER, PASSWORD), timeout=30)
    assert response.status_code == 404  # doctor created nothing


def test_check_names_a_group_that_does_not_exist(book: str) -> None:
    with pytest.raises(AdapterError, match="which does not exist"):
        adapter(book, share_with_group=NO_GROUP).check()


def test_a_stale_if_match_is_read_again_and_decided_again(book: str) -> None:
    session = authed()
    target = adapter(book, session)
    record = {**RECORD, "id": "conflict"}
    assert actions(target, [Change.upsert("conflict", record)]) == ["created"]
    url = book_url(book) + "conflict.vcf"
    edited = requests.get(url, auth=(USER, PASSWORD), timeout=30).text
    edited = edited.replace("END:VCARD", "NOTE:added by a person\r\nEND:VCARD")

    def edit_first(method: str) -> None:  # another client saves the card just before our PUT
        if method == "PUT" and not session.hooked:
            session.hooked = True
            put = requests.put(url, data=edited.encode(), auth=(USER, PASSWORD), timeout=30)
            assert put.status_code in (200, 201, 204)

    session.before = edit_first
    session.calls.clear()
    changed = {**record, "email": "after-conflict@example.org"}
    assert actions(target, [Change.upsert("conflict", changed)]) == ["updated"]
    assert session.calls == ["REPORT", "PUT", "REPORT", "PUT"]  # 412 from sabre, re-read
    final = cards(book)["conflict"]
    assert "after-conflict@example.org" in final
    assert "added by a person" in final


def test_unchanged_cards_are_not_put_again(book: str) -> None:
    records = [
        {"id": "same-1", "first_name": "Zoë", "last_name": "Müller", "city": "Köln"},
        {"id": "same-2", "email": "only@example.org", "phone": "********0123"},
        {"id": "same-3", "first_name": "Luc", "display_name": "Luc V.", "latitude": 50.93},
    ]
    changes = [Change.upsert(str(r["id"]), r) for r in records]
    assert actions(adapter(book), changes) == ["created"] * 3
    session = authed()
    assert actions(adapter(book, session), changes) == ["unchanged"] * 3
    assert "PUT" not in session.calls


def test_a_share_with_a_group_that_does_not_exist_fails_and_writes_nothing(book: str) -> None:
    target = adapter(book, share_with_group=NO_GROUP)
    with pytest.raises(AdapterError, match="not shared with it"):
        actions(target, [Change.upsert("never", {**RECORD, "id": "never"})])
    assert "never" not in cards(book)


@needs_group
def test_the_book_is_shared_with_the_group_and_the_share_verified(book: str) -> None:
    target = adapter(book, share_with_group=GROUP)
    assert actions(target, [Change.upsert("shared", {**RECORD, "id": "shared"})]) == ["created"]
    assert target.client.shared_groups() == {GROUP: "read"}
    assert adapter(book, share_with_group=GROUP).check() == f"shared with group {GROUP!r}"


# -- whole jobs -----------------------------------------------------------------------------------

POLICY = """\
policy: north
rules:
  - allow: in the North
    when: {region: North}
fields:
  first_name: show
  email: show
  phone: last4
"""
CSV_SOURCE = """\
id,first_name,email,phone,region
p1,Ana,ana@example.org,tel:+44-113-496-0123,North
p2,Bruno,bruno@example.org,+44 113 496 0456,North
p3,Chloé,chloe@example.org,+44 113 496 0789,South
"""


class Network:
    """connector.yaml with the job `north` from `source` to `target` in `root`."""

    def __init__(self, root: Path, source: dict[str, Any], target: dict[str, Any]) -> None:
        self.root = root
        connections = {"source": source, "target": target}
        config = {
            "version": 1,
            "network": {"name": "Live"},
            "connections": connections,
            "jobs": {"north": {"source": "source", "target": "target", "policy": "north.yaml"}},
        }
        (root / "connector.yaml").write_text(json.dumps(config), encoding="utf-8")
        (root / "north.yaml").write_text(POLICY, encoding="utf-8")
        self.store = StateStore.open(f"sqlite:///{root / 'state.db'}", ledger_key=TEST_LEDGER_KEY)

    def run(self, *, reconcile: bool | None = None) -> RunResult:
        config = load_config(
            self.root / "connector.yaml", {"csv": CsvAdapter, "nextcloud": NextcloudAdapter}
        )
        job = load_job(config, "north", context=MaskContext.with_key(b"live"))
        try:
            return run_job(job, self.store, reconcile=reconcile)
        finally:
            job.close()

    def key(self, source_id: str) -> str:
        return target_key("north", source_id, self.store.key_secret())


def _cloud(book: str) -> dict[str, Any]:
    return {
        "adapter": "nextcloud",
        "settings": {
            "url": URL,
            "user": USER,
            "app_password": {"env": "CONNECTOR_LIVE_NEXTCLOUD_PASSWORD"},
            "address_book": book,
        },
    }


def test_a_job_masks_tel_uris_and_reconciling_restores_a_foreign_edit(
    tmp_path: Path, book: str
) -> None:
    (tmp_path / "crm.csv").write_text(CSV_SOURCE, encoding="utf-8")
    net = Network(tmp_path, {"adapter": "csv", "settings": {"path": "crm.csv"}}, _cloud(book))
    try:
        assert net.run().counts.created == 2
        url = book_url(book) + net.key("p1") + ".vcf"
        shared = cards(book)[net.key("p1")]
        assert "TEL:********0123" in shared  # the tel: scheme is not counted as digits
        lines = shared.replace("ana@example.org", "ana.private@example.com").split("\r\n")
        leaked = "\r\n".join("TEL:+44 113 496 0123" if x.startswith("TEL") else x for x in lines)
        put = requests.put(url, data=leaked.encode(), auth=(USER, PASSWORD), timeout=30)
        assert put.status_code in (200, 201, 204)
        result = net.run(reconcile=True)
        assert (result.counts.updated, result.counts.unchanged) == (1, 1)
        restored = cards(book)[net.key("p1")]
        assert "ana@example.org" in restored
        assert "private" not in restored
        assert "496 0123" not in restored
        again = net.run(reconcile=True)
        assert (again.counts.updated, again.counts.unchanged) == (0, 2)  # nothing PUT
    finally:
        net.store.close()


def test_a_card_deleted_at_a_nextcloud_source_is_no_withdrawal(tmp_path: Path) -> None:
    name = f"cc-live-src-{RUN}"
    source = adapter(name, create_book=True)
    north = {"region": "North", "email": "x@example.org"}
    people = ["ana", "bea", "cid"]
    try:
        changes = [Change.upsert(p, {"id": p, "first_name": p, **north}) for p in people]
        assert actions(source, changes) == ["created"] * 3
        (tmp_path / "out.csv").touch()
        out = {"adapter": "csv", "settings": {"path": "out.csv"}}
        net = Network(tmp_path, _cloud(name), out)
        try:
            assert net.run().counts.created == 3
            assert actions(source, [Change.delete("ana")]) == ["deleted"]
            assert net.run().counts.deleted == 1
            entries = [e for e in net.store.ledger_entries() if e.action == "delete"]
            assert [(e.source_id, e.reason, e.consent_basis) for e in entries] == [
                ("ana", "deleted-at-source", {})
            ]
        finally:
            net.store.close()
    finally:
        _delete_book(name)


# -- file exports ---------------------------------------------------------------------------------


def _files(folder: str, group: str) -> NextcloudFilesAdapter:
    return NextcloudFilesAdapter(
        FilesSettings(
            url=URL,
            user=USER,
            app_password=SecretRef(secret="app_password"),
            folder=folder,
            share_with_group=group,
        ),
        StaticSecrets({"app_password": PASSWORD}),
    )


def test_a_file_export_whose_share_fails_uploads_nothing() -> None:
    folder = f"cc-live-{RUN}"
    files_url = f"{URL}/remote.php/dav/files/{USER}/{folder}/"
    try:
        with _files(folder, NO_GROUP) as export, pytest.raises(AdapterError, match="valid group"):
            list(export.write([Change.upsert("p1", RECORD)]))
        file = requests.get(files_url + "contacts.csv", auth=(USER, PASSWORD), timeout=30)
        assert file.status_code == 404
        if GROUP:
            with _files(folder, GROUP) as export:
                assert [r.action for r in export.write([Change.upsert("p1", RECORD)])] == [
                    "created"
                ]
            file = requests.get(files_url + "contacts.csv", auth=(USER, PASSWORD), timeout=30)
            assert "ana@example.org" in file.text
    finally:
        requests.delete(files_url, auth=(USER, PASSWORD), timeout=30)
