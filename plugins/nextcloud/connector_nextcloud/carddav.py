"""A small CardDAV client: sync-collection, addressbook-multiget, conditional PUT and DELETE.

Every request goes through one session from :func:`connector_core.http.make_session` (retries
with backoff on 423/429/5xx and connection errors); HTTP statuses that mean something else are
returned to the adapter, which decides per card.
"""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Iterable, Sequence
from urllib.parse import quote, unquote, urljoin, urlsplit
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape

import requests

from connector_core.errors import AdapterError, AdapterUnavailable
from connector_core.http import raise_for_auth

DAV, CARD = "DAV:", "urn:ietf:params:xml:ns:carddav"
SABRE, OC = "http://sabredav.org/ns", "http://owncloud.org/ns"
_XML = {"Content-Type": "application/xml; charset=utf-8"}
AUTH_HINT = (
    "Create an app password in Nextcloud → Settings → Security → Devices & sessions and "
    "store it with `connector credentials set CONNECTION app_password`."
)


LIMITS_HINT = (
    "Nextcloud limits each account to 10 address books and 10 book creations per hour by "
    "default: wait an hour (the creation limit), delete an unused book, use an existing one "
    "(address_book), or ask the admin to raise them "
    "(occ config:app:set dav maximumAdressbooks / rateLimitAddressBookCreation)."
)


class InvalidSyncToken(Exception):
    """The server rejected our sync token (403/412 valid-sync-token): list everything."""


@dataclasses.dataclass(frozen=True, slots=True)
class Member:
    """One member of a sync-collection answer: a card's href and ETag, or a deletion."""

    href: str
    etag: str | None
    deleted: bool = False


@dataclasses.dataclass(slots=True)
class SyncAnswer:
    """One sync-collection response: changed members, the new token, more pages to come."""

    members: list[Member]
    token: str | None
    truncated: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Card:
    """A card's href (a path), ETag and vCard text, as addressbook-multiget returned it."""

    href: str
    etag: str | None
    data: str


def _q(tag: str, ns: str = DAV) -> str:
    return f"{{{ns}}}{tag}"


def _error_root(response: requests.Response) -> ET.Element | None:
    try:
        return ET.fromstring(response.content)
    except ET.ParseError:
        return None


def precondition(response: requests.Response) -> str | None:
    """The DAV or CardDAV precondition element named in an error body (``no-uid-conflict``).

    Only elements of the DAV: and CardDAV namespaces name preconditions: sabre/dav (Nextcloud)
    adds ``s:exception``/``s:message``/``s:header`` elements of its own, which do not.
    """
    root = _error_root(response)
    if root is None:
        return None
    for child in root:
        namespace, _, name = child.tag[1:].partition("}")
        if namespace in (DAV, CARD) and name != "responsedescription":
            return name
    return None


def server_message(response: requests.Response) -> str | None:
    """The human message of a sabre/dav (Nextcloud) error body, e.g. "AddressBook limit
    reached", shortened to one line; None for other bodies."""
    root = _error_root(response)
    if root is None:
        return None
    text = " ".join((root.findtext(f"{{{SABRE}}}message") or "").split())
    return text[:200] or None


def said(response: requests.Response) -> str:
    """``HTTP <status>`` and, when the server explained it, ``: "<message>"``."""
    message = server_message(response)
    return f"HTTP {response.status_code}" + (f' ("{message}")' if message else "")


def canonical_path(href: str) -> str:
    """The path of `href` (a path or a URL) in one encoding: every byte but ``/`` and the
    unreserved ones %-encoded in uppercase hex. Servers encode alike paths differently
    (sabre/dav keeps ``@``, ``:``, ``(``, ``)`` raw and writes lowercase hex; Python's
    ``quote`` does not), so hrefs are only ever compared in this form: a card looked up under
    another spelling of its path would look absent, and its delete a no-op."""
    return quote(unquote(urlsplit(href).path), safe="/")


