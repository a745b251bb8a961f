"""Writing cards safely: conditional PUT/DELETE, 412 re-read and re-decide, our cards only.

Each batch first fetches the current state of its hrefs with one addressbook-multiget. An
upsert whose card already holds the same canonical content is ``unchanged`` (no PUT). A
create uses ``If-None-Match: *``, an update ``If-Match: <etag>``; a 412 means someone changed
the card since: it is fetched again and the decision is made again (at most a few times),
so an edit is never blindly overwritten and a card is never duplicated. A card without our
marker is someone else's (a personal contact): it is never changed or deleted.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import requests

from connector_core.adapters import Change, WriteResult
from connector_nextcloud.carddav import Card, CardDavClient, precondition, said
from connector_nextcloud.vcard import CardFormat, CardInvalid, parse_card, render_card, same_content

_ATTEMPTS = 3
_OK = (200, 201, 204)
_NOT_OURS = (
    "a card not written by this connector already exists at {href}; it is left untouched "
    "(it may be a personal contact)"
)


class CardWriter:
    """Applies batches of changes to one address book."""

    def __init__(self, client: CardDavClient, fmt: CardFormat, fields: Collection[str]) -> None:
        self.client = client
        self.format = fmt
        self.fields = fields

    def href(self, key: str) -> str:
        """The deterministic href of the card for `key`."""
        return self.client.href_for(f"{key}.vcf")

    def write_batch(
        self, batch: Sequence[Change], pool: ThreadPoolExecutor | None
    ) -> Iterator[WriteResult]:
        """Apply one batch: one multiget for its current cards, then one request per change."""
        current = {c.href: c for c in self.client.multiget([self.href(c.key) for c in batch])}

        def apply(change: Change) -> WriteResult:
            return self.apply(change, current.get(self.href(change.key)))

        if pool is None:
            yield from map(apply, batch)
        else:
            yield from pool.map(apply, batch)

    def apply(self, change: Change, card: Card | None) -> WriteResult:
        """Apply one change given the card currently at its href (None: no card)."""
        for _ in range(_ATTEMPTS):
            if change.action == "delete":
                result = self._delete(change.key, card)
            else:
                result = self._upsert(change, card)
            if result is not None:
                return result
            card = self._refetch(self.href(change.key))  # 412: someone changed it, decide again
        return WriteResult(
            change.key, "failed", error="the card kept changing under us (HTTP 412); retry later"
        )

    def _refetch(self, href: str) -> Card | None:
        cards = self.client.multiget([href])
        return cards[0] if cards else None

    def _foreign(self, key: str, card: Card) -> WriteResult | None:
        """A failure when `card` is not ours (or unreadable), else None."""
        try:
            ours = parse_card(card.data, self.format, card_id=key).ours
        except CardInvalid as exc:
            return WriteResult(key, "failed", error=f"{card.href}: {exc}; left untouched")
        return None if ours else WriteResult(key, "failed", error=_NOT_OURS.format(href=card.href))

    def _upsert(self, change: Change, card: Card | None) -> WriteResult | None:
        key, record = change.key, change.record or {}
        text = render_card(
            record,
            self.format,
            uid=key,
            fields=self.fields,
            keep_from=card.data if card is not None else None,
        )
        etag: str | None = None
        if card is not None:
            if (failure := self._foreign(key, card)) is not None:
                return failure
            # Compare what the card would hold after our PUT with what it holds now, both
            # read back the same way: a field written from others (FN from the names, when
            # display_name is not shared) then counts as unchanged, not as a difference.
            stored = parse_card(card.data, self.format, card_id=key).record
            wanted = parse_card(text, self.format, card_id=key).record
            if same_content(wanted, stored, self.fields):
                return WriteResult(key, "unchanged", version=card.etag)
            if card.etag is None:
                return WriteResult(key, "failed", error=f"{card.href}: the server gave no ETag")
            etag = card.etag
        response = self.client.put(self.href(key), text, etag)
        if response.status_code in _OK:
            version = self._etag(response, self.href(key))
            if card is None:
                return WriteResult(key, "created", version=version)
            return WriteResult(key, "updated", version=version)
        if response.status_code == 412:
            # Whatever the body names (sabre/dav, Nextcloud's server, names no DAV
            # precondition but an s:header), the card changed or appeared since we read it:
            # read it again and decide again.
            return None
        return WriteResult(key, "failed", error=self._put_error(response))

    def _delete(self, key: str, card: Card | None) -> WriteResult | None:
        if card is None:
            return WriteResult(key, "unchanged")
        if (failure := self._foreign(key, card)) is not None:
            return failure
        if card.etag is None:
            return WriteResult(key, "failed", error=f"{card.href}: the server gave no ETag")
        response = self.client.delete(self.href(key), card.etag)
        if response.status_code in _OK:
            return WriteResult(key, "deleted")
        if response.status_code == 404:
            return WriteResult(key, "unchanged")
        if response.status_code == 412:
            return None
        return WriteResult(key, "failed", error=f"DELETE answered HTTP {response.status_code}")

    def _etag(self, response: requests.Response, href: str) -> str | None:
        """The new ETag; when the server rewrote the card and sent none, read it back."""
        etag = response.headers.get("ETag")
        if etag:
            return etag
        card = self._refetch(href)
        return card.etag if card is not None else None

    def _put_error(self, response: requests.Response) -> str:
        status, condition = response.status_code, precondition(response)
        if condition == "no-uid-conflict" or (
            status in (400, 409) and b"uid already exists" in response.content
        ):
            return (
                "another card in the book already has this UID (HTTP "
                f"{status}); remove the duplicate card or use a separate address book"
            )
        if status == 415 or condition in ("valid-address-data", "supported-address-data"):
            return f"the server rejected the vCard as invalid (HTTP {status})"
        if status == 404:
            return (
                "the server answered 404: on Nextcloud this is what a write to a book shared "
                "read-only gives; use a book the user owns or has write access to"
            )
        if status == 403:
            return "the server forbade the write (HTTP 403): check the user's rights on the book"
        return f"PUT answered {said(response)}"
