"""The raw row splitter's shortcuts give what the row-by-row path gives.

A chunk holding no quote (nor escape character) and no over-long line is taken as simple
lines without asking line by line (``RowSplitter.plain``); fingerprints are computed from a
prepared hash. Small chunks make rows, quoted line breaks and CRLF pairs straddle chunks.
"""

from __future__ import annotations

import csv
import io
import shutil
import tempfile
from collections.abc import Collection
from pathlib import Path
from typing import Any

import connector_csv.adapter as adapter_module
import connector_csv.rows as rows_module
import pytest
from connector_csv import CsvAdapter, CsvSettings
from connector_csv.rows import PART_ROWS, RowSplitter, fingerprint, fingerprinter
from hypothesis import given, settings
from hypothesis import strategies as st

from connector_core.adapters import PART_DIGEST, KnownBlocks, KnownRows, Page

CELLS = st.sampled_from(["P1", "P2", "", " ", "a,b", 'say "hi"', "x\ny", "x\r\ny", "é", "=1"])
TABLES = st.lists(st.lists(CELLS, min_size=0, max_size=4), max_size=10)


@given(raw=st.binary(max_size=200), person=st.binary(min_size=16, max_size=16))
def test_a_prepared_fingerprint_is_the_fingerprint(raw: bytes, person: bytes) -> None:
    assert fingerprinter(person)(raw) == fingerprint(raw, person)


def _written(table: list[list[str]], crlf: bool, delimiter: str = ",") -> bytes:
    out = io.StringIO(newline="")
    csv.writer(out, delimiter=delimiter, lineterminator="\r\n" if crlf else "\n").writerows(
        [["id", "first_name", "city"], *table]
    )
    return out.getvalue().encode("utf-8")


@settings(max_examples=100, deadline=None)
@given(table=TABLES, crlf=st.booleans(), chunk=st.integers(1, 40))
def test_lines_of_a_plain_chunk_are_simple(table: list[list[str]], crlf: bool, chunk: int) -> None:
    data = _written(table, crlf)
    saved = rows_module._CHUNK
    rows_module._CHUNK = chunk
    try:
        splitter = RowSplitter(io.BytesIO(data), CsvSettings(path=Path("x.csv")))
        seen = []
        for line in splitter.lines():
            if splitter.plain:
                assert splitter.simple(line) == line.rstrip(b"\r\n")
            seen.append(line)
    finally:
        rows_module._CHUNK = saved
    assert b"".join(seen) == data


def _pages(adapter: CsvAdapter, **kwargs: Any) -> list[tuple[list[Any], list[str], list[str]]]:
    return [
        ([dict(r) for r in page.records], [str(p) for p in page.problems], page.skipped)
        for page in adapter.read(**kwargs)
    ]


@settings(max_examples=60, deadline=None)
@given(table=TABLES, crlf=st.booleans(), edit=st.tuples(st.integers(0, 9), CELLS))
def test_incremental_reads_across_small_chunks_match_a_full_read(
    table: list[list[str]], crlf: bool, edit: tuple[int, str]
) -> None:
    """Read, edit one cell, read again given the first read's fingerprints: what is
    decoded plus what is skipped is what a full read of the edited file lists."""
    tmp = Path(tempfile.mkdtemp(prefix="rows-"))
    saved = rows_module._CHUNK
    rows_module._CHUNK = 7
    try:
        path = tmp / "people.csv"
        path.write_bytes(_written(table, crlf))
        adapter = CsvAdapter(CsvSettings(path=path, page_size=2), connection="people")
        first = list(adapter.read(known=KnownRows()))
        marks = frozenset(m for page in first for m in page.fingerprints.values())
        at, value = edit
        if table:
            row = table[at % len(table)]
            row[:] = [value, *row[1:]] if row else [value]
        path.write_bytes(_written(table, crlf))
        full = list(adapter.read(known=KnownRows()))
        again = list(adapter.read(known=KnownRows(marks)))
        problems = lambda pages: [str(p) for page in pages for p in page.problems]  # noqa: E731
        assert problems(again) == problems(full)
        listed = {str(r["id"]) for page in again for r in page.records}
        listed |= {sid for page in again for sid in page.skipped}
        assert listed == {str(r["id"]) for page in full for r in page.records}
        decoded = {str(r["id"]): dict(r) for page in again for r in page.records}
        by_id = {str(r["id"]): dict(r) for page in full for r in page.records}
        assert all(by_id[sid] == record for sid, record in decoded.items())
        assert again[-1].cursor == full[-1].cursor
    finally:
        rows_module._CHUNK = saved
        shutil.rmtree(tmp, ignore_errors=True)


