"""The target-writes benchmark's machinery at a small size (never timings)."""

from __future__ import annotations

from typing import Any

import pytest

from bench import writes_bench


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    return writes_bench.run_bench(700, 1, 20)


def test_a_run_replaces_the_target_once_and_writes_what_a_rewrite_per_batch_wrote(
    results: dict[str, Any],
) -> None:
    """run_bench asserts the outputs are byte-identical and the counts equal."""
    assert results["shared"] == 100
    assert results["rewrites"] == {"session": 1, "per-batch": 5}


def test_the_report_renders(results: dict[str, Any]) -> None:
    assert "| 700 | 100 | 20 | 5 → 1 |" in writes_bench.render([results])
