"""Canonical fields <-> APIv4 select paths; rows to records and records to ``Contact.save`` values.

The default mapping reads location data through the ``*_primary`` implicit joins, so one
``Contact.get`` page carries everything (reference §3.3). Groups and tags come from
per-row chains on that same request (§5 "Chaining"), consent from flags, custom fields or
group membership status, as configured.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from connector_civicrm.settings import CivicrmSettings, ConsentRule
from connector_core.consent import AmbiguousConsent, consent_value
from connector_core.records import FIELDS, Expected, FieldMapping, FieldType, Record, ValueInvalid

DEFAULT_MAPPING: Mapping[str, str] = {
    "first_name": "first_name",
    "last_name": "last_name",
    "display_name": "display_name",
    "email": "email_primary.email",
    "phone": "phone_primary.phone",
    "street_address": "address_primary.street_address",
    "city": "address_primary.city",
    "postal_code": "address_primary.postal_code",
    "region": "address_primary.state_province_id:label",
    "country": "address_primary.country_id:abbr",
    "latitude": "address_primary.geo_code_1",
    "longitude": "address_primary.geo_code_2",
    "organization": "employer_id.display_name",
    "birth_date": "birth_date",
    "do_not_email": "do_not_email",
    "do_not_phone": "do_not_phone",
    "do_not_mail": "do_not_mail",
    "do_not_sms": "do_not_sms",
    "is_deceased": "is_deceased",
    "deleted": "is_deleted",
    "modified_at": "modified_date",
    "groups": "groups",
    "tags": "tags",
    "consent": "consent",
}
#: Canonical fields filled by chains or consent rules, not by a select path of their own.
SPECIAL = frozenset({"groups", "tags", "consent"})
#: Select paths CiviCRM computes or joins from another contact: read, never written.
READ_ONLY = frozenset({"employer_id.display_name", "is_deleted", "modified_date"})
EXTERNAL_ID = "extra.civicrm.external_identifier"
#: On trashed contacts read incrementally: the id of the contact they were merged into.
MERGED_TO = "extra.civicrm.merged_to"
MEMBERSHIPS = "memberships"
TAGGED = "tagged"
_ADDRESS = "address_primary."


def is_address(native: str) -> bool:
    """True for a path into the primary address (cleared with "", since null deletes it)."""
    return native.startswith(_ADDRESS)


class ContactMapping:
    """The per-connection translation between canonical records and CiviCRM contacts."""

    def __init__(self, settings: CivicrmSettings, mapping: FieldMapping, connection: str) -> None:
        self.settings = settings
        self.source = f"civicrm:{connection}"
        self.fields = {
            c: n for c, n in mapping.entries.items() if c not in SPECIAL or c == n
        }  # canonical -> native
        self.custom = {f"extra.civicrm.{k}": v for k, v in settings.custom_fields.items()}
        self.consent: Mapping[str, ConsentRule] = settings.consent
        #: Groups that hold consent: shown under `consent`, not in `groups`.
        self.consent_groups = frozenset(r.group for r in self.consent.values() if r.group)

    # -- reading ----------------------------------------------------------------------------

    def canonical_names(self) -> frozenset[str]:
        """Every canonical field this connection can fill."""
        names = {c for c in self.fields if c in FIELDS}
        if not self.consent:
            names.discard("consent")
        return frozenset(names | set(self.custom) | {EXTERNAL_ID})

    def select(self, fields: frozenset[str] | None) -> list[str]:
        """The APIv4 ``select`` for these canonical fields (None: all of them)."""
        wanted = self._wanted(fields)
        paths = ["id", "external_identifier", "is_deleted", "modified_date"]
        paths += [n for c, n in self.fields.items() if c in wanted and c not in SPECIAL]
        paths += [n for c, n in self.custom.items() if c in wanted]
        if "consent" in wanted:
            paths += [r.field for r in self.consent.values() if r.field is not None]
        return list(dict.fromkeys(paths))

    def chains(self, fields: frozenset[str] | None) -> dict[str, list[Any]]:
        """Per-row chains that fetch group memberships and tags with the contact page."""
        wanted = self._wanted(fields)
        chains: dict[str, list[Any]] = {}
        group_consent = "consent" in wanted and any(r.group for r in self.consent.values())
        if ("groups" in wanted and "groups" in self.fields) or group_consent:
            chains[MEMBERSHIPS] = [
                "GroupContact",
                "get",
                {
                    "select": ["group_id", "group_id.title", "status"],
                    "where": [["contact_id", "=", "$id"]],
                    "orderBy": {"id": "ASC"},
                },
            ]
        if "tags" in wanted and "tags" in self.fields:
            chains[TAGGED] = [
                "EntityTag",
                "get",
                {
                    "select": ["tag_id.name"],
                    "where": [["entity_table", "=", "civicrm_contact"], ["entity_id", "=", "$id"]],
                    "orderBy": {"id": "ASC"},
                },
            ]
        return chains

    def _wanted(self, fields: frozenset[str] | None) -> frozenset[str]:
        if fields is None:
            return self.canonical_names()
        wanted = set(fields)
        if any(f.startswith("consent.") for f in fields):
            wanted.add("consent")
        return frozenset(wanted)

    def to_record(self, row: Mapping[str, Any], fields: frozenset[str] | None) -> Record:
        """One ``Contact.get`` row as a canonical record."""
        wanted = self._wanted(fields)
        record: Record = {"id": str(row["id"]), EXTERNAL_ID: _text(row.get("external_identifier"))}
        for canonical, native in self.fields.items():
            if canonical in wanted and canonical not in SPECIAL and native in row:
                record[canonical] = _checked(canonical, native, row[native])
        for canonical, native in self.custom.items():
            if canonical in wanted and native in row:
                record[canonical] = _plain(row[native])
        statuses = dict(_memberships(row.get(MEMBERSHIPS)))
        if "groups" in wanted and MEMBERSHIPS in row:
            record["groups"] = sorted(
                t for t, s in statuses.items() if s == "Added" and t not in self.consent_groups
            )
        if "tags" in wanted and TAGGED in row:
            record["tags"] = sorted({str(v["tag_id.name"]) for v in _rows(row[TAGGED])})
        if "consent" in wanted and self.consent:
            record["consent"] = self._consent(row, statuses)
        return record

    def _consent(self, row: Mapping[str, Any], statuses: Mapping[str, str]) -> dict[str, Any]:
        at = _checked("modified_at", "modified_date", row.get("modified_date"))
        consent: dict[str, Any] = {}
        for purpose, rule in self.consent.items():
            granted = _granted(rule, row, statuses)
            if granted is not None:  # no evidence means no consent: the purpose is absent
                consent[purpose] = {"granted": granted, "source": self.source, "at": at}
        return consent

    # -- writing ----------------------------------------------------------------------------

    def to_values(self, record: Record) -> dict[str, Any]:
        """The ``Contact.save`` values a canonical record asks for (fields it carries only)."""
        values: dict[str, Any] = {}
        for canonical, native in self.fields.items():
            if canonical in SPECIAL or native in READ_ONLY or canonical not in record:
                continue
            value = record[canonical]
            values[native] = "" if value is None and is_address(native) else value
        for canonical, native in self.custom.items():
            if canonical in record:
                values[native] = record[canonical]
        for purpose, rule in self.consent.items():
            if rule.field is None:
                continue
            state = (record.get("consent") or {}).get(purpose)
            if isinstance(state, Mapping) and isinstance(state.get("granted"), bool):
                values[rule.field] = rule.granted_value == state["granted"]
            elif "consent" in record and not rule.is_flag:
                values[rule.field] = None
        return values

    def wanted_memberships(self, record: Record) -> dict[str, str] | None:
        """Group title -> status this record asks for; None when it says nothing about groups."""
        wanted: dict[str, str] = {}
        says = False
        if "groups" in record and "groups" in self.fields:
            says = True
            wanted.update({str(g): "Added" for g in record.get("groups") or ()})
        if self.settings.group_for_writes:
            says = True
            wanted[self.settings.group_for_writes] = "Added"
        for purpose, rule in self.consent.items():
            if rule.group is None or "consent" not in record:
                continue
            says = True
            state = (record.get("consent") or {}).get(purpose)
            granted = state.get("granted") if isinstance(state, Mapping) else None
            if granted is True:
                wanted[rule.group] = rule.granted_statuses[0]
            elif granted is False and rule.refused_statuses:
                wanted[rule.group] = rule.refused_statuses[0]
        return wanted if says else None

    def wanted_tags(self, record: Record) -> set[str] | None:
        """Tag names this record asks for; None when it says nothing about tags."""
        if "tags" not in record or "tags" not in self.fields:
            return None
        return {str(t) for t in record.get("tags") or ()}

    def memberships(self, row: Mapping[str, Any]) -> dict[str, str]:
        """Group title -> status of an existing contact row (read with the memberships chain)."""
        return dict(_memberships(row.get(MEMBERSHIPS)))

    def membership_rows(self, row: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
        """The memberships chain's rows of an existing contact."""
        return _rows(row.get(MEMBERSHIPS))

    def tags(self, row: Mapping[str, Any]) -> set[str]:
        """Tag names of an existing contact row (read with the tags chain)."""
        return {str(v["tag_id.name"]) for v in _rows(row.get(TAGGED))}


