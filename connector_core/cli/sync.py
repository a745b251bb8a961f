"""`connector run`, `plan`, `schedule`, `runs`, `ledger` and `who-has`: thin shells over sync."""

from __future__ import annotations

import collections
import datetime as dt
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any

import click

from connector_core.cli.app import App, emit_json
from connector_core.cli.jobs import move_partners, sync_partners
from connector_core.cli.ledger import check_recording, export_anchor, ledger, open_store
from connector_core.cli.policy import PolicyEnv
from connector_core.errors import ConfigError, ConnectorError, ExitCode
from connector_core.sync.fanout import run_jobs
from connector_core.sync.job import LoadedJob, PolicyCache, load_job
from connector_core.sync.locks import JobLocked
from connector_core.sync.model import RunCounts
from connector_core.sync.runner import RunResult, fewer_collections, run_job
from connector_core.sync.schema_check import SourceChecks
from connector_core.sync.state import StateStore
from connector_core.yaml_errors import did_you_mean


class Progress:
    """A one-line counter on a terminal's stderr; silent in cron, pipes and --quiet."""

    def __init__(self, job: str, enabled: bool) -> None:
        self.job = job
        self.enabled = enabled and sys.stderr.isatty()
        self.seen = 0

    def __call__(self, records: int) -> None:
        """Advance by `records` read."""
        self.seen += records
        if self.enabled:
            click.echo(f"\r{self.job}: {self.seen} records read", nl=False, err=True)

    def done(self) -> None:
        """End the progress line."""
        if self.enabled and self.seen:
            click.echo(err=True)


def summary_line(result: RunResult) -> str:
    """``job: read 40, shared 7, withheld 33 (...), created 7, ...``."""
    c: RunCounts = result.counts
    withheld = sum(c.withheld.values())
    reasons = ", ".join(f"{r} {n}" for r, n in sorted(c.withheld.items(), key=lambda i: -i[1]))
    parts = [
        f"read {c.read}",
        f"shared {c.shared}",
        f"withheld {withheld}" + (f" ({reasons})" if reasons else ""),
        f"created {c.created}",
        f"updated {c.updated}",
        f"deleted {c.deleted}",
        f"unchanged {c.unchanged}",
        f"failed {c.failed}",
    ]
    if c.problems:
        parts.append(f"unreadable {c.problems}")
    if c.held:
        parts.append(f"held back {c.held}")
    if c.outstanding:
        parts.append(f"outstanding {c.outstanding}")
    if c.awaiting:
        parts.append(f"awaiting approval {c.awaiting}")
    return f"{result.job}: " + ", ".join(parts)


def result_json(result: RunResult) -> dict[str, Any]:
    """A JSON-ready summary of one run."""
    return {
        "job": result.job,
        "counts": result.counts.as_dict(),
        "failures": result.failures,
        "problems": result.problems,
        "aborted": result.aborted,
        "held": result.held,
        "approvals": result.approvals,
        "full": result.full,
        "exit_code": int(result.exit_code),
    }


def execute(
    app: App,
    job: str,
    *,
    dry_run: bool,
    reconcile: bool | None,
    quiet: bool,
    store: StateStore,
    accept_deletes: int = 0,
) -> RunResult:
    """Load, lock and run one job (or fan-in)."""
    env = PolicyEnv.from_app(app)
    if job in app.config.fan_ins:
        return execute_fan_in(app, job, env, dry_run=dry_run, store=store, accept=accept_deletes)
    loaded = load_job(app.config, job, masks=env.masks, context=env.context())
    progress = Progress(job, not quiet)
    try:
        return run_job(
            loaded,
            store,
            dry_run=dry_run,
            reconcile=reconcile,
            progress=progress,
            accept_deletes=accept_deletes,
        )
    finally:
        progress.done()
        loaded.close()


def execute_fan_in(
    app: App, name: str, env: PolicyEnv, *, dry_run: bool, store: StateStore, accept: int
) -> RunResult:
    """Load, lock and run one fan-in (many partners' sources into one target)."""
    from connector_core.sync.fanin import load_fan_in, run_fan_in

    loaded = load_fan_in(app.config, name, masks=env.masks, context=env.context())
    try:
        return run_fan_in(loaded, store, dry_run=dry_run, accept_deletes=accept)
    finally:
        loaded.close()


