"""What the API user can see of contacts now: the schema check's view of a CiviCRM site.

CiviCRM silently drops unknown (or hidden) fields from a ``select`` and answers nothing for a
``where`` on a field that does not resolve (reference, "Observed on a real CiviCRM"), so a
renamed custom field or a consent group retitled at the site would read as "no evidence"
for everyone. Before a run the adapter lists ``Contact.getFields`` (custom fields included,
minus the custom groups the user may not see), the fields of each joined entity a mapped
path goes through (``email_primary.email`` -> ``Email``), and the titles of the groups that
hold consent: two requests, both multi-calls that are retried like any read. When a custom
field is missing, ``CustomField.get`` tells a field the user may not see from one the site
does not have.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from connector_civicrm.client import CivicrmClient
from connector_civicrm.mapping import SPECIAL, ContactMapping
from connector_civicrm.settings import CivicrmSettings
from connector_core.adapters import MissingField, SourceFields
from connector_core.errors import AdapterError

_CUSTOM_NOTE = (
    "the site has no such custom field, or the API user cannot see it: without 'access all "
    "custom data' (or its custom group's ACL) CiviCRM hides custom fields and says nothing "
    "about them"
)
_HIDDEN_NOTE = (
    "the site has this custom field, but the API user cannot see it: grant 'access all "
    "custom data' or its custom group's ACL"
)
_GROUP_NOTE = "consent is read from that group's membership: write its title as the site shows it"


def source_fields(
    client: CivicrmClient, contacts: ContactMapping, settings: CivicrmSettings
) -> SourceFields:
    """The canonical fields the site provides now, and the configured names it lacks."""
    paths = list(_paths(contacts))
    contact, titles = _contact_fields_and_groups(client, contacts)
    joined = _joined_fields(client, contact, [native for _, native, _ in paths])
    lacking = [
        (canonical, native, setting)
        for canonical, native, setting in paths
        if not _exists(native, setting, contact, joined, titles)
    ]
    hidden = hidden_custom_fields(client, [n for _, n, s in lacking if _is_custom(s, n)])
    missing = [
        MissingField(canonical, native, setting, _note(setting, native, hidden))
        for canonical, native, setting in lacking
    ]
    lost = {m.canonical for m in missing}
    provided = contacts.canonical_names() - lost - {"consent"}
    provided |= {f"consent.{p}" for p in contacts.consent} - lost
    return SourceFields(
        provided=frozenset({"id", *provided}),
        missing=tuple(missing),
        native=(*contact, *_joined_paths(paths, contact, joined), *sorted(titles)),
        source=f"what the API user sees at {settings.base_url} (Contact fields and groups)",
    )


def _paths(contacts: ContactMapping) -> Iterator[tuple[str, str, tuple[str, ...]]]:
    """(canonical, native name, where it is configured) for everything a read relies on."""
    for canonical, native in contacts.fields.items():
        if canonical not in SPECIAL:
            yield canonical, native, ("mapping", canonical)
    for canonical, native in contacts.custom.items():
        yield canonical, native, ("settings", "custom_fields", canonical.rsplit(".", 1)[1])
    for purpose, rule in contacts.consent.items():
        kind, native = ("field", rule.field) if rule.field else ("group", rule.group or "")
        yield f"consent.{purpose}", native, ("settings", "consent", purpose, kind)


def _contact_fields_and_groups(
    client: CivicrmClient, contacts: ContactMapping
) -> tuple[dict[str, str | None], set[str]]:
    calls: dict[str, tuple[str, str, dict[str, Any]]] = {
        "contact": ("Contact", "getFields", {"select": ["name", "fk_entity"], "action": "get"})
    }
    if contacts.consent_groups:
        calls["groups"] = ("Group", "get", {"select": ["title"], "limit": 0})
    answers = client.call_many(calls)
    fields = {str(r["name"]): r.get("fk_entity") for r in _values(answers["contact"], "name")}
    groups = _values(answers["groups"], "title") if "groups" in answers else []
    titles = {str(r["title"]) for r in groups}
    return fields, titles


def _joined_fields(
    client: CivicrmClient, contact: Mapping[str, str | None], natives: list[str]
) -> dict[str, set[str]]:
    """The fields of each entity a mapped path joins (``email_primary.email`` -> Email)."""
    entities = {
        entity
        for native in natives
        if "." in (path := _strip(native)) and path not in contact
        if (entity := contact.get(path.split(".", 1)[0]))
    }
    if not entities:
        return {}
    params = {"select": ["name"], "action": "get"}
    answers = client.call_many({e: (e, "getFields", params) for e in sorted(entities)})
    return {e: {str(r["name"]) for r in _values(a, "name")} for e, a in answers.items()}


def _joined_paths(
    paths: list[tuple[str, str, tuple[str, ...]]],
    contact: Mapping[str, str | None],
    joined: Mapping[str, set[str]],
) -> list[str]:
    """``email_primary.email`` and its siblings, for the joins the mapping goes through."""
    heads = sorted({_strip(n).split(".", 1)[0] for _, n, _ in paths if "." in _strip(n)})
    return [
        f"{head}.{name}"
        for head in heads
        if (entity := contact.get(head)) in joined
        for name in sorted(joined[entity or ""])
    ]


def _exists(
    native: str,
    setting: tuple[str, ...],
    contact: Mapping[str, str | None],
    joined: Mapping[str, set[str]],
    titles: set[str],
) -> bool:
    if setting[-1] == "group":
        return native in titles
    path = _strip(native)
    if path in contact:  # a plain field, or a custom field written Group.field
        return True
    head, _, rest = path.partition(".")
    entity = contact.get(head) if head in contact else None
    if not rest or entity is None:
        return False
    known = joined.get(entity)
    return known is None or rest.split(".", 1)[0] in known


def _strip(native: str) -> str:
    """The field path without a pseudoconstant suffix (``country_id:abbr`` -> ``country_id``)."""
    return native.split(":", 1)[0]


def hidden_custom_fields(client: CivicrmClient, natives: list[str]) -> set[str] | None:
    """Which of these custom fields exist at the site (``CustomField.get``) although
    ``Contact.getFields`` hides them; None when the site will not say (CustomField.get
    shows nothing to a user without 'access all custom data', as if the group did not
    exist)."""
    if not natives:
        return set()
    groups = sorted({n.split(".", 1)[0] for n in natives})
    params = {
        "select": ["name", "custom_group_id.name"],
        "where": [["custom_group_id.name", "IN", groups]],
        "limit": 0,
    }
    try:
        rows = client.call("CustomField", "get", params)["values"]
    except AdapterError:
        return None  # e.g. no permission to list custom fields: the generic note
    if not rows:
        return None  # no field of these groups, or none the user may see: CiviCRM hides both
    existing = {f"{r.get('custom_group_id.name')}.{r.get('name')}" for r in rows}
    return existing & set(natives)


def _is_custom(setting: tuple[str, ...], native: str) -> bool:
    return setting[:2] == ("settings", "custom_fields") or (
        setting[-1] == "field" and "." in native
    )


def _note(setting: tuple[str, ...], native: str, hidden: set[str] | None) -> str:
    if not _is_custom(setting, native):
        return _GROUP_NOTE if setting[-1] == "group" else ""
    if hidden is None:
        return _CUSTOM_NOTE
    if native in hidden:
        return _HIDDEN_NOTE
    return "the site has no such custom field (CustomField.get): was it renamed or deleted?"


#: The entity behind each location join of Contact (reference §3.3).
_JOINED = {
    f"{kind}_{which}": entity
    for kind, entity in (("email", "Email"), ("phone", "Phone"), ("address", "Address"))
    for which in ("primary", "billing")
}


def option_ids(client: CivicrmClient, paths: list[str]) -> dict[str, dict[str, list[Any]] | None]:
    """For each ``field:suffix`` path, each option's suffix value -> every id carrying it
    (``getFields`` with ``loadOptions``; one multi-call). None for a path whose entity or
    options cannot be told: its conditions stay local."""
    wanted: dict[str, tuple[str, str, str]] = {}
    for path in paths:
        field, _, suffix = path.rpartition(":")
        head, dot, name = field.rpartition(".")
        entity = _JOINED.get(head) if dot else "Contact"
        if entity is not None and "." not in head:
            wanted[path] = (entity, name, suffix)
    entities = sorted({e for e, _, _ in wanted.values()})
    calls = {
        e: (e, "getFields", {
            "select": ["name", "options"],
            "where": [["name", "IN", sorted({n for x, n, _ in wanted.values() if x == e})]],
            "loadOptions": ["id", "name", "label", "abbr"],
            "action": "get",
        })
        for e in entities
    }  # fmt: skip
    answers: dict[str, Any] = {}
    if calls:
        try:
            answers = client.call_many(calls)
        except AdapterError:
            answers = {}
    out: dict[str, dict[str, list[Any]] | None] = dict.fromkeys(paths)
    for path, (entity, name, suffix) in wanted.items():
        answer = answers.get(entity)
        if isinstance(answer, dict):
            out[path] = _by_label(answer, name, suffix)
    return out


def _by_label(answer: dict[str, Any], name: str, suffix: str) -> dict[str, list[Any]] | None:
    for row in answer.get("values") or ():
        if isinstance(row, dict) and row.get("name") == name:
            options = row.get("options")
            if not isinstance(options, list):
                return None
            table: dict[str, list[Any]] = {}
            for option in options:
                if isinstance(option, dict) and option.get(suffix) is not None:
                    table.setdefault(str(option[suffix]), []).append(option.get("id"))
            return table
    return None


def _values(answer: dict[str, Any] | AdapterError, key: str) -> list[dict[str, Any]]:
    """The rows of an answer that carry `key` (an error answer is raised)."""
    if isinstance(answer, AdapterError):
        raise answer
    return [row for row in answer.get("values") or () if isinstance(row, dict) and key in row]
