"""A child process for the crash tests: one run of a job, SIGKILLed at a chosen event.

Usage: ``python sync_child.py ROOT STATE_URL BATCH_SIZE KILL_AT``

The run's events are counted in order: each page read from the source, each target write
while its new file is written but not yet in place (``mid-write``), each target write the
target acknowledged but the state has not recorded, and each state transaction
(``record_batch`` and ``set_job_state``). At event number KILL_AT the process sends itself
SIGKILL; KILL_AT 0 never does. The last line printed is JSON with the number of events and
the run's counts.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import connector_csv.session
from connector_csv import CsvAdapter

from connector_core.config import load_config
from connector_core.masks import MaskContext
from connector_core.sync.job import LoadedJob, load_job
from connector_core.sync.runner import RunResult
from connector_core.sync.state import StateStore
from connector_core.testing import crash

JOB = "north"
HASH_KEY = b"crash-test-key"


class KillSwitch(crash.KillSwitch):
    """The shared kill switch, plus an event in the middle of the CSV file write."""

    def install(self, job: LoadedJob, store: StateStore) -> None:
        """Count every event of a run of `job`, including mid-file-write."""
        super().install(job, store)
        replace = connector_csv.session.replace_file

        def mid_write(path: Path, dump: Callable[[Any], None], **kwargs: Any) -> None:
            replace(path, lambda out: (dump(out), self.tick()), **kwargs)

        connector_csv.session.replace_file = mid_write  # type: ignore[assignment]


def load(root: Path) -> LoadedJob:
    """The crash tests' job, as the CLI would load it."""
    config = load_config(root / "connector.yaml", {"csv": CsvAdapter})
    return load_job(config, JOB, context=MaskContext.with_key(HASH_KEY))


def run(root: Path, state_url: str, batch_size: int, switch: KillSwitch | None = None) -> RunResult:
    """One run of the job; with a `switch`, every event goes through it."""
    return crash.run_with_switch(load(root), state_url, switch, batch_size=batch_size)


def main(argv: list[str]) -> None:
    """Run once as the command line says; print the events and counts."""
    root, url, batch_size, kill_at = Path(argv[0]), argv[1], int(argv[2]), int(argv[3])
    switch = KillSwitch(kill_at)
    result = run(root, url, batch_size, switch)
    print(
        json.dumps(
            {"events": switch.events, "counts": result.counts.as_dict(), "aborted": result.aborted}
        )
    )


if __name__ == "__main__":
    main(sys.argv[1:])
