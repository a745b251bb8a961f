"""`connector worker`, and what `run --queue`, `schedule --queue` and `status` use of the queue.

The engine part (tasks, retries, idempotency) is :mod:`connector_core.sync.queue`; this
module gives a worker's tasks their way to run jobs (the same path as `connector run
--all`: jobs sharing a source read it once) and parses and prints.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator, Sequence

import click

from connector_core.cli.app import App
from connector_core.errors import ConnectorError
from connector_core.logs import LOGGER_NAME
from connector_core.sync import queue
from connector_core.sync.locks import JobLocked, TargetLocked
from connector_core.sync.model import RunCounts
from connector_core.sync.state import StateStore


class CliJobRunner:
    """A worker's way to run a task's jobs: connector.yaml's state store, and the jobs run
    as `connector run --all` runs them (see :func:`connector_core.cli.sync._run_many`)."""

    def __init__(self, app: App) -> None:
        self.app = app

    @contextlib.contextmanager
    def store(self) -> Iterator[StateStore]:
        """The state store, keyed for recording (one per task)."""
        from connector_core.cli.jobs import block_held_places
        from connector_core.cli.ledger import open_store
        from connector_core.cli.sync import before_jobs

        with open_store(self.app, keyed=True, create_key=True) as store:
            before_jobs(self.app, store)  # as `connector run` does: expired requests end
            block_held_places(self.app, store)  # (retirements happen where jobs are queued)
            yield store

    def run(self, store: StateStore, jobs: Sequence[str]) -> dict[str, ConnectorError | None]:
        """Run `jobs`; note a job that could not start for good in its run rows."""
        from connector_core.cli.ledger import export_anchor
        from connector_core.cli.sync import _run_many, execute, requests_after

        fan_ins = [name for name in jobs if name in self.app.config.fan_ins]
        plain = [name for name in jobs if name not in self.app.config.fan_ins]
        results, refused = _run_many(self.app, plain, store, quiet=True) if plain else ([], {})
        for name in fan_ins:  # a fan-in reads its partners' sources itself
            try:
                app = self.app
                results.append(
                    execute(app, name, dry_run=False, reconcile=None, quiet=True, store=store)
                )
            except ConnectorError as exc:
                refused[name] = exc
        outcome: dict[str, ConnectorError | None] = {r.job: r.error for r in results}
        for name, err in refused.items():
            outcome[name] = err
            known = name in self.app.config.model.jobs or name in self.app.config.fan_ins
            if not queue.is_transient(err) and known:
                note_failed(store, name, err)  # (a job no longer defined: nothing to note)
        requests_after(self.app, store, results)  # a request's job that took everything back
        export_anchor(self.app, store, quiet=True)
        return outcome


def note_failed(store: StateStore, job: str, err: ConnectorError) -> None:
    """Record that `job` could not even start (a config or policy error) as a stopped run,
    so that `connector status` and `connector runs` show it on every machine."""
    with contextlib.suppress(JobLocked, TargetLocked), store.lock(job):
        run_id = store.start_run(job)
        store.finish_run(run_id, status="aborted", counts=RunCounts(), error=str(err))


def enqueue_names(app: App, names: Sequence[str]) -> queue.Enqueued:
    """Put the jobs `names` of connector.yaml on its queue; say so on stderr."""
    settings = queue.settings_for(app.config)
    sent = queue.enqueue(settings, queue.sources(app.config, names))
    click.echo(
        f"queued {sent.jobs} job(s) in {len(sent.tasks)} task(s) on {settings.shown} "
        f"(queue {settings.queue})",
        err=True,
    )
    return sent


@click.command()
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1, max=256),
    default=1,
    show_default=True,
    help="Worker processes (each runs one task at a time).",
)
@click.option(
    "-n",
    "--hostname",
    default=None,
    help="This worker's name at the broker and in `connector status` (default: "
    "connector-PID@HOST).",
)
@click.pass_context
def worker(ctx: click.Context, concurrency: int, hostname: str | None) -> None:
    """Take jobs from the queue (`queue:` in connector.yaml) and run them, until stopped.

    Start one or more on each machine that shares the PostgreSQL state store; `connector run
    --all --queue` or `connector schedule --queue` puts jobs on the queue. SIGTERM (systemd
    stop) lets the running tasks finish; a worker killed mid-job leaves its jobs to another
    worker (Redis: after the queue's visibility_timeout).

    \b
    Example:
      connector worker -c 2

    \b
    Exit status: 0 stopped, 3 a configuration problem, 4 the broker or the
    state store cannot be reached.
    """
    app: App = ctx.obj
    verbose = int(ctx.find_root().params.get("verbose") or 0)
    settings = queue.settings_for(app.config)
    runner = CliJobRunner(app)
    with runner.store():  # a wrong state store URL or ledger key: said now, not per task
        pass
    celery = queue.celery_app(settings, runner)
    queue.check_broker(celery, settings)
    name = hostname or f"connector-{os.getpid()}@{socket.gethostname()}"
    click.echo(
        f"worker {name}: {concurrency} process(es) taking jobs from {settings.shown} "
        f"(queue {settings.queue}); Ctrl-C or SIGTERM to stop",
        err=True,
    )
    # Celery logs to the root logger: connector's lines go there once, not twice
    logging.getLogger(LOGGER_NAME).propagate = False
    started = celery.Worker(
        hostname=name,
        concurrency=concurrency,
        queues=[settings.queue],
        loglevel="DEBUG" if verbose > 1 else ("INFO" if verbose else "WARNING"),
        quiet=True,
        without_mingle=True,
        without_gossip=True,
    )
    started.start()
    ctx.exit(int(started.exitcode or 0))
