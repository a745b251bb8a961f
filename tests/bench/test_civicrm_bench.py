"""The CiviCRM benchmark's machinery at a small size: request budgets and the report.

Never timings.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from bench import civicrm_bench

CONTACTS, CHANGED, WRITE, PAGE = 300, 20, 100, 50


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    return civicrm_bench.run_bench(CONTACTS, CHANGED, WRITE, PAGE)


def test_request_budgets(results: dict[str, Any]) -> None:
    full, incremental, write = results["phases"]
    assert full["records"] == CONTACTS
    assert full["requests"] <= math.ceil(CONTACTS / PAGE) + 5 == full["budget"]
    assert CHANGED <= incremental["records"] <= 2 * CHANGED
    assert incremental["requests"] <= 5
    assert write["records"] == WRITE
    assert write["requests"] <= math.ceil(WRITE / PAGE) + 5 == write["budget"]
    assert all(p["within_budget"] for p in results["phases"])


def test_replay_sends_the_same_requests(results: dict[str, Any]) -> None:
    """The raw floor replays every write request into a second empty fake."""
    assert results["replayed_writes"] == results["phases"][2]["requests"]


def test_report_renders(results: dict[str, Any]) -> None:
    page = civicrm_bench.render(results, "a note")
    assert page.startswith("# CiviCRM benchmark: results")
    assert "a note" in page
    for name in ("initial full read", "incremental read", "write to empty"):
        assert f"| {name} |" in page
    assert results["machine"]["cpu"] in page
    assert "**no**" not in page
