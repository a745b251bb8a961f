"""A child process for test_jobs.py: one run of the CSV -> CiviCRM job, SIGKILLed at an event.

Usage: ``python civicrm_child.py ROOT STATE_URL KILL_AT`` with the API key in $CIVI_API_KEY.

Events are counted in order: each page read from the source, each target write acknowledged
by CiviCRM but not yet recorded, and each state transaction (``record_batch``,
``set_job_state``). At event number KILL_AT the process sends itself SIGKILL; 0 never does.
The last line printed is JSON with the number of events, the counts and why it aborted.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from connector_civicrm import CivicrmAdapter
from connector_csv import CsvAdapter

from connector_core.config import load_config
from connector_core.masks import MaskContext
from connector_core.sync.job import LoadedJob, load_job
from connector_core.sync.runner import RunResult, run_job
from connector_core.sync.state import StateStore

JOB = "to_crm"
HASH_KEY = b"civicrm-job-test-key"
KEY_ENV = "CIVI_API_KEY"
BATCH = 7


class KillSwitch:
    """Counts events; kills this process at event number `at`."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.events = 0

    def tick(self) -> None:
        self.events += 1
        if self.events == self.at:
            os.kill(os.getpid(), signal.SIGKILL)

    def after(self, func: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            result = func(*args, **kwargs)
            self.tick()
            return result

        return wrapped

    def install(self, job: LoadedJob, store: StateStore) -> None:
        read, write = job.source.read, job.target.write

        def pages(**kwargs: Any) -> Iterator[Any]:
            for page in read(**kwargs):
                self.tick()
                yield page

        job.source.read = pages  # type: ignore[method-assign]
        job.target.write = lambda changes: iter(self.after(list)(write(changes)))  # type: ignore[method-assign]
        store.record_batch = self.after(store.record_batch)  # type: ignore[method-assign]
        store.set_job_state = self.after(store.set_job_state)  # type: ignore[method-assign]


def run(root: Path, state_url: str, switch: KillSwitch | None = None) -> RunResult:
    """One run of the job; with a `switch`, every event goes through it."""
    config = load_config(root / "connector.yaml", {"civicrm": CivicrmAdapter, "csv": CsvAdapter})
    job = load_job(config, JOB, context=MaskContext.with_key(HASH_KEY))
    store = StateStore.open(state_url)
    try:
        if switch is not None:
            switch.install(job, store)
        return run_job(job, store, batch_size=BATCH)
    finally:
        job.close()
        store.close()


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
