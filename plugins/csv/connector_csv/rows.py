"""The rows of a CSV file as raw bytes, each with a fingerprint, read without decoding them.

A row whose physical line holds no quote (nor, with ``quoting: none``, no escape character)
is split on the delimiter directly; any other row goes through :mod:`csv`, which reads as
many lines as its quoted cells span. Either way each row keeps its raw bytes, so that a
row's fingerprint (8 bytes of BLAKE2b over those bytes, personalized with everything
decoding depends on) tells whether it changed since an earlier read without decoding it.

Only encodings in which a line break is one ASCII byte and no character's bytes contain
one (UTF-8, Latin-1, cp1252, ASCII) can be split this way; :func:`splittable` says which.
"""

from __future__ import annotations

import array
import codecs
import csv
import hashlib
import re
import sys
import zlib
from collections.abc import Callable, Iterator
from typing import BinaryIO, NamedTuple

from connector_core.adapters import PART_DIGEST
from connector_csv.dialect import reader_options
from connector_csv.settings import ESCAPECHAR, CsvSettings

_CHUNK = 1 << 20
_SPLITTABLE = frozenset({"utf-8", "utf-8-sig", "ascii", "iso8859-1", "cp1252", "iso8859-15"})


def splittable(encoding: str) -> bool:
    """Whether rows in `encoding` can be found in the raw bytes (see the module)."""
    return codecs.lookup(encoding).name in _SPLITTABLE


def personalization(*parts: object) -> bytes:
    """16 bytes naming everything a row's decoding depends on, to mix into fingerprints."""
    text = "\x00".join(repr(part) for part in parts)
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class RawRecord(NamedTuple):
    """One row: the line it starts on, its bytes, and its cells (None: split `raw` on the
    delimiter, as the row needs no csv parsing) or the error csv reported."""

    line: int
    raw: bytes
    cells: list[str] | None
    error: str | None = None


