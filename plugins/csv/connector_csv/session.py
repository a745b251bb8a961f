"""A run's writes to the CSV file: every batch answered at once, the file replaced once.

:class:`CsvWrites` is the CSV adapter's deferred write session
(:class:`~connector_core.adapters.WriteSession`). Opening it reads the target once, as a
stream, and keeps per row only its key, its position and a 16-byte digest of the cells a
write can set (the key and the mapped columns). Each batch is answered from that index
(created, updated, unchanged, deleted), exactly as :class:`connector_csv.table.Table` would
answer it if the file were loaded and replaced after every batch, and is kept: updates as
the cells they set, deletes as positions, new rows in a temporary spool on disk. Nothing
reaches the file before :meth:`CsvWrites.commit`, which makes one pass: it copies the
target's rows, applying updates and deletes, appends the new rows, and replaces the file
atomically (:func:`connector_core.files.replace_file`: a temporary file beside it, synced,
renamed; no symbolic link is followed). If the file changed since the session read it, the
commit stops (nothing is replaced; the next run writes again).

The cost of a run at the target: one read of the file when the run has changes (none
otherwise), one write of it when something changed, memory for the index (~250 bytes a
row) and for the updated rows' cells; new rows stay in memory up to 1 MB, then go to a
temporary file until the commit. A file of at most 32 KiB (a partner's few hundred rows)
is read once into memory and its rows kept: the commit hashes the file again to see it did
not change, instead of parsing it again.

A larger file in an encoding whose rows show in its bytes (UTF-8, Latin-1, cp1252: see
:func:`~connector_csv.rows.splittable`) is indexed from its bytes (:class:`_Walk`): the
rows of a chunk without quotes are taken together, their key cells split off in C, and a
row's digest is made only when a write compares it, from its line read again at the byte
offset the index keeps (few rows are written). Its commit (quoting minimal, no row
widened) copies the text of such a chunk's lines between the rows written, where a csv
writer would write the same bytes (each line ends as the file's first does, and decodes);
the rows written, quoted rows and odd chunks go through csv as before. The result is the
same file, byte for byte (a property test holds it to a rewrite per batch).
"""

from __future__ import annotations

import bisect
import codecs
import csv
import functools
import hashlib
import io
import itertools
import operator
import os
import pickle
import stat
import tempfile
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence, Set
from pathlib import Path
from typing import IO, Any, ClassVar

from connector_core.adapters import Change, WriteResult, WriteSession
from connector_core.cells import FORMULA_ASCII_STARTS, neutralize, strip_controls, unneutralize
from connector_core.errors import AdapterError, ConnectorError
from connector_core.files import NewVersion, read_nofollow, replace_file, replace_files
from connector_core.records import Record
from connector_csv.columns import RenderError
from connector_csv.dialect import writable_rows, writer_options
from connector_csv.rows import RawRecord, RowSplitter, splittable
from connector_csv.settings import CsvSettings
from connector_csv.source import CURSOR_PREFIX, CsvFile, data_cursor, file_errors
from connector_csv.table import DEFAULT_LINETERMINATOR, Action, sniff

#: Bytes of new rows a session keeps in memory before it spools them to a temporary file.
_SPOOL_IN_MEMORY = 1 << 20
#: A target file this small is read whole and its rows kept until the commit (a group of
#: 256 jobs holds them all at once: at most ~8 MB of files, a few times that as rows).
_KEEP_IN_MEMORY = 32 << 10
#: A RawRow's cells.
_CELLS = operator.itemgetter(1)
#: A row's byte offset (see _Row.at).
_AT = operator.attrgetter("at")
#: A simple row of a large file not asked for yet is filed as one int, its ordinal shifted
#: by this many bits above its byte offset (see CsvWrites._row): no _Row made per row.
_SHIFT = 40
_OFFSET = (1 << _SHIFT) - 1
#: A simple line's row (its line break off).
_BODY = operator.methodcaller("rstrip", b"\r\n")
#: Renders a change's record as cells by column name; raises RenderError.
Render = Callable[[Change], dict[str, str]]
#: Gives the header of a new file for a batch's records.
NewHeader = Callable[[list[Record]], list[str]]


