"""The CSV adapter: a CSV file as a keyed table of contacts, read as a stream, written whole.

Reading is lazy: rows are parsed and hashed as pages are consumed. The cursor is the SHA-256
of the file's bytes, so an unchanged file costs one hashing pass and no parsing. A changed
file is listed in full (every page is a snapshot), but given the fingerprints of the rows
decided at the cursor (``Capability.ROW_FINGERPRINTS``), only its new and changed rows are
decoded: the others are listed by id (see :mod:`connector_csv.rows`). Malformed rows are reported as
:class:`~connector_core.adapters.ReadProblem` with the line they start on, and skipped (or,
with ``strict: true``, stop the read).

Writing goes through a write session (:mod:`connector_csv.session`): a run's batches are
answered from an index of the file read once, and the file is replaced atomically once, at
the run's commit. Cells a spreadsheet would run as formulas are written with a
leading single quote, which reading removes again (see :mod:`connector_csv.dialect`).
"""

from __future__ import annotations

import bisect
import collections
import csv
import dataclasses
import hashlib
import io
import itertools
import operator
import os
from collections.abc import Collection, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import BinaryIO, ClassVar

from connector_core.adapters import (
    PART_DIGEST,
    Adapter,
    Block,
    Capability,
    Change,
    KnownBlocks,
    KnownRows,
    MissingField,
    Page,
    ReadProblem,
    SourceFields,
    WriteResult,
    WriteSession,
)
from connector_core.cells import unneutralize
from connector_core.consent import combine_blocks, merge_evidence
from connector_core.credentials import SecretLookup
from connector_core.errors import AdapterError, ConfigError
from connector_core.query import Condition
from connector_core.records import FIELDS, Expected, Record
from connector_csv.columns import (
    ColumnMap,
    RenderError,
    RowDecoder,
    RowInvalid,
    check_encodable,
)
from connector_csv.rows import (
    _CHUNK,
    PART_ROWS,
    TAIL,
    BlockCutter,
    CutBlock,
    RawRecord,
    RowSplitter,
    personalization,
    splittable,
)
from connector_csv.session import CsvWrites
from connector_csv.settings import CsvSettings
from connector_csv.source import CURSOR_PREFIX, CsvFile, RawRow, file_cursor, file_errors

__all__ = ["CsvAdapter", "CsvSettings"]

_STRICT_HINT = "Fix the row, or set strict: false to skip bad rows."
#: Whether an incremental read takes a plain chunk's lines together (:meth:`_Scan._plain`);
#: the tests compare it with the row by row reading.
_BULK = True
#: Bytes of changed blocks a read given blocks holds before it loads every known part.
_MATCH_AFTER = 1 << 22
_BODY = operator.methodcaller("rstrip", b"\r\n")  # a simple line's row
_FIRST = operator.itemgetter(slice(0, 1))  # a text's first character ("" for none)
csv_limit = csv.field_size_limit


def _header_source(path: Path, header: list[str] | None, plausible: bool) -> str:
    if header is None:
        return f"{path} (the file is empty: no header, no columns)"
    if not plausible:
        return (
            f"the first row of {path}, which names no mapped column (is the header row "
            "missing? its cells are not shown, as they may be data)"
        )
    return f"the header of {path}"


