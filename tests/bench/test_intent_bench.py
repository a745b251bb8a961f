"""The intent-log benchmark's machinery at a small size (never timings)."""

from __future__ import annotations

from typing import Any

import pytest

from bench import intent_bench


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    return intent_bench.run_bench(300, 2, 50, "sqlite")


def test_both_variants_do_the_same_work(results: dict[str, Any]) -> None:
    assert results["created"] == 300
    assert len(results["times"]["with"]) == len(results["times"]["without"]) == 2
    assert results["ratio"] > 0


def test_the_report_and_summary_line_render(results: dict[str, Any]) -> None:
    page = intent_bench.render([results])
    assert "| sqlite | 300 | 50 | 300 |" in page
    assert intent_bench.summary_line(results).startswith("- Intent log (sqlite): a first run")