def _digest(cells: Iterable[str]) -> bytes:
    """16 bytes standing for `cells` (their repr is unambiguous, and ASCII-safe for
    surrogates kept from undecodable bytes)."""
    text = repr(tuple(cells)).encode("utf-8", "surrogatepass")
    return hashlib.blake2b(text, digest_size=16).digest()


def _stripped(cells: Sequence[str]) -> tuple[str, ...]:
    end = len(cells)
    while end and not cells[end - 1]:
        end -= 1
    return tuple(cells[:end])


class _Row:
    """What the session knows of one keyed row: where it is and what a write could change.

    ``digest`` covers the cells at the base header's writable positions (None: not made
    yet, for a row of a small file whose cells the session keeps, or a simple row of a
    large file, read again from byte ``at``; see :meth:`CsvWrites._digest_of`); ``extras``
    the cells past the base header (columns added by this run, a long row's tail)."""

    __slots__ = ("at", "digest", "extras", "ordinal")

    def __init__(
        self, ordinal: int, digest: bytes | None, extras: tuple[str, ...] = (), at: int = -1
    ) -> None:
        self.ordinal = ordinal
        self.digest = digest
        self.extras = extras
        self.at = at


class _Walk:
    """The rows of a file as its bytes, for a session's index and commit: iterating gives
    ``(line, byte, piece)``, the line and byte offset where a piece starts, and the piece:
    a row (:class:`~connector_csv.rows.RawRecord`; the header is the first), or, after the
    header, the lines of a plain chunk together (whole simple rows without a NUL byte, blank
    ones among them). A blank row is skipped, as :class:`~connector_csv.source.CsvFile`
    skips it; :attr:`rows` has the SHA-256 of every byte once the walk is done."""

    def __init__(self, raw: IO[bytes], settings: CsvSettings) -> None:
        start = raw.read(3)
        raw.seek(0)
        self.rows = RowSplitter(raw, settings)  # type: ignore[arg-type]
        skipped = self.rows.skips_bom and start == codecs.BOM_UTF8
        self.start = len(codecs.BOM_UTF8) if skipped else 0  # where the first line starts

    def __iter__(self) -> Iterator[tuple[int, int, list[bytes] | RawRecord]]:
        rows = self.rows
        source = rows.lines()
        line, at, seen = 1, self.start, False
        pending: list[bytes] = []
        while True:
            if pending:
                physical = pending.pop()
            else:
                physical = next(source, None)  # type: ignore[assignment]
                if physical is None:
                    return
                if seen and rows.plain:
                    block = [physical, *rows.rest()]
                    if not any(map(_has_nul, block)):
                        yield line, at, block
                        line += len(block)
                        at += sum(map(len, block))
                        continue
                    pending = block[::-1]
                    continue
            body = None if _has_nul(physical) else rows.simple(physical)
            if body is not None:
                if rows.has_value(body):
                    yield line, at, RawRecord(line, physical, None)
                    seen = True
                line += 1
                at += len(physical)
                continue
            taken, record = rows.parsed(line, physical)
            size = rows.parsed_size()
            if record is not None:
                yield line, at, record
                seen = True
            line += taken
            at += size


def _has_nul(line: bytes) -> bool:
    """Whether `line` holds a NUL byte (csv decides what such a row is)."""
    return line.find(b"\x00") >= 0