def exit_code(results: list[RunResult], refused: list[int] | None = None) -> int:
    """The most urgent exit status of the runs and of the jobs `refused` before they
    started: 3, 4 or 5 when one stopped, 1 when records failed, else 0."""
    codes = [r.exit_code for r in results] + (refused or [])
    stopped = [c for c in codes if c > ExitCode.RECORDS_FAILED]
    return min(stopped) if stopped else max(codes, default=ExitCode.OK)


def _select(app: App, job: str | None, run_all: bool, due: bool, store: StateStore) -> list[str]:
    if sum((job is not None, run_all, due)) != 1:
        raise click.UsageError("give one of JOB, --all or --due")
    if job is not None:
        if job not in app.config.fan_ins:
            _job_or_fan_in(app, job)  # a clear error, with a suggestion, for a misspelled name
        return [job]
    enabled = scheduled(app)
    if run_all:
        return list(enabled)
    last = {name: store.job_state(name).last_run_at for name in enabled}
    from connector_core.sync.schedule import due_jobs, local_now  # croniter: for --due only

    return due_jobs(enabled, last, local_now())


def _job_or_fan_in(app: App, name: str) -> None:
    """Raise ConfigError, with a suggestion among jobs and fan-ins, unless `name` is a job."""
    fan_ins = app.config.fan_ins
    if not fan_ins or name in app.config.model.jobs:
        app.config.job(name)
        return
    names = [*app.config.model.jobs, *fan_ins]
    raise ConfigError(
        f"no job or fan-in named {name!r} in {app.config.path}{did_you_mean(name, names)}",
        hint=f"Defined jobs and fan-ins: {', '.join(names)}.",
    )


@click.command()
@click.argument("job", required=False)
@click.option("--all", "run_all", is_flag=True, help="Run every enabled job.")
@click.option(
    "--due",
    is_flag=True,
    help="Run the jobs whose schedule says they are due (for a cron line or a systemd timer).",
)
@click.option("--dry-run", is_flag=True, help="Show what would change; write nothing.")
@click.option(
    "--reconcile",
    is_flag=True,
    default=None,
    help="Read the whole source now to catch deletions it cannot report.",
)
@click.option(
    "--accept-deletes",
    type=click.IntRange(min=0),
    default=0,
    metavar="N",
    help="Take back up to N records that the mass-delete guard held back (check them first "
    "with `connector plan JOB`).",
)
@click.option(
    "--accept-retire",
    type=click.IntRange(min=0),
    default=0,
    metavar="N",
    help="Retire up to N partners that left their registry at once (more than the "
    "template's max_retire), taking their data back.",
)
@click.option(
    "--queue",
    "use_queue",
    is_flag=True,
    help="Put the jobs on the queue for `connector worker` processes instead of running "
    "them here (`queue:` in connector.yaml).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the run summaries as JSON.")
@click.pass_context
def run(
    ctx: click.Context,
    job: str | None,
    run_all: bool,
    due: bool,
    dry_run: bool,
    reconcile: bool | None,
    accept_deletes: int,
    accept_retire: int,
    use_queue: bool,
    as_json: bool,
) -> None:
    """Run the sync job JOB (or --all, or --due) defined in connector.yaml.

    \b
    Exit status: 0 all shared as planned, 1 some records failed or changes
    are still outstanding (listed; the next run retries them), 3 a
    configuration or policy problem, 4 a remote tool was unavailable (what
    was done is kept; the next run resumes), 5 deletes held back by the
    mass-delete guard (accept them with --accept-deletes N).

    With --queue the jobs are put on the queue (one task per group of jobs sharing a
    source) and `connector worker` processes run them; `connector status` shows them.
    """
    app: App = ctx.obj
    quiet = bool(ctx.find_root().params.get("quiet"))
    if use_queue:
        if dry_run or reconcile or accept_deletes or as_json:
            raise click.UsageError(
                "--queue puts jobs on the queue: it cannot be combined with --dry-run, "
                "--reconcile, --accept-deletes or --json (run those here, without --queue)"
            )
        ctx.exit(_enqueue(app, job, run_all, due, accept_retire, quiet))
    results: list[RunResult] = []
    refused: list[int] = []  # exit codes of jobs that could not even start
    with open_store(app, keyed=not dry_run, create_key=True, read_only=dry_run) as store:
        if not dry_run:
            before_jobs(app, store)  # before any target is written
        try:
            names = _select(app, job, run_all, due, store)
            if not dry_run:  # partners that left their registry: taken back (--all, --due)
                retired, codes = sync_partners(
                    app, store, retire=job is None, accept=accept_retire, quiet=quiet or as_json
                )
                results.extend(retired)
                refused.extend(codes)
            if job is not None:  # the CLI group reports its error, with its exit code
                results.append(
                    _run_one(app, job, dry_run, reconcile, quiet, store, as_json, accept_deletes)
                )
            else:  # jobs sharing a source read it once; one broken job never stops the others
                ran, codes = _run_names(
                    app,
                    names,
                    store,
                    dry_run=dry_run,
                    reconcile=reconcile,
                    quiet=quiet,
                    as_json=as_json,
                    accept_deletes=accept_deletes,
                )
                results.extend(ran)
                refused.extend(codes)
            if not dry_run:
                requests_after(app, store, results)
        finally:
            if not dry_run:
                export_anchor(app, store, quiet=quiet or as_json)
    if as_json:
        emit_json([result_json(r) for r in results])
    ctx.exit(exit_code(results, refused))


