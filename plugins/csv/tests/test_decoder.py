"""The row decoder's fast path reads every row exactly as the reference, cell by cell, does."""

from __future__ import annotations

from typing import Any

from connector_csv.columns import ColumnMap, RowDecoder, RowInvalid, _fill
from connector_csv.dialect import UNDECODABLE
from hypothesis import event, given, settings
from hypothesis import strategies as st

from connector_core.cells import neutralize, unneutralize
from connector_core.consent import NO, YES
from connector_core.records import Expected, FieldMapping, Record, ValueInvalid

MAPPING = {
    "id": "id",
    "first_name": "First",
    "email": "Email",
    "latitude": "Lat",
    "birth_date": "Born",
    "groups": "Groups",
    "do_not_email": "NoMail",
    "is_deceased": "Deceased",
    "modified_at": "Modified",
    "consent.contact_me": "Contact",
    "consent.local_organizing": "Local",
    "extra.csv.note": "Note",
}
HEADER = list(MAPPING.values())
YES_NO = [*YES, *NO, "", "null", "none", "x", "Yes ", " NO", "TRUE", "oN", "Granted"]
TEXT = ["", " ", "Ana", "=1+1", "'=1+1", "''=x", "+44 1", "-12.5", "@a", " =x", "'plain", "é"]
TEXT += ["\x00=x", "\t=x", "\udcff"]
VALUES = {
    "id": ["1", " 2", "'=3", "", "  ", "x\x01"],
    "Lat": ["52.5", "-1", "", "1e3", "nan", " 7 "],
    "Born": ["1970-01-01", "", " 1970-01-01 ", "1970-13-01"],
    "Groups": ["a;b|c", "", " ; ", "x", "b;a;a"],
    "NoMail": YES_NO,
    "Deceased": YES_NO,
    "Modified": ["2025-01-01T00:00:00+00:00", "", "2025-01-01 10:00"],
    "Contact": YES_NO,
    "Local": YES_NO,
}


def cell(column: str) -> st.SearchStrategy[str]:
    """Mostly values the column may hold (some with case or spaces changed), else anything."""
    usual = st.sampled_from(VALUES.get(column, TEXT))
    changed = usual.map(str.capitalize) | usual.map(str.upper) | usual.map(" {} ".format)
    return st.one_of(usual, usual, usual, changed, st.text(max_size=4))


ROWS = st.tuples(*(cell(column) for column in HEADER)).map(list)


def reference(decoder: RowDecoder, cells: list[str]) -> Record:
    """The decoder as it was: every cell through unneutralize and :func:`_fill`."""
    if UNDECODABLE.search("".join(cells)):
        raise RowInvalid(Expected.ENCODING)
    if len(cells) != decoder.width:
        raise RowInvalid(Expected.ROW)
    unguard = unneutralize if decoder.neutralized else (lambda cell: cell)
    index, name = decoder.key
    if not cells[index].strip():
        raise RowInvalid(Expected.KEY, name)
    record: Record = {"id": unguard(cells[index])}
    if decoder.has_consent:
        record["consent"] = {}
    for index, column in decoder.plan:
        try:
            _fill(record, column, unguard(cells[index]), decoder.source)
        except ValueInvalid as exc:
            raise RowInvalid(exc.expected, column.native, key=record["id"]) from None
    return record


def outcome(decode: Any, cells: list[str]) -> Any:
    try:
        return list(decode(cells).items())  # the order of the fields too
    except RowInvalid as exc:
        return ("invalid", exc.expected, exc.column, exc.key)


@settings(max_examples=400)
@given(
    cells=ROWS,
    width=st.sampled_from([0, 0, 0, 0, 1, -1]),
    fields=st.none() | st.frozensets(st.sampled_from([*MAPPING, "consent"])),
    neutralized=st.booleans(),
    guard=st.lists(st.booleans(), min_size=len(HEADER) + 1, max_size=len(HEADER) + 1),
)
def test_decode_equals_the_reference(
    cells: list[str],
    width: int,
    fields: frozenset[str] | None,
    neutralized: bool,
    guard: list[bool],
) -> None:
    cells = cells[:width] if width < 0 else cells + ["x"] * width
    # some cells as a neutralizing writer wrote them, so that unneutralize has work to do
    pairs = zip(cells, guard, strict=False)
    cells = [neutralize(c) if g and "\udcff" not in c else c for c, g in pairs]
    decoder = ColumnMap(FieldMapping(MAPPING), "id").decoder(
        HEADER, fields, encoding="utf-8", source="csv:members", neutralized=neutralized
    )
    found = outcome(decoder.decode, cells)
    assert repr(found) == repr(outcome(lambda c: reference(decoder, c), cells))  # nan too
    event("decoded" if isinstance(found, list) else f"invalid: {found[1].name}")


def test_consent_states_are_new_dicts_for_every_record() -> None:
    decoder = ColumnMap(FieldMapping(MAPPING), "id").decoder(
        HEADER, None, encoding="utf-8", source="csv:members", neutralized=True
    )
    row = ["1", "Ana", "", "", "", "", "", "", "", "yes", "Yes", ""]
    first, second = decoder.decode(row), decoder.decode(row)
    assert first == second
    assert first["consent"]["contact_me"] is not second["consent"]["contact_me"]


USUAL_ROWS = st.tuples(
    *(st.sampled_from(VALUES.get(column, ["", "Ana", "é", "x y", "'q"])) for column in HEADER)
).map(list)


@settings(max_examples=300)
@given(
    cells=USUAL_ROWS,
    fields=st.none() | st.frozensets(st.sampled_from([*MAPPING, "consent"])),
    neutralized=st.booleans(),
)
def test_usual_rows_decode_as_the_reference(
    cells: list[str], fields: frozenset[str] | None, neutralized: bool
) -> None:
    """Rows of the usual spellings, most of which the generated straight-line code reads."""
    decoder = ColumnMap(FieldMapping(MAPPING), "id").decoder(
        HEADER, fields, encoding="utf-8", source="csv:members", neutralized=neutralized
    )
    found = outcome(decoder.decode, cells)
    assert repr(found) == repr(outcome(lambda c: reference(decoder, c), cells))
    event("decoded" if isinstance(found, list) else f"invalid: {found[1].name}")