class CsvWrites(WriteSession):
    """One run's writes to the CSV file at `path`: answered per batch, written at commit.

    Args:
        path: the target file.
        settings: the connection's settings.
        render: the adapter's rendering of a change (raises RenderError).
        new_header: the header of a new file for a batch's records.
        columns: the columns a write sets besides the key (the mapped ones).
    """

    deferred: ClassVar[bool] = True

    def __init__(
        self,
        path: Path,
        settings: CsvSettings,
        render: Render,
        new_header: NewHeader,
        columns: Iterable[str],
    ) -> None:
        self.path = path
        self.settings = settings
        self._render = render
        self._new_header = new_header
        self._columns = frozenset(columns) - {settings.key_column}
        self.header: list[str] | None = None  # None: no file, or no header yet
        self.base = 0  # the header's length when the index was built (or the file begun)
        self.written: list[int] = []  # the base header's positions a write sets
        self._pick: Callable[[Sequence[str]], tuple[str, ...]] = tuple
        self._positions: dict[str, int] = {}  # the header's columns by name
        self.bom = settings.write_bom
        self.lineterminator = DEFAULT_LINETERMINATOR
        self.mode: int | None = None
        self.cursor: str | None = None  # the file's digest when read (None: no file)
        # each keyed row; an int: a large file's simple row not asked for yet (see _row)
        self.rows: dict[str, _Row | int] = {}
        self._kept: list[list[str]] | None = None  # a small file's rows, as read (see _index)
        self._split = False  # indexed from the bytes: rows read again for digests, copied
        self._encoding = ""  # the encoding the bytes are split in (see RowSplitter)
        # further rows holding a key, in file order: deleted with it, and the next answers for
        # the key once the first is written under another (a key cell a write cleans)
        self.repeats: dict[str, list[_Row]] = {}
        self.originals = 0  # rows in the file as read
        self.next_ordinal = 0
        self.deleted: set[int] = set()
        self.updates: dict[int, tuple[int, dict[int, str]]] = {}  # ordinal -> (width, cells)
        self.replaced: dict[int, list[str]] = {}  # new rows written again, by ordinal
        self.widths: set[int] = set()  # the header's width at the start of each changing batch
        self.changed = False
        self.done = False
        self._spool: IO[bytes] | None = None  # new rows, in order, until the commit
        # the keys the batch being written created or updated, each once, in order
        self._touched: dict[str, None] = {}
        self._batch_changed = False
        self._new_rows: list[tuple[int, list[str]]] = []  # the batch's new rows
        if settings.neutralize_formulas:
            plain = settings.phone_numbers == "plain"
            self._guard: Callable[[str], str] = functools.partial(neutralize, plain_phones=plain)
            self._unguard: Callable[[str], str] = unneutralize
            self._starts: Collection[str] = FORMULA_ASCII_STARTS
        else:
            self._guard, self._unguard = strip_controls, _same
            self._starts = ()  # strip_controls leaves a printable cell as it is
        with file_errors(path, "write"):
            self._index()

    # -- reading the target once ---------------------------------------------------------------

    def _index(self) -> None:
        path = self.path
        if not os.path.lexists(path):
            if not path.parent.is_dir():
                raise AdapterError(
                    f"cannot create {path}: the folder {path.parent} does not exist",
                    hint="Create the folder, or fix path: in connector.yaml.",
                )
            return
        data = None
        if os.lstat(path).st_size <= _KEEP_IN_MEMORY:  # read whole, once (a link is refused)
            with read_nofollow(path) as raw:
                data = raw.read(_KEEP_IN_MEMORY + 1)
            if len(data) > _KEEP_IN_MEMORY:  # it grew meanwhile: read it as a stream
                data = None
            else:
                self._kept = []
        # a large file in an encoding whose rows show in its bytes is indexed from them
        split = data is None and splittable(self.settings.read_encoding)
        with CsvFile(path, self.settings, follow_links=False, data=data) as source:
            self.mode = stat.S_IMODE(os.lstat(path).st_mode)
            if source.header is None:
                split = False
                for _ in source.rows():
                    pass
            else:
                self._begin(source.header)
                if not split:
                    self._index_rows(source)
            if not split:
                self.cursor = source.cursor
        if split:
            self._split = True
            self._index_bytes()
        if self.header is not None:
            self.bom, self.lineterminator = sniff(path, self.settings, data)

    def _begin(self, header: list[str]) -> None:
        self.header = list(header)
        self.base = len(header)
        self._positions = {}
        key = self.settings.key_column
        self.written = [i for i, name in enumerate(header) if name == key or name in self._columns]
        pick = operator.itemgetter(*self.written)
        self._pick = (lambda cells: (pick(cells),)) if len(self.written) == 1 else pick

    def _index_rows(self, source: CsvFile) -> None:
        assert self.header is not None
        key_at = self.header.index(self.settings.key_column)
        rows, repeats, kept, base = self.rows, self.repeats, self._kept, self.base
        unguard, view = self._unguard, self._view_digest
        # a target's every row passes here when a run changes it: every name local,
        # _stripped's and unneutralize's common answers inline
        ordinal = self.next_ordinal
        for line, cells, error in source.rows():
            if error is not None:
                raise AdapterError(
                    f"{source.path}:{line}: {error}",
                    hint="Fix this row first: rewriting the file would lose it.",
                )
            if kept is not None:
                kept.append(cells)
            width = len(cells)
            key = cells[key_at] if key_at < width else ""
            if key[:1] == "'":  # only a quote comes off (unneutralize)
                key = unguard(key)
            ordinal += 1
            if not key.strip():
                continue
            # a kept row's digest is made when a write first compares it (few are written)
            digest = None if kept is not None else view(cells)
            found = _Row(ordinal - 1, digest, () if width <= base else _stripped(cells[base:]))
            if key in rows:
                repeats.setdefault(key, []).append(found)
                continue
            rows[key] = found
        self.next_ordinal = self.originals = ordinal

    def _index_bytes(self) -> None:
        """Index a large file from its bytes (:class:`_Walk`): a plain chunk's rows
        together, their key cells split off in C, their digests left to be made when a
        write first compares them (:meth:`_read_digests`: few rows are written); a row with
        quotes through csv, its digest made now."""
        assert self.header is not None
        settings = self.settings
        key_at = self.header.index(settings.key_column)
        with read_nofollow(self.path) as raw:
            walk = _Walk(raw, settings)
            rows = walk.rows
            encoding = self._encoding = rows.encoding
            delimiter = settings.delimiter.encode(encoding)
            split = operator.methodcaller("split", delimiter, key_at + 1)
            decode = operator.methodcaller("decode", encoding, "surrogateescape")
            valued = operator.methodcaller("translate", None, rows.blank)
            count = operator.methodcaller("count", delimiter)
            pieces = iter(walk)
            first = next(pieces, None)  # the header, read already by CsvFile
            header = None if first is None else first[2]
            if not isinstance(header, RawRecord) or rows.cells(header) != self.header:
                raise self._changed()
            for line, at, piece in pieces:
                if isinstance(piece, RawRecord):
                    self._index_record(rows, key_at, line, at, piece)
                    continue
                starts = list(itertools.accumulate(map(len, piece[:-1]), initial=at))
                bodies = list(map(_BODY, piece))
                if not all(map(valued, bodies)):  # some may be blank: those are skipped
                    kept = [n for n, body in enumerate(bodies) if rows.has_value(body)]
                    bodies, starts = [bodies[n] for n in kept], [starts[n] for n in kept]
                parts = list(map(split, bodies))
                keys = [p[key_at] if len(p) > key_at else b"" for p in parts]
                wide = max(map(count, bodies), default=0) >= self.base
                self._index_plain(list(map(decode, keys)), starts, bodies if wide else None)
            self.cursor = CURSOR_PREFIX + rows.digest.hexdigest()

    def _index_plain(self, keys: list[str], starts: list[int], bodies: list[bytes] | None) -> None:
        """File simple rows by key (`bodies`: their bytes, when some may be wider than the
        header)."""
        rows, unguard, base = self.rows, self._unguard, self.base
        ordinal = self.next_ordinal
        if (
            bodies is None
            and (unguard is _same or not any(map(str.startswith, keys, itertools.repeat("'"))))
            and all(map(str.strip, keys))
            and len(set(keys)) == len(keys)
            and rows.keys().isdisjoint(keys)
            and (not starts or starts[-1] <= _OFFSET)
        ):  # the common chunk, in C: each row filed as an int (see _row)
            end = ordinal + len(keys)
            shifted = map(operator.lshift, range(ordinal, end), itertools.repeat(_SHIFT))
            rows.update(zip(keys, map(operator.or_, shifted, starts), strict=True))
            self.next_ordinal = self.originals = end
            return
        encoding, delimiter = self._encoding, self.settings.delimiter
        for n, key in enumerate(keys):
            extras: tuple[str, ...] = ()
            if bodies is not None:
                cells = bodies[n].decode(encoding, "surrogateescape").split(delimiter)
                extras = () if len(cells) <= base else _stripped(cells[base:])
            self._file(key, _Row(ordinal + n, None, extras, starts[n]))
        self.next_ordinal = self.originals = ordinal + len(keys)

    def _index_record(
        self, rows: RowSplitter, key_at: int, line: int, at: int, record: RawRecord
    ) -> None:
        """File one row the walk gave alone (a simple one keeps its place, to be read again;
        one csv parsed has its digest made now)."""
        if record.error is not None:
            raise AdapterError(
                f"{self.path}:{line}: {record.error}",
                hint="Fix this row first: rewriting the file would lose it.",
            )
        cells = rows.cells(record)
        ordinal = self.next_ordinal
        self.next_ordinal = self.originals = ordinal + 1
        base = self.base
        extras = () if len(cells) <= base else _stripped(cells[base:])
        if record.cells is None:
            found = _Row(ordinal, None, extras, at)
        else:
            found = _Row(ordinal, self._view_digest(cells), extras)
        self._file(cells[key_at] if key_at < len(cells) else "", found)

    def _file(self, key: str, found: _Row) -> None:
        """File `found` under its key cell `key` as the file gives it back (unguarded); a
        row whose key is blank is not filed, a later row of a key waits in ``repeats``. (The
        loop of :meth:`_index_rows` does the same inline.)"""
        if key[:1] == "'":
            key = self._unguard(key)
        if not key.strip():
            return
        if key in self.rows:
            self.repeats.setdefault(key, []).append(found)
        else:
            self.rows[key] = found

    def _row(self, key: str) -> _Row | None:
        """The row filed under `key` (None: none), made a :class:`_Row` if it was filed as
        an int (a large file's simple row: ordinal << _SHIFT | byte offset)."""
        row = self.rows.get(key)
        if row.__class__ is int:
            code: int = row
            row = self.rows[key] = _Row(code >> _SHIFT, None, (), code & _OFFSET)
        return row  # type: ignore[return-value]

    def _read_digests(self, wanted: Iterable[_Row | None]) -> None:
        """Make the digests not made yet of `wanted` rows of a large file, from their lines
        read again (in file order, one open of the file)."""
        todo = sorted((r for r in wanted if r is not None and r.digest is None), key=_AT)
        if not todo:
            return
        encoding, delimiter = self._encoding, self.settings.delimiter
        with file_errors(self.path, "write"), read_nofollow(self.path) as raw:
            buffered, limit = io.BufferedReader(raw), csv.field_size_limit() + 2
            for row in todo:
                buffered.seek(row.at)
                # a simple row is one line, its break at its end: the body is before it
                line = buffered.readline(limit).split(b"\n", 1)[0].split(b"\r", 1)[0]
                cells = line.decode(encoding, "surrogateescape").split(delimiter)
                row.digest = self._view_digest(cells)

    def _digest_of(self, row: _Row) -> bytes:
        """`row`'s digest, made when first asked for: from the kept cells of a small file,
        or from the row's line of a large one."""
        if row.digest is None:
            if self._kept is not None:
                row.digest = self._view_digest(self._kept[row.ordinal])
            else:
                self._read_digests([row])
        assert row.digest is not None
        return row.digest

    def _view_digest(self, cells: Sequence[str]) -> bytes:
        if len(cells) > self.written[-1]:
            return _digest(self._pick(cells))
        n = len(cells)
        return _digest(cells[i] if i < n else "" for i in self.written)

    # -- the batches ---------------------------------------------------------------------------

    def write(self, changes: Sequence[Change]) -> Iterator[WriteResult]:
        """Answer `changes` as the file will hold them after :meth:`commit`."""
        if self.done:
            raise RuntimeError("the write session is closed")
        fresh = self.header is None
        if fresh:
            records = [c.record for c in changes if c.record is not None]
            self._begin(self._new_header(records))
        assert self.header is not None
        width = len(self.header)
        self._touched = {}
        self._batch_changed = False
        self._new_rows = []
        if self._split:  # the rows this batch may compare, read in one go
            self._read_digests(self._row(c.key) for c in changes if c.action != "delete")
        results = [self._apply(change) for change in changes]
        if self._batch_changed:
            self.changed = True
            self.widths.add(width)
            self._rekey()
            if self._new_rows:
                self._spill(self._new_rows)
        elif fresh:
            self.header = None  # like a table never written: the next batch starts anew
        return iter(results)

    def _apply(self, change: Change) -> WriteResult:
        if change.action == "delete":
            return WriteResult(change.key, self._delete(change.key))
        try:
            cells = self._render(change)
        except RenderError as exc:
            return WriteResult(change.key, "failed", error=str(exc))
        return WriteResult(change.key, self._upsert(change.key, cells))

    def _delete(self, key: str) -> Action:
        row = self._row(key)
        if row is None:
            return "unchanged"
        del self.rows[key]
        for ordinal in (row.ordinal, *(r.ordinal for r in self.repeats.pop(key, ()))):
            self.deleted.add(ordinal)
            self.replaced.pop(ordinal, None)
            self.updates.pop(ordinal, None)
        self._batch_changed = True
        return "deleted"

    def _upsert(self, key: str, cells: Mapping[str, str]) -> Action:
        header = self.header
        assert header is not None
        positions = self._positions
        if len(positions) != len(header):
            positions = self._positions = {name: i for i, name in enumerate(header)}
        row = self._row(key)
        values: dict[int, str] = {}
        guard, starts = self._guard, self._starts
        key_column = self.settings.key_column
        for name, cell in cells.items():
            if cell:
                at = positions.get(name)
                if at is None:
                    header.append(name)
                    at = positions[name] = len(header) - 1
                if name != key_column:
                    # the guard's common answer inline: printable, and an ASCII first
                    # character that starts no formula (nor a quote before one)
                    first = cell[:1]
                    if not (first.isascii() and first not in starts and cell.isprintable()):
                        cell = guard(cell)
                    values[at] = cell
            # an empty cell only matters to a row already there (a new row's cells are "")
            elif row is not None and name in positions and name != key_column:
                values[positions[name]] = cell  # guard("") is ""
        values[positions[key_column]] = guard(key)
        if row is None:
            ordinal = self.next_ordinal
            self.next_ordinal += 1
            new = [""] * len(header)
            for index, cell in values.items():
                new[index] = cell
            # the written positions are all within the new row (it is as wide as the header)
            digest = _digest(self._pick(new))
            self.rows[key] = _Row(ordinal, digest, _stripped(new[self.base :]))
            self._new_rows.append((ordinal, new))
            self._touched[key] = None
            self._batch_changed = True
            return "created"
        digest = _digest(values.get(i, "") for i in self.written)
        extras = list(row.extras)
        extras += [""] * (len(header) - self.base - len(extras))
        for index, cell in values.items():
            if index >= self.base:
                extras[index - self.base] = cell
        new_extras = _stripped(extras)
        if digest == self._digest_of(row) and new_extras == row.extras:
            return "unchanged"
        row.digest, row.extras = digest, new_extras
        self._keep(row.ordinal, len(header), values)
        self._touched[key] = None
        self._batch_changed = True
        return "updated"

    def _keep(self, ordinal: int, width: int, values: dict[int, str]) -> None:
        """Remember an update: of a row read from the file, as the cells it sets; of a
        new row, as the whole row (a new row holds nothing else)."""
        if ordinal < self.originals:
            self.updates[ordinal] = (width, values)
            return
        new = [""] * width
        for index, cell in values.items():
            new[index] = cell
        self.replaced[ordinal] = new

    def _rekey(self) -> None:
        """File the rows this batch wrote under the key the file will give them when read
        back (what a table loaded again after each batch would see)."""
        for key in self._touched:
            row = self._row(key)
            if row is None:
                continue
            again = self._unguard(self._guard(key))
            if again == key:
                continue
            del self.rows[key]
            waiting = self.repeats.get(key)
            if waiting:  # the next row holding the old key answers for it now
                self.rows[key] = waiting.pop(0)
                if not waiting:
                    del self.repeats[key]
            if not again.strip():
                continue
            other = self._row(again)
            if other is None:
                self.rows[again] = row
            else:  # two rows now share a key: the first in the file answers for it
                first, second = (other, row) if other.ordinal < row.ordinal else (row, other)
                self.rows[again] = first
                later = self.repeats.setdefault(again, [])
                later.append(second)
                later.sort(key=operator.attrgetter("ordinal"))

    def _spill(self, rows: list[tuple[int, list[str]]]) -> None:
        if self._spool is None:
            # in memory up to 1 MB (no open file: a group stages many jobs' writes at once)
            self._spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)  # noqa: SIM115 (closed by abort)
        pickle.dump(rows, self._spool, protocol=pickle.HIGHEST_PROTOCOL)

    def _spilled(self) -> Iterator[tuple[int, list[str]]]:
        if self._spool is None:
            return
        self._spool.flush()
        self._spool.seek(0)
        while True:
            try:
                rows: list[tuple[int, list[str]]] = pickle.load(self._spool)
            except EOFError:
                return
            yield from rows

    # -- the one write -------------------------------------------------------------------------

    def commit(self) -> None:
        """Replace the file once with every change applied; nothing if nothing changed."""
        if self.done:
            return
        if self.changed:
            new = self._new_version()
            with file_errors(self.path, "write"):
                replace_file(
                    new.path, new.dump, encoding=new.encoding, mode=new.mode, sweep=new.sweep
                )
        self.abort()

    @classmethod
    def commit_many(cls, sessions: Sequence[WriteSession]) -> list[ConnectorError | None]:
        """:meth:`commit` for many sessions (a group's partners' files) at once: the files
        replaced together (:func:`connector_core.files.replace_files`: each folder reached
        once, the disk synced once for all of them instead of twice per file)."""
        found: list[ConnectorError | None] = [None] * len(sessions)
        changed: list[tuple[int, CsvWrites]] = []
        for n, session in enumerate(sessions):
            assert isinstance(session, CsvWrites)
            if session.changed and not session.done:
                changed.append((n, session))
            else:
                session.abort()
        try:
            errors = replace_files([session._new_version() for _, session in changed])
        finally:
            for _, session in changed:
                session.abort()
        for (n, session), error in zip(changed, errors, strict=True):
            if isinstance(error, ConnectorError):
                found[n] = error
            elif error is not None:
                found[n] = _write_error(session.path, error)
        return found

    def _new_version(self) -> NewVersion:
        """The file's new version (the job holds the target's lock: a killed run's leftovers
        go)."""
        encoding = self.settings.write_encoding
        return NewVersion(self.path, self._dump, encoding, mode=self.mode, sweep=True)

    def abort(self) -> None:
        """Drop the staged changes (the file is left as it is)."""
        self.done = True
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    def _dump(self, out: IO[str]) -> None:
        header = self.header
        assert header is not None
        if self.bom:
            out.write("\ufeff")
        writer = csv.writer(out, **writer_options(self.settings, self.lineterminator))
        settings = self.settings
        writer.writerow(next(writable_rows(settings, [header])))
        if self._split and settings.quoting == "minimal" and not self._pads():
            self._copy_rows(out, writer)
        else:
            writer.writerows(writable_rows(settings, self._old_rows()))
        writer.writerows(writable_rows(settings, self._new_rows_out()))

    def _copy_rows(self, out: IO[str], writer: Any) -> None:
        """The file's rows (a large file's, quoting minimal, no row widened), with this
        run's updates and deletes: a plain chunk no write touched goes out as its text when
        the writer would give the same (its lines end as the file's first does, its bytes
        decode), else row by row through the writer, as :meth:`_old_rows` gives them."""
        changed = self.deleted.union(self.updates)
        touched = sorted(changed)
        ending = self.lineterminator.encode("ascii")
        with file_errors(self.path, "write"), read_nofollow(self.path) as raw:
            walk = _Walk(raw, self.settings)
            rows = walk.rows
            encoding, delimiter = rows.encoding, self.settings.delimiter
            pieces = iter(walk)
            next(pieces, None)  # the header (the file's digest is checked at the end)
            ordinal = 0
            for _, _, piece in pieces:
                if isinstance(piece, RawRecord):
                    lines = [rows.cells(piece)] if piece.error is None else [[]]
                elif (text := _copied(piece, ending, encoding, rows.blank)) is not None:
                    # each row a line: the lines between touched rows go out as they are
                    end = ordinal + len(piece)
                    start = bisect.bisect_left(touched, ordinal)
                    stop = bisect.bisect_left(touched, end, start)
                    if start == stop:  # no row of the chunk written: its text, decoded once
                        out.write(text)
                        ordinal = end
                        continue
                    done = 0
                    for at in touched[start:stop]:
                        out.write(b"".join(piece[done : at - ordinal]).decode(encoding))
                        cells = _BODY(piece[at - ordinal]).decode(encoding).split(delimiter)
                        writer.writerows(self._applied([cells], at, changed))
                        done = at - ordinal + 1
                    out.write(b"".join(piece[done:]).decode(encoding))
                    ordinal = end
                    continue
                else:
                    bodies = [b for b in map(_BODY, piece) if rows.has_value(b)]
                    lines = [b.decode(encoding, "surrogateescape").split(delimiter) for b in bodies]
                writer.writerows(self._applied(lines, ordinal, changed))
                ordinal += len(lines)
            if CURSOR_PREFIX + rows.digest.hexdigest() != self.cursor:
                raise self._changed()

    def _new_rows_out(self) -> Iterator[list[str]]:
        deleted, replaced = self.deleted, self.replaced
        padded = self._padded if self._pads() else None
        for ordinal, row in self._spilled():
            if ordinal not in deleted:
                row = replaced.get(ordinal, row)
                yield row if padded is None else padded(row)

    def _old_rows(self) -> Iterator[list[str]]:
        """The file's rows, read again, with this run's updates and deletes applied."""
        if self.cursor is None:
            if os.path.lexists(self.path):
                raise self._changed()
            return
        if self._kept is not None:  # a small file's rows, kept: the file must be as read
            with read_nofollow(self.path) as raw:
                if data_cursor(raw.read()) != self.cursor:
                    raise self._changed()
            yield from self._applied(self._kept)
            return
        with CsvFile(self.path, self.settings, follow_links=False) as source:
            yield from self._applied(map(_CELLS, source.rows()))
            if source.cursor != self.cursor:
                raise self._changed()

    def _applied(
        self, rows: Iterable[list[str]], start: int = 0, touched: Set[int] | None = None
    ) -> Iterator[list[str]]:
        """The file's `rows` (in order, the first being row `start`) with this run's updates
        and deletes (`touched`: the rows they touch, if made already)."""
        deleted, updates = self.deleted, self.updates
        touched = deleted.union(updates) if touched is None else touched
        # most rewrites widen no row: the rows untouched by the run go out as read
        padded = self._padded if self._pads() else None
        for ordinal, cells in enumerate(rows, start):
            if ordinal in touched:
                if ordinal in deleted:
                    continue
                cells = self._updated(cells, *updates[ordinal])
            yield cells if padded is None else padded(cells)

    @staticmethod
    def _updated(cells: list[str], width: int, values: dict[int, str]) -> list[str]:
        cells = cells + [""] * (width - len(cells))
        for index, cell in values.items():
            cells[index] = cell
        return cells

    def _pads(self) -> bool:
        """Whether :meth:`_padded` can widen a row: the header grew after a batch that
        changed the file began."""
        assert self.header is not None
        width = len(self.header)
        return any(w != width for w in self.widths)

    def _padded(self, row: list[str]) -> list[str]:
        """A row as a table rewritten after every batch would have left it: a row as wide
        as the header was when a batch changed the file is widened with the header."""
        assert self.header is not None
        if len(row) in self.widths:
            return row + [""] * (len(self.header) - len(row))
        return row

    def _changed(self) -> AdapterError:
        return AdapterError(
            f"{self.path} changed while this run was writing it; it was left as it was",
            hint="Run again once whatever else writes the file has finished.",
        )


def _same(cell: str) -> str:
    return cell


def _copied(lines: list[bytes], ending: bytes, encoding: str, blank: bytes) -> str | None:
    """A plain chunk's `lines` decoded, when that is the text a csv writer (quoting minimal)
    writes for their rows: each line a row (none may be blank, which is skipped), ending
    with `ending`, every byte decoding (a simple row's cells need no quotes); else None."""
    data = b"".join(lines)
    if ending == b"\r\n":
        if data.count(b"\r\n") != len(lines):
            return None
    elif data.count(b"\r" if ending == b"\n" else b"\n"):
        return None
    if not all(map(operator.methodcaller("translate", None, blank), map(_BODY, lines))):
        return None
    try:
        return data.decode(encoding)
    except UnicodeDecodeError:
        return None


def _write_error(path: Path, error: OSError) -> ConnectorError:
    """`error` writing `path` as :func:`~connector_csv.source.file_errors` words it."""
    try:
        with file_errors(path, "write"):
            raise error
    except ConnectorError as exc:
        return exc
    raise AssertionError("file_errors words every OSError")  # pragma: no cover
