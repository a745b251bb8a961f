"""Text cells that are safe to open in a spreadsheet: never a formula, no control characters.

Every adapter that writes files people open in a spreadsheet (CSV targets, the Nextcloud
export file) and ``connector ledger export --format csv`` pass each cell through
:func:`neutralize`, and undo it with :func:`unneutralize` when they read their own files back.

The rule, in one place:

- **Control characters are removed**: C0 controls except tab, line feed and carriage return
  (which a CSV writer quotes, and which addresses and notes may hold), DEL and the C1
  controls U+0080 to U+009F. A NUL before ``=`` is dropped by LibreOffice on import, turning
  the rest into a formula, so they go before anything else is decided. (The sync engine
  already removes them from every value any target receives: :func:`strip_controls_deep`.)
- **A cell a spreadsheet could run as a formula gets a leading** ``'``: one whose first
  character is a tab or carriage return, or whose first character after any whitespace
  (spaces, no-break spaces, line breaks, zero-width, format, private-use and unassigned
  characters: every Unicode category Z* and C*) is ``=``,
  ``+``, ``-`` or ``@`` in any Unicode compatibility form (full-width U+FF1D, U+FF0B, U+FF0D,
  U+FF20, small and superscript forms: whatever NFKC maps to one of them) or the minus sign U+2212.
  Leading quotes do not hide a formula: ``'=x`` is written ``''=x``, so that reading removes
  exactly one quote and every value survives a round trip.
- **Plain numbers stay numbers**: ``-12.5`` or ``+3e2`` (ASCII digits only) are written as
  they are, so coordinates and amounts stay numeric.
- **Phone numbers** (``+44 20 7946 0958``) start with ``+``, so by default they get a quote
  like any such cell. With ``plain_phones=True`` a cell that is only ``+`` followed by ASCII
  digits, spaces and ``( ) . / -`` is left as it is: it holds no letter, so no function, cell
  reference or link can hide in it. LibreOffice imports such a cell as text (the test suite
  checks it); a program that evaluates a cell starting with ``+`` reads it as arithmetic at
  worst (``+1-555-0100`` as -654), which is why it is not the default.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

__all__ = [
    "CONTROL_CHARACTERS",
    "FORMULA_ASCII_STARTS",
    "is_plain_phone",
    "neutralize",
    "strip_controls",
    "strip_controls_deep",
    "unneutralize",
]

#: What :func:`strip_controls` removes: every control character but tab, LF and CR.
CONTROL_CHARACTERS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")

_STARTS = frozenset("=+-@")
_ALSO_STARTS = frozenset("\u2212")  # MINUS SIGN: no NFKC form of '-', yet parsed as one
#: The printable ASCII characters a formula (or a quote before one) may start with: any other
#: starts none (NFKC keeps ASCII as it is, and only the space is skipped before a formula).
#: A printable cell (``str.isprintable``) whose first character is ASCII and not one of these
#: is its own :func:`neutralize`: writers that guard many cells test that inline.
FORMULA_ASCII_STARTS = frozenset(" '=+-@")
_RAW_STARTS = frozenset("\t\r")  # formula starts in their own right (OWASP), kept as before
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_PHONE = re.compile(r"\+[0-9][0-9 ()./-]*")


def strip_controls(text: str) -> str:
    """`text` without control characters other than tab, line feed and carriage return."""
    return CONTROL_CHARACTERS.sub("", text)


def strip_controls_deep(value: Any) -> Any:
    """`value` with :func:`strip_controls` applied to every string in it, however nested in
    lists, tuples and mappings (keys of mappings too). Anything else is returned as it is.

    The sync engine passes every projection through this before hashing it and handing it to
    a target's ``write()``, so no target (CSV, vCard, CiviCRM, a plugin) receives a control
    character and the state hashes what was really sent."""
    if isinstance(value, str):
        return strip_controls(value) if CONTROL_CHARACTERS.search(value) else value
    if isinstance(value, list | tuple):
        return type(value)(strip_controls_deep(v) for v in value)
    if isinstance(value, Mapping):
        return {strip_controls_deep(k): strip_controls_deep(v) for k, v in value.items()}
    return value


def is_plain_phone(text: str) -> bool:
    """True for ``+`` then ASCII digits, spaces and ``( ) . / -`` only: no room for a formula."""
    return _PHONE.fullmatch(text) is not None


def neutralize(cell: str, *, plain_phones: bool = False) -> str:
    """`cell` as a spreadsheet shows it as text: controls removed, a ``'`` before a formula.

    Args:
        cell: the value to write.
        plain_phones: leave a cell that is only a phone number (see :func:`is_plain_phone`)
            without the quote.

    Returns:
        The cell to write; :func:`unneutralize` gives back `cell` without its controls.
    """
    first = cell[:1]
    if first.isascii() and first not in FORMULA_ASCII_STARTS and cell.isprintable():
        return cell  # no control character, and no formula or quote starts it
    cell = strip_controls(cell)
    if not _runs_as_formula(cell.lstrip("'")) or _NUMBER.fullmatch(cell):
        return cell
    if plain_phones and is_plain_phone(cell):
        return cell
    return "'" + cell


def unneutralize(cell: str) -> str:
    """Undo :func:`neutralize`: drop the one quote it puts before a formula."""
    if cell[:1] == "'" and _runs_as_formula(cell.lstrip("'")):
        return cell[1:]
    return cell


def _runs_as_formula(text: str) -> bool:
    if text[:1] in _RAW_STARTS:
        return True
    for char in text:
        if not _skipped(char):
            return _formula_start(char)
    return False


@lru_cache(maxsize=1024)
def _skipped(char: str) -> bool:
    return char.isspace() or unicodedata.category(char)[0] in "CZ"


@lru_cache(maxsize=1024)
def _formula_start(char: str) -> bool:
    return char in _ALSO_STARTS or unicodedata.normalize("NFKC", char)[:1] in _STARTS
