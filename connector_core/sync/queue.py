"""Worker mode: jobs as Celery tasks, taken by workers that share a PostgreSQL state store.

`connector run --queue` (and `schedule --queue`) puts jobs on a Redis or RabbitMQ broker
instead of running them; `connector worker` processes take them and run them. Celery does
the distribution (delivery, late acknowledgement, redelivery of a dead worker's task,
retries with a countdown); this module decides what a task is and what it does:

- **One task per source group.** Jobs sharing a source connection go into one task, up to
  ``group_limit`` jobs, so fan-out (:mod:`connector_core.sync.fanout`) still reads the source
  once for them (in groups of up to 256 jobs holding their locks, every group fed from the
  task's one read), and a large network spreads over many tasks and workers. A fan-in
  (which reads its partners' sources itself) is a task of its own.
- **Late acknowledgement.** A task is acknowledged when it ends; a worker killed mid-task
  leaves it unacknowledged, and the broker hands it to another worker (Redis: after
  ``visibility_timeout``). The job's lock died with the killed worker's database connection;
  the fenced locks (:mod:`connector_core.sync.fences`) make a double run impossible.
- **Idempotent.** Each job in a task carries the time it was asked for; a job that finished
  a run that started after that time is done, and the task skips it.
- **Retries only for passing failures.** A job stopped by a remote that is down, a lock held
  by another run or a state store that failed (exit code 4) is retried alone, with a backoff
  doubling from ``retry_backoff`` up to ``backoff_max``, at most ``max_retries`` times; a
  config or policy error fails at once (its run row says why, for `connector status`). The
  other jobs of the task are never held up.

The API for scripts and benchmarks (no CLI needed)::

    from connector_core.sync import queue
    sent = queue.enqueue_jobs(Path("connector.yaml"))           # every enabled job, or names=
    queue.wait_drained(Path("connector.yaml"), timeout=600)     # True once nothing is left
    queue.purge(Path("connector.yaml"))                         # drop what waits (benchmarks)

Celery is imported here only, and only when a broker is used.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, urlsplit, urlunsplit

from connector_core.credentials import NETWORK, KeyringSecrets, SecretRef
from connector_core.errors import (
    AdapterUnavailable,
    AuthenticationFailed,
    ConfigError,
    ConnectorError,
    ExitCode,
)
from connector_core.sync.locks import JobLocked, TargetLocked
from connector_core.sync.state import StateStore

if TYPE_CHECKING:
    from celery import Celery

    from connector_core.config import Config, QueueConfig

__all__ = [
    "TASK_NAME",
    "BrokerUnavailable",
    "Enqueued",
    "JobRunner",
    "QueueReport",
    "QueueSettings",
    "TaskOutcome",
    "backoff",
    "celery_app",
    "check_broker",
    "enqueue",
    "enqueue_jobs",
    "is_transient",
    "purge",
    "queue_report",
    "ran_since",
    "run_task",
    "settings_for",
    "sources",
    "task_groups",
    "transport_options",
    "wait_drained",
]

log = logging.getLogger("connector.queue")

#: The Celery task every worker runs: ``run_jobs([[job, since], ...])``.
TASK_NAME = "connector.run_jobs"
#: A message header naming the task's jobs, so `connector status` can say which are queued.
JOBS_HEADER = "connector_jobs"


class BrokerUnavailable(AdapterUnavailable):
    """The queue's broker could not be reached (or refused us)."""


@dataclasses.dataclass(frozen=True)
class QueueSettings:
    """The ``queue:`` block, its credentials resolved: what the Celery app is made from."""

    url: str = dataclasses.field(repr=False)  # may hold the password: never shown
    shown: str  # the broker URL without user or password
    queue: str = "connector"
    retry_backoff: float = 30
    backoff_max: float = 900
    max_retries: int = 5
    visibility_timeout: float = 3600
    group_limit: int = 32

    @property
    def is_redis(self) -> bool:
        """True for a Redis broker (whose queue `connector status` can look into)."""
        return self.shown.startswith(("redis://", "rediss://"))


