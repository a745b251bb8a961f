"""The fan-out benchmark's machinery at a small size (never timings)."""

from __future__ import annotations

from typing import Any

import pytest

from bench import fanout_bench


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    return fanout_bench.run_bench(400, 6, 1)  # asserts grouped == one by one, target files


def test_the_group_reads_the_source_once(results: dict[str, Any]) -> None:
    table = results["table"]
    for phase in ("first", "changed"):
        assert table["grouped"][phase]["reads"] == 1
        assert table["one by one"][phase]["reads"] == 6
        assert table["one job"][phase]["reads"] == 1
    # A job alone skips the CSV rows it decided before (row fingerprints), so on the rerun it
    # counts as shared only the changed rows; a group decodes every row for all its jobs.
    assert table["grouped"]["first"]["shared"] == table["one by one"]["first"]["shared"]
    assert table["grouped"]["first"]["written"] > table["one job"]["first"]["written"] > 0


def test_the_report_renders(results: dict[str, Any]) -> None:
    page = fanout_bench.render(results)
    assert "| grouped | first |" in page
    assert "6 jobs over one source" in page
