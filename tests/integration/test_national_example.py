"""The national example runs with one command and does what its README says."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from tests.postgres import REPO


def test_the_national_example_runs(tmp_path: Path) -> None:
    work = tmp_path / "national"
    done = subprocess.run(
        [sys.executable, str(REPO / "examples" / "national" / "run.py"), "--work", str(work)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "50 jobs from the template `local`" in out
    assert "each of the 50 partners holds exactly the people of its region" in out
    assert "is now held by york-north, york-south only" in out
    assert "local.york-south: retired (left the registry)" in out
    assert "OK: 50 partners served from one template" in out
    # The script checks each partner's rows; here, independently: no street, no phone, no
    # postcode, no one without both consents or deceased reached any partner.
    with (work / "people.csv").open(encoding="utf-8", newline="") as f:
        people = {p["Email"]: p for p in csv.DictReader(f)}
    held = 0
    for target in sorted((work / "out").glob("*.csv")):
        with target.open(encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        region = {people[r["email"]]["Region"] for r in rows}
        assert len(region) <= 1, target
        for row in rows:
            assert set(row) == {"id", "first_name", "last_name", "email", "city"}
            person = people[row["email"]]
            assert (person["Contact OK"], person["Local organizing OK"]) == ("yes", "yes")
            assert person["Deceased"] == "no"
            assert row["id"] != person["Person ID"]  # the target key, not the source's id
        held += len(rows)
    assert held > 1000
    with (work / "out" / "york-south.csv").open(encoding="utf-8", newline="") as f:
        assert list(csv.DictReader(f)) == []