def settings_for(config: Config) -> QueueSettings:
    """The queue settings of `config`; a ConfigError when it has no ``queue:`` block."""
    block = config.model.queue
    if block is None:
        raise ConfigError(
            f"{config.path}: there is no `queue:` block, so there is no broker to use",
            hint="Add `queue: {broker: redis://127.0.0.1:6379/0}` to connector.yaml "
            "(docs/operations.md, Workers), or run without --queue.",
        )
    secrets = config.secrets(NETWORK)
    return QueueSettings(
        url=broker_url(block, secrets),
        shown=block.broker,
        queue=block.queue,
        retry_backoff=block.retry_backoff,
        backoff_max=block.backoff_max,
        max_retries=block.max_retries,
        visibility_timeout=block.visibility_timeout,
        group_limit=block.group_limit,
    )


def broker_url(block: QueueConfig, secrets: KeyringSecrets) -> str:
    """The broker URL with the user and password from the keyring or the environment."""
    user = block.username
    if isinstance(user, SecretRef):
        user = secrets.resolve(user).get_secret_value()
    password = None if block.password is None else secrets.resolve(block.password)
    if user is None and password is None:
        return block.broker
    auth = quote(user or "", safe="")
    if password is not None:
        auth += ":" + quote(password.get_secret_value(), safe="")
    parts = urlsplit(block.broker)
    return urlunsplit(parts._replace(netloc=f"{auth}@{parts.netloc}"))


def task_groups(jobs: Mapping[str, str], limit: int) -> list[list[str]]:
    """The tasks for `jobs` (name -> source connection), in order: the jobs of one source
    together, at most `limit` per task, in tasks as even as can be (see
    :func:`~connector_core.sync.fanout.even_sizes`)."""
    from connector_core.sync.fanout import even_sizes  # as run --all's groups are made

    sources = collections.Counter(jobs.values())
    sizes = {source: even_sizes(n, limit) for source, n in sources.items()}
    by_source: dict[str, list[list[str]]] = {}
    tasks: list[list[str]] = []
    for name, source in jobs.items():
        open_tasks = by_source.setdefault(source, [])
        if not open_tasks or len(open_tasks[-1]) >= sizes[source][len(open_tasks) - 1]:
            open_tasks.append([])
            tasks.append(open_tasks[-1])
        open_tasks[-1].append(name)
    return tasks


def backoff(retries: int, settings: QueueSettings) -> float:
    """Seconds before retry number `retries` + 1: doubling from retry_backoff, capped."""
    return float(min(settings.backoff_max, settings.retry_backoff * 2 ** min(retries, 30)))


def is_transient(err: ConnectorError) -> bool:
    """Whether a job stopped by `err` may succeed if tried again soon: a remote or the state
    store unavailable, a lock held elsewhere. Refused credentials and config, policy and
    plugin errors are not: they wait for a person."""
    if isinstance(err, AuthenticationFailed):
        return False
    return isinstance(err, JobLocked | TargetLocked) or err.exit_code == ExitCode.UNAVAILABLE


def ran_since(store: StateStore, job: str, since: dt.datetime) -> bool:
    """True when a run of `job` that started at or after `since` finished (not stopped):
    a task asked for at `since` has nothing left to do for it."""
    last = store.job_state(job).last_success_at
    return last is not None and last >= since


class JobRunner(Protocol):
    """What a worker gives its tasks: the state store, and a way to run jobs with it."""

    def store(self) -> contextlib.AbstractContextManager[StateStore]:
        """Open the state store for one task."""
        ...

    def run(self, store: StateStore, jobs: Sequence[str]) -> dict[str, ConnectorError | None]:
        """Run `jobs` (sharing reads where they share a source); each job's error or None."""
        ...


@dataclasses.dataclass
class TaskOutcome:
    """What one task did: jobs run, skipped (already run), failed for good, to retry
    (with the time a run must start after to count)."""

    ran: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)
    failed: dict[str, str] = dataclasses.field(default_factory=dict)
    retry: list[tuple[str, dt.datetime]] = dataclasses.field(default_factory=list)


def run_task(runner: JobRunner, jobs: Sequence[tuple[str, dt.datetime]]) -> TaskOutcome:
    """Run the jobs of one task that have not run since they were asked for. A job to
    retry keeps the time it was asked for: a stopped run never counts as done (its job's
    ``last_success_at`` stays), a run finished since by anyone does."""
    out = TaskOutcome()
    asked = dict(jobs)
    todo: list[str] = []
    try:
        with runner.store() as store:
            for name, since in jobs:
                (out.skipped if ran_since(store, name, since) else todo).append(name)
            errors = runner.run(store, todo) if todo else {}
    except ConnectorError as exc:  # the state store itself: every job not yet decided
        todo = [name for name, _ in jobs if name not in out.skipped]
        errors = dict.fromkeys(todo, exc)
    for name in todo:
        err = errors.get(name)
        if err is None:
            out.ran.append(name)
        elif is_transient(err):
            out.retry.append((name, asked[name]))
        else:
            out.failed[name] = str(err)
    return out


