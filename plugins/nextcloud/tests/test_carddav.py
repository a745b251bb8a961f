"""The adapter against real Radicale and Xandikos: sync tokens, batching, safe writes."""

from __future__ import annotations

import requests
from connector_nextcloud import NextcloudAdapter, NextcloudSettings
from connector_nextcloud.testing import CountingSession

from connector_core.adapters import Change, Page
from connector_core.testing import sample_records

PERSONAL = (
    "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:{uid}\r\nFN:Personal Friend\r\n"
    "N:Friend;Personal;;;\r\nEMAIL:friend@example.org\r\nEND:VCARD\r\n"
)


def _pages(adapter: NextcloudAdapter, cursor: str | None = None) -> list[Page]:
    return list(adapter.read(cursor=cursor))


def _write(adapter: NextcloudAdapter, changes: list[Change]) -> list[str]:
    return [r.action for r in adapter.write(changes)]


def _put_raw(url: str, text: str) -> requests.Response:
    return requests.put(url, data=text.encode(), headers={"Content-Type": "text/vcard"})


def test_incremental_read_sees_changes_and_deletions(adapter: NextcloudAdapter) -> None:
    samples = sample_records(4)
    _write(adapter, [Change.upsert(r["id"], r) for r in samples])
    pages = _pages(adapter)
    assert all(p.snapshot for p in pages)
    cursor = pages[-1].cursor
    changed = {**samples[1], "email": "new@example.org"}
    changes = [Change.upsert(changed["id"], changed), Change.delete("sample-0002")]
    assert _write(adapter, changes) == ["updated", "deleted"]
    records = [r for p in _pages(adapter, cursor) for r in p.records]
    by_id = {r["id"]: r for r in records}
    assert by_id["sample-0001"]["email"] == "new@example.org"
    assert by_id["sample-0002"] == {"id": "sample-0002", "deleted": True}
    assert set(by_id) == {"sample-0001", "sample-0002"}
    assert not any(p.snapshot for p in _pages(adapter, cursor))


def test_rejected_token_falls_back_to_a_full_listing(adapter: NextcloudAdapter) -> None:
    _write(adapter, [Change.upsert(r["id"], r) for r in sample_records(3)])
    pages = _pages(adapter, "http://example.invalid/not-a-token")
    assert {r["id"] for p in pages for r in p.records} == {f"sample-000{i}" for i in range(3)}
    assert all(p.snapshot for p in pages)
    assert pages[-1].cursor not in (None, "http://example.invalid/not-a-token")


def test_card_data_comes_in_multiget_batches(
    adapter: NextcloudAdapter, session: CountingSession
) -> None:
    _write(adapter, [Change.upsert(r["id"], r) for r in sample_records(25)])
    session.calls.clear()
    pages = _pages(adapter)
    assert sum(len(p.records) for p in pages) == 25
    assert [len(p.records) for p in pages] == [10, 10, 5]
    # one sync-collection and one multiget per page; never one GET per card
    assert session.calls == ["REPORT"] * 4


def test_unchanged_source_costs_two_requests_at_most(
    adapter: NextcloudAdapter, session: CountingSession
) -> None:
    samples = sample_records(5)
    _write(adapter, [Change.upsert(r["id"], r) for r in samples])
    cursor = _pages(adapter)[-1].cursor
    session.calls.clear()
    assert [r for p in _pages(adapter, cursor) for r in p.records] == []
    assert _write(adapter, [Change.upsert(r["id"], r) for r in samples]) == ["unchanged"] * 5
    assert "PUT" not in session.calls
    assert len(session.calls) <= 2


def test_someone_elses_edit_between_read_and_write_is_not_lost(
    adapter: NextcloudAdapter, session: CountingSession
) -> None:
    [record] = sample_records(1)
    _write(adapter, [Change.upsert(record["id"], record)])
    url = adapter.client.href_url(f"{record['id']}.vcf")
    original = requests.get(url).text
    edited = original.replace("FN:", "NOTE:added by a person\r\nFN:", 1)

    def edit_first(method: str) -> None:  # a person saves the card just before our PUT
        if method == "PUT" and not session.hooked:
            session.hooked = True
            assert _put_raw(url, edited).status_code in (200, 201, 204)

    session.before = edit_first
    session.calls.clear()
    changed = {**record, "email": "after-conflict@example.org"}
    assert _write(adapter, [Change.upsert(record["id"], changed)]) == ["updated"]
    # multiget, PUT → 412, multiget of that card, PUT → updated
    assert session.calls == ["REPORT", "PUT", "REPORT", "PUT"]
    final = requests.get(url).text
    assert "after-conflict@example.org" in final
    assert "added by a person" in final  # their note, which we do not manage, is kept


def test_personal_cards_are_never_touched(adapter: NextcloudAdapter) -> None:
    book = adapter.settings.book_url
    assert _put_raw(book + "friend.vcf", PERSONAL.format(uid="friend")).status_code == 201
    assert _put_raw(book + "mine-0.vcf", PERSONAL.format(uid="mine-0")).status_code == 201
    [record] = sample_records(1)
    results = list(adapter.write([Change.upsert("mine-0", record), Change.delete("mine-0")]))
    assert [r.action for r in results] == ["failed", "failed"]
    assert "left untouched" in (results[0].error or "")
    assert "Personal Friend" in requests.get(book + "mine-0.vcf").text
    ids = {r["id"] for p in _pages(adapter) for r in p.records}
    assert ids == {"friend", "mine-0"}  # as a source, every card of the book is read


def test_concurrent_writes(book_url: str) -> None:
    adapter = NextcloudAdapter(
        NextcloudSettings(address_book_url=book_url, page_size=50, concurrency=4)
    )
    samples = sample_records(30)
    assert _write(adapter, [Change.upsert(r["id"], r) for r in samples]) == ["created"] * 30
    assert len([r for p in _pages(adapter) for r in p.records]) == 30
