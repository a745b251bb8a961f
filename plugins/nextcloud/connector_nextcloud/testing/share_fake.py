"""A fake of the CardDAV ``oc:share`` POST, from ``../shared/reference/nextcloud-dav.md``.

What it implements, as the reference describes a real Nextcloud:

* an address book at ``/remote.php/dav/addressbooks/users/{user}/{book}/`` that answers a
  ``PROPFIND`` (Depth 0) with its ``resourcetype`` (so the adapter's existence check passes);
* ``POST`` of an ``oc:share`` body (namespace ``http://owncloud.org/ns``) to the book:
  ``<o:set><d:href>principal:principals/groups/{group}</d:href></o:set>``, with
  ``<o:read-write/>`` inside ``o:set`` for write access, and ``<o:remove>`` to unshare;
  success is 200 with ``X-Sabre-Status: everything-went-well``;
* HTTP Basic; wrong credentials → 401 with ``WWW-Authenticate: Basic realm="Nextcloud"``.

* a group that does not exist: 200 all the same, and no share is made (as a real Nextcloud
  34.0.1 answered); a ``PROPFIND`` asking for ``oc:invite`` lists the shares really made,
  ``<oc:user><d:href>principal:principals/groups/{group}</d:href>…<oc:access><oc:read/>``;
* ``PROPFIND`` of ``/remote.php/dav/principals/groups/{group}/``: 207 for a group that
  exists, 404 for one that does not.

Not in the reference, so modelled and marked here: a body that is not such an ``oc:share``
gets 400 (``fail_next_post`` injects any status, such as 403, as the answer to the next
POST); sharing again with the same group replaces that share (one entry per group in
:attr:`ShareFake.shares`).

Every request is recorded in :attr:`ShareFake.requests`, with its body.
"""

from __future__ import annotations

import base64
import dataclasses
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler
from urllib.parse import unquote
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape

from connector_core.testing.server import (
    LoopbackServer,
    dispatching_handler,
    read_body,
    send_answer,
)

OC = "http://owncloud.org/ns"
DAV = "DAV:"
GROUP_PREFIX = "principal:principals/groups/"
_PROPFIND = (
    '<?xml version="1.0" encoding="utf-8"?><d:multistatus xmlns:d="DAV:" '
    'xmlns:c="urn:ietf:params:xml:ns:carddav" xmlns:oc="http://owncloud.org/ns"><d:response>'
    "<d:href>{path}</d:href><d:propstat><d:prop>{invite}<d:resourcetype><d:collection/>"
    "<c:addressbook/></d:resourcetype></d:prop>"
    "<d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response></d:multistatus>"
)
_USER = (
    "<oc:user><d:href>principal:principals/groups/{group}</d:href><oc:common-name>{group}"
    "</oc:common-name><oc:invite-accepted/><oc:access><oc:{access}/></oc:access></oc:user>"
)
GROUPS_PATH = "/remote.php/dav/principals/groups/"


