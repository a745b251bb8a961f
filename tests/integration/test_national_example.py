"""The national example runs with one command and does what its README says, in process
and on worker processes (the machine's PostgreSQL and Redis: a missing one fails)."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.postgres import REPO, _admin

RUN = REPO / "examples" / "national" / "run.py"


def example(work: Path, *args: str) -> str:
    """Run the example in `work` (kept), its output; a failure shows the output."""
    done = subprocess.run(
        [sys.executable, str(RUN), "--work", str(work), *args],
        cwd=work.parent, capture_output=True, text=True, timeout=400, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def in_process(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    work = tmp_path_factory.mktemp("in-process") / "national"
    return work, example(work)


def partner_files(work: Path) -> dict[str, list[str]]:
    return {
        p.name: p.read_text(encoding="utf-8").splitlines()
        for p in sorted((work / "out").glob("*.csv"))
    }


def test_the_national_example_runs(in_process: tuple[Path, str]) -> None:
    work, out = in_process
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


def test_the_national_example_on_two_workers(in_process: tuple[Path, str], tmp_path: Path) -> None:
    """`run.py --workers 2`: a fresh PostgreSQL database, a queue of its own on Redis, two
    `connector worker` processes; the same checks pass and the partners' files end as the
    in-process run leaves them (the example fixes the target key secret: the same ids)."""
    work = tmp_path / "national"
    out = example(work, "--workers", "2")
    assert "queued 50 job(s) in 2 task(s) on redis://127.0.0.1:6379/11" in out
    assert "local.york-south: retired (left the registry)" in out
    assert "queued 49 job(s)" in out
    assert "the registry changed: the workers are restarted" in out
    assert "OK: 50 partners served from one template on 2 worker(s)" in out
    files = partner_files(work)
    assert len(files) == 50
    assert files == partner_files(in_process[0])  # byte for byte, in the same order
    # each worker ran: its log names a task it took
    logs = sorted((work / "workers").glob("worker-*.log"))
    assert len(logs) == 4  # two, then two more after the registry changed
    took = [log for log in logs if "connector.run_jobs" in log.read_text(encoding="utf-8")]
    assert len(took) >= 2, [log.read_text(encoding="utf-8")[-2000:] for log in logs]
    # the workers were stopped (by their process ids), the database dropped
    pids = [int(p) for line in re.findall(r"started, pids ([\d, ]+)", out) for p in line.split(",")]
    assert len(pids) == 4
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    (database,) = re.findall(r"a fresh PostgreSQL database (\w+)", out)
    admin = _admin("postgres")
    with admin.connect() as conn:
        left = conn.execute(
            sa.text("SELECT count(*) FROM pg_database WHERE datname = :n"), {"n": database}
        ).scalar_one()
    admin.dispose()
    assert left == 0
