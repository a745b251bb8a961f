"""Fixtures for the CSV adapter's own tests: real files in a temporary folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from connector_csv import CsvAdapter, CsvSettings

from connector_core.adapters import ReadProblem
from connector_core.records import Record

MakeAdapter = Callable[..., CsvAdapter]  # test modules repeat these aliases: no imports here
ReadAll = Callable[..., tuple[list[Record], list[ReadProblem]]]


@pytest.fixture
def csv_path(tmp_path: Path) -> Path:
    """Where the test's CSV file lives (not created)."""
    return tmp_path / "people.csv"


@pytest.fixture
def make_adapter(csv_path: Path) -> MakeAdapter:
    """Build an adapter for `csv_path`; keyword arguments are settings, plus `mapping`."""

    def make(*, mapping: dict[str, str | None] | None = None, **settings: Any) -> CsvAdapter:
        settings.setdefault("path", csv_path)
        return CsvAdapter(CsvSettings(**settings), mapping=mapping, connection="people")

    return make


@pytest.fixture
def read_all() -> ReadAll:
    """Read everything: the records and the problems of every page."""

    def read(adapter: CsvAdapter, **kwargs: Any) -> tuple[list[Record], list[ReadProblem]]:
        pages = list(adapter.read(**kwargs))
        return [r for p in pages for r in p.records], [q for p in pages for q in p.problems]

    return read
