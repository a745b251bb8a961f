"""Errors: 401 never retried (with a hint), missing books explained, RFC 6578 paging (507)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from connector_nextcloud import NextcloudAdapter, NextcloudSettings
from connector_nextcloud.testing import CountingSession, DavServer, run_server
from connector_nextcloud.testing.servers import USER

from connector_core.adapters import Change
from connector_core.credentials import SecretRef, StaticSecrets
from connector_core.errors import AdapterError, AuthenticationFailed
from connector_core.testing import sample_records

PASSWORD = "right-app-password"


@pytest.fixture(scope="module")
def locked_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DavServer]:
    with run_server("radicale", tmp_path_factory.mktemp("auth"), password=PASSWORD) as server:
        yield server


def _adapter(book: str, password: str, session: CountingSession) -> NextcloudAdapter:
    settings = NextcloudSettings(
        address_book_url=book, user=USER, app_password=SecretRef(secret="app_password")
    )
    secrets = StaticSecrets({"app_password": password})
    return NextcloudAdapter(settings, secrets, session=session)


def test_a_refused_password_is_fatal_and_not_retried(locked_server: DavServer) -> None:
    book = locked_server.new_address_book()
    session = CountingSession()
    adapter = _adapter(book, "wrong-password", session)
    session.auth = (USER, "wrong-password")
    with pytest.raises(AuthenticationFailed) as caught:
        list(adapter.read())
    assert "app password" in (caught.value.hint or "")
    assert session.calls == ["REPORT"]  # one attempt: a 401 is never retried


def test_the_right_app_password_works(locked_server: DavServer) -> None:
    book = locked_server.new_address_book()
    adapter = NextcloudAdapter(
        NextcloudSettings(
            address_book_url=book, user=USER, app_password=SecretRef(secret="app_password")
        ),
        StaticSecrets({"app_password": PASSWORD}),
    )
    [record] = sample_records(1)
    assert [r.action for r in adapter.write([Change.upsert("k1", record)])] == ["created"]
    assert [r["id"] for p in adapter.read() for r in p.records] == ["k1"]


def test_a_missing_book_is_explained(carddav_server: DavServer) -> None:
    url = carddav_server.home_url + "no-such-book/"
    adapter = NextcloudAdapter(NextcloudSettings(address_book_url=url))
    with pytest.raises(AdapterError) as caught:
        adapter.check()
    assert "does not exist" in str(caught.value)
    assert "create_book" in (caught.value.hint or "")


def test_create_book_makes_it_with_extended_mkcol(carddav_server: DavServer) -> None:
    url = carddav_server.home_url + "made-by-us/"
    adapter = NextcloudAdapter(NextcloudSettings(address_book_url=url, create_book=True))
    adapter.check()
    [record] = sample_records(1)
    assert [r.action for r in adapter.write([Change.upsert("k1", record)])] == ["created"]


# -- paging as Nextcloud does it (neither Radicale nor Xandikos answers 507) -----------------

BOOK = "/remote.php/dav/addressbooks/users/u/b/"
CARD = "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:{n}\r\nFN:Person {n}\r\nN:;Person {n};;;\r\nEND:VCARD\r\n"


class PagingBook(BaseHTTPRequestHandler):
    """A sync-collection that pages by 2 with a 507 and intermediate tokens, like sabre/dav."""

    disable_nagle_algorithm = True  # no 40 ms stall between headers and body
    cards = 5
    tokens: list[str] = []

    def do_REPORT(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        if "addressbook-multiget" in body:
            hrefs = [h.split("</d:href>")[0] for h in body.split("<d:href>")[1:]]
            self._answer("".join(self._card(h) for h in hrefs), "")
            return
        token = body.split("<d:sync-token>")[1].split("</d:sync-token>")[0]
        self.tokens.append(token)
        start = int(token.rsplit("/", 1)[1]) if token else 0
        end = min(start + 2, self.cards)
        members = "".join(self._etag(n) for n in range(start, end))
        if end < self.cards:
            members += (
                f"<d:response><d:href>{BOOK}</d:href>"
                "<d:status>HTTP/1.1 507 Insufficient Storage</d:status></d:response>"
            )
        self._answer(members, f"<d:sync-token>http://sabre.io/ns/sync/{end}</d:sync-token>")

    def _etag(self, n: int) -> str:
        return (
            f'<d:response><d:href>{BOOK}c{n}.vcf</d:href><d:propstat><d:prop><d:getetag>"e{n}"'
            "</d:getetag></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>"
        )

    def _card(self, href: str) -> str:
        n = href.rsplit("c", 1)[1].removesuffix(".vcf")
        return (
            f'<d:response><d:href>{href}</d:href><d:propstat><d:prop><d:getetag>"e{n}"'
            f"</d:getetag><card:address-data>{CARD.format(n=n)}</card:address-data></d:prop>"
            "<d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>"
        )

    def _answer(self, inner: str, token: str) -> None:
        data = (
            '<?xml version="1.0"?><d:multistatus xmlns:d="DAV:" '
            f'xmlns:card="urn:ietf:params:xml:ns:carddav">{inner}{token}</d:multistatus>'
        ).encode()
        self.send_response(207)
        self.send_header("Content-Type", "application/xml; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output quiet."""


def test_paged_sync_collection_follows_507_and_intermediate_tokens(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), PagingBook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    PagingBook.tokens = []
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}{BOOK}"
        adapter = NextcloudAdapter(NextcloudSettings(address_book_url=url, sync_limit=2))
        pages = list(adapter.read())
    finally:
        server.shutdown()
        server.server_close()
    assert [r["id"] for p in pages for r in p.records] == [f"c{n}" for n in range(5)]
    assert PagingBook.tokens == ["", "http://sabre.io/ns/sync/2", "http://sabre.io/ns/sync/4"]
    assert [p.cursor for p in pages] == [f"http://sabre.io/ns/sync/{n}" for n in (2, 4, 5)]
    assert all(p.snapshot for p in pages)


# -- settings --------------------------------------------------------------------------------


def test_settings_build_the_nextcloud_book_url() -> None:
    settings = NextcloudSettings.model_validate(
        {"url": "https://cloud.example.org/", "user": "bot", "address_book": "north"}
    )
    assert settings.book_url == (
        "https://cloud.example.org/remote.php/dav/addressbooks/users/bot/north/"
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"url": "https://c.example.org", "user": "bot"}, "address_book_url"),
        (
            {"address_book_url": "https://c.example.org/b/", "address_book": "b"},
            "not both",
        ),
        (
            {
                "url": "https://c.example.org",
                "user": "bot",
                "address_book": "z-server-generated--system",
            },
            "system address book",
        ),
    ],
    ids=["no-book", "both", "system-book"],
)
def test_settings_reject_unusable_locations(data: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NextcloudSettings.model_validate(data)
