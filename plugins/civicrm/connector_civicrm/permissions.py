"""What the API user may do, for ``connector doctor``.

CiviCRM has no API that lists the caller's permissions (``Permission.get`` lists those that
exist), so doctor asks what each missing permission would change: how many contacts the key
sees (none without ``view all contacts`` or an ACL: every read then looks like a mass
deletion), whether the custom fields it relies on are visible (``access all custom data``),
and, for a connection a job writes to, ``Contact.checkAccess`` for create, update and delete
(``add contacts``, ``edit all contacts``, ``delete contacts``: trashing needs it too).
"""

from __future__ import annotations

from typing import Any

from connector_civicrm.client import CivicrmClient
from connector_civicrm.fields import hidden_custom_fields
from connector_civicrm.mapping import ContactMapping
from connector_civicrm.settings import CivicrmSettings
from connector_core.errors import AuthenticationFailed, ConfigError

_GRANT = "Grant the API user's role the permission named (see docs/adapters/civicrm.md)."
#: checkAccess action -> (what it allows, the permission that grants it).
_WRITES = {
    "create": ("create contacts", "add contacts"),
    "update": ("edit contacts", "edit all contacts"),
    "delete": ("delete contacts (trash included)", "delete contacts"),
}


def check_reading(client: CivicrmClient, contacts: ContactMapping) -> str:
    """The contacts the key sees, and the custom fields it relies on; a note for doctor."""
    custom = sorted(_custom_paths(contacts))
    calls: dict[str, tuple[str, str, dict[str, Any]]] = {
        "visible": ("Contact", "get", {"select": ["row_count"]}),
    }
    if custom:
        where = [["name", "IN", custom]]
        calls["fields"] = ("Contact", "getFields", {"select": ["name"], "where": where})
    answers = client.call_many(calls)
    visible = _count(answers["visible"])
    if visible == 0:
        raise AuthenticationFailed(
            f"{client.where}: the API user sees no contacts, not even its own",
            hint="Grant its role 'view all contacts' (or an ACL showing the contacts to "
            "share): without it CiviCRM answers every read with nothing, which looks as if "
            "everyone had been deleted.",
        )
    if custom:
        _check_custom(client, custom, answers["fields"])
    return f"{visible} contact(s) visible"


def check_writing(client: CivicrmClient, settings: CivicrmSettings) -> None:
    """Raise naming the permissions a target connection lacks (``Contact.checkAccess``)."""
    first = client.call("Contact", "get", {"select": ["id"], "orderBy": {"id": "ASC"}, "limit": 1})[
        "values"
    ]
    kind = settings.contact_type or "Individual"
    calls = {
        "create": ("Contact", "checkAccess", {"action": "create", "values": {"contact_type": kind}})
    }
    if first:
        for action in ("update", "delete"):
            values = {"id": first[0]["id"]}
            calls[action] = ("Contact", "checkAccess", {"action": action, "values": values})
    answers = client.call_many(calls)
    refused = [_WRITES[a] for a, answer in answers.items() if _granted(answer) is False]
    if refused:
        what = ", ".join(w for w, _ in refused)
        perms = ", ".join(f"'{p}'" for _, p in refused)
        raise AuthenticationFailed(
            f"{client.where}: the API user may not {what}, which a job writing to it does: "
            f"grant {perms}",
            hint=_GRANT,
        )


def _custom_paths(contacts: ContactMapping) -> set[str]:
    paths = set(contacts.custom.values())
    paths |= {r.field for r in contacts.consent.values() if r.field and "." in r.field}
    paths |= {n for n in contacts.fields.values() if "." in n and n.split(".")[0][:1].isupper()}
    return paths


def _check_custom(client: CivicrmClient, custom: list[str], answer: Any) -> None:
    if not isinstance(answer, dict):
        return  # getFields refused: the schema check before a run says more
    seen = {str(r.get("name")) for r in answer.get("values") or () if isinstance(r, dict)}
    unseen = [c for c in custom if c not in seen]
    if not unseen:
        return
    existing = hidden_custom_fields(client, unseen)
    if existing is None or existing:
        fields = ", ".join(sorted(existing or unseen))
        raise AuthenticationFailed(
            f"{client.where}: the API user cannot see the custom fields {fields}"
            + ("" if existing else " (or the site has none such: CiviCRM hides both alike)")
            + ": grant 'access all custom data' (or the custom group's ACL); without it "
            "consent held there reads as absent",
            hint=_GRANT,
        )
    if unseen:
        raise ConfigError(
            f"{client.where}: the site has no custom fields {', '.join(unseen)} (CustomField.get)",
            hint="Fix `custom_fields:`, the consent rules or the mapping in connector.yaml.",
        )


def _count(answer: Any) -> int | None:
    if not isinstance(answer, dict):
        return None
    return int(answer.get("countMatched") or answer.get("count") or 0)


def _granted(answer: Any) -> bool | None:
    """checkAccess's verdict; None when the site cannot say (an error, an old CiviCRM)."""
    if not isinstance(answer, dict):
        return None
    rows = answer.get("values") or []
    access = rows[0].get("access") if rows and isinstance(rows[0], dict) else None
    return access if isinstance(access, bool) else None
