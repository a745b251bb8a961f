"""What a real Nextcloud 34.0.1 answered and Radicale/Xandikos do not: sabre/dav's 412 body,
a silent share with a group that does not exist, the address-book limits; and the writes that
must cost nothing when nothing changed. Radicale runs behind the :mod:`sabre_proxy` front."""

from __future__ import annotations

from urllib.parse import quote, unquote, urlsplit

import pytest
import requests
from connector_nextcloud import NextcloudAdapter, NextcloudSettings
from connector_nextcloud.testing import CountingSession, DavServer, book_cards
from connector_nextcloud.testing.sabre_proxy import SabreProxy

from connector_core.adapters import Change
from connector_core.errors import AdapterError

RECORD = {"id": "p1", "first_name": "Ana", "last_name": "Lima", "email": "ana@example.org"}


def _adapter(
    url: str, session: requests.Session | None = None, **settings: object
) -> NextcloudAdapter:
    return NextcloudAdapter(
        NextcloudSettings(address_book_url=url, **settings),  # type: ignore[arg-type]
        connection="book",
        session=session,
    )


def _actions(adapter: NextcloudAdapter, changes: list[Change]) -> list[str]:
    return [r.action for r in adapter.write(changes)]


def test_the_front_answers_412_with_sabres_body(sabre_book: str) -> None:
    url = sabre_book + "x.vcf"
    card = "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:x\r\nFN:X\r\nEND:VCARD\r\n"
    assert requests.put(url, data=card, headers={"If-None-Match": "*"}).status_code == 201
    stale = requests.put(url, data=card, headers={"If-Match": '"stale"'})
    assert stale.status_code == 412
    assert b"<s:exception>Sabre\\DAV\\Exception\\PreconditionFailed</s:exception>" in stale.content
    assert b"<s:header>If-Match</s:header>" in stale.content
    assert b"none of the specified ETags matched" in stale.content


def test_a_412_with_sabres_body_is_read_again_and_decided_again(sabre_book: str) -> None:
    session = CountingSession()
    adapter = _adapter(sabre_book, session)
    assert _actions(adapter, [Change.upsert("p1", RECORD)]) == ["created"]
    url = sabre_book + "p1.vcf"
    edited = requests.get(url).text.replace("END:VCARD", "NOTE:added by a person\r\nEND:VCARD")

    def edit_first(method: str) -> None:  # another client saves the card just before our PUT
        if method == "PUT" and not session.hooked:
            session.hooked = True
            assert requests.put(url, data=edited.encode()).status_code in (200, 201, 204)

    session.before = edit_first
    session.calls.clear()
    changed = {**RECORD, "email": "after-conflict@example.org"}
    assert _actions(adapter, [Change.upsert("p1", changed)]) == ["updated"]
    assert session.calls == ["REPORT", "PUT", "REPORT", "PUT"]  # 412, read again, decide
    final = requests.get(url).text
    assert "after-conflict@example.org" in final
    assert "added by a person" in final


def test_a_create_that_meets_a_card_made_meanwhile_is_decided_again(sabre_book: str) -> None:
    session = CountingSession()
    adapter = _adapter(sabre_book, session)
    url = sabre_book + "p1.vcf"

    def create_first(method: str) -> None:  # an interrupted run's PUT lands just before ours
        if method == "PUT" and not session.hooked:
            session.hooked = True
            first = _adapter(sabre_book)
            assert _actions(first, [Change.upsert("p1", RECORD)]) == ["created"]

    session.before = create_first
    assert _actions(adapter, [Change.upsert("p1", RECORD)]) == ["unchanged"]
    assert session.calls == ["REPORT", "PUT", "REPORT"]  # If-None-Match 412, read, same
    assert "ana@example.org" in requests.get(url).text


@pytest.mark.parametrize(
    "mapping",
    [None, {"display_name": None}],
    ids=["display_name mapped, not shared", "display_name unmapped"],
)
def test_unchanged_cards_are_not_put_again(
    carddav_server: DavServer, mapping: dict[str, None] | None
) -> None:
    """A rerun after a crash or a state loss sends every upsert again: none may be PUT."""
    book = carddav_server.new_address_book()
    records = [
        RECORD,
        {"id": "p2", "first_name": "Bo", "phone": "+44 113 496 0456", "city": "York"},
        {"id": "p3", "email": "only@example.org", "groups": ["b", "a"]},
        {"id": "p4", "first_name": "Zoë", "display_name": "Zoë M.", "latitude": 53.8},
    ]
    changes = [Change.upsert(str(r["id"]), r) for r in records]
    first = NextcloudAdapter(
        NextcloudSettings(address_book_url=book), mapping=mapping, connection="book"
    )
    assert _actions(first, changes) == ["created"] * 4
    session = CountingSession()
    again = NextcloudAdapter(
        NextcloudSettings(address_book_url=book),
        mapping=mapping,
        connection="book",
        session=session,
    )
    assert _actions(again, changes) == ["unchanged"] * 4
    assert "PUT" not in session.calls