class RowSplitter:
    """The rows of one binary file, in order, with the SHA-256 of every byte read.

    The first row is the header (see :class:`~connector_csv.source.CsvFile`, which checks
    it). Blank rows are skipped, as :mod:`csv` readers here always skip them.
    """

    def __init__(
        self,
        raw: BinaryIO,
        settings: CsvSettings,
        *,
        start: bool = True,
        cutter: BlockCutter | None = None,
    ) -> None:
        self.digest = hashlib.sha256()
        #: with a `cutter`, the blocks of the chunks read so far (their bytes left out)
        self.blocks: list[CutBlock] = []
        self._cutter = cutter
        self._raw = raw
        encoding = codecs.lookup(settings.read_encoding).name
        self.encoding = "utf-8" if encoding == "utf-8-sig" else encoding
        self.delimiter = settings.delimiter
        special = [settings.quotechar.encode(self.encoding)]
        if settings.quoting == "none":
            special.append(ESCAPECHAR.encode(self.encoding))
        self._special = re.compile(b"|".join(re.escape(s) for s in special)).search
        self.special = self._special  # finds a quote (or escape character) in bytes
        #: True while the lines being yielded come from a chunk of simple lines only
        #: (see :meth:`simple`), so a caller may skip asking line by line.
        self.plain = False
        self._chunk: Iterator[bytes] = iter(())  # the lines of the chunk being yielded
        self._lines = self._physical()
        self._feed = _Feed(self._lines, self.encoding)
        self._reader = csv.reader(self._feed, **reader_options(settings))
        self._limit = csv.field_size_limit()
        #: a UTF-8 byte order mark at the start of `raw` is dropped (`start`: `raw` is a
        #: file's start)
        self.skips_bom = encoding == "utf-8-sig" and start
        # bytes that cannot make a cell non-blank alone, and every non-ASCII byte
        self.blank = b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f" + bytes(range(128, 256))
        self.blank += self.delimiter.encode(self.encoding)

    def _physical(self) -> Iterator[bytes]:
        carry = b""
        first = True
        cutter = self._cutter
        while chunk := self._raw.read(_CHUNK):
            self.digest.update(chunk)
            if cutter is not None:
                self.blocks += cutter.dropped(cutter.feed(chunk))
            if first and self.skips_bom and chunk.startswith(codecs.BOM_UTF8):
                chunk = chunk[len(codecs.BOM_UTF8) :]
            first = False
            data = carry + chunk
            lines = data.splitlines(keepends=True)
            carry = lines.pop()  # maybe partial, or a "\r" before its "\n"
            self.plain = self._plain(data, len(data) - len(carry), lines)
            self._chunk = iter(lines)
            yield from self._chunk
        self.plain = False
        if cutter is not None:
            self.blocks += cutter.dropped(cutter.close())
        if carry:
            yield carry

    def _plain(self, data: bytes, end: int, lines: list[bytes]) -> bool:
        """Whether every line of `lines` (the first `end` bytes of `data`) is simple: no
        quote or escape character in any (one search of the chunk), none too long."""
        return not self._special(data, 0, end) and max(map(len, lines), default=0) < self._limit

    def __iter__(self) -> Iterator[RawRecord]:
        line = 1
        for physical in self._lines:
            body = self.simple(physical)
            if body is not None:
                line += 1
                if self.has_value(body):
                    yield RawRecord(line - 1, physical, None)
                continue
            record = self.parsed(line, physical)
            line += record[0]
            if record[1] is not None:
                yield record[1]

    def lines(self) -> Iterator[bytes]:
        """The physical lines not read yet (for a caller that splits them itself, with
        :meth:`simple`, :meth:`has_value` and :meth:`parsed`)."""
        return self._lines

    def rest(self) -> list[bytes]:
        """The lines of the chunk being yielded that :meth:`lines` has not yielded yet,
        taken at once (a caller that handles a plain chunk's lines together: while
        :attr:`plain` holds, each is a whole simple row)."""
        return list(self._chunk)

    def skip_header(self) -> int:
        """Read past the header (the first row that is not blank); the next line's number."""
        line = 1
        for physical in self._lines:
            body = self.simple(physical)
            if body is not None:
                line += 1
                if self.has_value(body):
                    return line
                continue
            taken, record = self.parsed(line, physical)
            line += taken
            if record is not None:
                return line
        return line

    def simple(self, physical: bytes) -> bytes | None:
        """The line without its line break when it is a whole row that needs no csv parsing
        (no quote, no escape character, not too long); else None."""
        if len(physical) < self._limit and not self._special(physical):
            return physical.rstrip(b"\r\n")
        return None

    def has_value(self, body: bytes) -> bool:
        """Whether a simple row holds a cell that is not blank (else csv readers skip it)."""
        # an ASCII byte that is neither blank nor the delimiter: a row with a value
        return bool(body.translate(None, self.blank)) or self._has_value(body)

    def _has_value(self, body: bytes) -> bool:
        """Whether a row holds a cell that is not blank, as csv readers here decide."""
        text = body.decode(self.encoding, "surrogateescape")
        return any(cell.strip() for cell in text.split(self.delimiter))

    def parsed(self, line: int, physical: bytes) -> tuple[int, RawRecord | None]:
        """A row csv must parse; (how many physical lines it took, the row or None if blank)."""
        feed = self._feed
        feed.pending, feed.taken = physical, []
        try:
            cells = next(self._reader)
        except csv.Error as exc:  # the reader resumes at the next line
            error = f"malformed CSV: {exc}"
            return len(feed.taken), RawRecord(line, b"".join(feed.taken), [], error)
        raw = b"".join(feed.taken)
        if not any(cell.strip() for cell in cells):
            return len(feed.taken), None
        return len(feed.taken), RawRecord(line, raw, cells)

    def parsed_size(self) -> int:
        """The bytes of the physical lines the last :meth:`parsed` took (a blank row's too)."""
        return sum(map(len, self._feed.taken))

    def cells(self, record: RawRecord) -> list[str]:
        """The cells of `record`, decoded (undecodable bytes kept as lone surrogates)."""
        if record.cells is not None:
            return record.cells
        text = record.raw.rstrip(b"\r\n").decode(self.encoding, "surrogateescape")
        return text.split(self.delimiter)

    def key_cell(self, record: RawRecord, index: int) -> str | None:
        """The cell at `index` of `record`, or None when the row is shorter or unreadable."""
        if record.error is not None:
            return None
        if record.cells is not None:
            cells = record.cells
            return cells[index] if index < len(cells) else None
        body = record.raw.rstrip(b"\r\n")
        parts = body.split(self.delimiter.encode(self.encoding), index + 1)
        return parts[index].decode(self.encoding, "surrogateescape") if index < len(parts) else None