def _enqueue(
    app: App, job: str | None, run_all: bool, due: bool, accept_retire: int, quiet: bool
) -> int:
    """`run --queue`: what a run does first here (expired share requests, retired
    partners), then the jobs go on the queue; the exit status of what was done here."""
    from connector_core.cli.workers import enqueue_names  # celery: with --queue only

    with open_store(app, keyed=True, create_key=True) as store:
        before_jobs(app, store)
        names = _select(app, job, run_all, due, store)
        retired, codes = sync_partners(app, store, retire=job is None, accept=accept_retire)
        for result in retired:
            _report(result, False, quiet)
        if retired:
            export_anchor(app, store, quiet=quiet)
    if names:
        enqueue_names(app, names)
    elif not quiet:
        click.echo("no job to queue", err=True)
    return exit_code(retired, codes)


def before_jobs(app: App, store: StateStore) -> None:
    """What every command that runs jobs does first (`run`, `run --queue`, `schedule`, a
    worker's task): the store can record (:func:`check_recording`), the share requests
    whose time is over end, so that their jobs take back instead of sharing, and partners
    whose target moved are taken back from the old one (:func:`move_partners`)."""
    check_recording(app, store)
    _requests_before(app, store)
    move_partners(app, store)


def _requests_before(app: App, store: StateStore) -> None:
    """End the share requests whose time is over before their jobs run (they take back)."""
    if app.config.model.requests is None:
        return
    from connector_core.sync import share_requests

    now = share_requests_now()
    notes = share_requests.expire_due(store, app.config, now)
    if store.share_requests().all(("approved",)):  # the floor as they were approved under
        from connector_core.cli.requests import floor_policy

        notes += share_requests.end_widened(store, app.config, floor_policy(app), now)
    for note in notes:
        click.echo(note, err=True)
    if notes:  # an ended request rewrote its policy and job files: read them again
        app.__dict__.pop("config", None)


def requests_after(app: App, store: StateStore, results: Sequence[RunResult]) -> None:
    """A request's job that took back everything: the request ends, the requester is told."""
    if app.config.model.requests is None:
        return
    from connector_core.sync import share_requests

    for result in results:
        if result.job.startswith("request-") and result.error is None:
            for note in share_requests.after_run(
                store, app.config, result.job, share_requests_now()
            ):
                click.echo(note, err=True)


def share_requests_now() -> dt.datetime:
    """The time share requests expire by: now, or CONNECTOR_NOW (an ISO time, for tests and
    examples) when that is later. The override only moves the clock forward, so one left set
    on a real install can bring an expiry sooner but never keep a request alive past it."""
    real = dt.datetime.now(dt.UTC)
    fixed = os.environ.get("CONNECTOR_NOW")
    if not fixed:
        return real
    moved = dt.datetime.fromisoformat(fixed)
    if moved.tzinfo is None:
        moved = moved.replace(tzinfo=dt.UTC)
    return max(real, moved)