class CardDavClient:
    """Requests against one address book collection."""

    def __init__(self, session: requests.Session, book_url: str, what: str, timeout: float) -> None:
        self.session = session
        self.book_url = book_url
        self.book_path = canonical_path(book_url)
        self.what = what
        self.timeout = timeout

    def request(self, method: str, url: str, **kwargs: object) -> requests.Response:
        """Send one request; 401/403 become AuthenticationFailed, retried-out 5xx Unavailable."""
        response = self.session.request(method, url, timeout=self.timeout, **kwargs)  # type: ignore[arg-type]
        if response.status_code == 401:
            raise_for_auth(response, self.what, hint=AUTH_HINT)
        if response.status_code in (423, 429) or response.status_code >= 500:
            if response.status_code == 429 and method == "MKCOL":
                raise AdapterError(
                    f"{self.what}: creating the address book {self.book_url} answered "
                    f"{said(response)}",
                    hint=LIMITS_HINT,
                )
            raise AdapterUnavailable(
                f"{self.what}: the server answered {said(response)} after retries",
                hint="The server is busy or locked; the next run resumes where this one stopped.",
            )
        return response

    def href_url(self, href: str) -> str:
        """The absolute URL of a member href (a path or a URL)."""
        return urljoin(self.book_url, href)

    def name_of(self, href: str) -> str:
        """A member's name in the book: its href's last segment, URL-decoded."""
        return unquote(posixpath.basename(urlsplit(href).path.rstrip("/")))

    def href_for(self, name: str) -> str:
        """The path of the member called `name` (in :func:`canonical_path`'s form)."""
        return self.book_path + quote(name, safe="")

    # -- reading ---------------------------------------------------------------------------

    def sync_collection(self, token: str | None, limit: int | None) -> SyncAnswer:
        """One sync-collection REPORT (RFC 6578) from `token` (None: everything)."""
        limit_xml = f"<d:limit><d:nresults>{limit}</d:nresults></d:limit>" if limit else ""
        body = (
            '<?xml version="1.0" encoding="utf-8"?><d:sync-collection xmlns:d="DAV:">'
            f"<d:sync-token>{escape(token or '')}</d:sync-token><d:sync-level>1</d:sync-level>"
            f"{limit_xml}<d:prop><d:getetag/></d:prop></d:sync-collection>"
        )
        response = self.request(
            "REPORT", self.book_url, data=body.encode(), headers={**_XML, "Depth": "0"}
        )
        if response.status_code in (403, 412) and precondition(response) == "valid-sync-token":
            raise InvalidSyncToken(token)
        self._expect(response, 207, "sync-collection REPORT")
        return self._parse_sync(response)

    def _parse_sync(self, response: requests.Response) -> SyncAnswer:
        root = self._xml(response)
        members, truncated = [], False
        for item in root.iter(_q("response")):
            href = item.findtext(_q("href")) or ""
            status = item.findtext(_q("status")) or ""
            if self._is_book(href):
                truncated = truncated or " 507 " in status
                continue
            if " 404 " in status:
                members.append(Member(canonical_path(href), None, deleted=True))
                continue
            etag = item.findtext(f"{_q('propstat')}/{_q('prop')}/{_q('getetag')}")
            members.append(Member(canonical_path(href), etag))
        return SyncAnswer(members, root.findtext(_q("sync-token")), truncated)

    def _is_book(self, href: str) -> bool:
        return canonical_path(href).rstrip("/") == self.book_path.rstrip("/")

    def multiget(self, hrefs: Sequence[str]) -> list[Card]:
        """Fetch cards by href in one addressbook-multiget; missing hrefs are left out."""
        if not hrefs:
            return []
        body = (
            '<?xml version="1.0" encoding="utf-8"?>'
            f'<c:addressbook-multiget xmlns:d="DAV:" xmlns:c="{CARD}">'
            "<d:prop><d:getetag/><c:address-data/></d:prop>"
            + "".join(f"<d:href>{escape(h)}</d:href>" for h in hrefs)
            + "</c:addressbook-multiget>"
        )
        response = self.request(
            "REPORT", self.book_url, data=body.encode(), headers={**_XML, "Depth": "1"}
        )
        self._expect(response, 207, "addressbook-multiget REPORT")
        cards = []
        for item in self._xml(response).iter(_q("response")):
            prop = item.find(f"{_q('propstat')}/{_q('prop')}")
            data = prop.findtext(_q("address-data", CARD)) if prop is not None else None
            if prop is None or not data:
                continue
            href = canonical_path(item.findtext(_q("href")) or "")
            cards.append(Card(href, prop.findtext(_q("getetag")), data))
        return cards

    def exists(self) -> bool:
        """True when the book exists; AdapterError when the URL is not an address book."""
        body = (
            '<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:">'
            "<d:prop><d:resourcetype/></d:prop></d:propfind>"
        )
        response = self.request(
            "PROPFIND", self.book_url, data=body.encode(), headers={**_XML, "Depth": "0"}
        )
        if response.status_code == 404:
            return False
        self._expect(response, 207, "PROPFIND")
        root = self._xml(response)
        # Xandikos answers a missing collection with 207 and a 404 status inside.
        if any(" 404 " in (s.text or "") for s in root.iter(_q("status"))) and (
            root.find(f".//{_q('resourcetype')}") is None
        ):
            return False
        if root.find(f".//{_q('resourcetype')}/{_q('addressbook', CARD)}") is None:
            raise AdapterError(
                f"{self.what}: {self.book_url} is not an address book",
                hint="Give the URL of an address book (a CardDAV collection), not its parent.",
            )
        return True

    def shared_groups(self) -> dict[str, str]:
        """The groups the book is shared with (Nextcloud's ``oc:invite``): group → access."""
        body = (
            f'<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:" xmlns:o="{OC}">'
            "<d:prop><o:invite/></d:prop></d:propfind>"
        )
        response = self.request(
            "PROPFIND", self.book_url, data=body.encode(), headers={**_XML, "Depth": "0"}
        )
        self._expect(response, 207, "PROPFIND oc:invite")
        groups = {}
        for user in self._xml(response).iter(_q("user", OC)):
            href = user.findtext(_q("href")) or ""
            prefix = "principal:principals/groups/"
            if href.startswith(prefix):
                access = user.find(_q("access", OC))
                kinds = [c.tag.rsplit("}", 1)[-1] for c in access] if access is not None else []
                groups[unquote(href[len(prefix) :])] = kinds[0] if kinds else "read"
        return groups

    # -- writing ---------------------------------------------------------------------------

    def put(self, href: str, data: str, etag: str | None) -> requests.Response:
        """PUT a card: If-Match `etag` to update, If-None-Match * to create."""
        headers = {"Content-Type": "text/vcard; charset=utf-8"}
        headers["If-Match" if etag else "If-None-Match"] = etag or "*"
        return self.request("PUT", self.href_url(href), data=data.encode(), headers=headers)

    def delete(self, href: str, etag: str) -> requests.Response:
        """DELETE a card only if it is still at `etag`."""
        return self.request("DELETE", self.href_url(href), headers={"If-Match": etag})

    def mkcol(self, display_name: str) -> requests.Response:
        """Create the book with an extended MKCOL (RFC 5689)."""
        body = (
            f'<?xml version="1.0" encoding="utf-8"?><d:mkcol xmlns:d="DAV:" xmlns:c="{CARD}">'
            "<d:set><d:prop><d:resourcetype><d:collection/><c:addressbook/></d:resourcetype>"
            f"<d:displayname>{escape(display_name)}</d:displayname></d:prop></d:set></d:mkcol>"
        )
        return self.request("MKCOL", self.book_url, data=body.encode(), headers=_XML)

    def share(self, group: str) -> requests.Response:
        """Share the book read-only with a Nextcloud group (oc:share POST)."""
        body = (
            '<?xml version="1.0" encoding="utf-8"?>'
            '<o:share xmlns:d="DAV:" xmlns:o="http://owncloud.org/ns"><o:set>'
            f"<d:href>principal:principals/groups/{escape(group)}</d:href>"
            "</o:set></o:share>"
        )
        return self.request(
            "POST", self.book_url, data=body.encode(), headers={"Content-Type": "application/xml"}
        )

    # -- helpers ---------------------------------------------------------------------------

    def _expect(self, response: requests.Response, status: int, action: str) -> None:
        if response.status_code == status:
            return
        if response.status_code == 404:
            raise AdapterError(
                f"{self.what}: the address book {self.book_url} does not exist (404)",
                hint="Check address_book / address_book_url, or set create_book: true. On a "
                "book shared with you read-only, Nextcloud answers 404 to writes.",
            )
        if response.status_code == 403:
            raise_for_auth(response, self.what, hint="The user may not access this book.")
        raise AdapterError(f"{self.what}: {action} answered HTTP {response.status_code}")

    def _xml(self, response: requests.Response) -> ET.Element:
        try:
            return ET.fromstring(response.content)
        except ET.ParseError as exc:
            raise AdapterUnavailable(
                f"{self.what}: the server sent an unreadable DAV answer ({exc})",
                hint="A proxy may have cut the answer short; the next run resumes.",
            ) from None


def chunked(items: Sequence[str], size: int) -> Iterable[list[str]]:
    """Consecutive slices of `items` of at most `size`."""
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