class CsvAdapter(Adapter):
    """A CSV file as a keyed table of contacts, one row per person."""

    name = "csv"
    description = "A CSV file as a keyed table of contacts"
    settings_model = CsvSettings
    capabilities = frozenset(
        {
            Capability.READ,
            Capability.WRITE,
            Capability.DELETE,
            Capability.INCREMENTAL,
            Capability.ROW_FINGERPRINTS,
        }
    )
    default_mapping: ClassVar[Mapping[str, str]] = {
        name: name for name in FIELDS if name != "consent"
    }
    settings: CsvSettings

    def __init__(
        self,
        settings: CsvSettings,
        secrets: SecretLookup | None = None,
        *,
        mapping: Mapping[str, str | None] | None = None,
        connection: str | None = None,
    ) -> None:
        super().__init__(settings, secrets, mapping=mapping, connection=connection)
        id_column = (mapping or {}).get("id")
        if id_column is not None and id_column != settings.key_column:
            raise ConfigError(
                f"connection {self.connection!r}: the csv adapter reads id from key_column",
                hint=f"Write `key_column: {id_column}` in the connection instead of mapping id.",
            )
        self._columns = ColumnMap(self.mapping, settings.key_column)

    def check(self) -> None:
        """Check that the file's header is readable, or that the file can be created."""
        path = self.settings.path
        if path.exists():
            with file_errors(path), CsvFile(path, self.settings):
                return
        folder = path.parent
        if not folder.is_dir():
            raise AdapterError(
                f"{path} does not exist, nor does its folder",
                hint="Create the folder, or fix path: in connector.yaml.",
            )
        if not os.access(folder, os.W_OK | os.X_OK):
            raise AdapterError(
                f"{path} does not exist and its folder is not writable, so it cannot be created",
                hint="Give the user running jobs write access to the folder, or fix path:.",
            )

    def schema(self) -> frozenset[str]:
        """The canonical fields in the file's header, or every mapped field for a new file."""
        path = self.settings.path
        if not path.exists():
            return self._columns.canonical_names()
        with file_errors(path), CsvFile(path, self.settings) as source:
            return self._columns.canonical_names(source.header)

    def available_fields(self) -> SourceFields:
        """What the file's header holds now, and which mapped columns (or key) it lacks.

        A first row naming neither the key column nor any mapped column is probably data
        (a file without a header row): its cells are not listed, as they may be values.
        """
        path = self.settings.path
        with file_errors(path), CsvFile(path, self.settings, key_required=False) as source:
            header = source.header or []
        key = self.settings.key_column
        missing = [MissingField("id", key, ("settings", "key_column"))] if key not in header else []
        missing += [
            MissingField(c.canonical, c.native, ("mapping", c.canonical))
            for c in self._columns.columns
            if c.native not in header
        ]
        provided = self._columns.canonical_names(header)
        return SourceFields(
            provided=provided - ({"id"} if key not in header else set()),
            missing=tuple(missing),
            native=tuple(header) if self._looks_like_header(header) else (),
            source=_header_source(path, source.header, self._looks_like_header(header)),
        )

    def _looks_like_header(self, header: list[str]) -> bool:
        known = {self.settings.key_column, *(c.native for c in self._columns.columns)}
        return bool(known.intersection(header))

    def count(self) -> int:
        """The file's data rows, counted without decoding them."""
        path = self.settings.path
        with file_errors(path), CsvFile(path, self.settings, key_required=False) as source:
            return sum(1 for _ in source.rows()) if source.header is not None else 0

    def read(
        self,
        *,
        cursor: str | None = None,
        fields: frozenset[str] | None = None,
        where: Condition | None = None,
        known: KnownRows | None = None,
    ) -> Iterator[Page]:
        """Yield the file's records in pages, or one empty page if it has not changed.

        With `known`, rows whose fingerprint it holds are listed by id, not decoded, and
        every page reports the fingerprints of its rows (see :meth:`_fingerprinted`).
        """
        path = self.settings.path
        if cursor is not None and cursor == file_cursor(path):
            yield Page([], cursor=cursor)
            return
        if splittable(self.settings.read_encoding):
            with file_errors(path), CsvFile(path, self.settings) as source:
                header = source.header
            if header is not None:
                yield from self._fingerprinted(header, fields, known or KnownRows())
                return
        duplicated, digest = self._duplicated_keys()
        with file_errors(path), CsvFile(path, self.settings) as source:
            yield from self._snapshot(source, fields, duplicated, digest)

    # -- reading with row fingerprints ----------------------------------------------------

    def _fingerprinted(
        self, header: list[str], fields: frozenset[str] | None, known: KnownRows
    ) -> Iterator[Page]:
        """The pages, decoding only the rows whose fingerprint `known` lacks (or whose id it
        names in ``decode``) and every row of a repeated key (merged as in :meth:`_snapshot`).

        Given known blocks (``known.blocks``), one pass cuts the file into blocks and names
        each by a digest, without splitting it; a known block is listed as unchanged, the
        others are split as below (see :meth:`_blocked`). Else, when `known` has
        fingerprints (an incremental read), one pass collects the pages; it gives up when a
        key cell repeats or more rows than a few pages hold must be decoded (their records
        would wait in memory). Otherwise, two passes: the key cells (to find repeated keys),
        then the pages, streamed. No pass parses a row with csv unless it has quotes, nor
        decodes a row it need not; every pass reports the blocks its rows form.
        """
        decoder = self._decoder(header, fields)
        person = personalization(
            header,
            self.settings.model_dump(exclude=set(type(self.settings).neutral_settings)),
            sorted(self.mapping.entries.items()),
            None if fields is None else sorted(fields),
            self.connection,
        )
        if known.blocks is not None:
            pages = self._blocked(decoder, person, known, known.blocks)
            if pages is not None:
                yield from pages
                return
        if len(known.fingerprints):
            pages = self._one_pass(decoder, person, known)
            if pages is not None:
                yield from pages
                return
        yield from self._two_passes(decoder, person, known)

    def _cutter(
        self, person: bytes, rows: RowSplitter | None = None, *, named_parts: bool = True
    ) -> BlockCutter:
        probe = rows or RowSplitter(io.BytesIO(), self.settings)
        return BlockCutter(person, probe.special, csv_limit(), named_parts=named_parts)

    def _blocked(
        self, decoder: RowDecoder, person: bytes, known: KnownRows, blocks: KnownBlocks
    ) -> list[Page] | None:
        """Every page of a read given known blocks, or None when a key cell repeats or too
        much changed (then :meth:`_one_pass` or :meth:`_two_passes` reads the file).

        The file is cut into blocks (:class:`~connector_csv.rows.BlockCutter`) and each is
        named by its digest, in C: a known block is listed in the last page's ``unchanged``
        and never split. A block that changed is cut into its parts (runs of
        :data:`~connector_csv.rows.PART_ROWS` lines): a known part's rows are listed with
        the ids and fingerprints they had, unsplit; the other parts (and the rest of a file
        after its first quoted row) are kept, then split and fingerprinted as
        :meth:`_one_pass` does, skipping a row whose fingerprint is known (the rows of
        known blocks that are gone now)."""
        unchanged: list[bytes] = []
        changed: list[CutBlock] = []  # their bytes dropped
        pieces: list[_Piece] = []  # the changed blocks' rows, in order
        held = 0
        limit = 64 * 1024 * self.page_size  # bytes of changed parts kept: 32 MB by default
        digest = hashlib.sha256()
        # the known parts, once more than a few changed blocks wait (else, at the end,
        # only those of the blocks not found: few, after a few changed rows)
        known_parts: Mapping[bytes, tuple[bytes, int]] | None = None
        waiting: list[tuple[CutBlock, list[bytes] | None]] = []  # with a whole block's parts
        waiting_bytes = 0
        with file_errors(self.settings.path), self._open_raw() as raw:
            probe = RowSplitter(raw, self.settings)
            start = probe.skip_header()  # checked by CsvFile
            raw.seek(0)
            cutter = self._cutter(person, probe)
            found: set[bytes] = set()
            while True:
                chunk = raw.read(_CHUNK)
                cut = cutter.feed(chunk) if chunk else cutter.close()
                digest.update(chunk)
                for block in cut:
                    name = block.digest
                    whole = name and block.first_line >= start
                    if whole and name not in found and name in blocks:
                        found.add(name)
                        unchanged.append(name)
                        continue
                    data = cutter.part_data(block) if whole else None
                    if data is not None:
                        block = block._replace(parts=cutter.parts(block, data))
                    changed.append(block._replace(data=b""))
                    waiting.append((block, data))
                    waiting_bytes += len(block.data)
                if known_parts is None and waiting_bytes > _MATCH_AFTER:
                    known_parts = blocks.parts(unchanged)
                if known_parts is not None:
                    for block, data in waiting:
                        held += _pieces(block, data, known_parts, found, pieces)
                    waiting.clear()
                if held > limit:
                    return None
                if not chunk:
                    break
        if waiting:
            known_parts = blocks.parts(unchanged)
            for block, data in waiting:
                held += _pieces(block, data, known_parts, found, pieces)
        listed = [p for p in pieces if p.data is None]
        rows = blocks.block_rows({p.block for p in listed}) if listed else {}
        taken = list(blocks.ids(unchanged)) if unchanged else []
        for piece in listed:
            ids, marks = rows.get(piece.block, ([], []))
            at = piece.number * PART_ROWS
            piece.ids, piece.marks = ids[at : at + piece.lines], marks[at : at + piece.lines]
            if len(piece.ids) != piece.lines:
                return None  # not the rows kept with the part: read row by row
            taken += piece.ids
        scan = _Scan(
            self, decoder, person, known, _known_rows(blocks, unchanged, rows, listed), start
        )
        scan.taken = set(taken)
        if len(scan.taken) != len(taken):
            return None  # an id in two unchanged blocks or parts: read row by row
        scan.track.cut(changed)
        probe = RowSplitter(io.BytesIO(), self.settings)  # the settings' bytes, for plain rows
        for piece in pieces:
            first = piece.first_line
            if piece.data is None:
                scan.listed(first, piece.ids, piece.marks)
            elif piece.plain:  # rows of whole blocks: no RowSplitter needed
                if not scan.simple_lines(probe, piece.data.splitlines(keepends=True), first):
                    return None
            else:
                rows_of = RowSplitter(io.BytesIO(piece.data), self.settings, start=first == 1)
                line = rows_of.skip_header() if first == 1 else first
                if not scan.lines(rows_of, line):
                    return None
        return scan.finish(CURSOR_PREFIX + digest.hexdigest(), unchanged)

    def _one_pass(self, decoder: RowDecoder, person: bytes, known: KnownRows) -> list[Page] | None:
        """Every page of an incremental read, or None when a key cell repeats or too many
        rows changed (then :meth:`_two_passes` reads the file)."""
        with file_errors(self.settings.path), self._open_raw() as raw:
            # a read that gave up on its blocks (or was given none): the parts of blocks are
            # named where they change (see _blocked)
            cutter = self._cutter(person, named_parts=False)
            rows = RowSplitter(raw, self.settings, cutter=cutter)
            line = rows.skip_header()  # checked by CsvFile
            scan = _Scan(self, decoder, person, known, known.fingerprints, line)
            scan.track.blocks = rows.blocks
            if not scan.lines(rows, line):
                return None
            cursor = CURSOR_PREFIX + rows.digest.hexdigest()
        return scan.finish(cursor, [])

    def _two_passes(self, decoder: RowDecoder, person: bytes, known: KnownRows) -> Iterator[Page]:
        """The pages, streamed, once a first pass found the repeated key cells."""
        index = decoder.key[0]
        duplicated, digest = self._repeated_keys(index)
        unguard = unneutralize if self.settings.neutralize_formulas else str
        size, skip_limit = self.page_size, 20 * self.page_size
        groups: dict[str, list[tuple[int, Record | None]]] = {}
        # the other key cells are unique: only ids that neutralization can make equal repeat
        first_lines = _MayRepeat(self.settings.neutralize_formulas)
        guarded = first_lines.neutralized
        page = Page([], snapshot=True)
        pending: Page | None = None
        fingerprints = known.fingerprints if len(known.fingerprints) else None
        prepared = hashlib.blake2b(digest_size=8, person=person)  # as fingerprint() does
        copy, from_bytes, decode = prepared.copy, int.from_bytes, decoder.decode
        with file_errors(self.settings.path), self._open_raw() as raw:
            rows = RowSplitter(raw, self.settings, cutter=self._cutter(person))
            track = _BlockRows(1)
            track.blocks = rows.blocks
            add = track.add
            # a million rows: the per-row steps inlined (_split's loop, the fingerprint, and
            # _add_row's common case), every name local
            for line, physical, cells, error in _split(rows):
                if track.start == 1:
                    track.start = line  # the first row after the header
                key = cells[index] if error is None and index < len(cells) else None
                if key is not None and key in duplicated:
                    row = RawRecord(line, physical, cells, error)
                    groups.setdefault(key, []).append((line, self._decoded(row, decoder)))
                    track.bad(line)
                    continue
                hashed = copy()  # a prepared hash's copy: half the cost of a new one
                hashed.update(physical)
                mark = from_bytes(hashed.digest(), "little")
                known_id = (
                    None
                    if key is None or fingerprints is None or mark not in fingerprints
                    else unguard(key)
                )
                if known_id is None or known_id in known.decode or known_id in first_lines:
                    try:
                        record = decode(cells) if error is None else None
                    except RowInvalid:
                        record = None  # _add_row reports it
                    sid: str = "" if record is None else record["id"]
                    if record is None or sid in first_lines:
                        self._add_row(page, line, cells, error, mark, decoder, first_lines, track)
                    else:
                        if guarded and not sid[:1].isalnum():  # _MayRepeat's test, inline
                            first_lines[sid] = line
                        page.records.append(record)
                        add(line, sid, mark)
                        if len(page.records) < size:
                            continue
                else:  # decided at the cursor, unchanged since: listed, not decoded
                    first_lines[known_id] = line
                    page.skipped.append(known_id)
                    add(line, known_id, mark)
                full = max(len(page.records), len(page.problems)) >= size
                if full or len(page.skipped) >= skip_limit:
                    track.flush(page, line + 1)
                    if pending is not None:
                        yield pending
                    pending, page = page, Page([], snapshot=True)
            cursor = CURSOR_PREFIX + rows.digest.hexdigest()
        if pending is not None:
            if page.records or page.problems or page.skipped:
                yield pending
            else:
                pending.fingerprints.update(page.fingerprints)
                pending.blocks += page.blocks
                page = pending
        if cursor != digest:
            raise AdapterError(
                f"{self.settings.path} changed while it was being read",
                hint="Run again once whatever writes the file has finished.",
            )
        track.flush(page, TAIL)
        self._merged(groups, page)
        page.cursor = cursor
        yield page

    def _add_row(
        self,
        page: Page,
        line: int,
        cells: list[str],
        error: str | None,
        mark: int,
        decoder: RowDecoder,
        first_lines: dict[str, int],
        track: _BlockRows,
    ) -> None:
        """Decode a row's cells into `page`: a record with its fingerprint, or a problem
        (:meth:`_decode`, inlined)."""
        try:
            if error is not None:
                raise RowInvalid(Expected.CSV_ROW)
            record = decoder.decode(cells)
            key: str = record["id"]
            if key in first_lines:
                raise RowInvalid(Expected.UNIQUE_KEY, self.settings.key_column, key=key)
        except RowInvalid as exc:
            page.problems.append(self._problem(line, exc, first_lines))
            track.bad(line)
            return
        first_lines[key] = line
        page.records.append(record)
        track.add(line, key, mark)

    @staticmethod
    def _decoded(row: RawRecord, decoder: RowDecoder) -> Record | None:
        """The record of a row whose cells are split (see :func:`_split`), or None."""
        if row.error is not None or row.cells is None:
            return None
        try:
            return decoder.decode(row.cells)
        except RowInvalid:
            return None

    def _repeated_keys(self, index: int) -> tuple[frozenset[str], str]:
        """A first pass over the raw rows: the key cells found on more than one row, and the
        file's cursor. Only key cells are split out, as bytes; no row is decoded."""
        once: set[bytes] = set()
        again: set[bytes] = set()
        with file_errors(self.settings.path), self._open_raw() as raw:
            rows = RowSplitter(raw, self.settings)
            simple, has_value, blank = rows.simple, rows.has_value, rows.blank
            encoding = rows.encoding
            delimiter = rows.delimiter.encode(encoding)
            line = rows.skip_header()  # checked by CsvFile
            # the splitter's loop, inlined, as in _one_pass: a million rows, one key each
            for physical in rows.lines():
                body = physical.rstrip(b"\r\n") if rows.plain else simple(physical)
                if body is not None:
                    line += 1
                    if not body.translate(None, blank) and not has_value(body):
                        continue
                    parts = body.split(delimiter, index + 1)
                    if index >= len(parts):
                        continue
                    key = parts[index]
                else:
                    taken, row = rows.parsed(line, physical)
                    line += taken
                    cell = None if row is None else rows.key_cell(row, index)
                    if cell is None:
                        continue
                    key = cell.encode(encoding, "surrogateescape")  # as a simple row holds it
                if key in once:
                    again.add(key)
                else:
                    once.add(key)
            repeated = frozenset(k.decode(encoding, "surrogateescape") for k in again)
            return repeated, CURSOR_PREFIX + rows.digest.hexdigest()

    def _open_raw(self) -> BinaryIO:
        return self.settings.path.open("rb")

    def _duplicated_keys(self) -> tuple[frozenset[str], str]:
        """A first pass: the key cells found on more than one row, and the file's cursor.

        Rows sharing a key are one person seen several times; they are held back from the
        pages and merged once all of them are read (see :meth:`_merged`)."""
        path = self.settings.path
        with file_errors(path), CsvFile(path, self.settings) as source:
            if source.header is None:
                return frozenset(), source.cursor
            index = source.header.index(self.settings.key_column)
            counts = collections.Counter(
                row.cells[index] for row in source.rows() if index < len(row.cells)
            )
            return frozenset(k for k, n in counts.items() if n > 1), source.cursor

    def _snapshot(
        self,
        source: CsvFile,
        fields: frozenset[str] | None,
        duplicated: frozenset[str],
        digest: str,
    ) -> Iterator[Page]:
        # Hold each page back until the next one exists: the last page carries the cursor.
        pending: Page | None = None
        groups: dict[str, list[tuple[int, Record | None]]] = {}
        if source.header is not None:
            decoder = self._decoder(source.header, fields)
            rows = self._set_aside(source.rows(), decoder, duplicated, groups)
            for page in self._pages(rows, decoder):
                if pending is not None:
                    yield pending
                pending = page
        last = pending or Page([], snapshot=True)
        if source.cursor != digest:
            raise AdapterError(
                f"{self.settings.path} changed while it was being read",
                hint="Run again once whatever writes the file has finished.",
            )
        self._merged(groups, last)
        last.cursor = source.cursor
        yield last

    def _set_aside(
        self,
        rows: Iterator[RawRow],
        decoder: RowDecoder,
        duplicated: frozenset[str],
        groups: dict[str, list[tuple[int, Record | None]]],
    ) -> Iterator[RawRow]:
        """The rows, except those whose key is duplicated: decoded into `groups` instead."""
        index = decoder.key[0]
        for row in rows:
            key = row.cells[index] if row.error is None and index < len(row.cells) else None
            if key is None or key not in duplicated:
                yield row
                continue
            try:
                record: Record | None = decoder.decode(row.cells)
            except RowInvalid:
                record = None
            groups.setdefault(key, []).append((row.line, record))

    def _merged(self, groups: dict[str, list[tuple[int, Record | None]]], page: Page) -> None:
        """Add each duplicated key's merged record (or its hold) to the last page."""
        for key, group in groups.items():
            lines = ",".join(str(line) for line, _ in group)
            valid = [record for _, record in group if record is not None]
            merged = merge_evidence(valid, complete=len(valid) == len(group))
            if merged is not None:
                page.records.append(merged)
            problem = ReadProblem(
                f"{self.settings.path}:{lines}",
                Expected.MERGED_ROWS if merged is not None else Expected.HELD_ROWS,
                field=self.settings.key_column,
                key=str(valid[0]["id"]) if valid else key,
                consent=None
                if merged is not None
                else combine_blocks(r.get("consent") for r in valid),
            )
            if self.settings.strict:
                raise AdapterError(str(problem), hint=_STRICT_HINT)
            page.problems.append(problem)

    def _decoder(self, header: list[str], fields: frozenset[str] | None) -> RowDecoder:
        return self._columns.decoder(
            header,
            fields,
            encoding=self.settings.encoding,
            source=f"csv:{self.connection}",
            neutralized=self.settings.neutralize_formulas,
        )

    def _pages(self, rows: Iterator[RawRow], decoder: RowDecoder) -> Iterator[Page]:
        records: list[Record] = []
        problems: list[ReadProblem] = []
        first_lines: dict[str, int] = {}
        for row in rows:
            try:
                records.append(self._decode(row, decoder, first_lines))
            except RowInvalid as exc:
                problems.append(self._problem(row.line, exc, first_lines))
            if max(len(records), len(problems)) >= self.page_size:
                yield Page(records, problems=problems, snapshot=True)
                records, problems = [], []
        if records or problems:
            yield Page(records, problems=problems, snapshot=True)

    def _decode(self, row: RawRow, decoder: RowDecoder, first_lines: dict[str, int]) -> Record:
        if row.error is not None:
            raise RowInvalid(Expected.CSV_ROW)
        record = decoder.decode(row.cells)
        key: str = record["id"]
        if key in first_lines:
            raise RowInvalid(Expected.UNIQUE_KEY, self.settings.key_column, key=key)
        first_lines[key] = row.line
        return record

    def _problem(self, line: int, exc: RowInvalid, first_lines: dict[str, int]) -> ReadProblem:
        first = first_lines.get(exc.key or "") if exc.expected is Expected.UNIQUE_KEY else None
        problem = ReadProblem(
            f"{self.settings.path}:{line}",
            exc.expected,
            field=exc.column,
            key=exc.key,
            first_at=None if first is None else f"line {first}",
            consent=exc.refused,  # an explicit no in a row held for another cell still counts
        )
        if self.settings.strict:
            raise AdapterError(str(problem), hint=_STRICT_HINT)
        return problem

    def open_writes(self) -> WriteSession:
        """A deferred session: batches answered at once, the file replaced once at commit."""
        return CsvWrites(
            self.settings.path,
            self.settings,
            self._render,
            self._columns.default_header,
            (c.native for c in self._columns.columns),
        )

    def write(self, changes: Sequence[Change]) -> Iterator[WriteResult]:
        """Apply `changes` and replace the file once; results follow the file.

        The work is done before this returns, so no result is seen before the file holds it.
        A run writes through :meth:`open_writes` instead: once for all its batches.
        """
        with self.open_writes() as session:
            results = list(session.write(changes))
            session.commit()
        return iter(results)

    def _render(self, change: Change) -> dict[str, str]:
        if change.record is None:
            raise RenderError("an upsert needs a record")
        if not change.key.strip():
            raise RenderError("the key is empty")
        encoding = self.settings.write_encoding
        if not change.key.isascii():  # every encoding a CSV file may have stores ASCII
            check_encodable("id", change.key, encoding)
        return self._columns.render(change.record, encoding)