def _run_names(
    app: App,
    names: list[str],
    store: StateStore,
    *,
    dry_run: bool = False,
    reconcile: bool | None = None,
    quiet: bool = False,
    as_json: bool = False,
    accept_deletes: int = 0,
) -> tuple[list[RunResult], list[int]]:
    """Run `names` (jobs and fan-ins): the jobs through :func:`_run_many` (one read per
    source), then each fan-in on its own; a refused one is reported and never stops the
    rest. Returns the results and the exit codes of what could not start."""
    fan_ins = [n for n in names if n in app.config.fan_ins]
    with fewer_collections():  # loading 15,000 partners' jobs makes as many objects as a run
        results, not_run = _run_many(
            app,
            [n for n in names if n not in app.config.fan_ins],
            store,
            dry_run=dry_run,
            reconcile=reconcile,
            quiet=quiet,
            as_json=as_json,
            accept_deletes=accept_deletes,
        )
    refused: list[int] = [err.exit_code for err in not_run.values()]
    for name in fan_ins:
        try:
            results.append(
                _run_one(app, name, dry_run, reconcile, quiet, store, as_json, accept_deletes)
            )
        except ConnectorError as err:
            _report_refused(name, err)
            refused.append(err.exit_code)
    return results, refused


def _run_many(
    app: App,
    names: list[str],
    store: StateStore,
    *,
    dry_run: bool = False,
    reconcile: bool | None = None,
    quiet: bool = False,
    as_json: bool = False,
    accept_deletes: int = 0,
) -> tuple[list[RunResult], dict[str, ConnectorError]]:
    """Load and run `names`, those sharing a source from one read (run_jobs); report each
    job as _run_one does, in order. Returns the results and why each job that did not run
    did not."""
    env = PolicyEnv.from_app(app)
    loaded: list[LoadedJob] = []
    failed: dict[str, ConnectorError] = {}
    progress = Progress(f"{len(names)} jobs", not quiet)
    checks = SourceChecks(app.config)  # a source shared by many jobs is listed once
    policies = PolicyCache(app.config, env.masks, env.context())  # a template's, once
    try:
        for name in names:
            try:
                job = load_job(app.config, name, check_schema=False, policies=policies)
            except ConnectorError as err:
                failed[name] = err
                continue
            try:
                checks.check(job.config.source, job.source, job.policy).raise_for_errors()
            except ConnectorError as err:
                job.close()
                failed[name] = err
                continue
            loaded.append(job)
        group = run_jobs(
            loaded,
            store,
            dry_run=dry_run,
            reconcile=reconcile,
            progress=progress,
            accept_deletes=accept_deletes,
        )
    finally:
        progress.done()
        for job in loaded:
            job.close()
    failed.update(group.refused)
    results = {r.job: r for r in group.results}
    for name in names:
        if name in failed:
            _report_refused(name, failed[name])
        elif not as_json:
            _report(results[name], dry_run, quiet)
    return list(results.values()), failed


def _report_refused(name: str, err: ConnectorError) -> None:
    click.secho(f"{name}: not run: {err}", fg="red", err=True)
    if err.hint:
        click.echo(f"  hint: {err.hint}", err=True)


def _run_one(
    app: App,
    name: str,
    dry_run: bool,
    reconcile: bool | None,
    quiet: bool,
    store: StateStore,
    as_json: bool,
    accept_deletes: int = 0,
) -> RunResult:
    result = execute(
        app,
        name,
        dry_run=dry_run,
        reconcile=reconcile,
        quiet=quiet,
        store=store,
        accept_deletes=accept_deletes,
    )
    if not as_json:
        _report(result, dry_run, quiet)
    return result


def _report(result: RunResult, dry_run: bool, quiet: bool) -> None:
    """Print one run's summary line (unless `quiet`), its problems, failures and stops."""
    name = result.job
    if not quiet:
        click.echo(("(dry run) " if dry_run else "") + summary_line(result))
    for problem in result.problems:
        click.secho(f"  skipped: {problem}", fg="yellow", err=True)
    for failure in result.failures:
        click.secho(f"  failed: {failure}", fg="yellow", err=True)
    for line in result.approvals:
        click.echo(f"  approvals: {line}", err=True)
    if result.held:
        click.secho(f"  held back: {result.held}", fg="red", err=True)
        click.echo(
            f"  hint: check them with `connector plan {name}`, then accept them with "
            f"`connector run {name} --accept-deletes {result.counts.held}`",
            err=True,
        )
    if result.aborted:
        click.secho(f"  stopped: {result.aborted}", fg="red", err=True)
        if result.error is not None and result.error.hint:
            click.echo(f"  hint: {result.error.hint}", err=True)


