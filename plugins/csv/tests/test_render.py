"""The column map renders a record exactly as the reference, column by column, does."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from connector_csv.columns import ColumnMap, RenderError, _render, check_encodable
from hypothesis import given, settings
from hypothesis import strategies as st

from connector_core.records import FieldMapping, FieldType, Record

# two canonical names share the column "Name", as a mapping may make them do
MAPPING = {
    "id": "id",
    "first_name": "Name",
    "display_name": "Name",
    "phone": "Phone",
    "latitude": "Lat",
    "birth_date": "Born",
    "groups": "Groups",
    "do_not_email": "NoMail",
    "consent.contact_me": "Contact",
    "consent.local_organizing": "Local",
    "extra.csv.note": "Note",
}
VALUES = st.one_of(
    st.none(),
    st.sampled_from(["", " ", "Ana", " Ana ", "é", "=1+1", "€", "x;y", "1970-01-02"]),
    st.integers(-3, 3),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.booleans(),
    st.just(dt.date(1970, 1, 2)),
    st.lists(st.sampled_from(["a", "b", "c;d"]), max_size=3),
    st.dictionaries(
        st.sampled_from(["contact_me", "local_organizing"]),
        st.one_of(st.booleans(), st.none(), st.fixed_dictionaries({"granted": st.booleans()})),
    ),
)
RECORDS = st.dictionaries(
    st.sampled_from([*(k for k in MAPPING if "." not in k), "consent", "city"]), VALUES
)


def reference(columns: ColumnMap, record: Record, encoding: str) -> dict[str, str]:
    """Every column in turn (the loop render replaced, as it was)."""
    cells: dict[str, str] = {}
    for column in columns.columns:
        name = column.canonical if column.purpose is None else "consent"
        plain = column.purpose is None and (
            column.field is None or column.field.type is FieldType.STRING
        )
        value = record.get(name)
        if value is None:
            text = ""
        elif plain and value.__class__ is str:
            text = value
            if not text.isascii():
                check_encodable(column.canonical, text, encoding)
        else:
            text = _render(column, record)
            check_encodable(column.canonical, text, encoding)
        if text or column.native not in cells:
            cells[column.native] = text
    return cells


def outcome(render: Any, *args: Any) -> Any:
    try:
        return list(render(*args).items())
    except RenderError as exc:
        return str(exc)


@settings(max_examples=400, deadline=None)
@given(record=RECORDS, encoding=st.sampled_from(["utf-8", "latin-1", "ascii"]))
def test_render_is_the_column_by_column_reference(record: Record, encoding: str) -> None:
    columns = ColumnMap(FieldMapping(MAPPING), "id")
    assert outcome(columns.render, record, encoding) == outcome(
        reference, columns, record, encoding
    )


def test_the_last_of_two_columns_with_one_name_that_has_a_value_wins() -> None:
    columns = ColumnMap(FieldMapping(MAPPING), "id")
    both = columns.render({"first_name": "Ana", "display_name": "Ana B"}, "utf-8")
    assert both["Name"] == "Ana B"
    assert columns.render({"first_name": "Ana", "display_name": ""}, "utf-8")["Name"] == "Ana"
    with pytest.raises(RenderError, match="latitude"):
        columns.render({"latitude": "north", "birth_date": "never"}, "utf-8")
