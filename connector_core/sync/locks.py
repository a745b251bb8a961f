"""Job and target locks, so that two runs of one job, or two jobs writing one target, never
overlap; never waiting, always recovered.

Both kinds are owned by something the operating system or the database server cleans up when
the holder dies: a SQLite store uses ``flock`` on a file beside the database (released by the
kernel with the process), a PostgreSQL store a session advisory lock on the process's lock
connection (released by the server when that connection drops; one connection holds all of a
process's locks, :class:`AdvisorySession`), so a killed run leaves no stale lock.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import socket
import threading
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine

from connector_core.errors import ConnectorError, ExitCode
from connector_core.files import open_lock
from connector_core.sync import database

_HINT = "Wait for it to finish; a killed run's lock is released automatically."
_APP_NAME = re.compile(r"^connector (?P<pid>\d+)@(?P<host>.*)$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,100}$")


class JobLocked(ConnectorError):
    """Another process is running this job right now."""

    exit_code = ExitCode.UNAVAILABLE

    def __init__(self, job: str, holder: str | None) -> None:
        held = f" ({holder})" if holder else ""
        super().__init__(f"job {job!r} is already running{held}", hint=_HINT)
        self.job = job
        self.holder = holder


class TargetLocked(ConnectorError):
    """Another job is writing this job's target connection right now."""

    exit_code = ExitCode.UNAVAILABLE

    def __init__(self, target: str, writer: str | None, holder: str | None) -> None:
        by = f"job {writer!r}" if writer else "another job"
        held = f" ({holder})" if holder else ""
        super().__init__(
            f"target {target!r} is being written by {by}{held}",
            hint="Wait for that run to finish: two jobs never write one target at once. "
            "A killed run's lock is released automatically.",
        )
        self.target = target
        self.writer = writer


class LockLost(ConnectorError):
    """This run's lock was taken by another worker after its own lock connection dropped."""

    exit_code = ExitCode.UNAVAILABLE

    def __init__(self, what: str, holder: str | None) -> None:
        by = f" by {holder}" if holder else ""
        super().__init__(
            f"{what} lost its lock: it was taken over{by} while this run was writing; "
            "this batch was not recorded and the run stops",
            hint="The other run carries on and the next run redoes this batch. Check the "
            "connection between this worker and the state database, which dropped the lock.",
        )


def describe(pid: object, host: object, since: dt.datetime | None) -> str:
    """``pid 1234 on host h since 10:02`` (the date is added when it is not today)."""
    text = f"pid {pid} on host {host}"
    if since is not None:
        local = since.astimezone()
        same_day = local.date() == dt.datetime.now().astimezone().date()
        text += f" since {local:%H:%M}" if same_day else f" since {local:%Y-%m-%d %H:%M}"
    return text


def lock_path(database: Path, job: str) -> Path:
    """The lock file of `job` beside the SQLite `database`: ``<db>.locks/<job>.lock``."""
    return _locks_dir(database) / _file_name(job)


def target_lock_path(database: Path, connection: str) -> Path:
    """The lock file of target `connection`: ``<db>.locks/targets/<connection>.lock``."""
    return _locks_dir(database) / "targets" / _file_name(connection)


def _locks_dir(database: Path) -> Path:
    return database.with_name(database.name + ".locks")


def _file_name(name: str) -> str:
    safe = name if _SAFE_NAME.match(name) else hashlib.sha256(name.encode()).hexdigest()[:32]
    return f"{safe}.lock"


@contextlib.contextmanager
def file_lock(path: Path, job: str) -> Iterator[None]:
    """Hold an exclusive, non-blocking ``flock`` on `path` for the block; else JobLocked."""
    fd = open_lock(path)  # never through a link: truncating it would empty another file
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JobLocked(job, _file_holder(fd)) from None
        _write_holder(fd)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # before unlocking, so nobody reads us as a holder later
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _write_holder(fd: int) -> None:
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": _now().isoformat()}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(holder).encode(), 0)


def _file_holder(fd: int) -> str | None:
    try:
        data: dict[str, Any] = json.loads(os.pread(fd, 4096, 0) or b"null") or {}
        started = dt.datetime.fromisoformat(data["started"]) if "started" in data else None
        return describe(data["pid"], data["host"], started)
    except (ValueError, KeyError, TypeError):
        return None  # the holder has not written its name yet: say nothing wrong


_memory_locks: set[str] = set()
_memory_guard = threading.Lock()


@contextlib.contextmanager
def memory_lock(name: str, job: str | None = None) -> Iterator[None]:
    """A lock inside this process, for an in-memory SQLite store that no other process sees."""
    with _memory_guard:
        if name in _memory_locks:
            raise JobLocked(job or name, describe(os.getpid(), socket.gethostname(), None))
        _memory_locks.add(name)
    try:
        yield
    finally:
        with _memory_guard:
            _memory_locks.discard(name)


def advisory_key(job: str) -> int:
    """The advisory lock key of `job`: stable, signed, 64 bits."""
    return database.advisory_key(f"job:{job}")


def _prepare(conn: sa.Connection) -> None:
    conn.execution_options(isolation_level="AUTOCOMMIT")
    # Our name in pg_stat_activity is how a refused worker learns who holds the lock.
    name = f"connector {os.getpid()}@{socket.gethostname()}"[:63]
    conn.execute(sa.select(sa.func.set_config("application_name", name, False)))