@dataclasses.dataclass(frozen=True, slots=True)
class ShareRequest:
    """One request as the fake received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class ShareFake(LoopbackServer):
    """The fake server; use as a context manager, or call :meth:`start` and :meth:`stop`.

    Args:
        user: the book's owner (login); password: their app password.
        groups: group ids that exist.
        book: the address book's name.
    """

    def __init__(
        self, user: str, password: str, groups: Iterable[str] = (), book: str = "contacts"
    ) -> None:
        super().__init__()
        self.user = user
        self.password = password
        self.groups = set(groups)
        self.book_path = f"/remote.php/dav/addressbooks/users/{user}/{book}/"
        self.shares: dict[str, bool] = {}  #: group → read-write
        self.requests: list[ShareRequest] = []
        self.fail_next_post: list[int] = []
        self._lock = threading.Lock()

    @property
    def book_url(self) -> str:
        """The address book's URL (with a trailing slash)."""
        return f"{self.base_url}{self.book_path}"

    def handler_class(self) -> type[BaseHTTPRequestHandler]:
        """A handler that passes every request to :meth:`_serve`."""
        return dispatching_handler(self._serve, ("POST", "PROPFIND", "GET", "PUT"))

    def requests_to(self, method: str) -> list[ShareRequest]:
        """The recorded requests of one method."""
        with self._lock:
            return [r for r in self.requests if r.method == method]

    # -- serving ---------------------------------------------------------------------------

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        body = read_body(handler)
        with self._lock:
            self.requests.append(
                ShareRequest(handler.command, handler.path, dict(handler.headers.items()), body)
            )
            status, headers, text = self._answer(handler, body)
        send_answer(handler, status, headers, text.encode())

    def _answer(
        self, handler: BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, dict[str, str], str]:
        if not self._authorized(handler.headers.get("Authorization") or ""):
            return 401, {"WWW-Authenticate": 'Basic realm="Nextcloud"'}, "Unauthorized"
        xml = {"Content-Type": "application/xml; charset=utf-8"}
        if handler.command == "PROPFIND" and handler.path.startswith(GROUPS_PATH):
            group = unquote(handler.path[len(GROUPS_PATH) :].rstrip("/"))
            return (207, xml, "") if group in self.groups else (404, {}, "Not Found")
        if handler.path.rstrip("/") != self.book_path.rstrip("/"):
            return 404, {}, "Not Found"
        if handler.command == "PROPFIND":
            invite = ""
            if b"invite" in body:
                users = "".join(
                    _USER.format(group=escape(g), access="read-write" if rw else "read")
                    for g, rw in sorted(self.shares.items())
                )
                invite = f"<oc:invite>{users}</oc:invite>"
            return 207, xml, _PROPFIND.format(path=self.book_path, invite=invite)
        if handler.command != "POST":
            return 405, {}, "Method Not Allowed"
        if self.fail_next_post:
            return self.fail_next_post.pop(0), {}, "injected failure"
        try:
            sets, removes = _parse_share(body)
        except ValueError as exc:
            return 400, {}, str(exc)
        for group, read_write in sets:
            if group in self.groups:  # Nextcloud: 200 all the same, and no share
                self.shares[group] = read_write
        for group in removes:
            self.shares.pop(group, None)
        return 200, {"X-Sabre-Status": "everything-went-well"}, ""

    def _authorized(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            login, _, password = base64.b64decode(encoded).decode().partition(":")
        except ValueError:
            return False
        return (login, password) == (self.user, self.password)


def _group(element: ET.Element) -> str:
    hrefs = element.findall(f"{{{DAV}}}href")
    if len(hrefs) != 1 or not (hrefs[0].text or "").startswith(GROUP_PREFIX):
        raise ValueError(f"expected one d:href {GROUP_PREFIX}{{group}}")
    return (hrefs[0].text or "")[len(GROUP_PREFIX) :]


def _parse_share(body: bytes) -> tuple[list[tuple[str, bool]], list[str]]:
    """The (group, read-write) pairs set and the groups removed by an ``oc:share`` body."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise ValueError(f"unreadable XML: {exc}") from None
    if root.tag != f"{{{OC}}}share":
        raise ValueError(f"expected o:share, got {root.tag}")
    sets, removes = [], []
    for child in root:
        if child.tag == f"{{{OC}}}set":
            extra = {c.tag for c in child} - {f"{{{DAV}}}href", f"{{{OC}}}read-write"}
            if extra:
                raise ValueError(f"unexpected elements in o:set: {sorted(extra)}")
            sets.append((_group(child), child.find(f"{{{OC}}}read-write") is not None))
        elif child.tag == f"{{{OC}}}remove":
            removes.append(_group(child))
        else:
            raise ValueError(f"unexpected element in o:share: {child.tag}")
    if not sets and not removes:
        raise ValueError("an o:share with neither o:set nor o:remove")
    return sets, removes
