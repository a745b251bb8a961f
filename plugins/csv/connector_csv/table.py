"""The file as a keyed table for writing: load it, apply changes, replace it atomically.

Rows are kept as the raw cells read, so a rewrite leaves rows it did not change as they
were (even malformed ones, and bytes the encoding cannot decode). The new version is written
to a temporary file in the same folder, synced to disk and renamed over the old one, so a
crash at any moment leaves either the old file or the complete new one, never a mix. A
temporary file left by a killed process is named ``.<file>.<random>.tmp``. The file is read
and replaced without following symbolic links (:mod:`connector_core.files`): a link that
appears at the target's path, or on the way to it, stops the run and is left alone.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import io
import os
import stat
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Literal

from connector_core.cells import neutralize, strip_controls, unneutralize
from connector_core.errors import AdapterError
from connector_core.files import read_nofollow
from connector_csv.dialect import writable_rows, writer_options
from connector_csv.settings import CsvSettings
from connector_csv.source import CsvFile

Action = Literal["created", "updated", "unchanged", "deleted"]
DEFAULT_LINETERMINATOR = "\r\n"  # RFC 4180, and what spreadsheet programs write


@dataclasses.dataclass(slots=True)
class Table:
    """The rows of a CSV file by key, with enough of its format to write it back alike."""

    header: list[str]
    rows: list[list[str] | None]  # None marks a deleted row
    keys: dict[str, list[int]]  # a repeated key lists every row holding it
    settings: CsvSettings
    bom: bool = False
    lineterminator: str = DEFAULT_LINETERMINATOR
    mode: int | None = None  # the permissions of the existing file, kept on rewrite
    changed: bool = False
    width: int = dataclasses.field(init=False)  # rows this wide get new columns, others are left

    def __post_init__(self) -> None:
        self.width = len(self.header)

    @property
    def key_at(self) -> int:
        """The index of the key column."""
        return self.header.index(self.settings.key_column)

    def upsert(self, key: str, cells: Mapping[str, str]) -> Action:
        """Create or replace the row of `key`; unmapped columns of an existing row stay."""
        self._add_columns(name for name, cell in cells.items() if cell)
        positions = self.keys.get(key)
        if positions is None:
            self.keys[key] = [len(self.rows)]
            self.rows.append(self._compose(key, cells, [""] * len(self.header)))
            self.changed = True
            return "created"
        old = self._padded(self.rows[positions[0]] or [])
        new = self._compose(key, cells, list(old))
        if new == old:
            return "unchanged"
        self.rows[positions[0]] = new
        self.changed = True
        return "updated"

    def delete(self, key: str) -> Action:
        """Remove every row holding `key`; a missing key is already deleted."""
        positions = self.keys.pop(key, None)
        if not positions:
            return "unchanged"
        for position in positions:
            self.rows[position] = None
        self.changed = True
        return "deleted"

    def dump(self, out: IO[str]) -> None:
        """Write the table as CSV text."""
        if self.bom:
            out.write("\ufeff")
        writer = csv.writer(out, **writer_options(self.settings, self.lineterminator))
        writer.writerows(writable_rows(self.settings, self._output_rows()))

    def _output_rows(self) -> Iterator[list[str]]:
        yield self.header
        for row in self.rows:
            if row is not None:
                yield self._padded(row) if len(row) == self.width else row

    def _padded(self, row: list[str]) -> list[str]:
        return row + [""] * (len(self.header) - len(row))

    def _add_columns(self, names: Iterable[str]) -> None:
        for name in names:
            if name not in self.header:
                self.header.append(name)

    def _compose(self, key: str, cells: Mapping[str, str], row: list[str]) -> list[str]:
        guard = self._guard
        positions = {name: index for index, name in enumerate(self.header)}
        for name, cell in cells.items():
            if name in positions and name != self.settings.key_column:
                row[positions[name]] = guard(cell)
        row[self.key_at] = guard(key)
        return row

    def _guard(self, cell: str) -> str:
        """The cell as written: see :mod:`connector_core.cells`; controls never get through."""
        if not self.settings.neutralize_formulas:
            return strip_controls(cell)
        return neutralize(cell, plain_phones=self.settings.phone_numbers == "plain")


def _same(cell: str) -> str:
    return cell


def load_table(path: Path, settings: CsvSettings, new_header: list[str]) -> Table:
    """Read the file at `path` as a table, or start an empty one with `new_header`.

    The file is read without following symbolic links (a link is refused, never read
    through: it could lead to the source or any other file).
    """
    if not os.path.lexists(path):
        if not path.parent.is_dir():
            raise AdapterError(
                f"cannot create {path}: the folder {path.parent} does not exist",
                hint="Create the folder, or fix path: in connector.yaml.",
            )
        return Table(list(new_header), [], {}, settings, bom=settings.write_bom)
    with CsvFile(path, settings, follow_links=False) as source:
        mode = stat.S_IMODE(os.lstat(path).st_mode)
        if source.header is None:
            return Table(list(new_header), [], {}, settings, bom=settings.write_bom, mode=mode)
        table = Table(source.header, [], {}, settings, mode=mode)
        _load_rows(table, source)
    table.bom, table.lineterminator = sniff(path, settings)
    return table


def _load_rows(table: Table, source: CsvFile) -> None:
    key_at = table.key_at
    unguard = unneutralize if table.settings.neutralize_formulas else _same
    for row in source.rows():
        if row.error is not None:
            raise AdapterError(
                f"{source.path}:{row.line}: {row.error}",
                hint="Fix this row first: rewriting the file would lose it.",
            )
        key = unguard(row.cells[key_at]) if key_at < len(row.cells) else ""
        if key.strip():
            table.keys.setdefault(key, []).append(len(table.rows))
        table.rows.append(row.cells)


def sniff(path: Path, settings: CsvSettings, data: bytes | None = None) -> tuple[bool, str]:
    """Whether the file starts with a UTF-8 byte order mark, and how its first line ends
    (from its bytes `data` when given, read already)."""
    with read_nofollow(path) if data is None else io.BytesIO(data) as raw:
        bom = settings.is_utf8 and raw.read(3) == codecs.BOM_UTF8
        raw.seek(0)
        text = io.TextIOWrapper(
            io.BufferedReader(raw) if isinstance(raw, io.FileIO) else raw,
            encoding=settings.read_encoding,
            errors="surrogateescape",
            newline="",
        )
        first = text.readline(1 << 16)
    for ending in ("\r\n", "\n", "\r"):
        if first.endswith(ending):
            return bom or settings.write_bom, ending
    return bom or settings.write_bom, DEFAULT_LINETERMINATOR
