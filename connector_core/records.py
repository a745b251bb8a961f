"""The canonical contact model: a field registry, and per-connection field mappings as data.

Records travel through the engine as plain dicts keyed by canonical field name (hot paths
never validate with pydantic). Custom fields use the flat key ``extra.<adapter>.<name>``.
``consent`` maps a purpose to ``{"granted": bool, "source": str, "at": str | None}``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import re
from collections.abc import Iterator, Mapping
from typing import Any

Record = dict[str, Any]


class FieldType(enum.StrEnum):
    """The value types a canonical field can hold."""

    STRING = "string"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    DATE = "date"
    DATETIME = "datetime"
    LIST = "list"
    MAPPING = "mapping"


class Expected(enum.Enum):
    """What a cell or field should have held: all a problem may say about a bad value.

    Problems about records name the record's key, the column or field, and one of these;
    never the value found, which may belong to a field no policy shares.
    """

    YES_NO = "a yes/no value (yes/no, true/false or 1/0)"
    NUMBER = "a number (like 52.52)"
    INTEGER = "a whole number"
    DATE = "a date (YYYY-MM-DD)"
    DATETIME = "a date and time (YYYY-MM-DDTHH:MM:SS)"
    TEXT = "text"
    LIST = "a list of texts"
    MAPPING = "a mapping"
    KEY = "a key (the cell is empty)"
    UNIQUE_KEY = "a key no other record has"
    ROW = "as many cells as the header has"
    CSV_ROW = "a well-formed CSV row (closed quotes, no NUL character, cells under 128 kB)"
    ENCODING = "text in the file's encoding (see encoding: in the connection's settings)"
    VCARD = "a readable vCard"
    JSON_RECORD = "a JSON object on one line (one record per line)"
    RECORD = "a record this adapter can read"
    CONSENT = "an explicit yes or no (yes/no, true/false, 1/0), or empty for no evidence"
    MERGED_ROWS = (
        "one row per key (rows sharing a key are merged: consent is yes only where every "
        "row says yes, and no where any row says no)"
    )
    HELD_ROWS = (
        "rows sharing a key to agree on every field but consent (they do not, so the person "
        "is held: neither shared anew nor taken back)"
    )

    @classmethod
    def of(cls, field_type: FieldType) -> Expected:
        """What a cell of `field_type` should hold."""
        return _EXPECTED_OF_TYPE[field_type]


_EXPECTED_OF_TYPE: Mapping[FieldType, Expected] = {
    FieldType.STRING: Expected.TEXT,
    FieldType.INTEGER: Expected.INTEGER,
    FieldType.NUMBER: Expected.NUMBER,
    FieldType.BOOLEAN: Expected.YES_NO,
    FieldType.DATE: Expected.DATE,
    FieldType.DATETIME: Expected.DATETIME,
    FieldType.LIST: Expected.LIST,
    FieldType.MAPPING: Expected.MAPPING,
}


class ValueInvalid(ValueError):
    """A value that does not fit its field (the native `field`, when given). The message says
    what was expected, never what was found, so it can go into any problem report as it is."""

    def __init__(self, expected: Expected, field: str | None = None) -> None:
        where = f"{field!r}: " if field is not None else ""
        super().__init__(f"{where}expected {expected.value}")
        self.expected = expected
        self.field = field


@dataclasses.dataclass(frozen=True, slots=True)
class Field:
    """One canonical field: its name, value type and data classification."""

    name: str
    type: FieldType
    classification: str
    description: str = ""

    @property
    def is_list(self) -> bool:
        """True for fields holding a list of strings (``groups``, ``tags``)."""
        return self.type is FieldType.LIST


def _f(name: str, type_: FieldType, classification: str, description: str) -> Field:
    return Field(name, type_, classification, description)


S, B, N, L = FieldType.STRING, FieldType.BOOLEAN, FieldType.NUMBER, FieldType.LIST

FIELDS: Mapping[str, Field] = {
    f.name: f
    for f in (
        _f("id", S, "identifier", "Source-scoped identifier of the person"),
        _f("first_name", S, "pii.name", "Given name"),
        _f("last_name", S, "pii.name", "Family name"),
        _f("display_name", S, "pii.name", "Name as shown to people"),
        _f("email", S, "pii.contact", "Primary email address"),
        _f("phone", S, "pii.contact", "Primary phone number"),
        _f("street_address", S, "pii.location", "Street and number"),
        _f("city", S, "pii.location.coarse", "City or town"),
        _f("postal_code", S, "pii.location", "Postal code"),
        _f("region", S, "pii.location.coarse", "State, province or region"),
        _f("country", S, "pii.location.coarse", "Country (ISO 3166 code or name)"),
        _f("latitude", N, "pii.location", "Latitude in decimal degrees"),
        _f("longitude", N, "pii.location", "Longitude in decimal degrees"),
        _f("organization", S, "affiliation", "Organization the person belongs to"),
        _f("birth_date", FieldType.DATE, "pii.sensitive", "Date of birth"),
        _f("groups", L, "affiliation", "Groups the person is a member of"),
        _f("tags", L, "affiliation", "Tags"),
        _f("consent", FieldType.MAPPING, "consent", "Consent purpose -> state"),
        _f("do_not_email", B, "preference", "Asked not to be emailed"),
        _f("do_not_phone", B, "preference", "Asked not to be phoned"),
        _f("do_not_mail", B, "preference", "Asked not to receive post"),
        _f("do_not_sms", B, "preference", "Asked not to receive text messages"),
        _f("is_deceased", B, "pii.sensitive", "Known to have died"),
        _f("deleted", B, "system", "Deleted or trashed at the source"),
        _f("merged_into", S, "system", "Merged at the source into the record with this id"),
        _f("modified_at", FieldType.DATETIME, "system", "Last modification at the source"),
    )
}

EXTRA_PREFIX = "extra."
_EXTRA_RE = re.compile(r"^extra\.[a-z][a-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$")
_CONSENT_RE = re.compile(r"^consent\.[a-z][a-z0-9_]*$")


#: What no state store holds in text: a NUL (PostgreSQL) and lone surrogates (neither SQLite
#: nor PostgreSQL; a source decoding with ``surrogateescape`` keeps undecodable bytes so).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def usable_id(value: object) -> bool:
    """Whether `value` (a record's ``id``, a read problem's key) identifies a record the
    engine can keep track of: present, not empty, and text every state store holds (no NUL,
    no lone surrogate). A record without one is a read problem, like one without an id: it
    is reported, never stored, and then nobody counts as gone from the source in that run."""
    if value is None or value == "":
        return False
    return storable(value if isinstance(value, str) else str(value))


def storable(text: str) -> bool:
    """Whether every state store holds `text` as it is: no NUL, no lone surrogate. What
    must come back the same (an id, an adapter's cursor) is refused otherwise; free text is
    escaped instead (:func:`storable_text`)."""
    return "\x00" not in text if text.isascii() else _UNSTORABLE.search(text) is None


def storable_text(text: str) -> str:
    """`text` as any state store holds it: each NUL or lone surrogate written as its Python
    escape (``\\x00``, ``\\udce9``); other text unchanged. For free text from outside (a
    target's error, a note typed in), which must never stop a run; not for ids (see
    :func:`usable_id`), which must come back as they were."""
    if text.isascii() and "\x00" not in text:
        return text
    return _UNSTORABLE.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    return ascii(match.group())[1:-1]


def is_extra(name: str) -> bool:
    """True for a well-formed custom field key ``extra.<adapter>.<name>``."""
    return bool(_EXTRA_RE.match(name))


def consent_purpose(name: str) -> str | None:
    """Return the purpose of a ``consent.<purpose>`` key, or None for other names."""
    return name.split(".", 1)[1] if _CONSENT_RE.match(name) else None


def is_known_field(name: str) -> bool:
    """True for a canonical field, a ``consent.<purpose>`` path or an ``extra.`` field."""
    return name in FIELDS or is_extra(name) or consent_purpose(name) is not None


def fields_by_classification(prefix: str) -> Iterator[Field]:
    """Yield the canonical fields whose classification is `prefix` or below it."""
    for field in FIELDS.values():
        if field.classification == prefix or field.classification.startswith(prefix + "."):
            yield field


@dataclasses.dataclass(frozen=True, slots=True)
class FieldMapping:
    """Canonical field name -> the tool's own field (column, API path, vCard property).

    An adapter ships a default; a connection's ``mapping:`` block in connector.yaml
    overrides single entries, and mapping an entry to ``null`` removes it.
    """

    entries: Mapping[str, str]

    @classmethod
    def merged(
        cls, default: Mapping[str, str], overrides: Mapping[str, str | None]
    ) -> FieldMapping:
        """Apply a connection's overrides on top of an adapter's default mapping."""
        entries = dict(default)
        for canonical, native in overrides.items():
            if native is None:
                entries.pop(canonical, None)
            else:
                entries[canonical] = native
        return cls(entries)

    def native(self, canonical: str) -> str | None:
        """The tool's name for a canonical field, or None if it is not mapped."""
        return self.entries.get(canonical)

    def canonical_names(self) -> frozenset[str]:
        """Every canonical field this mapping can fill."""
        return frozenset(self.entries)


def parse_bool(text: str) -> bool | None:
    """Read a spreadsheet-style yes/no cell; None when empty. Raises ValueError otherwise."""
    value = text.strip().lower()
    if value in {"", "null", "none"}:
        return None
    if value in {"1", "true", "yes", "y", "x", "t", "on"}:
        return True
    if value in {"0", "false", "no", "n", "f", "off"}:
        return False
    raise ValueInvalid(Expected.YES_NO)


def coerce(field: Field, text: str) -> Any:
    """Turn a text cell into the field's type; empty text is None. Raises ValueInvalid."""
    if text == "":
        return None
    try:
        return _coerce(field, text)
    except ValueInvalid:
        raise
    except ValueError:  # int(), float() and fromisoformat() quote the text: leave it out
        raise ValueInvalid(Expected.of(field.type)) from None


def _coerce(field: Field, text: str) -> Any:
    match field.type:
        case FieldType.STRING:
            return text
        case FieldType.INTEGER:
            return int(text)
        case FieldType.NUMBER:
            return float(text)
        case FieldType.BOOLEAN:
            return parse_bool(text)
        case FieldType.DATE:
            return dt.date.fromisoformat(text.strip()).isoformat()
        case FieldType.DATETIME:  # one clock: an offset's time as UTC (compared as text)
            moment = dt.datetime.fromisoformat(text.strip())
            return (moment if moment.tzinfo is None else moment.astimezone(dt.UTC)).isoformat()
        case FieldType.LIST:
            return sorted({part.strip() for part in re.split(r"[;|]", text) if part.strip()})
        case _:
            raise ValueError(f"{field.name} cannot be read from text")


def to_text(field: Field | None, value: Any) -> str:
    """Render a canonical value as a text cell (the inverse of :func:`coerce`)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple | set | frozenset):
        return ";".join(str(v) for v in value)
    return str(value)
