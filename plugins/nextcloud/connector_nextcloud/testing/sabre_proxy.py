"""A Nextcloud-like front for a real CardDAV server: sabre/dav's answers where Nextcloud differs.

Every request is passed to a real server (Radicale or Xandikos) and its answer passed back,
except where a real Nextcloud 34.0.1 was seen to answer otherwise
(``shared/reference/nextcloud-dav.md``, "Observed on a real Nextcloud"):

* **412 bodies**: sabre/dav names the failed condition in ``s:header``, not as a ``d:``
  precondition element. Every 412 of the real server is passed on with sabre's body for
  the header the request sent (``If-Match`` or ``If-None-Match``)::

    <d:error xmlns:d="DAV:" xmlns:s="http://sabredav.org/ns">
      <s:exception>Sabre\\DAV\\Exception\\PreconditionFailed</s:exception>
      <s:message>An If-Match header was specified, but none of the specified ETags
      matched.</s:message>
      <s:header>If-Match</s:header>
    </d:error>

* **Sharing** (``oc:share`` POST to a book): 200 with ``X-Sabre-Status: everything-went-well``
  for any well-formed body, and a group that does not exist is *silently ignored* (no share);
  a ``PROPFIND`` asking for ``oc:invite`` lists the real shares, as Nextcloud does.
* **Address-book limits** (the dav app's defaults): MKCOL past ``max_books`` books answers 403
  ``Sabre\\DAV\\Exception\\Forbidden`` "AddressBook limit reached"; past ``max_creations``
  creations 429 "Too many addressbooks created".
* **Hrefs** in every multistatus answer are encoded as sabre/http's ``encodePath`` does:
  ``A-Za-z0-9_-.~()/:@`` raw, every other byte ``%``-encoded in lowercase hex (a user id
  ``alice@example.org`` comes back with its ``@``; Python's ``quote`` writes ``%40`` and
  uppercase hex).

Every request is recorded (method, path) in :attr:`SabreProxy.requests`.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler
from urllib.parse import unquote, urlsplit
from xml.sax.saxutils import escape, unescape

import requests

from connector_core.testing.server import (
    LoopbackServer,
    dispatching_handler,
    read_body,
    send_answer,
)
from connector_nextcloud.testing.share_fake import _parse_share

_METHODS = ("GET", "PUT", "DELETE", "PROPFIND", "PROPPATCH", "REPORT", "MKCOL", "POST", "MOVE")
_HOP = {"host", "content-length", "connection", "transfer-encoding", "keep-alive"}
_DROP = {"content-length", "connection", "transfer-encoding", "content-encoding", "keep-alive"}
_MESSAGES = {
    "If-Match": "An If-Match header was specified, but none of the specified ETags matched.",
    "If-None-Match": (
        "An If-None-Match header was specified, but the ETag matched (or * was specified)."
    ),
}
_INVITE = (
    "<oc:user><d:href>principal:principals/groups/{group}</d:href>"
    "<oc:common-name>{group}</oc:common-name><oc:invite-accepted/>"
    "<oc:access><oc:{access}/></oc:access></oc:user>"
)
_PROPFIND = (
    '<?xml version="1.0"?>\n<d:multistatus xmlns:d="DAV:" xmlns:s="http://sabredav.org/ns" '
    'xmlns:card="urn:ietf:params:xml:ns:carddav" xmlns:oc="http://owncloud.org/ns">'
    "<d:response><d:href>{path}</d:href><d:propstat><d:prop><oc:invite>{invites}</oc:invite>"
    "<d:resourcetype><d:collection/><card:addressbook/></d:resourcetype></d:prop>"
    "<d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response></d:multistatus>"
)


def sabre_error(exception: str, message: str, header: str | None = None) -> str:
    """An error body as sabre/dav writes it."""
    extra = f"\n  <s:header>{header}</s:header>" if header else ""
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<d:error xmlns:d="DAV:" xmlns:s="http://sabredav.org/ns">\n'
        f"  <s:exception>{escape(exception)}</s:exception>\n"
        f"  <s:message>{escape(message)}</s:message>{extra}\n</d:error>\n"
    )


class SabreProxy(LoopbackServer):
    """Serve `upstream` (a real CardDAV server's base URL) with Nextcloud's differences.

    Args:
        upstream: the base URL of the real server (``http://127.0.0.1:PORT``).
        groups: the Nextcloud groups that exist (shares with others are ignored).
        max_books: books MKCOL may create before 403 (None: no limit).
        max_creations: book creations before 429 (None: no limit).
    """

    def __init__(
        self,
        upstream: str,
        groups: Iterable[str] = (),
        *,
        max_books: int | None = None,
        max_creations: int | None = None,
    ) -> None:
        super().__init__()
        self.upstream = upstream.rstrip("/")
        self.groups = set(groups)
        self.max_books = max_books
        self.max_creations = max_creations
        self.created = 0
        self.shares: dict[str, dict[str, bool]] = {}  #: book path → group → read-write
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._session = requests.Session()

    def url(self, upstream_url: str) -> str:
        """The URL through this proxy of a URL on the real server."""
        parts = urlsplit(upstream_url)
        return self.base_url + parts.path + (f"?{parts.query}" if parts.query else "")

    def handler_class(self) -> type[BaseHTTPRequestHandler]:
        """A handler that passes every request to :meth:`_serve`."""
        return dispatching_handler(self._serve, _METHODS)

    def stop(self) -> None:
        """Stop serving and close the upstream session."""
        super().stop()
        self._session.close()

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        body = read_body(handler)
        with self._lock:
            self.requests.append((handler.command, handler.path))
        send_answer(handler, *self._answer(handler, body))

    def _answer(
        self, handler: BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        method, path = handler.command, handler.path
        xml = {"Content-Type": "application/xml; charset=utf-8"}
        if method == "POST" and b"owncloud.org/ns" in body:
            return self._share(path, body)
        if method == "PROPFIND" and b"invite" in body:
            exists = self._forward(handler, b"")[0] == 207
            if not exists:
                return 404, {}, b""
            with self._lock:
                shares = dict(self.shares.get(_book(path), {}))
            invites = "".join(
                _INVITE.format(group=escape(g), access="read-write" if rw else "read")
                for g, rw in sorted(shares.items())
            )
            return 207, xml, _PROPFIND.format(path=escape(path), invites=invites).encode()
        if method == "MKCOL":
            refused = self._limit()
            if refused is not None:
                return refused
        status, headers, data = self._forward(handler, body)
        if method == "MKCOL" and status == 201:
            with self._lock:
                self.created += 1
        if status == 207:
            data = _HREF.sub(lambda m: m[1] + _sabre_path(m[2]) + m[3], data.decode()).encode()
        if status == 412:
            condition = "If-Match" if handler.headers.get("If-Match") else "If-None-Match"
            text = sabre_error(
                "Sabre\\DAV\\Exception\\PreconditionFailed", _MESSAGES[condition], condition
            )
            return 412, {**_keep(headers, "etag"), **xml}, text.encode()
        return status, headers, data

    def _forward(
        self, handler: BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP}
        response = self._session.request(
            handler.command,
            self.upstream + handler.path,
            data=body,
            headers=headers,
            allow_redirects=False,
            timeout=30,
        )
        kept = {k: v for k, v in response.headers.items() if k.lower() not in _DROP}
        return response.status_code, kept, response.content

    def _limit(self) -> tuple[int, dict[str, str], bytes] | None:
        xml = {"Content-Type": "application/xml; charset=utf-8"}
        with self._lock:
            created = self.created
        if self.max_creations is not None and created >= self.max_creations:
            text = sabre_error(
                "OCA\\DAV\\Connector\\Sabre\\Exception\\TooManyRequests",
                "Too many addressbooks created",
            )
            return 429, xml, text.encode()
        if self.max_books is not None and created >= self.max_books:
            text = sabre_error("Sabre\\DAV\\Exception\\Forbidden", "AddressBook limit reached")
            return 403, xml, text.encode()
        return None

    def _share(self, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        try:
            sets, removes = _parse_share(body)
        except ValueError as exc:
            return 400, {}, str(exc).encode()
        with self._lock:
            book = self.shares.setdefault(_book(path), {})
            for group, read_write in sets:
                if group in self.groups:  # Nextcloud ignores a group that does not exist
                    book[group] = read_write
            for group in removes:
                book.pop(group, None)
        return 200, {"X-Sabre-Status": "everything-went-well"}, b""


#: an href element of a multistatus answer, whatever its namespace prefix
_HREF = re.compile(r"(<(?:\w+:)?href>)([^<]*)(</(?:\w+:)?href>)")
_SABRE_RAW = re.compile(r"[^A-Za-z0-9_\-.~()/:@]")


def _sabre_path(href: str) -> str:
    """`href` (a path or a URL) with its path encoded as sabre/http's encodePath does."""
    parts = urlsplit(unescape(href))
    path = _SABRE_RAW.sub(
        lambda m: "".join(f"%{b:02x}" for b in m[0].encode()), unquote(parts.path)
    )
    return escape(parts._replace(path=path).geturl())


def _book(path: str) -> str:
    return urlsplit(path).path.rstrip("/") + "/"


def _keep(headers: dict[str, str], *names: str) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() in names}
