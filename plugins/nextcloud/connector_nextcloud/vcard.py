"""Canonical records ↔ vCards (3.0 and 4.0 read, one version written), with vobject.

vobject does the escaping (commas, semicolons, backslashes, newlines) and folds long lines
at 75 octets without splitting a UTF-8 character. Cards are compared by their canonical
fields (:func:`same_content`), never byte for byte: Nextcloud rewrites cards it stores.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Collection, Mapping
from typing import Any

# vobject ships no type hints; its objects are handled as Any here and typed at the edges.
import vobject  # type: ignore[import-untyped]
import vobject.base  # type: ignore[import-untyped]
import vobject.vcard  # type: ignore[import-untyped]

from connector_core.consent import AmbiguousConsent, combine, consent_value
from connector_core.records import Record
from connector_nextcloud.settings import MARKER_PROPERTY

# vobject logs every line it skips verbatim ("Failed to parse line: NOTE;..."): a card's
# content must never reach our logs, so those records are dropped at their logger.
logging.getLogger("vobject.base").addFilter(lambda _record: False)

_BASIC_DATE = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_ADR_PARTS = {
    "street_address": "street",
    "city": "city",
    "region": "region",
    "postal_code": "code",
    "country": "country",
}
_PROPERTY_OF = {
    "email": "email",
    "phone": "tel",
    "organization": "org",
    "birth_date": "bday",
    "latitude": "geo",
    "longitude": "geo",
    "groups": "categories",
    **dict.fromkeys(_ADR_PARTS, "adr"),
}
#: Fields this module maps; a connection's mapping selects among them.
MAPPED_FIELDS = frozenset(
    {"first_name", "last_name", "display_name", "email", "phone", "organization"}
    | {"birth_date", "latitude", "longitude", "groups", "consent"}
    | set(_ADR_PARTS)
)


class CardInvalid(ValueError):
    """A card that is not a readable vCard."""


@dataclasses.dataclass(frozen=True, slots=True)
class CardFormat:
    """How canonical records are written to and read from cards, from the settings."""

    version: str = "3.0"
    consent_property: str | None = "X-COMMONS-CONSENT"
    consent_categories: Mapping[str, str] = dataclasses.field(default_factory=dict)
    groups: bool = True
    marker: str = "commons-connector"


@dataclasses.dataclass(frozen=True, slots=True)
class ParsedCard:
    """A card read back: its canonical record, UID and whether it carries our marker."""

    record: Record
    uid: str | None
    ours: bool


# -- reading -------------------------------------------------------------------------------


def parse_card(text: str, fmt: CardFormat, *, card_id: str) -> ParsedCard:
    """Read a vCard 3.0 or 4.0 into a canonical record whose ``id`` is `card_id`."""
    try:
        card = vobject.readOne(text, ignoreUnreadable=True)
    except (vobject.base.ParseError, UnicodeError, ValueError, AttributeError) as exc:
        line = getattr(exc, "lineNumber", None)  # the error's text quotes the card: left out
        raise CardInvalid("not a readable vCard" + (f" (line {line})" if line else "")) from None
    if card.name != "VCARD":
        raise CardInvalid("not a vCard")
    record: Record = {"id": card_id}
    _read_names(card, record)
    record["email"] = _first_text(card, "email")
    record["phone"] = _first_text(card, "tel")
    _read_address(card, record)
    _read_org_and_dates(card, record)
    _read_geo(card, record)
    _read_categories_and_consent(card, fmt, record)
    uid = _first_text(card, "uid")
    ours = any(_text(line.value) for line in card.contents.get(MARKER_PROPERTY.lower(), []))
    return ParsedCard({k: v for k, v in record.items() if v is not None}, uid, ours)


def _text(value: Any) -> str | None:
    if isinstance(value, list):
        value = ",".join(str(v) for v in value)
    text = str(value).strip() if value is not None else ""
    return text or None


def _first_text(card: Any, name: str) -> str | None:
    lines = card.contents.get(name, [])
    preferred = [ln for ln in lines if _is_preferred(ln)] or lines
    return _text(preferred[0].value) if preferred else None


def _is_preferred(line: Any) -> bool:
    types = {t.lower() for t in line.params.get("TYPE", [])}
    return "pref" in types or bool(line.params.get("PREF"))


def _read_names(card: Any, record: Record) -> None:
    if "n" in card.contents:
        name = card.n.value
        record["first_name"] = _text(getattr(name, "given", None))
        record["last_name"] = _text(getattr(name, "family", None))
    record["display_name"] = _first_text(card, "fn")


def _read_address(card: Any, record: Record) -> None:
    lines = card.contents.get("adr", [])
    preferred = [ln for ln in lines if _is_preferred(ln)] or lines
    if not preferred or not isinstance(preferred[0].value, vobject.vcard.Address):
        return
    address = preferred[0].value
    for canonical, part in _ADR_PARTS.items():
        record[canonical] = _text(getattr(address, part, None))


def _read_org_and_dates(card: Any, record: Record) -> None:
    if "org" in card.contents:
        value = card.org.value
        parts = value if isinstance(value, list) else [value]
        record["organization"] = _text(parts[0]) if parts else None
    bday = _first_text(card, "bday")
    if bday:
        match = _BASIC_DATE.match(bday)
        record["birth_date"] = "-".join(match.groups()) if match else bday[:10]


def _read_geo(card: Any, record: Record) -> None:
    geo = _first_text(card, "geo")
    if not geo:
        return
    parts = re.split(r"[,;]", geo.removeprefix("geo:").replace("\\", ""))
    try:
        record["latitude"], record["longitude"] = float(parts[0]), float(parts[1])
    except (ValueError, IndexError):
        return


def _read_categories_and_consent(card: Any, fmt: CardFormat, record: Record) -> None:
    categories: list[str] = []
    for line in card.contents.get("categories", []):
        value = line.value if isinstance(line.value, list) else [line.value]
        categories.extend(str(v).strip() for v in value if str(v).strip())
    # Every piece of evidence per purpose; they combine as one consent parser says: no if any
    # says no, yes only if all say yes; a value that is neither is no consent.
    pieces: dict[str, list[dict[str, Any] | None]] = {}
    by_category = {cat: purpose for purpose, cat in fmt.consent_categories.items()}
    for category in categories:
        if category in by_category:
            pieces.setdefault(by_category[category], []).append(_state(True, "categories"))
    if fmt.consent_property:
        for line in card.contents.get(fmt.consent_property.lower(), []):
            purpose, _, answer = (_text(line.value) or "").partition("=")
            if purpose.strip():
                pieces.setdefault(purpose.strip(), []).append(_answer(answer, fmt))
    combined = {p: combine(states) for p, states in pieces.items()}
    consent = {p: s for p, s in combined.items() if s is not None}
    groups = sorted({c for c in categories if c not in by_category})
    if fmt.groups:
        record["groups"] = groups or None
    record["consent"] = consent or None


def _answer(answer: str, fmt: CardFormat) -> dict[str, Any] | None:
    try:
        granted = consent_value(answer)
    except AmbiguousConsent:
        return None  # not an explicit yes: with any other piece, no consent
    return None if granted is None else _state(granted, fmt.consent_property or "")


def _state(granted: bool, source: str) -> dict[str, Any]:
    return {"granted": granted, "source": f"vcard:{source}", "at": None}


# -- writing -------------------------------------------------------------------------------


def render_card(
    record: Record,
    fmt: CardFormat,
    *,
    uid: str,
    fields: Collection[str],
    keep_from: str | None = None,
) -> str:
    """Write `record`'s mapped `fields` as a vCard of ``fmt.version`` with UID and marker.

    With `keep_from` (the card stored now), properties the connector does not manage, such
    as a NOTE or PHOTO someone added in Nextcloud Contacts, are carried over.
    """
    card = vobject.vCard()
    card.add("version").value = fmt.version
    card.add("uid").value = uid
    card.add("prodid").value = "-//Commons Connector//CardDAV//EN"
    first, last = _get(record, fields, "first_name"), _get(record, fields, "last_name")
    card.add("n").value = vobject.vcard.Name(family=last or "", given=first or "")
    display = _get(record, fields, "display_name")
    card.add("fn").value = display or " ".join(p for p in (first, last) if p) or uid
    _add_simple(card, record, fields)
    _add_address(card, record, fields)
    _add_geo(card, record, fields, fmt)
    _add_categories_and_consent(card, record, fields, fmt)
    card.add(MARKER_PROPERTY.lower()).value = fmt.marker
    if keep_from is not None:
        _keep_unmanaged(card, keep_from, managed_properties(fmt, fields))
    return fold(card.serialize())


def managed_properties(fmt: CardFormat, fields: Collection[str]) -> frozenset[str]:
    """The (lowercase) vCard properties the connector writes, given the mapped fields."""
    managed = {"version", "uid", "prodid", "n", "fn", "rev", MARKER_PROPERTY.lower()}
    managed |= {prop for field, prop in _PROPERTY_OF.items() if field in fields}
    if fmt.consent_property:
        managed.add(fmt.consent_property.lower())
    if fmt.consent_categories or fmt.groups:
        managed.add("categories")
    return frozenset(managed)


def _keep_unmanaged(card: Any, stored: str, managed: frozenset[str]) -> None:
    try:
        old = vobject.readOne(stored, ignoreUnreadable=True)
    except (vobject.base.ParseError, UnicodeError, ValueError, AttributeError):
        return
    for name, lines in old.contents.items():
        if name not in managed:
            for line in lines:
                card.add(line)


def fold(text: str, limit: int = 75) -> str:
    """Fold lines at `limit` octets (RFC 6350 3.2) without splitting a UTF-8 character.

    vobject folds by characters, so a line of fewer than 75 non-ASCII characters can still
    exceed 75 octets; this re-folds every line by its UTF-8 length.
    """
    out: list[str] = []
    for line in text.replace("\r\n ", "").split("\r\n"):
        chunk, size = "", 0
        for char in line:
            width = len(char.encode())
            if size + width > limit:
                out.append(chunk)
                chunk, size = " ", 1
            chunk, size = chunk + char, size + width
        out.append(chunk)
    return "\r\n".join(out)


def _get(record: Record, fields: Collection[str], name: str) -> Any:
    value = record.get(name) if name in fields else None
    return None if value in ("", [], {}) else value


def _add_simple(card: Any, record: Record, fields: Collection[str]) -> None:
    for name, prop in (("email", "email"), ("phone", "tel")):
        if (value := _get(record, fields, name)) is not None:
            card.add(prop).value = str(value)
    if (org := _get(record, fields, "organization")) is not None:
        card.add("org").value = [str(org)]
    if (bday := _get(record, fields, "birth_date")) is not None:
        text = str(bday)[:10]
        card.add("bday").value = text.replace("-", "") if card.version.value == "4.0" else text


def _add_address(card: Any, record: Record, fields: Collection[str]) -> None:
    parts = {part: _get(record, fields, name) for name, part in _ADR_PARTS.items()}
    if any(v is not None for v in parts.values()):
        card.add("adr").value = vobject.vcard.Address(
            **{part: str(v) if v is not None else "" for part, v in parts.items()}
        )


def _add_geo(card: Any, record: Record, fields: Collection[str], fmt: CardFormat) -> None:
    lat, lon = _get(record, fields, "latitude"), _get(record, fields, "longitude")
    if lat is None or lon is None:
        return
    line = card.add("geo")
    if fmt.version == "4.0":
        line.value = f"geo:{float(lat)!r},{float(lon)!r}"
    else:  # vCard 3.0 GEO is two floats separated by a (structural, unescaped) semicolon
        line.value = f"{float(lat)!r};{float(lon)!r}"
        line.isNative = False
        line.encoded = True


def _add_categories_and_consent(
    card: Any, record: Record, fields: Collection[str], fmt: CardFormat
) -> None:
    categories = set(_get(record, fields, "groups") or []) if fmt.groups else set()
    consent = _get(record, fields, "consent") or {}
    for purpose, state in sorted(consent.items()):
        granted = state.get("granted") if isinstance(state, Mapping) else bool(state)
        if purpose in fmt.consent_categories:
            if granted:
                categories.add(fmt.consent_categories[purpose])
        elif fmt.consent_property and granted is not None:
            answer = "yes" if granted else "no"
            card.add(fmt.consent_property.lower()).value = f"{purpose}={answer}"
    if categories:
        card.add("categories").value = sorted(str(c) for c in categories)


def comparable(record: Record, fields: Collection[str]) -> dict[str, Any]:
    """The canonical content of `record` restricted to `fields`, for change detection."""
    out: dict[str, Any] = {}
    for name in fields:
        value = record.get(name)
        if value in (None, "", [], {}):
            continue
        if name == "consent":
            value = {k: v.get("granted") if isinstance(v, Mapping) else v for k, v in value.items()}
        elif isinstance(value, list):
            value = sorted(str(v) for v in value)
        elif isinstance(value, float):
            value = round(value, 6)
        elif isinstance(value, str):  # servers store CRLF as LF and strip the ends
            value = value.replace("\r\n", "\n").strip()
        out[name] = value
    return out


def same_content(wanted: Record, stored: Record, fields: Collection[str]) -> bool:
    """True when a stored card already holds what `wanted` would write."""
    return comparable(wanted, fields) == comparable(stored, fields)
