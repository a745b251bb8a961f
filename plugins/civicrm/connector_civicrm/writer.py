"""Writing contacts: explicit lookup by external_identifier, one ``Contact.save`` per batch.

``Contact.save`` with ``match`` silently creates a new contact when zero or several match
(reference §5), so the batch's keys are looked up first and every record is sent either
with its ``id`` (update) or as a create. Records whose stored values already equal the
projection are not sent at all ("unchanged"): CiviCRM writes are slow (~20 ms a contact).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from connector_civicrm.client import CivicrmApiError, CivicrmClient, Unanswered
from connector_civicrm.mapping import ContactMapping, same
from connector_civicrm.settings import CivicrmSettings
from connector_core.adapters import Change, WriteResult
from connector_core.errors import AdapterError

log = logging.getLogger("connector.civicrm")  # under "connector": `-v` shows it


@dataclasses.dataclass(slots=True)
class _Plan:
    """What one change needs: a contact save (or none), membership and tag edits."""

    change: Change
    contact_id: int | None = None
    values: dict[str, Any] | None = None  # None: nothing to save on the contact row
    groups: dict[str, str] = dataclasses.field(default_factory=dict)  # title -> status
    tags_add: set[str] = dataclasses.field(default_factory=set)
    tags_remove: set[str] = dataclasses.field(default_factory=set)
    created: bool = False
    error: str | None = None

    @property
    def touches(self) -> bool:
        return bool(self.values is not None or self.groups or self.tags_add or self.tags_remove)


class ContactWriter:
    """Applies one connection's changes; caches group and tag ids between batches."""

    def __init__(
        self, client: CivicrmClient, contacts: ContactMapping, settings: CivicrmSettings
    ) -> None:
        self.client = client
        self.contacts = contacts
        self.settings = settings
        self.group_ids: dict[str, int] = {}
        self.tag_ids: dict[str, int] = {}

    def batch(self, changes: Sequence[Change]) -> Iterator[WriteResult]:
        """Apply a batch of changes; yield one result per change, in order."""
        existing = self._lookup(changes)
        deletes = [c for c in changes if c.action == "delete"]
        upserts = [self._plan(c, existing.get(c.key)) for c in changes if c.action == "upsert"]
        deleted = self._delete([existing[c.key] for c in deletes if c.key in existing])
        self._save([p for p in upserts if p.values is not None])
        self._memberships([p for p in upserts if p.error is None and p.contact_id])
        plans = {id(p.change): p for p in upserts}
        for change in changes:
            if change.action == "delete":
                row = existing.get(change.key)
                done = row is not None and int(row["id"]) in deleted
                yield WriteResult(change.key, "deleted" if done else "unchanged")
                continue
            plan = plans[id(change)]
            if plan.error is not None:
                yield WriteResult(change.key, "failed", error=plan.error)
            elif plan.created:
                yield WriteResult(change.key, "created", version=str(plan.contact_id))
            else:
                if plan.touches:
                    yield WriteResult(change.key, "updated", version=str(plan.contact_id))
                else:
                    yield WriteResult(change.key, "unchanged", version=str(plan.contact_id))

    # -- lookup and planning --------------------------------------------------------------

    def _lookup(self, changes: Sequence[Change]) -> dict[str, dict[str, Any]]:
        """Existing contacts by external_identifier (trashed ones included: unique index),
        fetched in one multi-call with the ids of the groups and tags the records name."""
        keys = sorted({c.key for c in changes})
        if not keys:
            return {}
        params: dict[str, Any] = {
            "select": self.contacts.select(None),
            "where": [["external_identifier", "IN", keys], ["is_deleted", "IN", [0, 1]]],
            "orderBy": {"id": "ASC"},
            "limit": 0,
        }
        chains = self.contacts.chains(None)
        if chains:
            params["chain"] = chains
        calls: dict[str, tuple[str, str, dict[str, Any]]] = {"contacts": ("Contact", "get", params)}
        records = [dict(c.record) for c in changes if c.record is not None]
        titles = {t for r in records for t in self.contacts.wanted_memberships(r) or {}}
        names = {t for r in records for t in self.contacts.wanted_tags(r) or ()}
        for entity, key, wanted, cache in self._caches(titles, names):
            if wanted - set(cache):
                where = [[key, "IN", sorted(wanted - set(cache))]]
                calls[entity] = (entity, "get", {"select": ["id", key], "where": where})
        answers = self._run(calls)
        for entity, name, _, cache in self._caches(titles, names):
            for row in answers.get(entity, {}).get("values", []):
                cache[str(row[name])] = int(row["id"])
        rows = answers["contacts"]["values"]
        for row in rows:  # the ids of groups a contact may have to leave
            for m in self.contacts.membership_rows(row):
                if m.get("group_id") is not None:
                    self.group_ids.setdefault(str(m["group_id.title"]), int(m["group_id"]))
        return {str(r["external_identifier"]): r for r in rows}

    def _caches(
        self, titles: set[str], names: set[str]
    ) -> list[tuple[str, str, set[str], dict[str, int]]]:
        return [("Group", "title", titles, self.group_ids), ("Tag", "name", names, self.tag_ids)]

    def _run(
        self, calls: Mapping[str, tuple[str, str, Mapping[str, Any]]]
    ) -> dict[str, dict[str, Any]]:
        """One call, or several in one multi-call request; the first error is raised."""
        if len(calls) == 1:
            [(key, (entity, action, params))] = calls.items()
            return {key: self.client.call(entity, action, params)}
        answers = self.client.call_many(calls)
        for answer in answers.values():
            if isinstance(answer, Exception):
                raise answer
        return {k: v for k, v in answers.items() if not isinstance(v, Exception)}

    def _plan(self, change: Change, row: Mapping[str, Any] | None) -> _Plan:
        record = change.record or {}
        plan = _Plan(change)
        values = self.contacts.to_values(record)
        if row is None:
            plan.values = {k: v for k, v in values.items() if v not in (None, "")}
            plan.values["external_identifier"] = change.key
            plan.values["contact_type"] = self.settings.contact_type or "Individual"
            plan.created = True
        else:
            plan.contact_id = int(row["id"])
            diff = {k: v for k, v in values.items() if not same(k, row.get(k), v)}
            if row.get("is_deleted"):
                diff["is_deleted"] = False  # an upsert of a trashed contact restores it
            if diff:
                plan.values = {"id": plan.contact_id, **diff}
        self._plan_memberships(plan, record, row)
        return plan

    def _plan_memberships(
        self, plan: _Plan, record: Mapping[str, Any], row: Mapping[str, Any] | None
    ) -> None:
        have = self.contacts.memberships(row) if row is not None else {}
        wanted = self.contacts.wanted_memberships(dict(record))
        if wanted is not None:
            plan.groups = {t: s for t, s in wanted.items() if have.get(t) != s}
            if "groups" in record:
                managed = set(wanted) | self.contacts.consent_groups
                for title, status in have.items():
                    if status == "Added" and title not in managed:
                        plan.groups[title] = "Removed"
        tags = self.contacts.wanted_tags(dict(record))
        if tags is not None:
            current = self.contacts.tags(row) if row is not None else set()
            plan.tags_add, plan.tags_remove = tags - current, current - tags

    # -- applying ---------------------------------------------------------------------------

    def _delete(self, rows: list[dict[str, Any]]) -> set[int]:
        permanent = self.settings.delete_mode == "permanent"
        ids = sorted(int(r["id"]) for r in rows if permanent or not r.get("is_deleted"))
        if not ids:
            return set()
        params: dict[str, Any] = {"where": [["id", "IN", ids]], "useTrash": not permanent}
        done = self.client.call("Contact", "delete", params)["values"]
        return {int(v["id"]) for v in done}

    def _save(self, plans: list[_Plan]) -> None:
        if not plans:
            return
        try:
            saved = self.client.call("Contact", "save", {"records": [p.values for p in plans]})
        except Unanswered as exc:
            log.warning("%s; looking up what CiviCRM did", exc)
            self._settle(plans, str(exc))
            return
        except CivicrmApiError as exc:
            if len(plans) == 1:
                plans[0].error = str(exc)
                return
            log.info("Contact.save of %d records failed; saving them one by one", len(plans))
            for plan in plans:  # isolate the record CiviCRM refused
                self._save([plan])
            return
        for plan, value in zip(plans, saved["values"], strict=False):
            plan.contact_id = int(value["id"])

    def _settle(self, plans: list[_Plan], why: str) -> None:
        """After a save went unanswered: read the contacts back by external_identifier. The
        plans CiviCRM carried out get their ids; the others fail for this run and are NOT
        sent again now: CiviCRM may still be working on them (a save of 150 contacts was
        not visible yet when looked up at once). The next run looks them up first."""
        existing = self._lookup([p.change for p in plans])
        pending = 0
        for plan in plans:
            row = existing.get(plan.change.key)
            fresh = self._plan(plan.change, row)
            if row is not None:
                plan.contact_id = fresh.contact_id
            if fresh.values is not None:
                pending += 1
                plan.error = (
                    f"{why}; CiviCRM has not saved it (yet): the next run looks it up again "
                    "before sending anything"
                )
        log.info("%d of %d records were saved; %d left to the next run", len(plans) - pending,
                 len(plans), pending)  # fmt: skip

    def _memberships(self, plans: list[_Plan]) -> None:
        titles = {t for p in plans for t in p.groups}
        names = {t for p in plans for t in p.tags_add | p.tags_remove}
        if not titles and not names:
            return
        self._create_missing(titles, names)
        calls: dict[str, tuple[str, str, dict[str, Any]]] = {}
        records = [
            {"group_id": self.group_ids[t], "contact_id": p.contact_id, "status": s}
            for p in plans
            for t, s in sorted(p.groups.items())
            if t in self.group_ids
        ]
        if records:
            match = ["group_id", "contact_id"]
            calls["groups"] = ("GroupContact", "save", {"records": records, "match": match})
        tagged = [
            {
                "entity_table": "civicrm_contact",
                "entity_id": p.contact_id,
                "tag_id": self.tag_ids[t],
            }
            for p in plans
            for t in sorted(p.tags_add)
            if t in self.tag_ids
        ]
        if tagged:
            calls["tag"] = ("EntityTag", "save", {"records": tagged})
        untag = [
            ["AND", [["entity_id", "=", p.contact_id], ["tag_id", "IN", ids]]]
            for p in plans
            if (ids := sorted(self.tag_ids[n] for n in p.tags_remove if n in self.tag_ids))
        ]
        if untag:
            where = [["entity_table", "=", "civicrm_contact"], ["OR", untag]]
            calls["untag"] = ("EntityTag", "delete", {"where": where})
        if not calls:
            return
        try:
            self._run(calls)
        except CivicrmApiError as exc:
            for plan in plans:
                plan.error = plan.error or f"groups and tags: {exc}"

    def _create_missing(self, titles: set[str], names: set[str]) -> None:
        """Create the groups and tags records name that CiviCRM lacks (one request)."""
        calls: dict[str, tuple[str, str, dict[str, Any]]] = {}
        missing = {
            entity: sorted(wanted - set(cache))
            for entity, _, wanted, cache in self._caches(titles, names)
        }
        missing = {entity: todo for entity, todo in missing.items() if todo}
        if not missing:
            return
        if not self.settings.create_missing:
            raise AdapterError(
                f"{self.client.what}: {missing} do not exist in CiviCRM",
                hint="Create them in CiviCRM, or set `create_missing: true`.",
            )
        for entity, todo in missing.items():
            records = [{"title": n, "name": n} if entity == "Group" else {"name": n} for n in todo]
            calls[entity] = (entity, "save", {"records": records})
        answers = self._run(calls)
        for entity, _key, _, cache in self._caches(titles, names):
            for name, row in zip(
                missing.get(entity, []), answers.get(entity, {}).get("values", []), strict=False
            ):
                cache[name] = int(row["id"])
