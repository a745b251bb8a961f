"""A child process for test_jobs.py: one run of the CSV -> CiviCRM job, SIGKILLed at an event.

Usage: ``python civicrm_child.py ROOT STATE_URL KILL_AT`` with the API key in $CIVI_API_KEY.

Events are counted in order: each page read from the source, each target write acknowledged
by CiviCRM but not yet recorded, and each state transaction (``record_batch``,
``set_job_state``). At event number KILL_AT the process sends itself SIGKILL; 0 never does.
The last line printed is JSON with the number of events, the counts and why it aborted.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from connector_civicrm import CivicrmAdapter
from connector_csv import CsvAdapter

from connector_core.config import load_config
from connector_core.masks import MaskContext
from connector_core.sync.job import load_job
from connector_core.sync.runner import RunResult
from connector_core.testing.crash import KillSwitch, run_with_switch

JOB = "to_crm"
HASH_KEY = b"civicrm-job-test-key"
KEY_ENV = "CIVI_API_KEY"
BATCH = 7


def run(root: Path, state_url: str, switch: KillSwitch | None = None) -> RunResult:
    """One run of the job; with a `switch`, every event goes through it."""
    config = load_config(root / "connector.yaml", {"civicrm": CivicrmAdapter, "csv": CsvAdapter})
    job = load_job(config, JOB, context=MaskContext.with_key(HASH_KEY))
    return run_with_switch(job, state_url, switch, batch_size=BATCH)


def main(argv: list[str]) -> None:
    root, url, kill_at = Path(argv[0]), argv[1], int(argv[2])
    switch = KillSwitch(kill_at)
    result = run(root, url, switch)
    print(
        json.dumps(
            {"events": switch.events, "counts": result.counts.as_dict(), "aborted": result.aborted}
        )
    )


if __name__ == "__main__":
    main(sys.argv[1:])