def celery_app(settings: QueueSettings, runner: JobRunner | None = None) -> Celery:
    """The Celery app for `settings`; with `runner`, its task runs jobs (a worker's)."""
    from celery import Celery

    app = Celery("connector", set_as_current=False)
    app.conf.update(
        broker_url=settings.url,
        task_default_queue=settings.queue,
        task_acks_late=True,  # acknowledged when done: a dead worker's task is redelivered
        task_reject_on_worker_lost=True,  # a pool process killed mid-task: requeued
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,  # long tasks: a worker takes one at a time
        task_ignore_result=True,  # outcomes live in the state store (runs, job state)
        task_serializer="json",
        accept_content=["json"],
        broker_transport_options=transport_options(settings),
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=5,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    if runner is not None:
        _register(app, settings, runner)
    return app


def transport_options(settings: QueueSettings) -> dict[str, float]:
    """Redis: a task a worker took and never acknowledged (the worker died) returns to the
    queue `visibility_timeout` seconds after it was taken, looked for every quarter of that
    (at least every second, at most every minute; kombu's default is every 100 s)."""
    sweep = min(60.0, max(1.0, settings.visibility_timeout / 4))
    return {
        "visibility_timeout": settings.visibility_timeout,
        "unacked_restore_interval": sweep,
        "unacked_restore_throttle": 1,
    }


def _register(app: Celery, settings: QueueSettings, runner: JobRunner) -> None:
    @app.task(bind=True, name=TASK_NAME)  # type: ignore[untyped-decorator]
    def run_jobs(task: Any, jobs: list[list[str]]) -> dict[str, Any]:
        asked = [(name, dt.datetime.fromisoformat(since)) for name, since in jobs]
        out = run_task(runner, asked)
        for name, why in out.failed.items():
            log.error("job %s failed and is not retried: %s", name, why, extra={"job": name})
        if out.retry:
            retries = int(task.request.retries or 0)
            names = ", ".join(name for name, _ in out.retry)
            if retries >= settings.max_retries:
                log.error("gave up on %s after %d retries; the next run retries", names, retries)
            else:
                delay = backoff(retries, settings)
                log.warning("retrying %s in %.0f s", names, delay)
                again = [[name, since.isoformat()] for name, since in out.retry]
                raise task.retry(
                    args=[again],
                    countdown=delay,
                    max_retries=settings.max_retries,
                    headers={JOBS_HEADER: [name for name, _ in out.retry]},
                )
        return {"ran": out.ran, "skipped": out.skipped, "failed": sorted(out.failed)}


@contextlib.contextmanager
def broker_errors(settings: QueueSettings) -> Iterator[None]:
    """Turn a broker that cannot be reached (or refuses us) into BrokerUnavailable."""
    from kombu.exceptions import OperationalError

    try:
        yield
    except (OperationalError, OSError) as exc:
        raise BrokerUnavailable(
            f"the queue broker at {settings.shown} cannot be reached: {_reason(exc)}",
            hint="Start the broker (e.g. `systemctl start redis-server`), or fix `queue: "
            "broker:` and its credentials in connector.yaml (docs/operations.md, Workers).",
        ) from None
    except Exception as exc:  # amqp's AccessRefused and the like: no traceback for an admin
        if type(exc).__module__.split(".")[0] not in ("amqp", "kombu", "redis"):
            raise
        raise BrokerUnavailable(
            f"the queue broker at {settings.shown} refused us: {_reason(exc)}",
            hint="Check the broker's user and password (`queue:` in connector.yaml).",
        ) from None


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


def check_broker(app: Celery, settings: QueueSettings) -> None:
    """Connect once to the broker, quickly; BrokerUnavailable when that fails."""
    with broker_errors(settings), app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0.2, timeout=3)