class _MayRepeat(dict[str, int]):
    """The first line of each id, for a read whose repeated key cells were set aside: the
    other key cells are unique, so only ids that undoing the formula guard can make equal
    (``'=x`` and ``=x``) may repeat; only those are kept (not a million ids)."""

    def __init__(self, neutralized: bool) -> None:
        super().__init__()
        self.neutralized = neutralized

    def __setitem__(self, key: str, line: int) -> None:
        # an id starting with a letter or digit runs as no formula, so no quote came off it
        if self.neutralized and not key[:1].isalnum():
            super().__setitem__(key, line)


def _split(rows: RowSplitter) -> Iterator[tuple[int, bytes, list[str], str | None]]:
    """The rows after the header, their cells split: (line, raw bytes, cells, csv's error)
    (:meth:`RowSplitter.__iter__` and :meth:`RowSplitter.cells` in one loop: a row without
    quotes is decoded and split once; in a chunk of simple lines (``rows.plain``) no line is
    asked whether it is simple)."""
    simple, has_value, blank = rows.simple, rows.has_value, rows.blank
    encoding, delimiter = rows.encoding, rows.delimiter
    line = rows.skip_header()  # checked by CsvFile
    for physical in rows.lines():
        body = physical.rstrip(b"\r\n") if rows.plain else simple(physical)
        if body is not None:
            line += 1
            # has_value(), its common answer inline: an ASCII byte neither blank nor delimiter
            if body.translate(None, blank) or has_value(body):
                cells = body.decode(encoding, "surrogateescape").split(delimiter)
                yield line - 1, physical, cells, None
            continue
        taken, row = rows.parsed(line, physical)
        line += taken
        if row is not None:
            yield row.line, row.raw, row.cells or [], row.error


