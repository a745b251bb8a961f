"""Contact record rules of the fake: write-value normalization, defaults, derived names."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from .operators import ApiError, Row
from .schema import BOOL, CONTACT_DEFAULTS, DATE, FLOAT, INT, SER, EntitySpec

if TYPE_CHECKING:
    from .store import Store


def normalize(spec: EntitySpec, name: str, value: Any, store: Store) -> tuple[str, Any] | None:
    """A write value in stored form, or None when the key is ignored (unknown or read-only)."""
    base, _, suffix = name.partition(":")
    fs = spec.fields.get(base)
    if fs is None or fs.kind in ("Filter", "Extra") or fs.readonly or base == "id":
        return None
    if suffix and value is not None:
        if fs.options:
            reverse = {str(opt.get(suffix)).casefold(): key for key, opt in fs.options.items()}
            vals = value if isinstance(value, list) else [value]
            mapped = [reverse.get(str(v).casefold()) for v in vals]
            for v, m in zip(vals, mapped, strict=True):
                if m is None and store.strict_options:
                    # CiviCRM's FormattingUtil: the value itself is quoted in the message
                    raise ApiError(f"'{v}' is not a valid option for field {base}")
            value = mapped if isinstance(value, list) else mapped[0]
        elif fs.fk in ("Group", "Tag"):
            by_name = {r["name"]: rid for rid, r in store.tables[fs.fk].items()}
            value = by_name.get(value, 0)
    if value is None or (value == "" and fs.type != "String"):
        return base, None
    if fs.type == BOOL:
        return base, value.strip().lower() not in ("0", "false", "") if isinstance(
            value, str
        ) else bool(value)
    if fs.type == INT:
        try:
            return base, int(value)
        except (TypeError, ValueError):
            return (
                base,
                0,
            )  # MySQL casts a non-numeric string to 0 (see the group_id note in the reference)
    if fs.type == FLOAT:
        return base, float(value)
    if fs.type == SER:
        return base, [str(v) for v in (value if isinstance(value, list) else [value])]
    if fs.type == DATE:
        return base, str(value)[:10]
    if base == "external_identifier" and value == "":
        return base, None
    return base, value if isinstance(value, str) else str(value)


def new_contact(store: Store, values: Row) -> Row:
    row = dict(CONTACT_DEFAULTS)
    for name, spec in store.schema["Contact"].fields.items():
        if spec.kind == "Custom":
            row[name] = None
    row.update(values)
    if not row.get("contact_type"):
        row["contact_type"] = (
            "Organization"
            if row.get("organization_name")
            else "Household"
            if row.get("household_name")
            else "Individual"
        )
    row["hash"] = secrets.token_hex(16)
    row["created_date"] = row["modified_date"] = store.now()
    return row


def derive_names(store: Store, row: Row) -> None:
    """display_name / sort_name as the Contact BAO computes them for the default name formats."""
    ctype = row["contact_type"]
    if ctype == "Organization":
        row["display_name"] = row["sort_name"] = row.get("organization_name") or ""
    elif ctype == "Household":
        row["display_name"] = row["sort_name"] = row.get("household_name") or ""
    else:
        first, last = row.get("first_name") or "", row.get("last_name") or ""
        prefix = (store.schema["Contact"].fields["prefix_id"].options or {}).get(
            row.get("prefix_id"), {}
        )
        display = " ".join(
            p for p in (prefix.get("label", ""), first, row.get("middle_name") or "", last) if p
        )
        sort = ", ".join(p for p in (last, first) if p)
        if not display:
            eid = store.loc_index["email_primary"].get(row["id"]) if "id" in row else None
            display = sort = store.tables["Email"][eid]["email"] if eid else ""
        row["display_name"], row["sort_name"] = display, sort