@contextlib.contextmanager
def _app(settings: QueueSettings, app: Celery | None) -> Iterator[Celery]:
    """`app`, or a Celery app of our own, closed (its broker connections) afterwards."""
    if app is not None:
        yield app
        return
    own = celery_app(settings)
    try:
        yield own
    finally:
        close_app(own)


def close_app(app: Celery) -> None:
    """Close `app` and the broker connections it opened. Celery's ``close()`` only drops
    its connection pool, open; that pool and the producer pool a broadcast takes
    (``status`` asking the workers) live in kombu's process-wide registry, so their
    sockets stayed open until the process ended. They are closed and taken out of the
    registry (left in, a closed pool would refuse the next app for the same broker)."""
    from kombu import pools

    amqp = app.__dict__.get("amqp")
    producers = None if amqp is None else amqp._producer_pool
    held = [(pools.producers, producers), (pools.connections, app._pool)]
    if producers is not None:
        held.append((pools.connections, producers.connections))
    for registry, pool in held:
        if pool is None:
            continue
        pool.force_close_all()
        for key, value in list(dict.items(registry)):  # keyed by a hash of the connection
            if value is pool:
                dict.__delitem__(registry, key)
    app.close()


@dataclasses.dataclass
class Enqueued:
    """The tasks sent: each task's jobs, and when they were asked for."""

    tasks: list[list[str]]
    at: dt.datetime

    @property
    def jobs(self) -> int:
        """How many jobs were put on the queue."""
        return sum(len(t) for t in self.tasks)


def enqueue(
    settings: QueueSettings,
    jobs: Mapping[str, str],
    *,
    app: Celery | None = None,
    now: dt.datetime | None = None,
) -> Enqueued:
    """Put `jobs` (name -> source connection) on the queue, one task per source group."""
    at = now or _utc_now()
    tasks = task_groups(jobs, settings.group_limit)
    with _app(settings, app) as app, broker_errors(settings), app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0.2, timeout=3)
        for names in tasks:
            app.send_task(
                TASK_NAME,
                args=[[[name, at.isoformat()] for name in names]],
                queue=settings.queue,
                headers={JOBS_HEADER: names},
                connection=conn,
                retry=True,
                retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.5},
            )
    return Enqueued(tasks, at)


def enqueue_jobs(config_path: Path, names: Iterable[str] | None = None) -> Enqueued:
    """Load `config_path` and put its jobs `names` (default: every enabled job and fan-in)
    on its queue; for scripts and benchmarks (the CLI's `run --queue` also takes back
    retired partners and ends expired share requests first)."""
    config = _load(config_path)
    if names is None:
        chosen = [n for n, j in config.model.jobs.items() if j.enabled]
        chosen += [n for n, f in config.model.fan_in.items() if f.enabled]
    else:
        chosen = list(names)
    for name in chosen:
        if name not in config.fan_ins:
            config.job(name)  # a clear error for a misspelled name
    return enqueue(settings_for(config), sources(config, chosen))


def sources(config: Config, names: Iterable[str]) -> dict[str, str]:
    """What each job of `names` reads, for :func:`task_groups`: a job's source connection;
    a fan-in (which reads many sources itself) a group of its own."""
    jobs = config.model.jobs
    return {n: f"fan-in:{n}" if n in config.fan_ins else jobs[n].source for n in names}


def _load(config_path: Path) -> Config:
    from connector_core.config import load_config
    from connector_core.plugins import Adapters, make_plugin_manager

    return load_config(config_path, Adapters(make_plugin_manager()))


@dataclasses.dataclass
class QueueReport:
    """What the broker and the workers say: messages waiting, and per job how many tasks
    name it (``queued``: None when the broker cannot be looked into, as RabbitMQ's),
    which are taken by a worker and not started (``reserved``), and which run (``active``,
    job -> worker)."""

    messages: int = 0
    unacked: int = 0
    queued: dict[str, int] | None = None
    reserved: dict[str, int] = dataclasses.field(default_factory=dict)
    active: dict[str, str] = dataclasses.field(default_factory=dict)
    workers: list[str] = dataclasses.field(default_factory=list)

    @property
    def drained(self) -> bool:
        """Nothing waits at the broker, nothing is taken by a worker or running."""
        return not (self.messages or self.unacked or self.reserved or self.active)

    def state(self, job: str) -> str | None:
        """``running``, ``queued`` or None for `job`, as far as the queue knows."""
        if job in self.active:
            return "running"
        if job in self.reserved or (self.queued or {}).get(job):
            return "queued"
        return None


