"""Spreadsheet-safe cells: no value a spreadsheet could run as a formula, no control character."""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from connector_core.cells import is_plain_phone, neutralize, strip_controls, unneutralize

#: What a spreadsheet may take as the start of a formula, once NFKC-normalized.
STARTS = "=+-@\u2212"
CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def could_run(cell: str) -> bool:
    """An independent reading of the rule: would any spreadsheet start a formula here?

    A tab or carriage return first counts as a formula start (OWASP); otherwise leading
    whitespace, control and format characters are skipped (Excel and Sheets trim some,
    LibreOffice drops NUL) and the next character is read in its NFKC form (full-width signs).
    A cell starting with a quote is text.
    """
    if cell[:1] in ("\t", "\r"):
        return True
    rest = cell
    while rest and (rest[0].isspace() or unicodedata.category(rest[0])[0] in "CZ"):
        rest = rest[1:]
    first = unicodedata.normalize("NFKC", rest[:1])[:1]
    return first != "" and first in STARTS and not NUMBER.fullmatch(cell)


HOSTILE = [
    "=1+1",
    "\uff1d1+1",  # FULLWIDTH EQUALS SIGN
    "\uff0bcmd",  # FULLWIDTH PLUS SIGN
    "\uff0d1+2",  # FULLWIDTH HYPHEN-MINUS
    "\uff20SUM(A1)",  # FULLWIDTH COMMERCIAL AT
    "\ufe66x",  # SMALL EQUALS SIGN
    "\u207c1",  # SUPERSCRIPT EQUALS SIGN
    "\u22121+2",  # MINUS SIGN
    " =1+1",
    "\u00a0=1+1",  # NO-BREAK SPACE
    "\u3000=1+1",  # IDEOGRAPHIC SPACE
    "\u200b=1+1",  # ZERO WIDTH SPACE
    "\ufeff=1+1",  # BYTE ORDER MARK
    "\n=1+1",
    "\r\n@x",
    "\t=1",
    "\x00=1+1",
    "\x01\x02=1",
    "\x85=1",  # NEXT LINE, a C1 control
    "'=1",
    "'' \uff1dx",
]


@pytest.mark.parametrize("cell", HOSTILE, ids=repr)
def test_every_hostile_start_gets_a_quote(cell: str) -> None:
    written = neutralize(cell)
    assert written.startswith("'")
    assert not CONTROLS.search(written)
    assert unneutralize(written) == strip_controls(cell)


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ("Jane", "Jane"),
        ("-12.5", "-12.5"),
        ("+3e2", "+3e2"),
        ("'plain", "'plain"),
        ("a\x00b", "ab"),
        ("line one\nline two", "line one\nline two"),
        ("tab\tinside", "tab\tinside"),
        ("-\u0661\u0662", "'-\u0661\u0662"),  # Arabic-Indic digits are not a plain number
        ("+44 20 7946 0958", "'+44 20 7946 0958"),
    ],
)
def test_plain_values_and_numbers_are_written_as_they_are(cell: str, written: str) -> None:
    assert neutralize(cell) == written
    assert unneutralize(written) == strip_controls(cell)


@pytest.mark.parametrize(
    ("cell", "plain"),
    [
        ("+44 20 7946 0958", True),
        ("+1 (555) 010-0100", True),
        ("+33.1.23.45.67.89", True),
        ("+49 30/1234567", True),
        ("+44 20 7946 0958 ext 2", False),
        ("+1+1", False),
        ("+A1", False),
        ("+\uff14\uff14", False),  # full-width digits
        ("+44\n=1", False),
        (" +44 20", False),
    ],
)
def test_plain_phones_are_left_alone_only_when_asked(cell: str, plain: bool) -> None:
    assert is_plain_phone(cell) is plain
    assert neutralize(cell, plain_phones=True) == (cell if plain else "'" + cell)
    assert neutralize(cell).startswith("'")


@given(st.text(), st.booleans())
@example("\x00\uff1d1", False)
@example("+1 555", True)
def test_no_output_cell_runs_as_a_formula_or_holds_a_control(cell: str, phones: bool) -> None:
    written = neutralize(cell, plain_phones=phones)
    assert not CONTROLS.search(written)
    assert not could_run(written) or (phones and is_plain_phone(written))
    assert unneutralize(written) == strip_controls(cell)


@given(st.text(alphabet=st.sampled_from("'=+-@ \t\r\n\u00a0\uff1d\u2212x1.")))
def test_round_trips_on_the_characters_that_matter(cell: str) -> None:
    for phones in (False, True):
        written = neutralize(cell, plain_phones=phones)
        assert unneutralize(written) == cell
        assert not could_run(written) or (phones and is_plain_phone(written))


@given(st.text(max_size=6), st.booleans())
@example("*1234", False)
@example(" =x", False)
@example("'x", False)
@example("", True)
def test_the_fast_path_of_neutralize_changes_nothing(cell: str, plain_phones: bool) -> None:
    """A printable cell starting with an ASCII character that starts no formula is returned
    as it is; every cell gets what the rule itself gives."""
    from connector_core import cells

    text = strip_controls(cell)
    formula = cells._runs_as_formula(text.lstrip("'")) and not cells._NUMBER.fullmatch(text)
    expected = "'" + text if formula and not (plain_phones and is_plain_phone(text)) else text
    assert neutralize(cell, plain_phones=plain_phones) == expected