class AdvisorySession:
    """Many advisory locks on one PostgreSQL session: a process holding the locks of many
    jobs at once (one read for a group of partner jobs) uses one connection, not one per
    lock (the server's connection limit would cap the group).

    Advisory locks are re-entrant within a session, so the session itself refuses a key it
    already holds: two jobs of one process writing one target, or two threads running one
    job, are refused as two processes would be. The connection is opened for the first
    lock and closed when the last is released; if it drops, the server frees every lock it
    held (the fence tokens tell each run, see :mod:`connector_core.sync.fences`).

    `engine` should not pool connections: closing the connection must end the session.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._conn: sa.Connection | None = None
        self._held: dict[int, str] = {}
        self._guard = threading.Lock()

    @contextlib.contextmanager
    def hold(self, job: str, key: int) -> Iterator[None]:
        """Hold advisory lock `key` for `job` for the block; else JobLocked, at once."""
        with self._guard:
            if key in self._held:
                raise JobLocked(job, describe(os.getpid(), socket.gethostname(), None))
            with database.failures(self._engine.url):
                conn, acquired = self._try(key)
            if not acquired:
                holder = _pg_holder(conn, key)
                self._close_if_idle()
                raise JobLocked(job, holder)
            self._held[key] = job
        try:
            yield
        finally:
            with self._guard:
                del self._held[key]
                if self._conn is conn:  # else the session dropped, freeing every lock it held
                    try:
                        conn.execute(sa.select(sa.func.pg_advisory_unlock(key)))
                    except sa.exc.DBAPIError:
                        self._drop()
                self._close_if_idle()

    def try_many(self, wanted: Sequence[tuple[str, int]]) -> dict[int, str | None]:
        """Try to take advisory lock `key` for `job`, for each ``(job, key)`` of `wanted`,
        in one statement (a group of jobs starting); return the positions in `wanted` of
        those refused, with the holder (None if not visible). A key this session holds
        already, or one that comes twice, is refused as :meth:`hold` refuses it. Each key
        taken is held until :meth:`release`."""
        refused: dict[int, str | None] = {}
        with self._guard:
            fresh: dict[int, int] = {}  # key -> its position in `wanted`
            for n, (_, key) in enumerate(wanted):
                if key in self._held or key in fresh:
                    refused[n] = describe(os.getpid(), socket.gethostname(), None)
                else:
                    fresh[key] = n
            if not fresh:
                return refused
            keys = list(fresh)
            with database.failures(self._engine.url):
                conn, taken = self._try_keys(keys)
                for key, ok in zip(keys, taken, strict=True):
                    if ok:
                        self._held[key] = wanted[fresh[key]][0]
                    else:
                        refused[fresh[key]] = _pg_holder(conn, key)
                self._close_if_idle()
        return refused

    def release(self, keys: Collection[int]) -> None:
        """Release the advisory locks `keys` that :meth:`try_many` took, in one statement."""
        with self._guard:
            mine = [key for key in keys if self._held.pop(key, None) is not None]
            conn = self._conn
            if mine and conn is not None:  # else the session dropped, freeing them all
                try:
                    conn.execute(_UNLOCK_MANY, {"keys": mine})
                except sa.exc.DBAPIError:
                    self._drop()
            self._close_if_idle()

    def _try_keys(self, keys: list[int]) -> tuple[sa.Connection, list[bool]]:
        """``pg_try_advisory_lock`` of each of `keys`, in order, in one statement; a session
        that dropped meanwhile (its locks are free) is replaced once, a new one that fails is
        the server away."""
        reused = self._conn is not None
        while True:
            conn = self._connection()
            try:
                rows = conn.execute(_TRY_MANY, {"keys": keys}).all()
                return conn, [bool(row.taken) for row in sorted(rows, key=lambda r: r.n)]
            except sa.exc.DBAPIError:
                self._drop()
                if not reused:
                    raise
                reused = False

    def _try(self, key: int) -> tuple[sa.Connection, bool]:
        """``pg_try_advisory_lock(key)`` on the session (see :meth:`_try_keys`)."""
        conn, (taken,) = self._try_keys([key])
        return conn, taken

    def _connection(self) -> sa.Connection:
        if self._conn is None:
            conn = self._engine.connect()
            try:
                _prepare(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def close(self) -> None:
        """Close the session if no lock is held (a held one lasts until its block ends, as
        before), and the engine's pool."""
        with self._guard:
            self._close_if_idle()
        self._engine.dispose()

    def _close_if_idle(self) -> None:
        if not self._held:
            self._drop()

    def _drop(self) -> None:
        """Close the session (a new lock opens another)."""
        if self._conn is not None:
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                self._conn.close()
            self._conn = None


# One statement for the locks of a group of jobs: tried in the order given (WITH ORDINALITY).
_TRY_MANY = sa.text(
    "SELECT k.n, pg_try_advisory_lock(k.key) AS taken "
    "FROM unnest(CAST(:keys AS bigint[])) WITH ORDINALITY AS k(key, n) ORDER BY k.n"
)
_UNLOCK_MANY = sa.text("SELECT pg_advisory_unlock(k) FROM unnest(CAST(:keys AS bigint[])) AS k")

_HOLDER_SQL = sa.text("""
    SELECT a.pid, a.application_name, a.backend_start
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND CAST(l.classid AS bigint) = :hi AND CAST(l.objid AS bigint) = :lo
""")


def _pg_holder(conn: sa.Connection, key: int) -> str | None:
    unsigned = key & 0xFFFF_FFFF_FFFF_FFFF
    row = conn.execute(_HOLDER_SQL, {"hi": unsigned >> 32, "lo": unsigned & 0xFFFF_FFFF}).first()
    if row is None:
        return None  # released meanwhile, or the holder is not visible to our database user
    named = _APP_NAME.match(row.application_name or "")
    if named is None:
        return describe(f"{row.pid} (server)", "the database server", row.backend_start)
    return describe(named["pid"], named["host"], row.backend_start)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
