"""The mirror benchmark's machinery at a small size: every contender, run as the benchmark
runs it (whole processes), writes the same rows as `connector run`.

Never timings. Under CI (CI=true) a contender that is not installed fails the test, since
.ci/run installs every peer (scripts/bootstrap, bench/setup); elsewhere it is skipped with
the reason. The full size (1,000,000 contacts) is marked slow: CI never runs it.
"""

from __future__ import annotations

import collections
import os
from pathlib import Path
from typing import Any

import pytest

from bench import mirror_bench

IN_CI = os.environ.get("CI") == "true"


def _identical(tmp: Path, records: int) -> dict[str, Any]:
    # rounds=0: only the untimed check that every output equals ours (OutputMismatch if not)
    return mirror_bench.run_bench(records, 0, mirror_bench.CONTENDERS, strict=IN_CI, work=tmp)


def test_every_contender_writes_what_connector_run_writes(tmp_path: Path) -> None:
    results = _identical(tmp_path, 2_000)
    assert 300 < results["shared"] < 400  # about 17.6% of 2,000
    # the report renders from what was measured, and says what is compared
    page = mirror_bench.render(
        {**results, "machine": {"date": "today"}, "versions": {}, "command": "x"}
    )
    assert "What is compared, and how" in page
    assert "id_map" in page
    if results["skipped"]:
        pytest.skip(f"not installed: {results['skipped']}")


def test_a_mismatch_is_caught(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    out.write_text("id,first_name,last_name,phone,city\nk,Ana,Berg,,Leeds\n", encoding="utf-8")
    ours = mirror_bench.canonical(out)
    out.write_text("id,first_name,last_name,phone,city\nk,Ana,Berg,,York\n", encoding="utf-8")
    with pytest.raises(mirror_bench.OutputMismatch, match="missing"):
        mirror_bench.assert_identical("peer", ours, mirror_bench.canonical(out))


def _floor(tmp: Path, change: str) -> collections.Counter[tuple[str, ...]]:
    source = tmp / change / "src" / "members.csv"
    mirror_bench.write_source(source, 3_000, change)
    out = source.parent / "out.csv"
    stages = mirror_bench.peer_stages("stdlib", source, out, tmp)
    mirror_bench.run_processes(stages, cwd=tmp)
    return mirror_bench.canonical(out)


def test_the_changed_sources_change_what_they_say(tmp_path: Path) -> None:
    same = _floor(tmp_path, "none")
    one = _floor(tmp_path, "one")
    percent = _floor(tmp_path, "percent")
    assert sum((same - one).values()) == 1  # exactly one shared row differs
    changed = sum((same - percent).values())
    assert 0 < changed <= 30  # 1% of 3,000 rows, of which about 17.6% are shared


@pytest.mark.slow
def test_every_contender_at_full_size(tmp_path: Path) -> None:
    results = _identical(tmp_path, 1_000_000)
    assert results["shared"] > 100_000
