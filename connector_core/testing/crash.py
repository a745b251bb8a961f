"""Crash a sync run on purpose, at a counted event, to prove a re-run converges.

A test runs a job in a child process with a :class:`KillSwitch` installed; the switch counts
the run's events (a source page read, a target write acknowledged, a state commit) and sends
the process SIGKILL at event number ``at``. The parent then re-runs the job and compares the
target and the state with those of an uninterrupted run. Adapter authors can use it to crash
their own adapter's jobs at every point: subclass it to count their adapter's own events (a
request acknowledged by the remote tool, say), run the job with :func:`run_with_switch`, and
each doomed run with :func:`killed_in_fork`::

    def doomed() -> None:
        run_with_switch(load_my_job(), state_url, MySwitch(kill_at))

    assert killed_in_fork(doomed), "the run ended before the kill point"
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from connector_core.adapters import WriteSession
    from connector_core.sync.job import LoadedJob
    from connector_core.sync.runner import RunResult
    from connector_core.sync.state import StateStore


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
        """Count (and maybe die at) every page read, target write, target commit (a group's
        commit of many targets at once is one) and state commit (the intent log written
        ahead of a batch, the batch recorded, the job's state). A target write is a batch
        its write session answered (for a deferred session: staged, not yet committed)."""
        read, open_writes = job.source.read, job.target.open_writes

        def pages(**kwargs: Any) -> Iterator[Any]:
            for page in read(**kwargs):
                self.tick()
                yield page

        def counted_writes() -> WriteSession:
            session = open_writes()
            write = session.write
            session.write = lambda changes: iter(self.after(list)(write(changes)))  # type: ignore[method-assign]
            session.commit = self.after(session.commit)  # type: ignore[method-assign]
            # a group's sessions committed together: one event (see _Group._commit_together)
            session.commit_many = self.after(session.commit_many)  # type: ignore[method-assign]
            return session

        job.source.read = pages  # type: ignore[method-assign]
        job.target.open_writes = counted_writes  # type: ignore[method-assign]
        store.write_ahead = self.after(store.write_ahead)  # type: ignore[method-assign]
        store.durable = self.after(store.durable)  # type: ignore[method-assign]
        store.record_batch = self.after(store.record_batch)  # type: ignore[method-assign]
        store.set_job_state = self.after(store.set_job_state)  # type: ignore[method-assign]


def run_with_switch(
    job: LoadedJob, state_url: str, switch: KillSwitch | None = None, **options: Any
) -> RunResult:
    """One run of `job` on the state store at `state_url`, every event through `switch`
    (None: no switch); `options` go to :func:`~connector_core.sync.runner.run_job`.
    The job and the store are closed afterwards."""
    from connector_core.sync.runner import run_job
    from connector_core.sync.state import StateStore
    from connector_core.testing.samples import TEST_LEDGER_KEY

    store = StateStore.open(state_url, ledger_key=TEST_LEDGER_KEY)
    try:
        if switch is not None:
            switch.install(job, store)
        return run_job(job, store, **options)
    finally:
        job.close()
        store.close()


def killed_in_fork(run: Callable[[], object]) -> bool:
    """Call `run` in a forked child; True if SIGKILL ended it, False if it returned.

    Forking is fast (nothing to import again), and the child never returns into the caller
    (a test runner): it leaves with ``os._exit``. A child that raised fails the caller with
    AssertionError; run the same code in the foreground to see why."""
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            run()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        if os.WTERMSIG(status) != signal.SIGKILL:
            raise AssertionError(f"the child died of signal {os.WTERMSIG(status)}, not SIGKILL")
        return True
    if os.WEXITSTATUS(status) != 0:
        raise AssertionError("the child failed; run it in the foreground to see why")
    return False
