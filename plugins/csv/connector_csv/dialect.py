"""How cells are parsed and written: :mod:`csv` options, and which cells are numbers.

Spreadsheet safety (formula neutralization, control characters, phone numbers) is the
engine's one rule in :mod:`connector_core.cells`; :mod:`connector_csv.table` applies it to
every cell it writes and undoes it when it reads its own file back.
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

_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


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
        return iter(rows)
    return ([_as_number(cell) for cell in row] for row in rows)


def _as_number(cell: str) -> str | Decimal:
    if _NUMBER.fullmatch(cell) and str(number := Decimal(cell)) == cell:
        return number
    return cell