class _Blocks(KnownBlocks):
    """Known blocks as the engine keeps them, from the pages of an earlier read."""

    def __init__(self, pages: list[Page]) -> None:
        self.blocks = {b.digest: b for page in pages for b in page.blocks}
        self.loose = {m for page in pages for m in page.fingerprints.values()}

    def __contains__(self, digest: object) -> bool:
        return digest in self.blocks

    def ids(self, digests: Collection[bytes]) -> set[str]:
        return {sid for d in digests for sid in self.blocks[d].ids}

    def rows(self, unchanged: Collection[bytes]) -> set[int]:
        skip = set(unchanged)
        inside = {m for d, b in self.blocks.items() if d not in skip for m in b.fingerprints}
        return self.loose | inside

    def parts(self, unchanged: Collection[bytes] = ()) -> dict[bytes, tuple[bytes, int]]:
        """As the engine's: a part found in two places is left out."""
        places: dict[bytes, list[tuple[bytes, int]]] = {}
        for d, b in self.blocks.items():
            if d in unchanged:
                continue
            for n in range(len(b.parts) // PART_DIGEST):
                part = b.parts[n * PART_DIGEST : (n + 1) * PART_DIGEST]
                places.setdefault(part, []).append((d, n))
        return {part: where[0] for part, where in places.items() if len(where) == 1}

    def block_rows(self, digests: Collection[bytes]) -> dict[bytes, tuple[list[str], list[int]]]:
        return {d: (self.blocks[d].ids, self.blocks[d].fingerprints) for d in digests}


def _known_map(pages: list[Page], blocks: _Blocks | None = None) -> dict[str, int]:
    """Source id -> fingerprint of every row a read leaves known at its cursor."""
    known: dict[str, int] = {}
    for page in pages:
        known.update(page.fingerprints)
        for block in page.blocks:
            known.update(zip(block.ids, block.fingerprints, strict=True))
        for digest in page.unchanged:
            assert blocks is not None
            old = blocks.blocks[digest]
            known.update(zip(old.ids, old.fingerprints, strict=True))
    return known


def _edit(table: list[list[str]], edits: list[tuple[str, int, str]]) -> None:
    """Apply `edits` to `table`: insert a row, delete one, or set a row's cells after the key."""
    for action, at, value in edits:
        where = at % (len(table) + 1)
        if action == "insert":
            table.insert(where, [f"N{at}", value])
        elif table and action == "delete":
            del table[where % len(table)]
        elif table:
            table[where % len(table)][1:2] = [value]


EDITS = st.lists(
    st.tuples(st.sampled_from(["edit", "insert", "delete"]), st.integers(0, 60), CELLS),
    max_size=4,
)
ROWS = st.lists(
    st.one_of(
        st.lists(st.sampled_from(["P1", "P2", "", "=1", "é"]), min_size=1, max_size=3),
        st.lists(CELLS, min_size=0, max_size=3),
    ),
    max_size=40,
)


@settings(max_examples=120, deadline=None)
@given(
    table=ROWS,
    crlf=st.booleans(),
    edits=EDITS,
    chunk=st.integers(5, 60),
    cut=st.tuples(st.integers(1, 4), st.integers(8, 80)),
    neutralize=st.booleans(),
    part=st.integers(1, 3),
    whole=st.integers(0, 60),
    match=st.sampled_from([0, 100, 1 << 22]),
)
def test_a_read_given_blocks_lists_what_a_full_read_lists(
    table: list[list[str]],
    crlf: bool,
    edits: list[tuple[str, int, str]],
    chunk: int,
    cut: tuple[int, int],
    neutralize: bool,
    part: int,
    whole: int,
    match: int,
) -> None:
    """Read (blocks reported), edit, insert and delete rows, read again given the first
    read's blocks: what is decoded, skipped (in unchanged parts too, their known parts
    loaded at once or after some changed blocks) and left in unchanged blocks is what a
    full read of the edited file lists, with the same problems, cursor, known rows and
    blocks."""
    # unique keys and whole rows mostly, so that blocks (and their parts) form; quoted
    # cells, short or blank rows, repeats sometimes
    table = [[f"K{n}", *[*row[1:], "", ""][:2]] if n % 7 else row for n, row in enumerate(table)]
    table += [[f"W{n}", f"v{n % 3}", "Leeds"] for n in range(whole)]  # whole rows: many parts
    tmp = Path(tempfile.mkdtemp(prefix="blocks-"))
    saved = rows_module._CHUNK, rows_module._MARKS, rows_module._BLOCK_MAX, rows_module.PART_ROWS
    rows_module._CHUNK = chunk
    rows_module._MARKS = bytes(byte % cut[0] != 0 for byte in range(256))  # 1 line in cut[0]
    rows_module._BLOCK_MAX = cut[1]
    rows_module.PART_ROWS = adapter_module.PART_ROWS = part
    saved_match, adapter_module._MATCH_AFTER = adapter_module._MATCH_AFTER, match
    adapter_module._CHUNK = chunk  # the chunks a read given blocks cuts
    try:
        path = tmp / "people.csv"
        path.write_bytes(_written(table, crlf))
        adapter = CsvAdapter(
            CsvSettings(path=path, page_size=3, neutralize_formulas=neutralize),
            connection="people",
        )
        first = list(adapter.read(known=KnownRows()))
        blocks = _Blocks(first)
        marks = frozenset(_known_map(first).values())
        _edit(table, edits)
        path.write_bytes(_written(table, crlf))
        full = list(adapter.read(known=KnownRows()))
        again = list(adapter.read(known=KnownRows(marks, frozenset(), blocks)))
        problems = lambda pages: [str(p) for page in pages for p in page.problems]  # noqa: E731
        assert problems(again) == problems(full)
        listed = [str(r["id"]) for page in again for r in page.records]
        listed += [sid for page in again for sid in page.skipped]
        listed += [sid for page in again for sid in blocks.ids(page.unchanged)]
        assert sorted(listed) == sorted(str(r["id"]) for page in full for r in page.records)
        decoded = {str(r["id"]): dict(r) for page in again for r in page.records}
        by_id = {str(r["id"]): dict(r) for page in full for r in page.records}
        assert all(by_id[sid] == record for sid, record in decoded.items())
        assert again[-1].cursor == full[-1].cursor
        assert _known_map(again, blocks) == _known_map(full)
        # a block's parts are named by its bytes, however the read came to it
        parts = {b.digest: b.parts for page in full for b in page.blocks}
        assert all(parts.get(b.digest, b.parts) == b.parts for page in again for b in page.blocks)
    finally:
        rows_module._CHUNK, rows_module._MARKS, rows_module._BLOCK_MAX = saved[:3]
        rows_module.PART_ROWS = adapter_module.PART_ROWS = saved[3]
        adapter_module._MATCH_AFTER = saved_match
        adapter_module._CHUNK = saved[0]
        shutil.rmtree(tmp, ignore_errors=True)


def _read_once(tmp_path: Path) -> tuple[Path, list[list[str]], CsvAdapter, _Blocks]:
    """A file of 3,000 rows (its path and table), its adapter, and the blocks of its read."""
    path = tmp_path / "people.csv"
    table = [[f"{n * 7919 % 100003:05d}", f"name{n}", "Leeds"] for n in range(3000)]
    path.write_bytes(_written(table, False))
    adapter = CsvAdapter(CsvSettings(path=path), connection="people")
    return path, table, adapter, _Blocks(list(adapter.read(known=KnownRows())))


def test_an_unchanged_block_is_neither_split_nor_decoded(tmp_path: Path) -> None:
    """A 1-row edit in a file of many blocks decodes that row alone; every other row is in
    a block listed as unchanged or skipped by its fingerprint."""
    path, table, adapter, blocks = _read_once(tmp_path)
    assert len(blocks.blocks) > 3
    table[1500][1] = "changed"
    path.write_bytes(_written(table, False))
    again = list(adapter.read(known=KnownRows(frozenset(), frozenset(), blocks)))
    assert [r["id"] for page in again for r in page.records] == [table[1500][0]]
    unchanged = [d for page in again for d in page.unchanged]
    assert len(unchanged) == len(blocks.blocks) - 1
    skipped = [sid for page in again for sid in page.skipped]
    assert len(skipped) + len(blocks.ids(unchanged)) == 2999
    assert len(skipped) < 1000  # the rows of the header's block and of the changed one


def test_the_unchanged_parts_of_changed_blocks_are_listed_unsplit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One row in 100 edited: nearly every block changed, yet only the parts holding an
    edit are split; the rest of each block is listed with the ids and fingerprints kept."""
    path, table, adapter, blocks = _read_once(tmp_path)
    assert all(b.parts for b in blocks.blocks.values())
    for n in range(0, 3000, 100):
        table[n][1] = "changed"
    path.write_bytes(_written(table, False))
    listed: list[str] = []
    real = adapter_module._Scan.listed

    def spy(scan: Any, line: int, ids: list[str], marks: Any) -> None:
        listed.extend(ids)
        real(scan, line, ids, marks)

    monkeypatch.setattr(adapter_module._Scan, "listed", spy)
    again = list(adapter.read(known=KnownRows(frozenset(), frozenset(), blocks)))
    decoded = sorted(r["id"] for page in again for r in page.records)
    assert decoded == sorted(table[n][0] for n in range(0, 3000, 100))
    unchanged = [d for page in again for d in page.unchanged]
    assert len(unchanged) < len(blocks.blocks) // 2  # most blocks hold an edit
    # all but the 30 edited parts (16 rows at most each) and the header's block
    assert len(listed) > 3000 - 30 * PART_ROWS - 256 - len(blocks.ids(unchanged))
    assert _known_map(again, blocks) == _known_map(list(adapter.read(known=KnownRows())))


@settings(max_examples=150, deadline=None)
@given(
    table=TABLES,
    crlf=st.booleans(),
    chunks=st.lists(st.integers(1, 50), min_size=1, max_size=5),
    every=st.integers(1, 4),
    longest=st.integers(1, 90),
)
def test_blocks_do_not_depend_on_chunks(
    table: list[list[str]], crlf: bool, chunks: list[int], every: int, longest: int
) -> None:
    """Blocks are whole lines, cover the file in order, and fall where the bytes say
    whatever the chunks they came in; after a block that is not plain, one run to the end."""
    data = _written(table, crlf)
    saved = rows_module._MARKS, rows_module._BLOCK_MAX
    rows_module._MARKS = bytes(byte % every != 0 for byte in range(256))
    rows_module._BLOCK_MAX = longest
    try:
        special = RowSplitter(io.BytesIO(), CsvSettings(path=Path("x.csv"))).special

        def cut(sizes: list[int]) -> list[tuple[int, int, bytes, bytes]]:
            cutter = rows_module.BlockCutter(b"p" * 16, special, 1000)
            out, at, turn = [], 0, 0
            while at < len(data):
                size = sizes[turn % len(sizes)]
                out += cutter.feed(data[at : at + size])
                at, turn = at + size, turn + 1
            out += cutter.close()
            runs: list[tuple[int, int, bytes, bytes]] = []
            for block in out:  # a run's chunks joined
                if runs and runs[-1][1] == rows_module.TAIL:
                    first, end, name, got = runs.pop()
                    runs.append((first, end, name, got + block.data))
                else:
                    runs.append(tuple(block)[:4])  # type: ignore[arg-type]
                if block.digest:  # one part per PART_ROWS lines, the last maybe shorter
                    parts = len(cutter.parts(block)) // PART_DIGEST
                    assert parts == -(-(block.end_line - block.first_line) // PART_ROWS)
            return runs

        whole = cut([len(data) or 1])
        assert cut(chunks) == whole
        assert b"".join(b[3] for b in whole) == data
        line = 1
        for first, end, name, got in whole:
            assert first == line
            if end == rows_module.TAIL:
                assert not name
                break
            assert got.endswith(b"\n") or got == whole[-1][3]
            assert end - first == len(got.splitlines())
            line = end
    finally:
        rows_module._MARKS, rows_module._BLOCK_MAX = saved


def _whole(pages: list[Page]) -> list[tuple[Any, ...]]:
    """Everything a read's pages hold, in order."""
    return [
        (
            [dict(r) for r in page.records],
            [str(p) for p in page.problems],
            page.skipped,
            page.fingerprints,
            [(b.digest, b.ids, b.fingerprints) for b in page.blocks],
            page.unchanged,
            page.cursor,
        )
        for page in pages
    ]


@settings(max_examples=150, deadline=None)
@given(
    table=ROWS,
    crlf=st.booleans(),
    edits=EDITS,
    chunk=st.integers(5, 90),
    neutralize=st.booleans(),
    page_size=st.integers(1, 4),
    decode=st.lists(st.sampled_from(["K1", "K2", "K8", "'=1", "=1", "P1"]), max_size=3),
)
def test_plain_chunks_taken_together_give_the_pages_of_a_row_by_row_read(
    table: list[list[str]],
    crlf: bool,
    edits: list[tuple[str, int, str]],
    chunk: int,
    neutralize: bool,
    page_size: int,
    decode: list[str],
) -> None:
    """An incremental read takes a plain chunk's lines together (connector_csv.adapter's
    _BULK): its pages are the very pages of reading the same rows one by one, with rows
    changed, inserted, deleted, blank, short, quoted, repeated, guarded, asked for again
    (``decode``), and pages filled within a chunk."""
    import connector_csv.adapter as adapter_module

    table = [[f"K{n}", *row[1:]] if n % 7 else row for n, row in enumerate(table)]
    tmp = Path(tempfile.mkdtemp(prefix="bulk-"))
    saved = rows_module._CHUNK, adapter_module._BULK
    rows_module._CHUNK = chunk
    try:
        path = tmp / "people.csv"
        path.write_bytes(_written(table, crlf))
        adapter = CsvAdapter(
            CsvSettings(path=path, page_size=page_size, neutralize_formulas=neutralize),
            connection="people",
        )
        first = list(adapter.read(known=KnownRows()))
        marks = frozenset(_known_map(first).values())
        _edit(table, edits)
        path.write_bytes(_written(table, crlf))
        known = KnownRows(marks, frozenset(decode))
        adapter_module._BULK = False
        one_by_one = _whole(list(adapter.read(known=known)))
        adapter_module._BULK = True
        together = _whole(list(adapter.read(known=known)))
        assert together == one_by_one
    finally:
        rows_module._CHUNK, adapter_module._BULK = saved
        shutil.rmtree(tmp, ignore_errors=True)