class _Feed:
    """The lines csv reads: the line pushed back first, then the file's; keeps their bytes."""

    def __init__(self, lines: Iterator[bytes], encoding: str) -> None:
        self._lines = lines
        self._encoding = encoding
        self.pending: bytes | None = None
        self.taken: list[bytes] = []

    def __iter__(self) -> _Feed:
        return self

    def __next__(self) -> str:
        if self.pending is not None:
            line, self.pending = self.pending, None
        else:
            line = next(self._lines)
        self.taken.append(line)
        return line.decode(self._encoding, "surrogateescape")


def fingerprint(raw: bytes, person: bytes) -> int:
    """The 64-bit fingerprint of a row's raw bytes under `person` (see the module)."""
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8, person=person).digest(), "little")


def fingerprinter(person: bytes) -> Callable[[bytes], int]:
    """:func:`fingerprint` under `person`, as a function: a copy of a hash already set up
    costs half of setting one up per row."""
    start = hashlib.blake2b(digest_size=8, person=person)
    copy, from_bytes = start.copy, int.from_bytes

    def mark(raw: bytes) -> int:
        hashed = copy()
        hashed.update(raw)
        return from_bytes(hashed.digest(), "little")

    return mark


# -- blocks: runs of whole rows, cut where the content says --------------------------------

#: A block ends after a line whose Adler-32 has a zero in bits 16-23 (the low byte of its
#: position-weighted sum): about one line in 256, decided by that line's bytes alone
#: (computed in C for a chunk's lines at once), so that inserting, deleting or editing a
#: row moves no boundary but at its own line.
_BYTE = 2 if sys.byteorder == "little" else 1  # bits 16-23 of each uint32 in a buffer
_MARKS = bytes(byte != 0 for byte in range(256))  # those bytes that end a block: 0
_LONE_CR = re.compile(rb"\r(?!\n)").search  # a line break splitlines() sees, not ours
#: A block longer than this ends at its next line feed (lines that never mark).
_BLOCK_MAX = 1 << 17
#: The end line of the rest of a file after a block that is not plain (see BlockCutter).
TAIL = 1 << 62


#: The lines of a block's part (:meth:`BlockCutter.parts`): at 1% of the rows changed, about
#: 85% of the parts of a block that changed are unchanged.
PART_ROWS = 16


class CutBlock(NamedTuple):
    """A run of whole physical lines: its first line, the line after its last, its digest
    (b"" for the first block, which holds the header, and for the rest of a file after a
    block that is not plain), its bytes and the digests of its parts (made by
    :meth:`BlockCutter.parts` when its bytes are dropped; b"" before)."""

    first_line: int
    end_line: int
    digest: bytes
    data: bytes
    parts: bytes = b""


