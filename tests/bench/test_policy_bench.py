"""The benchmark's machinery at a small size: every engine gives identical output.

Never timings. Each peer is started and stopped. Under CI (CI=true) a peer that cannot
start fails the test, since .ci/run installs every peer with bench/setup; elsewhere it is
skipped with the reason.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import harness, memory, policy_bench
from bench.baseline import organizers_north
from bench.data import iter_records, make_records
from bench.peers import PEERS, Peer, PeerUnavailable, Shared, make_peer
from bench.recipients import load_compiled

RECORDS = make_records(500, seed=7)
IN_CI = os.environ.get("CI") == "true"


@pytest.fixture(scope="module")
def reference() -> Shared:
    return harness.run_apply(load_compiled(), RECORDS)


@pytest.fixture(params=sorted(PEERS))
def peer(request: pytest.FixtureRequest) -> Iterator[Peer]:
    engine = make_peer(request.param)
    try:
        engine.start()
    except PeerUnavailable as err:
        engine.close()
        if IN_CI:
            pytest.fail(f"{err} (CI runs bench/setup, so every peer must start)")
        pytest.skip(f"{err} (run bench/setup)")
    yield engine
    engine.close()


def test_the_sample_exercises_every_branch_of_policy_a() -> None:
    def share_count(**where: object) -> int:
        return sum(all(r.get(k) == v for k, v in where.items()) for r in RECORDS)

    assert share_count(region="North") > 100
    assert share_count(is_deceased=True) > 0
    assert any("local_organizing" not in r["consent"] for r in RECORDS)
    assert any(r["phone"] is None for r in RECORDS)


def test_records_are_deterministic_and_lazy() -> None:
    assert list(iter_records(50, seed=7)) == RECORDS[:50]
    assert make_records(50, seed=8) != RECORDS[:50]
    assert next(iter_records(10**12))["id"] == "0"  # lazy: nothing built ahead


def test_engine_and_hand_written_function_agree(reference: Shared) -> None:
    assert 50 < len(reference) < 200
    timings = harness.throughput(RECORDS, repeats=1)  # asserts identical outputs itself
    assert set(timings) == {"compiled.apply", "compiled.evaluate", "hand-written"}
    assert harness.run_handwritten(RECORDS) == reference


def test_a_mismatch_names_the_record(reference: Shared) -> None:
    wrong = [(rid, {**proj, "phone": "+44 113 496 0123"}) for rid, proj in reference]
    with pytest.raises(harness.OutputMismatch, match=f"record {reference[0][0]}"):
        harness.assert_same(reference, wrong, "broken")
    with pytest.raises(harness.OutputMismatch, match="shared"):
        harness.assert_same(reference, [*reference, ("x", {})], "extra")


def test_peer_output_is_identical_to_ours(peer: Peer, reference: Shared) -> None:
    assert peer.run(RECORDS) == reference


def test_the_hand_written_function_never_shares_street_addresses() -> None:
    for record in RECORDS:
        projection = organizers_north(record)
        assert projection is None or set(projection) == {"first_name", "last_name", "city", "phone"}


def test_fanout_equals_evaluating_every_policy() -> None:
    result = harness.fanout(RECORDS, count=20, repeats=1, naive_records=len(RECORDS))
    assert result.shares > len(RECORDS) // 2  # regions and local groups both match


def test_memory_children_report_each_size() -> None:
    reports = memory.measure([200, 400])
    assert [r["records"] for r in reports] == [200, 400]
    shared = sum(d.share for _r, d, _p in load_compiled().apply(iter_records(400)))
    assert reports[1]["shared"] == shared
    assert all(r["tracemalloc_peak_mb"] > 0 and r["maxrss_mb"] > 0 for r in reports)


def test_the_command_writes_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(policy_bench, "RESULTS_MD", tmp_path / "RESULTS.md")
    args = shlex.split(
        "--records 300 --peer-records 200 --fanout-policies 15 --naive-records 100 "
        "--repeats 1 --peer-repeats 1 --peers none --json --write-results --memory-sizes="
    )
    assert policy_bench.main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ratios"]["compiled_vs_best_peer"] is None
    assert out["ratios"]["handwritten_vs_best_peer"] is None
    assert out["verdicts"]["compiled_vs_best_peer"] == "not measured"
    written = (tmp_path / "RESULTS.md").read_text()
    for heading in ("## Machine", "## Ratios measured in this run", "## Fan-out", "## Notes"):
        assert heading in written


def test_the_ratios_to_the_best_peer_share_its_rate() -> None:
    out = {
        "throughput": {
            "compiled.apply": {"rate": 900.0},
            "hand-written": {"rate": 1000.0},
            "compiled.evaluate": {"rate": 950.0},
        },
        "peers": [{"rate": 10.0}, {"rate": 20.0}, {"rate": None}],
        "fanout": None,
        "memory": [],
    }
    ratios = policy_bench.ratios(out)
    assert ratios["compiled_vs_best_peer"] == 45.0
    assert ratios["handwritten_vs_best_peer"] == 50.0  # the ceiling for a hand-written speed


@pytest.mark.slow
def test_a_larger_run_with_every_peer_agrees() -> None:
    args = policy_bench.parse_args(
        shlex.split(
            "--records 5000 --peer-records 2000 --fanout-policies 200 --naive-records 500 "
            "--memory-sizes 1000,5000 --repeats 1 --peer-repeats 1"
        )
    )  # under CI, --strict-peers is the default: a peer that cannot start raises
    out = policy_bench.run(args)  # asserts identical outputs everywhere
    assert [p["name"] for p in out["peers"]] == list(PEERS)
    assert out["fanout"]["policies"] == 200
    assert [m["records"] for m in out["memory"]] == [1000, 5000]
    if IN_CI:
        assert all(p["rate"] for p in out["peers"])