# -- sharing with a group -------------------------------------------------------------------------


def test_a_share_with_a_group_that_does_not_exist_fails_and_writes_nothing(
    sabre: SabreProxy, sabre_book: str
) -> None:
    adapter = _adapter(sabre_book, share_with_group="no-such-group")
    with pytest.raises(AdapterError) as caught:
        list(adapter.write([Change.upsert("p1", RECORD)]))
    assert "no-such-group" in str(caught.value)
    assert "not shared" in str(caught.value)
    assert "occ group:list" in (caught.value.hint or "")
    assert book_cards(sabre_book) == {}  # nothing was written to a book nobody can see
    assert sabre.shares[_path(sabre_book)] == {}


def test_a_share_with_an_existing_group_is_made_once_and_verified(
    sabre: SabreProxy, sabre_book: str
) -> None:
    adapter = _adapter(sabre_book, share_with_group="organizers")
    assert _actions(adapter, [Change.upsert("p1", RECORD)]) == ["created"]
    assert sabre.shares[_path(sabre_book)] == {"organizers": False}  # read-only
    posts = [r for r in sabre.requests if r[0] == "POST"]
    again = _adapter(sabre_book, share_with_group="organizers")
    assert _actions(again, [Change.upsert("p1", RECORD)]) == ["unchanged"]
    assert [r for r in sabre.requests if r[0] == "POST"] == posts  # already shared: no POST


# -- doctor changes nothing -----------------------------------------------------------------------


def test_check_is_read_only_and_says_what_a_run_would_do(
    sabre: SabreProxy, radicale_server: DavServer
) -> None:
    book = sabre.url(f"{radicale_server.home_url}not-yet-{id(sabre)}/")
    adapter = _adapter(book, create_book=True, share_with_group="organizers")
    note = adapter.check()
    assert note is not None
    assert "does not exist yet: a run will create it" in note
    assert "a run will share the book read-only with group 'organizers'" in note
    assert {method for method, _ in sabre.requests} == {"PROPFIND"}
    assert requests.request("PROPFIND", book, headers={"Depth": "0"}).status_code == 404
    assert sabre.shares == {}
    list(adapter.write([Change.upsert("p1", RECORD)]))  # a run does it
    assert "shared with group 'organizers'" in (
        _adapter(book, share_with_group="organizers").check() or ""
    )


# -- the address-book limits ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limits", "status", "message"),
    [
        ({"max_books": 0}, 403, "AddressBook limit reached"),
        ({"max_creations": 0}, 429, "Too many addressbooks created"),
    ],
)
def test_the_address_book_limits_are_passed_on(
    radicale_server: DavServer, limits: dict[str, int], status: int, message: str
) -> None:
    with SabreProxy(radicale_server.base_url, **limits) as proxy:
        book = proxy.url(f"{radicale_server.home_url}limited-{status}/")
        adapter = _adapter(book, create_book=True)
        with pytest.raises(AdapterError) as caught:
            list(adapter.write([Change.upsert("p1", RECORD)]))
    assert f'HTTP {status} ("{message}")' in str(caught.value)
    assert "10 address books" in (caught.value.hint or "")
    assert "maximumAdressbooks" in (caught.value.hint or "")


def _path(url: str) -> str:
    return urlsplit(url).path


@pytest.mark.parametrize("name", ["team@example.org", "Bücher (2026)"])
def test_a_book_whose_path_sabre_encodes_its_own_way_is_written_and_emptied(
    sabre: SabreProxy, radicale_server: DavServer, name: str
) -> None:
    """Nextcloud's hrefs keep '@', ':', '(' and ')' raw and %-encode the rest in lowercase
    hex (sabre/http encodePath); a user id like an email, or a book name with spaces or
    accents, must still let a delete find its card: a withdrawal that left the card in the
    book would never be taken back."""
    book = sabre.url(radicale_server.new_address_book(name))
    path = urlsplit(book).path
    encoded = book.replace(path, quote(unquote(path), safe="/"))  # as our settings build it
    adapter = _adapter(encoded)
    assert _actions(adapter, [Change.upsert("p1", RECORD)]) == ["created"]
    assert _actions(adapter, [Change.upsert("p1", RECORD)]) == ["unchanged"]
    assert _actions(adapter, [Change.delete("p1")]) == ["deleted"]
    assert book_cards(book) == {}
    assert [r.id for page in adapter.read() for r in page.records] == []
