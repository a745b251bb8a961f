"""The CiviCRM adapter: contacts over APIv4, read in pages or incrementally, written in batches."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from connector_civicrm.client import CivicrmClient
from connector_civicrm.fields import option_ids, source_fields
from connector_civicrm.mapping import DEFAULT_MAPPING, MERGED_TO, ContactMapping
from connector_civicrm.permissions import check_reading, check_writing
from connector_civicrm.pushdown import Options, pseudoconstant_paths, to_where
from connector_civicrm.settings import CivicrmSettings
from connector_civicrm.writer import ContactWriter
from connector_core.adapters import (
    Adapter,
    AdapterSettings,
    Capability,
    Change,
    Page,
    ReadProblem,
    SourceFields,
    WriteResult,
)
from connector_core.credentials import SecretLookup
from connector_core.errors import ConfigError
from connector_core.query import Condition
from connector_core.records import Record, ValueInvalid

_CURSOR_VERSION = 1


@dataclasses.dataclass(slots=True)
class Cursor:
    """Where a read stopped.

    ``since`` is the ``modified_date`` watermark (site-local time, as CiviCRM prints it) and
    ``seen`` maps the contacts already delivered at exactly that second to a digest of what
    was delivered. Timestamps have one-second granularity, so the next read asks for
    ``>= since`` and skips a contact only if it is unchanged: a contact modified again within
    the same second is still delivered. ``after`` is set while a full read is under way: the
    last contact id it delivered. ``history`` is the newest ``SubscriptionHistory`` id seen:
    group membership changes do not bump ``modified_date``, so they are found there.
    """

    since: str | None = None
    seen: dict[str, str] = dataclasses.field(default_factory=dict)
    after: int | None = None
    history: int | None = None  # the last SubscriptionHistory id seen (group changes)

    def dump(self) -> str:
        data: dict[str, Any] = {"v": _CURSOR_VERSION, "since": self.since, "seen": self.seen}
        if self.after is not None:
            data["after"] = self.after
        if self.history is not None:
            data["history"] = self.history
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def load(cls, text: str) -> Cursor:
        try:
            data = json.loads(text)
            assert data["v"] == _CURSOR_VERSION
            seen = {str(k): str(v) for k, v in data["seen"].items()}
            return cls(data["since"], seen, data.get("after"), data.get("history"))
        except Exception:
            raise ConfigError(
                f"the stored CiviCRM cursor {text[:80]!r} is not one this version wrote",
                hint="Reset the job's cursor so that the next run reads everything again.",
            ) from None

    def fresh(self, row: dict[str, Any]) -> bool:
        """Note a row read in modified_date order; False if it was already delivered as is."""
        stamp, key, digest = row.get("modified_date"), str(row["id"]), _digest(row)
        if stamp != self.since:
            self.since, self.seen = stamp, {}
        elif self.seen.get(key) == digest:
            return False
        self.seen[key] = digest
        return True


def _digest(row: dict[str, Any]) -> str:
    text = json.dumps(row, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:12]


class CivicrmAdapter(Adapter):
    """CiviCRM contacts (APIv4): incremental reads on modified_date, pushdown, batched writes."""

    name: ClassVar[str] = "civicrm"
    settings_model: ClassVar[type[AdapterSettings]] = CivicrmSettings
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {
            Capability.READ,
            Capability.WRITE,
            Capability.DELETE,
            Capability.INCREMENTAL,
            Capability.PUSHDOWN,
        }
    )
    default_mapping: ClassVar[dict[str, str]] = dict(DEFAULT_MAPPING)
    description: ClassVar[str] = "CiviCRM contacts over APIv4"

    settings: CivicrmSettings

    def __init__(
        self,
        settings: AdapterSettings,
        secrets: SecretLookup | None = None,
        *,
        mapping: dict[str, str | None] | None = None,
        connection: str | None = None,
    ) -> None:
        super().__init__(settings, secrets, mapping=mapping, connection=connection)
        self.contacts = ContactMapping(self.settings, self.mapping, self.connection)
        self._client: CivicrmClient | None = None
        self._writer: ContactWriter | None = None
        self._option_cache: dict[str, dict[str, list[Any]] | None] = {}

    @property
    def what(self) -> str:
        """How messages name this connection."""
        return f"civicrm connection {self.connection!r}"

    @property
    def client(self) -> CivicrmClient:
        """The HTTP client, made (and secrets resolved) on first use."""
        if self._client is None:
            key = self.secrets.resolve(self.settings.api_key).get_secret_value()
            site = self.settings.site_key
            site_key = self.secrets.resolve(site).get_secret_value() if site else None
            self._client = CivicrmClient(self.settings, key, site_key, self.what)
        return self._client

    def check(self) -> str:
        """Credentials, URL style, the contacts the key sees and the custom fields it relies
        on (one request, two when a custom field is hidden); the visible count, for doctor."""
        return check_reading(self.client, self.contacts)

    def check_writes(self) -> None:
        """May the key create, edit and delete (trash) contacts? (two requests)"""
        check_writing(self.client, self.settings)

    def schema(self) -> frozenset[str]:
        """The canonical fields this connection reads (and, except organization, writes)."""
        return self.contacts.canonical_names()

    def available_fields(self) -> SourceFields:
        """What the API user can see now: Contact fields, joined fields, consent groups."""
        return source_fields(self.client, self.contacts, self.settings)

    def count(self) -> int:
        """The contacts a full read would list: one ``row_count`` query (reference §2.1)."""
        where = [*self._scope(), ["is_deleted", "=", 0]]
        answer = self.client.call("Contact", "get", {"select": ["row_count"], "where": where})
        return int(answer.get("countMatched", answer.get("count", 0)))

    def close(self) -> None:
        """Close the HTTP session (idempotent)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- reading ----------------------------------------------------------------------------

    def read(
        self,
        *,
        cursor: str | None = None,
        fields: frozenset[str] | None = None,
        where: Condition | None = None,
    ) -> Iterator[Page]:
        """Full reads page by id; cursor reads page by modified_date (trash included)."""
        state = Cursor.load(cursor) if cursor is not None else None
        fields_map = self.pushdown_fields()
        options = self._options(pseudoconstant_paths(where, fields_map))
        pushed = to_where(where, fields_map, self.settings.consent, options)
        if state is None or state.after is not None:
            yield from self._full(state, fields, pushed)
        else:
            yield from self._changes(state, fields, pushed)

    def pushdown_fields(self) -> dict[str, str]:
        """Canonical field -> APIv4 path, for the pushdown translator."""
        return {"id": "id", **self.contacts.fields, **self.contacts.custom}

    def _options(self, paths: set[str]) -> Options:
        """Every id of each option label of these pseudoconstant paths (one request, cached):
        a label in a ``where`` matches only one of the ids that share it."""
        todo = sorted(paths - set(self._option_cache))
        if todo:
            self._option_cache.update(option_ids(self.client, todo))
        return {p: table for p in paths if (table := self._option_cache.get(p)) is not None}

    def _scope(self) -> list[Any]:
        kind = self.settings.contact_type
        return [["contact_type", "=", kind]] if kind else []

    def _get(self, where: list[Any], order: dict[str, str], fields: frozenset[str] | None) -> Any:
        params: dict[str, Any] = {
            "select": self.contacts.select(fields),
            "where": where,
            "orderBy": order,
            "limit": self.page_size,
        }
        chains = self.contacts.chains(fields)
        if chains:
            params["chain"] = chains
        return self.client.call("Contact", "get", params)["values"]

    def _watermark(self) -> Cursor:
        """Where incremental reads start once this full read is done: the newest
        modified_date and SubscriptionHistory id now (one multi-call request)."""
        newest = {
            "select": ["modified_date"],
            "where": [*self._scope(), ["is_deleted", "IN", [0, 1]]],
            "orderBy": {"modified_date": "DESC", "id": "DESC"},
            "limit": 1,
        }
        calls: dict[str, tuple[str, str, dict[str, Any]]] = {
            "contact": ("Contact", "get", newest),
        }
        if self._membership_changes_matter():
            latest = {"select": ["id"], "orderBy": {"id": "DESC"}, "limit": 1}
            calls["history"] = ("SubscriptionHistory", "get", latest)
        answers = self.client.call_many(calls) if len(calls) > 1 else {
            "contact": self.client.call("Contact", "get", newest)
        }  # fmt: skip
        contact, history = answers["contact"], answers.get("history")
        if isinstance(contact, Exception):
            raise contact
        rows = contact["values"]
        cursor = Cursor(rows[0].get("modified_date") if rows else None, {}, 0)
        if isinstance(history, dict):  # an error here only disables group-change tracking
            cursor.history = int(history["values"][0]["id"]) if history["values"] else 0
        return cursor

    def _membership_changes_matter(self) -> bool:
        return "groups" in self.contacts.fields or bool(self.contacts.consent_groups)

    def _full(
        self, state: Cursor | None, fields: frozenset[str] | None, pushed: list[Any]
    ) -> Iterator[Page]:
        snapshot = state is None
        if state is None:
            state = self._watermark()
        after = state.after or 0
        while True:
            where = [*self._scope(), ["is_deleted", "=", 0], *pushed, ["id", ">", after]]
            rows = self._get(where, {"id": "ASC"}, fields)
            for row in rows:
                if state.since is not None and row.get("modified_date") == state.since:
                    state.seen[str(row["id"])] = _digest(row)
            records, problems = self._decode(rows, fields)
            last = len(rows) < self.page_size
            after = int(rows[-1]["id"]) if rows else after
            state.after = None if last else after
            yield Page(records, state.dump(), problems=problems, snapshot=snapshot)
            if last:
                return

    def _changes(
        self, state: Cursor, fields: frozenset[str] | None, pushed: list[Any]
    ) -> Iterator[Page]:
        since: list[Any] = [["modified_date", ">=", state.since]] if state.since else []
        delivered: set[int] = set()
        survivors: set[int] = set()
        # The group changes made before the contacts are read: a contact this run reads
        # after its change need not be read again, one changed later is, next run.
        tracks = state.history is not None and self._membership_changes_matter()
        history = self._history(state) if tracks else []
        while True:
            where = [*self._scope(), ["is_deleted", "IN", [0, 1]], *pushed, *since]
            rows = self._get(where, {"modified_date": "ASC", "id": "ASC"}, fields)
            delivered.update(int(r["id"]) for r in rows)
            fresh = [row for row in rows if state.fresh(row)]
            records, problems = self._records(fresh, fields)
            survivors.update(int(r[MERGED_TO]) for r in records if r.get(MERGED_TO))
            yield Page(records, state.dump(), problems=problems)
            if len(rows) < self.page_size:
                break
            stamp, last = rows[-1]["modified_date"], rows[-1]["id"]
            same_second = [["modified_date", "=", stamp], ["id", ">", last]]
            since = [["OR", [["modified_date", ">", stamp], ["AND", same_second]]]]
        # A merge moves the loser's memberships to the survivor without touching the
        # survivor's modified_date (CiviCRM 6.17.2): read the survivors again.
        yield from self._reread(sorted(survivors - delivered), state, fields, pushed)
        delivered |= survivors
        if history:
            yield from self._membership_changes(history, state, fields, pushed, delivered)

    def _history(self, state: Cursor) -> list[dict[str, Any]]:
        """The SubscriptionHistory rows (group membership changes) after the cursor's."""
        params = {
            "select": ["id", "contact_id"],
            "where": [["id", ">", state.history]],
            "orderBy": {"id": "ASC"},
            "limit": 0,
        }
        values: list[dict[str, Any]] = self.client.call("SubscriptionHistory", "get", params)[
            "values"
        ]
        return values

    def _membership_changes(
        self,
        history: list[dict[str, Any]],
        state: Cursor,
        fields: frozenset[str] | None,
        pushed: list[Any],
        done: set[int],
    ) -> Iterator[Page]:
        """Contacts whose group memberships changed (the `history` read before this run's
        contacts), read again unless this run read them after that change (`done`). The
        cursor moves to the newest of those rows only: a change made while the run read is
        after it, so the next run reads that contact again."""
        ids = sorted({int(h["contact_id"]) for h in history} - done)
        yield from self._reread(ids, state, fields, pushed)
        state.history = max(int(h["id"]) for h in history)
        yield Page([], state.dump())

    def _reread(
        self, ids: list[int], state: Cursor, fields: frozenset[str] | None, pushed: list[Any]
    ) -> Iterator[Page]:
        """These contacts, read again by id (their change did not bump modified_date)."""
        for start in range(0, len(ids), self.page_size):
            chunk = ids[start : start + self.page_size]
            where = [*self._scope(), ["is_deleted", "IN", [0, 1]], *pushed, ["id", "IN", chunk]]
            rows = self._get(where, {"id": "ASC"}, fields)
            records, problems = self._records(rows, fields)
            yield Page(records, state.dump(), problems=problems)

    def _records(
        self, rows: list[dict[str, Any]], fields: frozenset[str] | None
    ) -> tuple[list[Record], list[ReadProblem]]:
        """Canonical records; trashed contacts also say whom they were merged into."""
        records, problems = self._decode(rows, fields)
        trashed = [r for r in records if r["deleted"]]
        if trashed:
            calls = {
                r["id"]: ("Contact", "getMergedTo", {"contactId": int(r["id"])}) for r in trashed
            }
            answers = self.client.call_many(calls)
            for record in trashed:
                answer = answers.get(record["id"])
                found = answer.get("values") if isinstance(answer, dict) else None
                survivor = found[0].get("id") if found and isinstance(found[0], dict) else None
                record[MERGED_TO] = str(survivor) if survivor else None
                record["merged_into"] = record[MERGED_TO]
        return records, problems

    def _decode(
        self, rows: list[dict[str, Any]], fields: frozenset[str] | None
    ) -> tuple[list[Record], list[ReadProblem]]:
        """The rows as records; a row with a value that does not fit its field is a problem
        naming the contact and the field, never the value."""
        records: list[Record] = []
        problems: list[ReadProblem] = []
        for row in rows:
            try:
                records.append(self._record(row, fields))
            except ValueInvalid as exc:
                where = f"connection {self.connection!r}"
                problems.append(ReadProblem(where, exc.expected, exc.field, key=str(row["id"])))
        return records, problems

    def _record(self, row: dict[str, Any], fields: frozenset[str] | None) -> dict[str, Any]:
        record = self.contacts.to_record(row, fields)
        record["deleted"] = bool(row.get("is_deleted"))
        return record

    # -- writing ----------------------------------------------------------------------------

    def write(self, changes: Sequence[Change]) -> Iterator[WriteResult]:
        """Upsert by external_identifier (looked up first) and delete, page_size at a time."""
        if self._writer is None or self._writer.client is not self.client:
            self._writer = ContactWriter(self.client, self.contacts, self.settings)
        writer = self._writer
        for start in range(0, len(changes), self.page_size):
            yield from writer.batch(changes[start : start + self.page_size])