class BlockCutter:
    """A file's bytes, fed chunk by chunk, cut into blocks of whole lines (see :data:`_BYTE`).

    Each block is named by 16 bytes of SHA-256 over the personalization and its bytes.
    Blocks are cut while every block so far is *plain*: no quote (nor escape character),
    no line break but line feeds (and CR LF pairs), no over-long line, so that its lines
    are its rows and a boundary is never inside a quoted cell. From the first block that
    is not plain on, the rest of the file is one run (``end_line`` :data:`TAIL`, no
    digest), handed on chunk by chunk, for the row splitter. Where blocks end depends on
    the bytes only, not on how they came in chunks.
    """

    def __init__(
        self,
        person: bytes,
        special: Callable[[bytes], object],
        limit: int,
        *,
        named_parts: bool = True,
    ) -> None:
        #: whether :meth:`dropped` names the blocks' parts (a read whose blocks are not
        #: kept need not: 0.3 s a million rows)
        self.named_parts = named_parts
        self._named = hashlib.sha256(person)
        self._part = self._named.copy()
        self._part.update(b"\0part\0")
        self._special = special
        self._limit = limit
        self._partial = b""  # a line without its line feed yet
        self._block: list[bytes] = []  # the lines of the block being cut
        self._size = 0
        self._lines = 0
        self._line = 1
        self._first = True
        self._tail = False

    def feed(self, chunk: bytes) -> list[CutBlock]:
        """The blocks `chunk` completes."""
        if self._tail:
            return [CutBlock(self._line, TAIL, b"", chunk)]
        data = self._partial + chunk
        end = data.rfind(b"\n") + 1
        self._partial = data[end:]
        return self._blocks(self._cut(data[:end])) if end else []

    def close(self) -> list[CutBlock]:
        """The last blocks, at the end of the file."""
        if self._tail:
            return []
        pieces = []
        last = b"".join([*self._block, self._partial])
        if last:
            pieces.append((last, self._lines + bool(self._partial)))
        self._block, self._size, self._lines, self._partial = [], 0, 0, b""
        return self._blocks(pieces)

    def _cut(self, data: bytes) -> list[tuple[bytes, int]]:
        """The blocks that whole lines `data` complete, each with its number of lines; the
        rest waits in the block."""
        pieces: list[tuple[bytes, int]] = []
        lines = data.split(b"\n")
        lines.pop()  # data ends with a line feed
        sums = array.array("I", map(zlib.adler32, lines))
        low = sums.tobytes()[_BYTE::4].translate(_MARKS)
        at = line = 0  # the byte and line where the lines not in a block start
        while line < len(lines):
            mark = low.find(0, line)
            stop = len(lines) if mark < 0 else mark + 1
            size = sum(map(len, lines[line:stop])) + stop - line
            if self._size + size >= _BLOCK_MAX:  # forced: at the first line end at the limit
                end = data.find(b"\n", at + max(_BLOCK_MAX - self._size, 1) - 1) + 1
                stop = line + data.count(b"\n", at, end)
            elif mark < 0:
                self._block.append(data[at:])
                self._size += size
                self._lines += stop - line
                break
            else:
                end = at + size
            self._block.append(data[at:end])
            pieces.append((b"".join(self._block), self._lines + stop - line))
            self._block, self._size, self._lines = [], 0, 0
            at, line = end, stop
        return pieces

    def part_data(self, block: CutBlock) -> list[bytes]:
        """The bytes of the block's parts: its runs of :data:`PART_ROWS` lines (the last one
        maybe shorter), in order."""
        lines = block.data.splitlines(keepends=True)  # a plain block's lines end with \n
        return [b"".join(lines[at : at + PART_ROWS]) for at in range(0, len(lines), PART_ROWS)]

    def parts(self, block: CutBlock, data: list[bytes] | None = None) -> bytes:
        """The digests of the block's parts (b"" for a block without a digest), in order,
        each :data:`~connector_core.adapters.PART_DIGEST` bytes of SHA-256 over the
        personalization, a mark that it is a part, and its bytes (`data`: the parts'
        bytes, by default :meth:`part_data`'s)."""
        if not block.digest:
            return b""
        named, digests = self._part.copy, []
        for part in self.part_data(block) if data is None else data:
            hashed = named()
            hashed.update(part)
            digests.append(hashed.digest()[:PART_DIGEST])
        return b"".join(digests)

    def dropped(self, blocks: list[CutBlock]) -> list[CutBlock]:
        """`blocks` with their parts named (see :attr:`named_parts`) and their bytes dropped."""
        if not self.named_parts:
            return [b._replace(data=b"") for b in blocks]
        return [b._replace(data=b"", parts=self.parts(b)) for b in blocks]

    def _plain(self, piece: bytes) -> bool:
        if self._special(piece):
            return False
        if _LONE_CR(piece):
            return False
        return len(piece) < self._limit or max(map(len, piece.split(b"\n"))) + 2 < self._limit

    def _blocks(self, pieces: list[tuple[bytes, int]]) -> list[CutBlock]:
        blocks = []
        for at, (piece, lines) in enumerate(pieces):
            if not self._plain(piece):
                self._tail = True
                rest = b"".join([*(p for p, _ in pieces[at:]), *self._block, self._partial])
                self._block, self._size, self._lines, self._partial = [], 0, 0, b""
                blocks.append(CutBlock(self._line, TAIL, b"", rest))
                return blocks
            digest = b""
            if not self._first:
                named = self._named.copy()
                named.update(piece)
                digest = named.digest()[:16]
            self._first = False
            blocks.append(CutBlock(self._line, self._line + lines, digest, piece))
            self._line += lines
        return blocks