def queue_report(
    settings: QueueSettings, *, app: Celery | None = None, inspect_timeout: float = 1.0
) -> QueueReport:
    """Ask the broker and the workers what is queued and running (BrokerUnavailable when
    the broker cannot be reached)."""
    report = QueueReport()
    with _app(settings, app) as app, broker_errors(settings), app.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0.2, timeout=3)
        channel = conn.default_channel
        report.messages = _message_count(channel, settings.queue)
        if settings.is_redis:
            report.queued, report.unacked = _redis_jobs(channel.client, settings.queue)
        # who answers, in one wait; then each question returns once they all have
        found = app.control.inspect(timeout=inspect_timeout, connection=conn).ping() or {}
        report.workers = sorted(found)
        active: dict[str, list[dict[str, Any]]] = {}
        waiting: list[dict[str, list[dict[str, Any]]]] = []
        if found:
            inspect = app.control.inspect(
                destination=report.workers,
                limit=len(found),
                timeout=inspect_timeout,
                connection=conn,
            )
            active = inspect.active() or {}
            waiting = [inspect.reserved() or {}, inspect.scheduled() or {}]
    for worker, tasks in active.items():
        for task in tasks:
            for job in _task_jobs(task):
                report.active[job] = worker
    for found in waiting:
        for tasks in found.values():
            for task in tasks:
                for job in _task_jobs(task.get("request", task)):
                    report.reserved[job] = report.reserved.get(job, 0) + 1
    return report


def _message_count(channel: Any, queue: str) -> int:
    try:
        return int(channel.queue_declare(queue=queue, passive=True).message_count)
    except Exception as exc:  # a queue never declared (RabbitMQ: NOT_FOUND) holds nothing
        if "NOT_FOUND" in str(exc) or "404" in str(exc):
            return 0
        raise


def _redis_jobs(client: Any, queue: str) -> tuple[dict[str, int], int]:
    """Per job, the waiting messages naming it; and the messages of `queue` taken by a
    worker and not acknowledged (a dead worker's come back after the visibility timeout)."""
    counts: dict[str, int] = {}
    for raw in client.lrange(queue, 0, -1):
        for job in json.loads(raw).get("headers", {}).get(JOBS_HEADER, []):
            counts[job] = counts.get(job, 0) + 1
    unacked = 0
    for raw in client.hvals("unacked"):
        message = json.loads(raw)
        if len(message) == 3 and message[2] == queue:
            unacked += 1
            for job in message[0].get("headers", {}).get(JOBS_HEADER, []):
                counts[job] = counts.get(job, 0) + 1
    return counts, unacked


def _task_jobs(task: Mapping[str, Any]) -> list[str]:
    args = task.get("args") or []
    if not args or not isinstance(args[0], list):
        return []
    return [str(pair[0]) for pair in args[0] if isinstance(pair, list | tuple) and pair]


def purge(config_path: Path | QueueSettings) -> int:
    """Drop every task waiting on the queue of `config_path` (or of these settings), e.g.
    before a benchmark; return how many. Tasks a worker has taken are not touched."""
    settings = _settings(config_path)
    with _app(settings, None) as app, broker_errors(settings), app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0.2, timeout=3)
        return int(conn.default_channel.queue_purge(settings.queue) or 0)


def _settings(config_path: Path | QueueSettings) -> QueueSettings:
    if isinstance(config_path, QueueSettings):
        return config_path
    return settings_for(_load(config_path))


def wait_drained(
    config_path: Path | QueueSettings,
    timeout: float = 600,
    *,
    poll: float = 0.5,
    sleep: Callable[[float], object] = time.sleep,
) -> bool:
    """Wait until the queue of `config_path` (or of these settings) is drained: nothing
    waiting, taken or running, seen twice in a row `poll` seconds apart. False on timeout."""
    settings = _settings(config_path)
    deadline = time.monotonic() + timeout
    calm = 0
    with _app(settings, None) as app:
        while time.monotonic() < deadline:
            report = queue_report(settings, app=app, inspect_timeout=poll)
            calm = calm + 1 if report.drained else 0
            if calm >= 2:
                return True
            sleep(poll)
    return False


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