class _BlockRows:
    """The blocks a read's rows form: each row's id and fingerprint, held until the block
    holding it is complete, then given to a page as a :class:`Block` (a block whose rows
    all have one) or as loose fingerprints (else: a row with a problem, a repeated key, the
    header's block, the rest of a file after a quoted row). ``start``: the first line after
    the header; ``blocks``: the blocks cut so far, in order (grows as the file is read).

    The rows wait as three lists (lines, ids, fingerprints; an id of None: a row without
    a fingerprint), so that a block's rows are found by bisection and taken as slices."""

    def __init__(self, start: int) -> None:
        self.start = start
        self.blocks: list[CutBlock] = []
        self._next = 0
        self._lines: list[int] = []
        self._ids: list[str | None] = []
        self._marks: list[int] = []
        self._at = 0  # the rows before this one are given out
        self._named: set[bytes] = set()

    def cut(self, blocks: list[CutBlock]) -> None:
        """Blocks cut elsewhere (the changed ones of :meth:`CsvAdapter._blocked`)."""
        self.blocks.extend(blocks)

    def add(self, line: int, source_id: str, mark: int) -> None:
        """A row with a fingerprint."""
        self._lines.append(line)
        self._ids.append(source_id)
        self._marks.append(mark)

    def extend(self, lines: Sequence[int], source_ids: Sequence[str], marks: Sequence[int]) -> None:
        """Rows with a fingerprint, in order."""
        assert len(lines) == len(source_ids) == len(marks)
        self._lines += lines
        self._ids += source_ids
        self._marks += marks

    def bad(self, line: int) -> None:
        """A row that gets no fingerprint: its block is not kept as a block."""
        self._lines.append(line)
        self._ids.append(None)
        self._marks.append(0)

    def _take(self, end: int) -> tuple[list[str | None], list[int]]:
        """The ids and fingerprints of the waiting rows before line `end`."""
        stop = bisect.bisect_left(self._lines, end, self._at)
        ids, marks = self._ids[self._at : stop], self._marks[self._at : stop]
        self._at = stop
        return ids, marks

    def flush(self, page: Page, upto: int) -> None:
        """Give `page` the blocks that end at or before line `upto` (all lines before it
        are read), and the rows of blocks that cannot be kept."""
        blocks = self.blocks
        try:
            while self._next < len(blocks):
                first, end, digest, _, parts = blocks[self._next]
                whole = bool(digest) and first >= self.start and digest not in self._named
                if end > upto and whole:
                    return  # rows may follow
                ids, marks = self._take(end)
                if whole and None not in ids:
                    self._named.add(digest)
                    if len(ids) != end - first:  # a blank line: parts would name other rows
                        parts = b""
                    page.blocks.append(Block(digest, ids, marks, parts))  # type: ignore[arg-type]
                else:
                    _loose(page, ids, marks)
                if end > upto:
                    return
                self._next += 1
            if upto >= TAIL:  # rows past every block cut: none, unless the file changed
                _loose(page, *self._take(TAIL + 1))
        finally:
            if self._at > 4096 and 2 * self._at > len(self._lines):  # drop what was given
                del self._lines[: self._at], self._ids[: self._at], self._marks[: self._at]
                self._at = 0


