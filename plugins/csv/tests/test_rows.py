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
from pathlib import Path
from typing import Any

import connector_csv.rows as rows_module
from connector_csv import CsvAdapter, CsvSettings
from connector_csv.rows import RowSplitter, fingerprint, fingerprinter
from hypothesis import given, settings
from hypothesis import strategies as st

from connector_core.adapters import KnownRows

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
