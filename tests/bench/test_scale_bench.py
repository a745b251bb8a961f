"""The scale benchmark's machinery at a small size (never timings): a national source, a
partner template and registry, one job as the baseline, PostgreSQL and SQLite state."""

from __future__ import annotations

from typing import Any

import pytest

from bench import scale_bench


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    # 300 people over 8 partners: check_targets asserts after each run that every partner
    # holds exactly its area's consented, living people with only the allowed columns, and
    # that the partners together hold exactly what the one job holds.
    return scale_bench.run_bench(300, 8, ["postgresql", "sqlite"], changed=0.05)


@pytest.mark.parametrize("store", ["postgresql", "sqlite"])
def test_every_partner_is_decided_from_one_read(results: dict[str, Any], store: str) -> None:
    found = results["stores"][store]
    for phase in ("first", "incremental"):
        assert found["network"][phase]["reads"] == 1
        assert found["baseline"][phase]["reads"] == 1
        assert found["network"][phase]["rows"] > 50
        assert found["network"][phase]["state_bytes"] > 0
        assert found["network"][phase]["statements"] > 0  # counted in the measured process
    # the network opens the file no more often than one job does, but for the check of the
    # partner registry's targets: at most once more
    assert found["network"]["first"]["opens"] <= found["baseline"]["first"]["opens"] + 1
    # 5% changed: half of them withdrew consent, so fewer rows are shared afterwards
    assert found["network"]["incremental"]["rows"] < found["network"]["first"]["rows"]


def test_the_report_renders(results: dict[str, Any]) -> None:
    page = scale_bench.render(results, ["a note"])
    assert "| postgresql | 8 jobs | first |" in page
    assert "| sqlite | one job | incremental |" in page
    assert "- a note" in page
    assert "per-job overhead" in page


def test_a_partner_holding_someone_else_is_caught(tmp_path: Any) -> None:
    network = scale_bench.Workspace(tmp_path / "n", "network", "sqlite", 2)
    baseline = scale_bench.Workspace(tmp_path / "b", "baseline", "sqlite", 2)
    scale_bench.write_people(network.source, 40, 2)
    rows = [r for r in scale_bench.read_csv(network.source) if r["Contact OK"] == "yes"]
    person = next(r for r in rows if r["Area"] == scale_bench.area(1))
    (network.root / "out" / "p00000.csv").write_text(
        f"id,first_name,last_name,email,city\nx,{person['First Name']},{person['Last Name']},"
        f"{person['Email']},{person['City']}\n",
        encoding="utf-8",
    )
    with pytest.raises(AssertionError, match="p00000 does not hold exactly its area's people"):
        scale_bench.check_targets(network, baseline)


@pytest.fixture(scope="module")
def on_workers() -> dict[str, Any]:
    # The same network on two `connector worker` processes (the machine's PostgreSQL and
    # Redis; a missing one fails): 8 partners on one source are one task, so one read.
    return scale_bench.run_bench(
        300, 8, ["postgresql"], changed=0.05, workers=[2], in_process=False
    )


def test_the_network_on_two_workers(on_workers: dict[str, Any]) -> None:
    found = on_workers["stores"]["postgresql"]
    assert set(found) >= {"baseline", "workers-2"}
    assert "network" not in found
    for phase in ("first", "incremental"):
        run = found["workers-2"][phase]
        # check_targets passed: every partner holds exactly its area's people
        assert run["rows"] > 50
        assert run["reads"] == 1  # counted in the workers' pool processes
        assert run["tasks"] == 1
        assert len(run["worker_rss_mb"]) == 2
        assert all(rss > 20 for rss in run["worker_rss_mb"])
        assert run["cpu"] > 0
        assert run["seconds"] > 0
    assert found["workers-2"]["incremental"]["rows"] < found["workers-2"]["first"]["rows"]
    # the speed-up line, from a copy standing in for one worker
    found["workers-1"] = found["workers-2"]
    scale_bench.summarize(on_workers["stores"], 300, 8, 0.05)
    page = scale_bench.render(on_workers)
    assert "| postgresql | 8 jobs, 2 worker(s) | first |" in page
    assert "- postgresql: 2 workers 1.00x one worker's speed on the first run" in page
    assert "--workers 1,2 --no-in-process" in page  # the command that reproduces it
    assert "--group-limit" not in page  # the default
    assert "--group-limit 1875" in scale_bench.render({**on_workers, "group_limit": 1875})