def _granted(rule: ConsentRule, row: Mapping[str, Any], statuses: Mapping[str, str]) -> bool | None:
    if rule.field is not None:
        try:
            value = consent_value(row.get(rule.field))  # the one consent parser
        except AmbiguousConsent:
            return None  # neither yes nor no: no evidence, so no consent
        return None if value is None else value == rule.granted_value
    status = statuses.get(rule.group or "")
    if status in rule.granted_statuses:
        return True
    if status in rule.refused_statuses:
        return False
    return None


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes"}
    return bool(value)


def _rows(chained: Any) -> Iterable[Mapping[str, Any]]:
    """A chain's result: a list of rows (or an envelope holding one)."""
    if isinstance(chained, Mapping):
        chained = chained.get("values", [])
    if isinstance(chained, Mapping):
        chained = list(chained.values())
    return [r for r in chained or () if isinstance(r, Mapping)]


def _memberships(chained: Any) -> Iterable[tuple[str, str]]:
    for row in _rows(chained):
        title = row.get("group_id.title")
        if title is not None:
            yield str(title), str(row.get("status") or "Added")


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _plain(value: Any) -> Any:
    return None if value == "" else value


def _checked(canonical: str, native: str, value: Any) -> Any:
    """`_value`, raising ValueInvalid (which names `native`, never the value) on bad data."""
    try:
        return _value(canonical, value)
    except (TypeError, ValueError):
        raise ValueInvalid(Expected.of(FIELDS[canonical].type), native) from None


def _value(canonical: str, value: Any) -> Any:
    """A CiviCRM value in the canonical field's type."""
    if value is None or value == "":
        return None
    field = FIELDS.get(canonical)
    if field is None:
        return value
    match field.type:
        case FieldType.BOOLEAN:
            return _truthy(value)
        case FieldType.NUMBER:
            return float(value)
        case FieldType.DATETIME:
            return dt.datetime.fromisoformat(str(value)).isoformat()
        case FieldType.DATE:
            return str(value)[:10]
        case FieldType.STRING:
            return str(value)
    return value


def same(native: str, old: Any, new: Any) -> bool:
    """True when a stored value already equals the value we would write."""
    if old in (None, "") and new in (None, ""):
        return True
    if isinstance(new, bool) or isinstance(old, bool):
        return old is not None and new is not None and _truthy(old) == _truthy(new)
    if isinstance(new, float) or isinstance(old, float):
        try:
            return round(float(old), 6) == round(float(new), 6)
        except (TypeError, ValueError):
            return False
    if native.endswith("birth_date") and old is not None and new is not None:
        return str(old)[:10] == str(new)[:10]
    return bool(old == new)