def _loose(page: Page, ids: list[str | None], marks: list[int]) -> None:
    """Rows' fingerprints given to `page` one by one (a row without one left out)."""
    if None in ids:
        page.fingerprints.update((i, m) for i, m in zip(ids, marks, strict=True) if i is not None)
    else:
        page.fingerprints.update(zip(ids, marks, strict=True))  # type: ignore[arg-type]


class _Scan:
    """The row by row part of an incremental read (:meth:`CsvAdapter._one_pass`, and the
    changed blocks of :meth:`CsvAdapter._blocked`): pages collected in memory."""

    def __init__(
        self,
        adapter: CsvAdapter,
        decoder: RowDecoder,
        person: bytes,
        known: KnownRows,
        fingerprints: Collection[int],
        start: int,
    ) -> None:
        self.adapter = adapter
        self.decoder = decoder
        self.person = person
        # as fingerprint() does; a prepared hash's copy costs half a new one (with `person`)
        self.prepared = hashlib.blake2b(digest_size=8, person=person)
        self.fingerprints = fingerprints
        self.decode = known.decode
        self.track = _BlockRows(start)
        self.taken: AbstractSet[str] = frozenset()  # ids of rows not split (unchanged blocks)
        self.keys: set[str] = set()
        # the first line of each id that two key cells may give (see _MayRepeat)
        self.first_lines = _MayRepeat(adapter.settings.neutralize_formulas)
        self.pages: list[Page] = []
        self.page = Page([], snapshot=True)
        self.decoded = 0
        # a page holds `size` records (or problems) or 20 times as many skipped ids; a scan
        # that must decode more than 50 pages' rows gives up (the two passes do it streamed)
        self.size = adapter.page_size
        self.skip_limit, self.decode_limit = 20 * self.size, 50 * self.size

    def lines(self, rows: RowSplitter, line: int) -> bool:
        """Split the rows of `rows` from `line` on; False when a key cell repeats (here or
        among the ids ``taken``) or too many rows must be decoded.

        The lines of a plain chunk (:attr:`RowSplitter.plain`: each a whole simple row)
        are taken together (:meth:`_plain`); the others, and a plain chunk that holds
        something unusual, row by row (:meth:`_each`)."""
        source = rows.lines()
        first: bytes | None = None
        while True:
            if first is None:
                first = next(source, None)
                if first is None:
                    return True
            if rows.plain and _BULK:
                block = [first]
                block += rows.rest()
                first = None
                done = self._plain(rows, block, line)
                if done is False:
                    return False
                if done is None:  # something unusual: the block row by row
                    done, _ = self._each(rows, iter(block), line, stop_at_plain=False)
            else:
                done, first = self._each(rows, itertools.chain([first], source), line)
            if done is None:
                return False
            line = done

    def simple_lines(self, rows: RowSplitter, lines: list[bytes], line: int) -> bool:
        """Split `lines`, each a whole simple row (the lines of plain blocks: see
        :class:`~connector_csv.rows.BlockCutter`), from `line` on, as :meth:`lines` takes a
        plain chunk's; `rows` gives the settings' bytes. False as :meth:`lines`."""
        done = self._plain(rows, lines, line) if _BULK else None
        if done is False:
            return False
        if done is None:  # something unusual: row by row
            done, _ = self._each(rows, iter(lines), line, stop_at_plain=False)
        return done is not None

    def _plain(self, rows: RowSplitter, block: list[bytes], line: int) -> int | None:
        """The lines of a plain chunk, from `line` on, taken together: the unchanged rows'
        steps are done in C over the whole block (split off the key cell, fingerprint,
        look up, list), as :meth:`_each` does them one by one, to the same pages; the
        changed rows are decoded one by one. Returns the next line (a line number is never
        0), False when a key cell repeats (a row of it or an earlier one), or None (nothing
        done) when a row is blank or short, or an id repeats once unguarded: :meth:`_each`
        then takes the block."""
        n = len(block)
        index = self.decoder.key[0]
        settings = self.adapter.settings
        neutralized = settings.neutralize_formulas
        bodies = list(map(_BODY, block))
        split = operator.methodcaller("split", settings.delimiter.encode(rows.encoding), index + 1)
        try:
            cells = list(map(operator.itemgetter(index), map(split, bodies)))
        except IndexError:
            return None  # a row without its key cell
        valued = operator.methodcaller("translate", None, rows.blank)
        # a row whose key cell has an ASCII byte neither blank nor the delimiter has a value
        if not all(map(valued, cells)) and not all(map(valued, bodies)):
            return None  # a row that may be blank
        keys = list(map(operator.methodcaller("decode", rows.encoding, "surrogateescape"), cells))
        if len(set(keys)) != n or not self.keys.isdisjoint(keys):
            return False  # a repeated key: its rows are merged, after a first pass
        taken, first_lines = self.taken, self.first_lines
        ids = [unneutralize(k) if k[:1] == "'" else k for k in keys] if neutralized else keys
        if taken and not (taken.isdisjoint(keys) and (ids is keys or taken.isdisjoint(ids))):
            return False
        if neutralized and (len(set(ids)) != n or any(map(first_lines.__contains__, ids))):
            return None  # an id that two key cells give: _each reports the second
        self.keys.update(keys)
        copy, from_bytes = self.prepared.copy, int.from_bytes
        marks = [
            from_bytes((h := copy()).update(raw) or h.digest(), "little")  # type: ignore[func-returns-value]
            for raw in block
        ]
        # 1: decided at the cursor, unchanged since (listed, not decoded); 0: decoded
        known = map(self.fingerprints.__contains__, marks)
        skip = bytes(map(operator.gt, known, map(self.decode.__contains__, ids)))
        adapter, decoder, track = self.adapter, self.decoder, self.track
        size, skip_limit, decode_limit = self.size, self.skip_limit, self.decode_limit
        at = 0
        while at < n:
            page = self.page
            if skip[at]:
                stop = skip.find(0, at)
                stop = n if stop < 0 else stop
                stop = min(stop, at + max(skip_limit - len(page.skipped), 1))
                listed = ids[at:stop]
                lines = range(line + at, line + stop)
                if neutralized and not all(map(str.isalnum, map(_FIRST, listed))):
                    for source_id, at_line in zip(listed, lines, strict=True):
                        first_lines[source_id] = at_line  # _MayRepeat keeps those that may
                page.skipped += listed
                track.extend(lines, listed, marks[at:stop])
                at = stop
                if len(page.skipped) < skip_limit:
                    continue
            else:
                self.decoded += 1
                if self.decoded > decode_limit:
                    return False
                row = line + at
                body = bodies[at].decode(rows.encoding, "surrogateescape")
                adapter._add_row(
                    page,
                    row,
                    body.split(settings.delimiter),
                    None,
                    marks[at],
                    decoder,
                    first_lines,
                    track,
                )
                at += 1
                if len(page.records) < size and len(page.problems) < size:
                    continue
            self._turn(line + at)
        return line + n

    def _each(
        self, rows: RowSplitter, source: Iterator[bytes], line: int, *, stop_at_plain: bool = True
    ) -> tuple[int | None, bytes | None]:
        """The lines of `source` row by row, from `line` on: (the next line, or None when a
        key cell repeats or too many rows must be decoded; the first line of a plain chunk
        that came next, or None at the end, when `stop_at_plain`)."""
        adapter, settings = self.adapter, self.adapter.settings
        index = self.decoder.key[0]
        neutralized = settings.neutralize_formulas
        unguard = unneutralize if neutralized else str
        size, skip_limit, decode_limit = self.size, self.skip_limit, self.decode_limit
        fingerprints, decode, keys, taken = self.fingerprints, self.decode, self.keys, self.taken
        first_lines, track = self.first_lines, self.track
        copy, from_bytes = self.prepared.copy, int.from_bytes
        simple, has_value, blank = rows.simple, rows.has_value, rows.blank
        delimiter, encoding = settings.delimiter.encode(rows.encoding), rows.encoding
        bulk = stop_at_plain and _BULK
        # the splitter's loop, inlined: most rows need no RawRecord, nor a decoded cell
        # but their key; in a chunk of simple lines (rows.plain) none is asked about
        for physical in source:
            if rows.plain and bulk:
                return line, physical
            body = physical.rstrip(b"\r\n") if rows.plain else simple(physical)
            row: RawRecord | None = None
            if body is not None:
                line += 1
                if not body.translate(None, blank) and not has_value(body):
                    continue
                parts = body.split(delimiter, index + 1)
                key = (
                    parts[index].decode(encoding, "surrogateescape") if index < len(parts) else None
                )
            else:
                taken_lines, row = rows.parsed(line, physical)
                line += taken_lines
                if row is None:
                    continue
                key = rows.key_cell(row, index)
                physical = row.raw
            if key is not None:
                if key in keys or (taken and (key in taken or unguard(key) in taken)):
                    return None, None  # a repeated key: its rows are merged, after a first pass
                keys.add(key)
            hashed = copy()  # a prepared hash's copy: half the cost of a new one
            hashed.update(physical)
            mark = from_bytes(hashed.digest(), "little")
            known_id = None if key is None or mark not in fingerprints else unguard(key)
            # without neutralization an id is its key cell: `keys` finds repeated ids
            page = self.page
            if known_id is None or known_id in decode or (neutralized and known_id in first_lines):
                self.decoded += 1
                if self.decoded > decode_limit:
                    return None, None
                row = row or RawRecord(line - 1, physical, None)
                adapter._add_row(
                    page,
                    row.line,
                    rows.cells(row),
                    row.error,
                    mark,
                    self.decoder,
                    first_lines,
                    track,
                )
                if len(page.records) < size and len(page.problems) < size:
                    continue
            else:  # decided at the cursor, unchanged since: listed, not decoded
                if neutralized:
                    first_lines[known_id] = line - 1 if row is None else row.line
                page.skipped.append(known_id)
                track.add(line - 1 if row is None else row.line, known_id, mark)
                if len(page.skipped) < skip_limit:
                    continue
            self._turn(line)
        return line, None

    def listed(self, line: int, ids: list[str], marks: Sequence[int]) -> None:
        """The rows of a known part, from `line` on: listed as unchanged, unsplit (as
        :meth:`_plain` lists a row whose fingerprint is known), their ids taken already."""
        n, at, track = len(ids), 0, self.track
        while at < n:
            page = self.page
            stop = min(n, at + max(self.skip_limit - len(page.skipped), 1))
            page.skipped += ids[at:stop]
            track.extend(range(line + at, line + stop), ids[at:stop], marks[at:stop])
            at = stop
            if len(page.skipped) >= self.skip_limit:
                self._turn(line + at)

    def _turn(self, line: int) -> None:
        """The page is full: it ends with the blocks whose rows end before `line`, and the
        next one starts."""
        self.track.flush(self.page, line)
        self.pages.append(self.page)
        self.page = Page([], snapshot=True)

    def finish(self, cursor: str, unchanged: list[bytes]) -> list[Page]:
        """The pages, the last one with the read's cursor and its unchanged blocks."""
        page = self.page
        self.track.flush(page, TAIL)
        page.cursor = cursor
        page.unchanged = unchanged
        return [*self.pages, page]