@click.command()
@click.argument("job")
@click.option("--json", "as_json", is_flag=True, help="Print the planned changes as JSON.")
@click.pass_context
def plan(ctx: click.Context, job: str, as_json: bool) -> None:
    """Show the changes a run of JOB would make, as the recipient would see them.

    Nothing is written: not to the target, not to the state store.
    """
    app: App = ctx.obj
    with open_store(app, read_only=True) as store:
        result = execute(app, job, dry_run=True, reconcile=None, quiet=True, store=store)
    if as_json:
        emit_json({**result_json(result), "changes": [_change_json(c) for c in result.planned]})
        return
    for change in result.planned:
        click.echo(_change_line(change))
    for change in result.awaiting:
        click.echo(_change_line(change).replace(" ", " (awaits approval) ", 1))
    for line in result.approvals:
        click.echo(f"approvals: {line}", err=True)
    click.echo(summary_line(result), err=True)


def _change_json(change: Any) -> dict[str, Any]:
    return {
        "action": change.action,
        "target_key": change.target_key,
        "source_id": change.source_id,
        "projection": change.projection,
        "changed_fields": sorted(change.diff),
    }


def _change_line(change: Any) -> str:
    sign = {"create": "+", "update": "~", "delete": "-"}[change.action]
    fields = ""
    if change.projection:
        shown = change.diff or change.projection
        fields = "  " + " ".join(f"{k}={change.projection.get(k)!r}" for k in shown)
    return f"{sign} {change.action} {change.source_id} -> {change.target_key}{fields}"


@click.command()
@click.option(
    "--queue",
    "use_queue",
    is_flag=True,
    help="Put due jobs on the queue for `connector worker` processes instead of running them here.",
)
@click.pass_context
def schedule(ctx: click.Context, use_queue: bool) -> None:
    """Stay running and run each job when its cron schedule says it is due.

    A failing job is reported and never stops the scheduler. Stop it with Ctrl-C or
    SIGTERM: the job running then finishes first. With --queue, due jobs go on the queue
    and workers run them (a job queued and not yet run is not queued again).
    """
    app: App = ctx.obj
    jobs = scheduled(app)
    wake = threading.Event()  # a signal ends the wait at once (time.sleep would resume)
    from connector_core.sync.schedule import Scheduler  # croniter: when scheduling only

    if use_queue:
        from connector_core.sync import queue

        queue.settings_for(app.config)  # no queue block: said now, not at the first tick
        asked: dict[str, dt.datetime] = {}
        scheduler = Scheduler(jobs, lambda now: _enqueue_due(app, asked, now), sleep=wake.wait)
    else:
        scheduler = Scheduler(jobs, lambda _now: _run_due(app), sleep=wake.wait)

    def stop(_sig: int, _frame: FrameType | None) -> None:
        scheduler.stop_requested = True
        wake.set()

    signal.signal(signal.SIGTERM, stop)
    click.echo(f"scheduling {len(jobs)} job(s); Ctrl-C to stop", err=True)
    try:
        scheduler.serve()
    except KeyboardInterrupt:
        click.echo("stopped", err=True)


def scheduled(app: App) -> dict[str, str | None]:
    """The cron schedule (None: none) of every enabled job and fan-in, by name: what `run
    --all` runs, what `--due` and `schedule` check."""
    model = app.config.model
    entries: dict[str, str | None] = {n: j.schedule for n, j in model.jobs.items() if j.enabled}
    entries.update((n, f.schedule) for n, f in model.fan_in.items() if f.enabled)
    return entries


def _run_due(app: App) -> list[str]:
    with open_store(app, keyed=True, create_key=True) as store:
        before_jobs(app, store)
        ran = _select(app, None, False, True, store)
        sync_partners(app, store, retire=True)
        if ran:
            results, _ = _run_names(app, ran, store)  # a failing one never stops the rest
            requests_after(app, store, results)
            export_anchor(app, store, quiet=False)
    return ran


