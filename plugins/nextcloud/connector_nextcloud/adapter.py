"""The Nextcloud adapter: a CardDAV address book as a source or a mirror target.

Reading uses sync-collection (RFC 6578) with the stored sync token as cursor and fetches card
data with addressbook-multiget in batches. A record's ``id`` is its card's name in the book
(the href's last segment without ``.vcf``): for cards this connector wrote that is the
engine's key. Writing puts each key at ``<book>/<key>.vcf`` with ``UID:<key>`` and the marker
property ``X-COMMONS-CONNECTOR``; a card at such an href without the marker belongs to
someone else and is never changed or deleted.

Each card is its own resource at its job's key (the engine's keys differ per job), changed
only by a conditional PUT or DELETE of that card, so several jobs may write one address book
without touching each other's cards: the adapter declares ``Capability.PER_JOB_RECORDS``.

Every upsert is compared with the card stored now (one multiget per batch) and PUT only when
it differs (``Capability.VERIFIES_CONTENT``): a reconciling run sends every shared record, and
a card someone edited in the book is restored to what the policy shares.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar
from urllib.parse import quote, urlsplit

import requests

from connector_core.adapters import (
    Adapter,
    Capability,
    Change,
    Page,
    ReadProblem,
    SourceFields,
    WriteResult,
)
from connector_core.credentials import SecretLookup
from connector_core.errors import AdapterError
from connector_core.http import RETRY_STATUSES, http_errors, make_retry, make_session
from connector_core.query import Condition
from connector_core.records import Expected, Record
from connector_nextcloud.carddav import (
    LIMITS_HINT,
    Card,
    CardDavClient,
    InvalidSyncToken,
    Member,
    SyncAnswer,
    chunked,
    said,
)
from connector_nextcloud.settings import NextcloudSettings
from connector_nextcloud.vcard import MAPPED_FIELDS, CardFormat, CardInvalid, parse_card
from connector_nextcloud.writer import CardWriter

__all__ = ["NextcloudAdapter", "NextcloudSettings"]

GROUP_HINT = (
    "Check share_with_group against the group ids in Nextcloud (`occ group:list`; ids are "
    "case-sensitive and may differ from the display name)."
)
#: 423 Locked (a WebDAV lock held by another client) is retried like 429 and 5xx.
DAV_RETRY_STATUSES = RETRY_STATUSES | {423}
#: Every method is retried but MKCOL: Nextcloud's 429 to it is an hourly limit on creating
#: address books, which a retry within seconds cannot pass.
DAV_RETRY_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "PROPFIND", "REPORT", "POST"})


class NextcloudAdapter(Adapter):
    """A CardDAV address book (Nextcloud or any CardDAV server)."""

    name = "nextcloud"
    description = "A Nextcloud (or any CardDAV) address book"
    settings_model = NextcloudSettings
    capabilities = frozenset(
        {
            Capability.READ,
            Capability.WRITE,
            Capability.DELETE,
            Capability.INCREMENTAL,
            Capability.SYNC_TOKEN,
            Capability.PER_JOB_RECORDS,
            Capability.VERIFIES_CONTENT,
        }
    )
    default_mapping: ClassVar[Mapping[str, str]] = {
        "first_name": "N.given",
        "last_name": "N.family",
        "display_name": "FN",
        "email": "EMAIL",
        "phone": "TEL",
        "street_address": "ADR.street",
        "city": "ADR.locality",
        "region": "ADR.region",
        "postal_code": "ADR.code",
        "country": "ADR.country",
        "latitude": "GEO",
        "longitude": "GEO",
        "organization": "ORG",
        "birth_date": "BDAY",
        "groups": "CATEGORIES",
        "consent": "X-COMMONS-CONSENT",
    }
    settings: NextcloudSettings

    def __init__(
        self,
        settings: NextcloudSettings,
        secrets: SecretLookup | None = None,
        *,
        mapping: Mapping[str, str | None] | None = None,
        connection: str | None = None,
        session: requests.Session | None = None,
    ) -> None:
        super().__init__(settings, secrets, mapping=mapping, connection=connection)
        self.what = f"nextcloud connection {self.connection!r}"
        self.fields = frozenset(self.mapping.canonical_names() & MAPPED_FIELDS)
        self.format = CardFormat(
            version=settings.vcard_version,
            consent_property=settings.consent_property,
            consent_categories=dict(settings.consent_categories),
            groups=settings.groups_from == "categories" and "groups" in self.fields,
            marker=settings.marker,
        )
        self._session = session
        self._client: CardDavClient | None = None
        self._book_ready = False

    # -- connection ----------------------------------------------------------------------------

    @property
    def client(self) -> CardDavClient:
        """The CardDAV client, with its session made on first use."""
        if self._client is None:
            self._client = CardDavClient(
                self._session or self._make_session(),
                self.settings.book_url,
                self.what,
                self.settings.timeout,
            )
        return self._client

    def _make_session(self) -> requests.Session:
        verify: bool | str = self.settings.verify_tls
        if self.settings.ca_bundle is not None and verify:
            verify = str(self.settings.ca_bundle)
        retry = make_retry().new(
            status_forcelist=DAV_RETRY_STATUSES, allowed_methods=DAV_RETRY_METHODS
        )
        session = make_session(
            self.name, verify=verify, retry=retry, pool_size=max(4, self.settings.concurrency)
        )
        if self.settings.app_password is not None:
            password = self.secrets.resolve(self.settings.app_password).get_secret_value()
            session.auth = (self.settings.user or "", password)
        return session

    def available_fields(self) -> SourceFields:
        """What this connection's mapping reads; vCard properties are optional per card,
        so the book is not inspected (``verified`` is False). ``consent`` in ``provided``
        means one property may hold any purpose."""
        provided = {"id", *self.fields}
        if not self.settings.consent_property:
            provided.discard("consent")
        provided |= {f"consent.{purpose}" for purpose in self.settings.consent_categories}
        return SourceFields(
            frozenset(provided), source=f"the vCard properties {self.what} maps", verified=False
        )

    def check(self) -> str | None:
        """Verify the book answers, changing nothing: what a run would create or share is
        reported (``connector doctor`` is read-only), a group that does not exist is an error."""
        with http_errors(self.what):
            notes = []
            exists = self.client.exists()
            if not exists:
                if not self.settings.create_book:
                    raise self._missing_book()
                notes.append(
                    f"the address book {self.settings.book_url} does not exist yet: "
                    "a run will create it (create_book: true)"
                )
            group = self.settings.share_with_group
            if group:
                self._check_group(group)
                if exists and group in self.client.shared_groups():
                    notes.append(f"shared with group {group!r}")
                else:
                    notes.append(f"a run will share the book read-only with group {group!r}")
            return "; ".join(notes) or None

    def _missing_book(self) -> AdapterError:
        return AdapterError(
            f"{self.what}: the address book {self.settings.book_url} does not exist",
            hint="Create it in Nextcloud Contacts, or set create_book: true.",
        )

    def _check_group(self, group: str) -> None:
        """On Nextcloud, a group that does not exist has no principal (PROPFIND → 404)."""
        base, marker, _ = self.settings.book_url.partition("/addressbooks/")
        if not marker:
            return
        url = f"{base}/principals/groups/{quote(group, safe='')}/"
        response = self.client.request("PROPFIND", url, headers={"Depth": "0"})
        if response.status_code == 404:
            raise AdapterError(
                f"{self.what}: share_with_group names the group {group!r}, which does not "
                "exist on the server",
                hint=GROUP_HINT,
            )

    def _ensure_book(self) -> None:
        """Before the first write: create the book if configured (it must exist otherwise:
        the first multiget explains a missing book), then share it and verify the share."""
        settings = self.settings
        if self._book_ready or not (settings.create_book or settings.share_with_group):
            return
        if not self.client.exists():
            if not settings.create_book:
                raise self._missing_book()
            response = self.client.mkcol(settings.address_book or "Commons Connector")
            if response.status_code not in (201, 405):
                raise AdapterError(
                    f"{self.what}: creating the address book {settings.book_url} answered "
                    f"{said(response)}",
                    hint=LIMITS_HINT if response.status_code in (403, 429) else None,
                )
        if settings.share_with_group:
            self._share(settings.share_with_group)
        self._book_ready = True

    def _share(self, group: str) -> None:
        """Share the book read-only with `group` unless it is, then check that it is: Nextcloud
        answers 200 to a share with a group that does not exist and creates nothing."""
        if group in self.client.shared_groups():
            return
        response = self.client.share(group)
        if response.status_code not in (200, 204):
            raise AdapterError(
                f"{self.what}: sharing the book with group {group!r} answered {said(response)}",
                hint="Sharing needs Nextcloud; the group must exist.",
            )
        if group not in self.client.shared_groups():
            raise AdapterError(
                f"{self.what}: the server accepted sharing the book with group {group!r} "
                f"(HTTP {response.status_code}) but the book is not shared with it: the group "
                "does not exist",
                hint=GROUP_HINT + " Nothing was written to the book.",
            )

    def close(self) -> None:
        """Close the HTTP session (the adapter can be used again afterwards)."""
        if self._client is not None:
            self._client.session.close()
            self._client = None

    # -- reading -------------------------------------------------------------------------------

    def read(
        self,
        *,
        cursor: str | None = None,
        fields: frozenset[str] | None = None,
        where: Condition | None = None,
    ) -> Iterator[Page]:
        """Yield pages of cards changed since the sync token `cursor` (None: every card)."""
        keep = None if fields is None else fields | {"id", "deleted"}
        with http_errors(self.what):
            try:
                yield from self._sync(cursor, keep)
            except InvalidSyncToken:
                # The server no longer knows this token: list everything (a snapshot).
                yield from self._sync(None, keep)

    def _sync(self, token: str | None, keep: frozenset[str] | None) -> Iterator[Page]:
        full = token is None
        limit = self.settings.sync_limit
        while True:
            answer = self.client.sync_collection(token, limit)
            if limit and len(answer.members) >= limit and not answer.truncated:
                # A full page and no 507: the server may have cut the answer silently
                # (Xandikos does), so ask for this step again without a limit.
                answer = self.client.sync_collection(token, None)
            yield from self._pages(answer, token, full, keep)
            if not answer.truncated or answer.token in (None, token):
                return
            token = answer.token

    def _pages(
        self, answer: SyncAnswer, token: str | None, full: bool, keep: frozenset[str] | None
    ) -> Iterator[Page]:
        # A full listing may still name deleted members (Radicale does): a snapshot omits them.
        members = [m for m in answer.members if not (full and m.deleted)]
        if not members:
            yield Page([], cursor=answer.token or token, snapshot=full)
            return
        for start in range(0, len(members), self.page_size):
            chunk = members[start : start + self.page_size]
            last = start + self.page_size >= len(members)
            records, problems = self._fetch(chunk)
            if keep is not None:
                records = [{k: v for k, v in r.items() if k in keep} for r in records]
            yield Page(
                records, cursor=answer.token if last else token, problems=problems, snapshot=full
            )

    def _fetch(self, members: Sequence[Member]) -> tuple[list[Record], list[ReadProblem]]:
        """Deleted members as ``deleted`` records, the others fetched with multiget."""
        records: list[Record] = []
        problems: list[ReadProblem] = []
        wanted = [urlsplit(m.href).path for m in members if not m.deleted]
        cards: dict[str, Card] = {}
        for batch in chunked(wanted, self.settings.multiget_batch):
            cards.update((c.href, c) for c in self.client.multiget(batch))
        for member in members:
            card_id = self.card_id(member.href)
            if member.deleted:
                records.append({"id": card_id, "deleted": True})
                continue
            card = cards.get(urlsplit(member.href).path)
            if card is None:  # deleted between the listing and the multiget
                continue
            try:
                parsed = parse_card(card.data, self.format, card_id=card_id)
            except CardInvalid:  # its message may quote the card: a problem never does
                problems.append(ReadProblem(member.href, Expected.VCARD, key=card_id))
                continue
            records.append(self._project(parsed.record))
        return records, problems

    def _project(self, record: Record) -> Record:
        return {k: v for k, v in record.items() if k == "id" or k in self.fields}

    def card_id(self, href: str) -> str:
        """A record's id: the card's name in the book without ``.vcf``."""
        return self.client.name_of(href).removesuffix(".vcf")

    # -- writing -------------------------------------------------------------------------------

    def write(self, changes: Sequence[Change]) -> Iterator[WriteResult]:
        """Create, update or delete our cards, one result per change, in order."""
        with http_errors(self.what):
            self._ensure_book()
            writer = CardWriter(self.client, self.format, self.fields)
            workers = self.settings.concurrency
            pool = ThreadPoolExecutor(workers) if workers > 1 else None
            try:
                for batch in _batches(changes, self.page_size):
                    yield from writer.write_batch(batch, pool)
            finally:
                if pool is not None:
                    pool.shutdown()


def _batches(changes: Sequence[Change], size: int) -> Iterator[Sequence[Change]]:
    for start in range(0, len(changes), size):
        yield changes[start : start + size]
