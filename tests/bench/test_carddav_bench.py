"""The CardDAV benchmark's machinery at a small size, on real Radicale and Xandikos.

Every contender really writes every card (vdirsyncer's book is counted), the request budgets
of issue 6 hold, and the report renders. Never timings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import carddav_bench

CARDS, ROUNDS = 12, 2


@pytest.fixture(scope="module", params=["radicale", "xandikos"])
def results(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    kind = request.param
    folder = tmp_path_factory.mktemp(f"carddav-bench-{kind}")
    return kind, carddav_bench.bench_server(kind, CARDS, ROUNDS, folder)


def test_every_contender_runs_every_round(results: Any) -> None:
    _kind, found = results
    assert {name: len(runs) for name, runs in found["runs"].items()} == dict.fromkeys(
        carddav_bench.MEASURES, ROUNDS
    )
    assert all(seconds > 0 for runs in found["runs"].values() for seconds in runs)


def test_request_budgets(results: Any) -> None:
    _kind, found = results
    assert found["ten_changed"]["writes"] == 10
    assert found["ten_changed"]["other"] <= 3
    assert found["unchanged"] <= 2


def test_report_renders(results: Any) -> None:
    kind, found = results
    page = carddav_bench.render(
        {"machine": carddav_bench.machine(ROUNDS), "servers": {kind: found}}
    )
    assert page.startswith("# CardDAV benchmark: results")
    assert f"| {kind} | {CARDS} |" in page
    assert f"in {ROUNDS} rounds" in page


def test_fresh_book_is_empty_and_its_server_stops(tmp_path: Path) -> None:
    with carddav_bench.fresh_book("radicale", tmp_path) as book:
        assert carddav_bench.count_cards(book) == 0
    with pytest.raises(carddav_bench.requests.ConnectionError):
        carddav_bench.count_cards(book)