def _enqueue_due(app: App, asked: dict[str, dt.datetime], now: dt.datetime) -> list[str]:
    """Queue the jobs that are due, counting a job queued earlier (in `asked`) as run then."""
    from connector_core.cli.workers import enqueue_names
    from connector_core.sync.schedule import due_jobs

    enabled = scheduled(app)
    with open_store(app, keyed=True, create_key=True) as store:
        before_jobs(app, store)  # retiring partners writes to their targets
        last = {}
        for name in enabled:
            times = [store.job_state(name).last_run_at, asked.get(name)]
            last[name] = max((t for t in times if t is not None), default=None)
        due = due_jobs(enabled, last, now)
        sync_partners(app, store, retire=True)
    if due:
        enqueue_names(app, due)
        asked.update(dict.fromkeys(due, now))
    return due


@click.command()
@click.argument("job", required=False)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="How many recent runs to show.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def runs(app: App, job: str | None, limit: int, as_json: bool) -> None:
    """List recent runs (of JOB, or of every job) with their outcome and counts."""
    with open_store(app) as store:
        rows = store.runs(job, limit=limit)
        for row in rows:
            _show_killed(store, row)
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        counts = row.get("counts") or {}
        click.echo(
            f"{row['started_at']}  {row['job']}  {row['status']}"
            f"{'  (dry run)' if row.get('dry_run') else ''}  "
            + " ".join(
                f"{k}={counts[k]}"
                for k in ("read", "created", "updated", "deleted", "failed")
                if k in counts
            )
        )


def _show_killed(store: StateStore, row: dict[str, Any]) -> None:
    """Show a run still "running" whose job's lock nobody holds as "killed"."""
    if row["status"] != "running":
        return
    try:
        with store.lock(row["job"]):
            row["status"] = "killed"
    except JobLocked:
        pass  # it is running now


