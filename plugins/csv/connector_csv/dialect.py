"""How cells are parsed and written: :mod:`csv` options and spreadsheet formula neutralization.

A spreadsheet runs a cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return
as a formula, so a contact named ``=HYPERLINK(...)`` could attack whoever opens the exported
file (OWASP "CSV injection"). With ``neutralize_formulas`` on, such a cell is written with a
single quote in front (``'=HYPERLINK(...)``), which spreadsheets show as text. Reading removes
exactly one leading quote from a cell that starts with quotes followed by one of those
characters, and writing adds one to such a cell too, so every value survives a round trip:
``'=x`` is written as ``''=x`` and read back as ``'=x``. Plain numbers such as ``-12.5`` are
not formulas and are written unchanged, so coordinates stay numbers.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import Any

from connector_csv.settings import ESCAPECHAR, CsvSettings

#: What ``errors="surrogateescape"`` makes of bytes the encoding cannot decode.
UNDECODABLE = re.compile("[\udc80-\udcff]")

_FORMULA = re.compile(r"'*[=+\-@\t\r]")
_GUARDED = re.compile(r"'+[=+\-@\t\r]")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def neutralize(cell: str) -> str:
    """Prefix a cell that a spreadsheet would run as a formula with a single quote."""
    if _FORMULA.match(cell) and not _NUMBER.fullmatch(cell):
        return "'" + cell
    return cell


def unneutralize(cell: str) -> str:
    """Undo :func:`neutralize`: drop one quote in front of a formula character."""
    return cell[1:] if cell[:1] == "'" and _GUARDED.match(cell) else cell


def reader_options(settings: CsvSettings) -> dict[str, Any]:
    """Keyword arguments for :func:`csv.reader`; ``strict`` reports stray quotes as errors."""
    unquoted = settings.quoting == "none"
    return {
        "delimiter": settings.delimiter,
        "quotechar": settings.quotechar,
        "quoting": csv.QUOTE_NONE if unquoted else csv.QUOTE_MINIMAL,
        "escapechar": ESCAPECHAR if unquoted else None,
        "strict": True,
    }


def writer_options(settings: CsvSettings, lineterminator: str) -> dict[str, Any]:
    """Keyword arguments for :func:`csv.writer`."""
    return {
        "delimiter": settings.delimiter,
        "quotechar": settings.quotechar,
        "quoting": settings.csv_quoting,
        "escapechar": ESCAPECHAR if settings.quoting == "none" else None,
        "lineterminator": lineterminator,
    }


def writable_rows(settings: CsvSettings, rows: Iterable[list[str]]) -> Iterator[list[Any]]:
    """Rows as :func:`csv.writer` should get them.

    The writer leaves numbers unquoted under ``QUOTE_NONNUMERIC`` only when they are number
    objects; a :class:`~decimal.Decimal` is one that prints exactly as the cell was written.
    """
    if settings.quoting != "nonnumeric":
        yield from rows
        return
    for row in rows:
        yield [_as_number(cell) for cell in row]


def _as_number(cell: str) -> str | Decimal:
    if _NUMBER.fullmatch(cell) and str(number := Decimal(cell)) == cell:
        return number
    return cell
