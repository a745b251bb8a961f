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
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import connector_csv.adapter
from connector_csv import CsvAdapter

from connector_core.config import load_config
from connector_core.masks import MaskContext
from connector_core.sync.job import LoadedJob, load_job
from connector_core.sync.runner import RunResult, run_job
from connector_core.sync.state import StateStore

JOB = "north"
HASH_KEY = b"crash-test-key"


class KillSwitch:
    """Counts events; kills this process at event number `at`."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.events = 0

    def tick(self) -> None:
        """One more event."""
        self.events += 1
        if self.events == self.at:
            os.kill(os.getpid(), signal.SIGKILL)

    def after(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """`func`, followed by an event."""

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            result = func(*args, **kwargs)
            self.tick()
            return result

        return wrapped

    def install(self, job: LoadedJob, store: StateStore) -> None:
        """Count (and maybe die at) every event of a run of `job`."""
        read, write = job.source.read, job.target.write
        replace = connector_csv.adapter.replace_atomically

        def pages(**kwargs: Any) -> Iterator[Any]:
            for page in read(**kwargs):
                self.tick()
                yield page

        def mid_write(path: Path, dump: Callable[[Any], None], **kwargs: Any) -> None:
            replace(path, lambda out: (dump(out), self.tick()), **kwargs)

        job.source.read = pages  # type: ignore[method-assign]
        job.target.write = lambda changes: iter(self.after(list)(write(changes)))  # type: ignore[method-assign]
        connector_csv.adapter.replace_atomically = mid_write  # type: ignore[assignment]
        store.record_batch = self.after(store.record_batch)  # type: ignore[method-assign]
        store.set_job_state = self.after(store.set_job_state)  # type: ignore[method-assign]


def load(root: Path) -> LoadedJob:
    """The crash tests' job, as the CLI would load it."""
    config = load_config(root / "connector.yaml", {"csv": CsvAdapter})
    return load_job(config, JOB, context=MaskContext.with_key(HASH_KEY))


def run(root: Path, state_url: str, batch_size: int, switch: KillSwitch | None = None) -> RunResult:
    """One run of the job; with a `switch`, every event goes through it."""
    job = load(root)
    store = StateStore.open(state_url)
    try:
        if switch is not None:
            switch.install(job, store)
        return run_job(job, store, batch_size=batch_size)
    finally:
        job.close()
        store.close()


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