@click.command()
@click.argument("job", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def status(app: App, job: str | None, as_json: bool) -> None:
    """Show each job's last run and the changes it still owes its target, and why.

    With a `queue:` in connector.yaml it also shows, across workers, the jobs queued at
    the broker or taken by a worker, and a totals line: queued, running, failed, with
    changes outstanding. With --json each job has a "state".

    \b
    Exit status: 0 nothing outstanding, 1 some changes are outstanding.
    """
    names = [job] if job is not None else list(app.config.model.jobs)
    if job is not None:
        app.config.job(job)
    report = []
    queued = _queue_report(app)
    with open_store(app) as store:
        for name in names:
            last = store.runs(name, limit=1)
            for row in last:
                _show_killed(store, row)
            owed = sorted(store.outstanding(name).values(), key=lambda o: o.source_id)
            report.append(
                {
                    "job": name,
                    "last_run": last[0] if last else None,
                    "outstanding": [
                        {
                            "source_id": o.source_id,
                            "action": o.action,
                            "status": o.status,
                            "reason": o.reason,
                            "error": o.error,
                            "since": o.since,
                            "attempts": o.attempts,
                        }
                        for o in owed
                    ],
                    "approval_sets": [
                        {"id": a.id, "status": a.status, "changes": a.summary.get("changes", 0)}
                        for a in store.approvals().sets(name, ("waiting", "approved"))
                    ],
                }
            )
            report[-1]["state"] = _job_state(report[-1], queued)
            if queued is not None and name in queued.active:
                report[-1]["worker"] = queued.active[name]
    if as_json:
        emit_json(report)
    else:
        for entry in report:
            _status_lines(entry)
        if queued is not None:
            click.echo(_totals_line(report, queued))
    if any(entry["outstanding"] for entry in report):
        raise SystemExit(ExitCode.RECORDS_FAILED)


def _queue_report(app: App) -> Any:
    """What the broker and the workers say, when connector.yaml has a queue (else None);
    a broker that cannot be reached is said on stderr, and the rest is shown."""
    if app.config.model.queue is None:
        return None
    from connector_core.sync import queue  # celery: with a queue only

    try:
        return queue.queue_report(queue.settings_for(app.config))
    except queue.BrokerUnavailable as err:
        click.secho(f"warning: {err}; queued jobs are not shown", fg="yellow", err=True)
        return queue.QueueReport()


def _job_state(entry: dict[str, Any], queued: Any) -> str:
    """One word for a job: running, queued, failed, outstanding, ok or never-run."""
    last = entry["last_run"]
    if last is not None and last["status"] == "running":
        return "running"
    in_queue = None if queued is None else queued.state(entry["job"])
    if in_queue is not None:
        return str(in_queue)
    if last is not None and last["status"] in ("aborted", "killed"):
        return "failed"
    if entry["outstanding"]:
        return "outstanding"
    return "never-run" if last is None else "ok"


def _totals_line(report: list[dict[str, Any]], queued: Any) -> str:
    counts = collections.Counter(entry["state"] for entry in report)
    waiting = f"{queued.messages} task(s) waiting at the broker"
    if queued.queued is None and queued.messages:
        waiting += ", for jobs it does not name (RabbitMQ)"
    if queued.unacked:
        waiting += f", {queued.unacked} taken by a worker"
    workers = f", {len(queued.workers)} worker(s) answering" if queued.workers else ""
    return (
        f"{len(report)} job(s): {counts['queued']} queued, {counts['running']} running, "
        f"{counts['failed']} failed, {counts['outstanding']} with changes outstanding "
        f"({waiting}{workers})"
    )


_STATUS_WORDS = {
    "sent": "sent, not yet acknowledged (an interrupted run)",
    "failed": "rejected by the target",
    "held": "held back by the mass-delete guard",
}


def _status_lines(entry: dict[str, Any]) -> None:
    last = entry["last_run"]
    when = f"last run {last['started_at']:%Y-%m-%d %H:%M} {last['status']}" if last else "never run"
    owed = entry["outstanding"]
    queued = ", queued" if entry.get("state") == "queued" else ""
    if "worker" in entry:
        queued = f", running on {entry['worker']}"
    click.echo(f"{entry['job']}: {when}{queued}, {len(owed)} change(s) outstanding")
    for o in owed:
        why = _STATUS_WORDS[o["status"]] + (f": {o['error']}" if o["error"] else "")
        click.echo(f"  {o['action']} {o['source_id']} ({o['reason']}): {why}")
    for a in entry["approval_sets"]:
        click.echo(
            f"  approval set #{a['id']}: {a['changes']} change(s) {a['status']} "
            f"(connector approvals show {a['id']})"
        )


@click.command("who-has")
@click.argument("record")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def who_has(app: App, record: str, as_json: bool) -> None:
    """List every target that currently holds the person with source id RECORD, and why."""
    from connector_core.sync.approvals import request_approvals

    with open_store(app) as store:
        holders = store.who_has(record)
        if app.config.fan_ins:  # what went up from a partner's record, merged into a person
            from connector_core.sync.fanin import people_of

            holders += [h for p in people_of(store, record) for h in store.who_has(p)]
        approvals = {  # a share request's job shares under the request's approvals
            m.job: request_approvals(store.approvals(), store.share_requests(), m.job)
            for m in holders
            if _request_of(app, m.job)
        }
    targets = {n: j.target for n, j in app.config.model.jobs.items()}
    targets.update((n, f.body.target) for n, f in app.config.fan_ins.items())
    rows = [
        {
            "job": m.job,
            "target": targets.get(m.job),
            "target_key": m.target_key,
            "fields": m.fields,
            "consent": sorted(m.consent_basis),
            "since": m.updated_at,
            "request": _request_of(app, m.job),
            "approvals": list(approvals.get(m.job, ())),
        }
        for m in holders
    ]
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo(f"no target holds {record}")
    for m in holders:
        fields = ", ".join(f if o == "show" else f"{f} ({o})" for f, o in m.fields.items())
        target = targets.get(m.job, "?")
        request = _request_of(app, m.job)
        under = f", under share request {request}" if request else ""
        names = sorted({str(a["by"]) for a in approvals.get(m.job, ())})
        if names:
            under += f" approved by {', '.join(names)}"
        click.echo(
            f"{target} (job {m.job}{under}, consent: {', '.join(sorted(m.consent_basis))}, "
            f"since {m.updated_at:%Y-%m-%d %H:%M}): {fields}"
        )


def _request_of(app: App, job: str) -> str | None:
    """The share request job `job` shares under (an approved request's job), if any."""
    if app.config.model.requests is None or not job.startswith("request-"):
        return None
    return job.removeprefix("request-")


SYNC_COMMANDS: tuple[click.Command, ...] = (run, plan, schedule, runs, status, ledger, who_has)
