"""A writer killed at any moment leaves the old file or a complete new one, never a mix."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from connector_csv import CsvAdapter, CsvSettings

from connector_core.adapters import Change

INITIAL = 5_000
BATCH = 250

# Appends BATCH rows per write, forever, printing each finished batch number.
WRITER = """
import sys
from pathlib import Path
from connector_core.adapters import Change
from connector_csv import CsvAdapter, CsvSettings

adapter = CsvAdapter(CsvSettings(path=Path(sys.argv[1])))
batch = 0
while True:
    batch += 1
    record = {"email": "p@example.org", "city": "Zürich", "groups": ["a", "b"]}
    list(adapter.write([Change.upsert(f"{batch}-{i}", record) for i in range(int(sys.argv[2]))]))
    print(batch, flush=True)
"""


@pytest.fixture
def seeded(csv_path: Path) -> Path:
    record = {"email": "seed@example.org", "city": "Köln, Nord", "street_address": "a\nb"}
    changes = [Change.upsert(f"seed-{i}", record) for i in range(INITIAL)]
    list(CsvAdapter(CsvSettings(path=csv_path)).write(changes))
    return csv_path


def wait_for_first_batch(proc: subprocess.Popen[str]) -> None:
    """Return once the writer has imported everything and written one batch."""
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "1"


def kill_when_writing(path: Path, proc: subprocess.Popen[str], timeout: float = 10) -> None:
    """SIGKILL the writer as soon as its temporary file exists, i.e. in mid-write."""
    deadline = time.monotonic() + timeout
    while not any(name.endswith(".tmp") for name in os.listdir(path.parent)):
        assert time.monotonic() < deadline, "the writer never started another write"
    proc.send_signal(signal.SIGKILL)


def assert_whole(path: Path) -> int:
    """Check that the file parses into complete rows; return how many batches it holds."""
    with path.open(newline="", encoding="utf-8") as text:
        header, *rows = list(csv.reader(text))
    assert all(len(row) == len(header) for row in rows)
    email = header.index("email")
    assert all(row[email] in ("seed@example.org", "p@example.org") for row in rows)
    batches, partial = divmod(len(rows) - INITIAL, BATCH)
    assert partial == 0, f"{len(rows)} rows: not the initial rows plus whole batches"
    pages = list(CsvAdapter(CsvSettings(path=path, strict=True)).read())
    assert sum(len(p.records) for p in pages) == len(rows)
    return batches


@pytest.mark.parametrize("how", ["mid-write", 0.05, 0.17, 0.31])
def test_killed_writer_leaves_a_whole_file(seeded: Path, how: str | float) -> None:
    command = [sys.executable, "-c", WRITER, str(seeded), str(BATCH)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as proc:
        try:
            wait_for_first_batch(proc)
            if how == "mid-write":
                kill_when_writing(seeded, proc)
            else:
                time.sleep(float(how))
                proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    batches = assert_whole(seeded)
    assert batches >= 1
    if how == "mid-write":
        assert [p.name for p in seeded.parent.iterdir() if p.name.endswith(".tmp")]
    # A temporary file left by the killed writer does not disturb the next write.
    more = [Change.upsert(f"next-{i}", {"email": "p@example.org"}) for i in range(BATCH)]
    list(CsvAdapter(CsvSettings(path=seeded)).write(more))
    assert assert_whole(seeded) == batches + 1
