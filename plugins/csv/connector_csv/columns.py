"""Between canonical records and CSV rows: which column holds which field, and how cells read.

A connection's mapping names a column for each canonical field, for ``consent.<purpose>``
(a yes/no column; an empty cell is no evidence, so the purpose is left out) and for
``extra.<adapter>.<name>`` (text). The key column always holds the record's ``id``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from connector_core.cells import unneutralize
from connector_core.consent import NO, YES, consent_value
from connector_core.consent import state as consent_state
from connector_core.errors import ConfigError
from connector_core.records import (
    FIELDS,
    Expected,
    Field,
    FieldMapping,
    FieldType,
    Record,
    ValueInvalid,
    coerce,
    consent_purpose,
    is_extra,
    to_text,
)
from connector_csv.dialect import UNDECODABLE

_LIST_SEPARATORS = (";", "|")
_ACCEPTED: Mapping[FieldType, tuple[type, ...]] = {
    FieldType.STRING: (str, int, float),
    FieldType.INTEGER: (int,),
    FieldType.NUMBER: (int, float),
    FieldType.BOOLEAN: (bool,),
    FieldType.DATE: (str, dt.date),
    FieldType.DATETIME: (str, dt.datetime),
    FieldType.LIST: (list, tuple, set, frozenset),
}


class RowInvalid(ValueError):
    """A row that cannot become a record: the column at fault and what it should hold (the
    parts of a :class:`~connector_core.adapters.ReadProblem`), never what a cell holds."""

    def __init__(
        self,
        expected: Expected,
        column: str | None = None,
        *,
        key: str | None = None,
        refused: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(f"column {column!r}: expected {expected.value}")
        self.expected = expected
        self.column = column
        self.key = key
        #: the purposes the row's readable consent cells refuse, as consent states (None:
        #: none): evidence on its own, whatever else in the row cannot be read
        self.refused = refused


class RenderError(ValueError):
    """A record value that cannot be written to its column; the message holds no values."""


@dataclasses.dataclass(frozen=True, slots=True)
class Column:
    """One canonical name and the CSV column that holds it."""

    canonical: str
    native: str
    field: Field | None = None  # None for consent.<purpose> and extra.<adapter>.<name>
    purpose: str | None = None

    def wanted(self, fields: frozenset[str] | None) -> bool:
        """True when a read asking for `fields` needs this column."""
        if fields is None or self.canonical in fields:
            return True
        return self.purpose is not None and "consent" in fields


class ColumnMap:
    """The connection's mapping, checked once and ordered for new files.

    Order: canonical fields in :data:`~connector_core.records.FIELDS` order, then consent
    columns, then extras (each in mapping order).
    """

    def __init__(self, mapping: FieldMapping, key_column: str) -> None:
        self.key_column = key_column
        self.columns = _columns(tuple(mapping.entries.items()))

    def default_header(self, records: Iterable[Mapping[str, Any]] | None = None) -> list[str]:
        """The header of a new file: the key column, then each mapped column once, in
        mapping order; with `records`, only the columns some record has a field for (so a
        recipient's file has no empty columns for fields a policy never shares)."""
        present: set[str] | None = None
        if records is not None:
            present = {name for record in records for name in record}
        wanted = [
            c.native
            for c in self.columns
            if present is None or c.canonical in present or c.canonical.split(".", 1)[0] in present
        ]
        return list(dict.fromkeys([self.key_column, *wanted]))

    def canonical_names(self, header: list[str] | None = None) -> frozenset[str]:
        """Canonical names this connection can fill (from `header`, if given)."""
        found = {c.canonical for c in self.columns if header is None or c.native in header}
        return frozenset({"id", *found})

    def decoder(
        self,
        header: list[str],
        fields: frozenset[str] | None,
        *,
        encoding: str,
        source: str,
        neutralized: bool,
    ) -> RowDecoder:
        """A decoder for rows under `header` that fills the requested `fields`."""
        positions = {name: index for index, name in enumerate(header)}
        plan = [(positions[c.native], c) for c in self.columns if c.native in positions]
        return RowDecoder(
            width=len(header),
            key=(positions[self.key_column], self.key_column),
            plan=[(index, c) for index, c in plan if c.wanted(fields)],
            encoding=encoding,
            source=source,
            neutralized=neutralized,
        )

    def render(self, record: Record, encoding: str) -> dict[str, str]:
        """The cells of `record` by column name (without the key); raises RenderError."""
        cells = self._blank.copy()  # every column, in order, empty: most fields are absent
        # the columns of the record's fields, in column order (a column's error comes first)
        spots = [spot for name in record for spot in self._spots.get(name, ())]
        if len(spots) > 1:
            spots.sort()
        for _, column, name, plain in spots:
            # the common cases inline: an absent value, and text in a text column
            value = record[name]
            if value is None:  # a consent column's, too, when the record has no consent
                continue
            if plain and value.__class__ is str:
                text = value
                if not text.isascii():
                    check_encodable(column.canonical, text, encoding)
            else:
                text = _render(column, record)
                check_encodable(column.canonical, text, encoding)
            if text:  # of two columns with one name, the last with a value wins
                cells[column.native] = text
        return cells

    @functools.cached_property
    def _blank(self) -> dict[str, str]:
        """Each column's name once, in column order, with an empty cell."""
        return dict.fromkeys((c.native for c in self.columns), "")

    @functools.cached_property
    def _spots(self) -> dict[str, tuple[tuple[int, Column, str, bool], ...]]:
        """By record key: the columns filled from it, with their rank and whether they hold
        text as it is (no consent, no typed field)."""
        spots: dict[str, list[tuple[int, Column, str, bool]]] = {}
        for rank, c in enumerate(self.columns):
            name = c.canonical if c.purpose is None else "consent"
            plain = c.purpose is None and (c.field is None or c.field.type is FieldType.STRING)
            spots.setdefault(name, []).append((rank, c, name, plain))
        return {name: tuple(found) for name, found in spots.items()}


_FIELD_ORDER = {name: index for index, name in enumerate(FIELDS)}


@functools.lru_cache(maxsize=64)
def _columns(entries: tuple[tuple[str, str], ...]) -> tuple[Column, ...]:
    """A mapping's columns but id, ordered; once per mapping (thousands of partners' target
    connections share their template's)."""
    columns = [_column(name, native) for name, native in entries]
    return tuple(sorted((c for c in columns if c.canonical != "id"), key=_rank))


def _rank(column: Column) -> tuple[int, int]:
    if column.field is not None:
        return 0, _FIELD_ORDER[column.canonical]
    return (1 if column.purpose is not None else 2), 0  # sorted() keeps mapping order


def check_encodable(name: str, text: str, encoding: str) -> None:
    """Raise RenderError when `text` has characters that `encoding` cannot store."""
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        raise RenderError(f"{name}: has characters that {encoding} cannot store") from None


def _column(canonical: str, native: str) -> Column:
    purpose = consent_purpose(canonical)
    if purpose is not None:
        return Column(canonical, native, purpose=purpose)
    if is_extra(canonical):
        return Column(canonical, native)
    if canonical in FIELDS and canonical != "consent":
        return Column(canonical, native, field=FIELDS[canonical])
    raise ConfigError(_unknown_field_message(canonical), hint=_MAPPING_HINT)


_MAPPING_HINT = (
    "Map canonical fields, consent.<purpose> or extra.csv.<name> to column names, "
    "for example `consent.contact_me: Newsletter`."
)


def _unknown_field_message(name: str) -> str:
    if name == "consent":
        return "the csv adapter maps consent one purpose per column: write consent.<purpose>"
    message = f"{name!r} in the mapping is not a canonical field"
    close = difflib.get_close_matches(name, list(FIELDS), n=1)
    return message + (f"; did you mean {close[0]!r}?" if close else "")


# How a decoder reads a column (see RowDecoder._steps): text as it is (empty is None), a
# value looked up among the usual spellings (else parsed), consent, or another coercion.
_TEXT, _LOOKUP, _CONSENT, _COERCE = range(4)
_MISSING = object()
#: The spellings a yes/no or consent cell usually holds: decoded once per decoder, not per cell.
_SPELLINGS = tuple(
    {
        form
        for word in (*YES, *NO, "", "null", "none", "x")
        for form in (word, word.upper(), word.capitalize())
    }
)


@dataclasses.dataclass(frozen=True, slots=True)
class RowDecoder:
    """Turns the cells of one row into a record, or raises :class:`RowInvalid`."""

    width: int
    key: tuple[int, str]
    plan: list[tuple[int, Column]]
    encoding: str
    source: str
    neutralized: bool
    has_consent: bool = dataclasses.field(init=False)  # records get a consent dict
    #: per planned column: (cell index, column, the key it fills (the purpose, for consent),
    #: how it reads, the spellings decoded ahead)
    _steps: tuple[tuple[int, Column, str, int, Mapping[str, Any]], ...] = dataclasses.field(
        init=False, repr=False
    )

    #: the generated straight-line reading of the steps (see :func:`_straight`)
    _fast: Callable[[list[str], str], Record | None] = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        consent = any(column.purpose is not None for _, column in self.plan)
        object.__setattr__(self, "has_consent", consent)  # frozen: set once, here
        steps = tuple((index, column, *_reading(column)) for index, column in self.plan)
        object.__setattr__(self, "_steps", steps)
        object.__setattr__(self, "_fast", _straight(steps, self.source, consent))

    def decode(self, cells: list[str]) -> Record:
        """The record in `cells`, with formula protection undone if the file uses it.

        The same as :func:`_fill` on each planned cell in turn (the tests hold it to that),
        with the usual spellings of yes/no and consent cells looked up instead of parsed."""
        joined = "".join(cells)
        if not joined.isascii() and UNDECODABLE.search(joined):
            raise RowInvalid(Expected.ENCODING)
        if len(cells) != self.width:
            raise RowInvalid(Expected.ROW)
        guarded = self.neutralized
        index, name = self.key
        text = cells[index]
        if not text.strip():
            raise RowInvalid(Expected.KEY, name)
        key: Any = unneutralize(text) if guarded and text[:1] == "'" else text
        if not (guarded and "'" in joined and any(cell[:1] == "'" for cell in cells)):
            fast = self._fast(cells, key)
            if fast is not None:
                return fast
        # a guarded cell, an unusual spelling or a bad value: cell by cell
        record: Record = {"id": key}
        given: dict[str, Any] = {}
        if self.has_consent:
            record["consent"] = given
        source = self.source
        for index, column, key, reading, spellings in self._steps:
            text = cells[index]
            if guarded and text[:1] == "'":
                text = unneutralize(text)
            if reading == _TEXT:
                record[key] = text or None
                continue
            value = spellings.get(text, _MISSING)
            try:
                if reading == _CONSENT:
                    if value is _MISSING:
                        value = consent_value(text, key)
                    if value is not None:
                        given[key] = {"granted": value, "source": source, "at": None}
                else:
                    if value is _MISSING:
                        value = coerce(column.field, text)  # type: ignore[arg-type]
                    record[key] = value
            except ValueInvalid as exc:
                refused = self._refusals(cells, guarded)
                raise RowInvalid(
                    exc.expected, column.native, key=record["id"], refused=refused
                ) from None
        return record

    def _refusals(self, cells: list[str], guarded: bool) -> dict[str, Any] | None:
        """The explicit noes of the row's consent cells that can be read (None: none)."""
        refused: dict[str, Any] = {}
        for index, _column, key, reading, spellings in self._steps:
            if reading != _CONSENT:
                continue
            text = cells[index]
            if guarded and text[:1] == "'":
                text = unneutralize(text)
            value = spellings.get(text, _MISSING)
            if value is _MISSING:
                try:
                    value = consent_value(text, key)
                except ValueInvalid:
                    continue
            if value is False:
                refused[key] = {"granted": False, "source": self.source, "at": None}
        return refused or None


def _straight(
    steps: tuple[tuple[int, Column, str, int, Mapping[str, Any]], ...],
    source: str,
    has_consent: bool,
) -> Callable[[list[str], str], Record | None]:
    """:meth:`RowDecoder.decode`'s loop unrolled for its steps, for rows without a guarded
    cell: ``fast(cells, id)`` is the record, built in one dict display with the keys in the
    loop's order, or None at the first unusual spelling or bad value (the loop then reads
    the row).

    The generated source holds only generated names and cell indexes: every key, spelling
    table and field is a constant the function closes over."""
    constants: list[Any] = []

    def const(value: Any) -> str:
        constants.append(value)
        return f"k{len(constants) - 1}"

    looked: list[str] = []  # statements before the record (spellings looked up)
    items = ["'id': key", *(["'consent': given"] if has_consent else [])]
    consents: list[str] = []  # statements after it
    for n, (index, column, key, reading, spellings) in enumerate(steps):
        name, cell = const(key), f"cells[{index}]"
        if reading == _TEXT:
            items.append(f"{name}: {cell} or None")
        elif reading == _COERCE:
            items.append(f"{name}: coerce({const(column.field)}, {cell})")
        else:
            looked += [f"v{n} = {const(spellings)}.get({cell}, MISSING)", f"if v{n} is MISSING:"]
            looked.append("    return None")
            if reading == _LOOKUP:
                items.append(f"{name}: v{n}")
            else:
                state = f"{{'granted': v{n}, 'source': {const(source)}, 'at': None}}"
                consents += [f"if v{n} is not None:", f"    given[{name}] = {state}"]
    lines = ["given = {}", *looked, f"record = {{{', '.join(items)}}}", *consents]
    body = "".join(f"\n            {line}" for line in lines)
    code = (
        f"def factory({', '.join(f'k{n}' for n in range(len(constants)))}):\n"
        "    def fast(cells, key):\n"
        f"        try:{body}\n"
        "        except ValueInvalid:\n"
        "            return None\n"
        "        return record\n"
        "    return fast\n"
    )
    namespace: dict[str, Any] = {
        "coerce": coerce,
        "MISSING": _MISSING,
        "ValueInvalid": ValueInvalid,
    }
    # Safe to exec: the source holds only generated names, indexes and fixed text.
    exec(compile(code, "<csv row decoder>", "exec"), namespace)
    fast: Callable[[list[str], str], Record | None] = namespace["factory"](*constants)
    return fast


def _reading(column: Column) -> tuple[str, int, Mapping[str, Any]]:
    """The key :meth:`RowDecoder.decode` fills from `column`, how it reads the column, and
    its spellings decoded ahead."""
    purpose, field = column.purpose, column.field
    if purpose is not None:
        return purpose, _CONSENT, _decoded(lambda text: consent_value(text, purpose))
    if field is None or field.type is FieldType.STRING:
        return column.canonical, _TEXT, {}
    if field.type is FieldType.BOOLEAN:
        return column.canonical, _LOOKUP, _decoded(lambda text: coerce(field, text))
    return column.canonical, _COERCE, {}


def _decoded(read: Any) -> dict[str, Any]:
    """Each usual spelling and what `read` makes of it (those it refuses left out)."""
    found: dict[str, Any] = {}
    for text in _SPELLINGS:
        try:
            found[text] = read(text)
        except ValueInvalid:
            continue
    return found


def _fill(record: Record, column: Column, text: str, source: str) -> None:
    """Put the cell's value in `record`; raises ValueInvalid (which holds no value).

    The reference :meth:`RowDecoder.decode` is held to (it reads the same way, faster)."""
    if column.purpose is not None:
        granted = consent_value(text, column.purpose)  # the one consent parser
        if granted is not None:
            record["consent"][column.purpose] = consent_state(granted, source)
    elif column.field is not None:
        record[column.canonical] = coerce(column.field, text)
    else:
        record[column.canonical] = text or None


def _render(column: Column, record: Record) -> str:
    if column.purpose is not None:
        return _render_consent(column, record.get("consent"))
    value = record.get(column.canonical)
    if value is None:
        return ""
    if column.field is None:
        if isinstance(value, str | int | float):
            return to_text(None, value)
        raise RenderError(f"{column.canonical}: a {type(value).__name__} is not a text value")
    return _render_typed(column.field, value)


def _render_consent(column: Column, consent: Any) -> str:
    state = consent.get(column.purpose) if isinstance(consent, Mapping) else None
    if isinstance(state, Mapping):
        state = state.get("granted")
    if state is None or isinstance(state, bool):
        return to_text(None, state)
    raise RenderError(f"{column.canonical}: consent must be granted true or false")


def _render_typed(field: Field, value: Any) -> str:
    accepted = _ACCEPTED.get(field.type, ())
    if not isinstance(value, accepted) or (isinstance(value, bool) and bool not in accepted):
        raise RenderError(
            f"{field.name}: a {type(value).__name__} cannot be written as a {field.type} value"
        )
    if field.type is FieldType.LIST:
        text = _render_list(field, value)
    elif isinstance(value, dt.date):
        text = value.isoformat()
    else:
        text = to_text(field, value)
    try:
        coerce(field, text)
    except ValueError:
        raise RenderError(
            f"{field.name}: the value is not {Expected.of(field.type).value}"
        ) from None
    return text


def _render_list(field: Field, items: Any) -> str:
    if not all(isinstance(item, str | int | float) for item in items):
        raise RenderError(f"{field.name}: list items must be text")
    texts = [str(item) for item in items]
    if any(sep in text for text in texts for sep in _LIST_SEPARATORS):
        raise RenderError(f"{field.name}: list items cannot contain ';' or '|'")
    return ";".join(texts)