@dataclasses.dataclass(slots=True)
class _Piece:
    """Rows of changed blocks, from `first_line` on: `data` to split, or (`data` None) a
    known part's `lines` rows, the part `number` of the known `block`, listed unsplit
    with their ids and fingerprints (`ids`, `marks`: filled in once the read is cut)."""

    first_line: int
    data: bytes | None
    plain: bool = False  # `data` is lines of plain blocks (see BlockCutter): simple rows
    #: the line the rest of the file after a block that is not plain starts on, when `data`
    #: ends with a chunk of it (each chunk comes with that line: see BlockCutter); else 0
    tail: int = 0
    lines: int = 0
    block: bytes = b""
    number: int = 0
    ids: list[str] = dataclasses.field(default_factory=list)
    marks: Sequence[int] = ()


def _pieces(
    block: CutBlock,
    data: list[bytes] | None,
    known: Mapping[bytes, tuple[bytes, int]],
    found: set[bytes],
    pieces: list[_Piece],
) -> int:
    """Add the pieces of a changed `block` to `pieces`: with the bytes of its parts (`data`:
    a whole block, its lines simple rows), each part that `known` names (once in a read)
    as one piece, the runs of its other parts as pieces to split (joined with the one
    before when it ends where they start); returns the bytes added to split."""
    if data is None or not known:
        tail = block.end_line == TAIL
        _to_split(pieces, block.first_line, block.data, data is not None, tail=tail)
        return len(block.data)
    held = 0
    size = PART_DIGEST
    rows = block.end_line - block.first_line
    for number, part in enumerate(data):
        name = block.parts[number * size : (number + 1) * size]
        first = block.first_line + number * PART_ROWS
        where = known.get(name)
        if where is not None and name not in found:
            found.add(name)
            lines = min(PART_ROWS, rows - number * PART_ROWS)
            pieces.append(_Piece(first, None, lines=lines, block=where[0], number=where[1]))
            continue
        _to_split(pieces, first, part, True)
        held += len(part)
    return held


def _known_rows(
    blocks: KnownBlocks,
    unchanged: list[bytes],
    rows: Mapping[bytes, tuple[list[str], Sequence[int]]],
    listed: list[_Piece],
) -> Collection[int]:
    """The fingerprints of the rows decided at the cursor that the rows to split may be:
    not those of the blocks found unchanged, nor those of the parts listed (their rows are
    listed already: one split again is decoded, its id then found twice)."""
    others = blocks.rows([*unchanged, *rows])
    if not rows:
        return others
    parts = collections.defaultdict(set)
    for piece in listed:
        parts[piece.block].add(piece.number)
    more: list[int] = []
    for digest, (_, marks) in rows.items():
        for at in range(0, len(marks), PART_ROWS):
            if at // PART_ROWS not in parts[digest]:
                more += marks[at : at + PART_ROWS]
    return set(others).union(more) if more else others


def _to_split(
    pieces: list[_Piece], first: int, data: bytes, plain: bool, *, tail: bool = False
) -> None:
    """Rows to split from line `first` on, joined to the last piece when it ends there; a
    chunk of the rest of a file after a block that is not plain (`tail`: each comes with
    the line the rest starts on) is joined to the rest before it."""
    last = pieces[-1] if pieces else None
    if last is not None and last.data is not None:
        more = tail and last.tail == first
        if more or last.first_line + last.data.count(b"\n") == first:
            last.data += data
            last.plain = last.plain and plain
            last.tail = first if tail else 0
            return
    pieces.append(_Piece(first, data, plain, tail=first if tail else 0))
