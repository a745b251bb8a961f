"""Opening a state store's database: URL checks, engine settings, migrations, safe errors.

Every message shows the URL with its password hidden, and a driver's error text is scrubbed
of the password too, should a driver ever echo it.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection, Engine
from sqlalchemy.engine import URL

from connector_core import scrub
from connector_core.errors import ConfigError, ConnectorError, ExitCode
from connector_core.records import storable_text
from connector_core.sync import migrations
from connector_core.sync.ledger import canonical_json

_BUSY_TIMEOUT_MS = 30_000  # how long SQLite waits for another writer before giving up


class StateStoreError(ConnectorError):
    """The state store failed during a run; what was committed before is kept."""

    exit_code = ExitCode.UNAVAILABLE


@contextlib.contextmanager
def failures(url: URL) -> Iterator[None]:
    """Turn database errors raised in the block into a StateStoreError naming the store."""
    try:
        yield
    except sa.exc.DBAPIError as exc:
        raise StateStoreError(
            f"the state store at {display_url(url)} failed: {driver_reason(exc, url)}",
            hint="What was recorded before is kept; the next run resumes from there.",
        ) from exc


def advisory_key(name: str) -> int:
    """A stable signed 64-bit PostgreSQL advisory lock key for `name`, in our own namespace."""
    digest = hashlib.sha256(f"commons-connector:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


_MIGRATION_LOCK = advisory_key("schema migration")


def display_url(url: str | URL) -> str:
    """`url` as it may be shown: the password replaced by ``***``; a database path with
    undecodable bytes (lone surrogates, which a URL cannot quote) shown with their escapes."""
    parsed = sa.make_url(url)
    if parsed.database and not parsed.database.isascii():
        parsed = parsed.set(database=storable_text(parsed.database))
    return parsed.render_as_string(hide_password=True)


def connect_engine(url: str | URL, *, for_locks: bool = False) -> Engine:
    """An engine for a state store at `url`, migrated to the newest schema.

    With `for_locks`, an unpooled PostgreSQL engine (closing a connection ends its session and
    so frees its advisory locks), with TCP keepalives so a dead machine's locks are freed too.
    """
    parsed = _parse(url)
    try:
        engine = _create_engine(parsed, for_locks=for_locks)
        if not for_locks:
            try:
                _migrate(engine)
            except BaseException:
                engine.dispose()  # a refused store leaves no pooled connection behind
                raise
    except (sa.exc.DBAPIError, migrations.MigrationError) as exc:
        raise ConfigError(
            f"cannot open the state store at {display_url(parsed)}: {_open_reason(exc, parsed)}",
            hint=_open_hint(parsed),
        ) from exc
    return engine


def _parse(url: str | URL) -> URL:
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigError(
            "state.url is not a database URL", hint="Use sqlite:///state.db or postgresql://…"
        ) from exc
    if parsed.password:
        scrub.remember(str(parsed.password))  # a driver's message may quote it
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")  # the driver we depend on
    if parsed.drivername not in ("sqlite", "sqlite+pysqlite", "postgresql+psycopg"):
        raise ConfigError(
            f"the state store cannot use {parsed.drivername!r} ({display_url(parsed)})",
            hint="Use a SQLite file (sqlite:///state.db) or PostgreSQL (postgresql://…).",
        )
    return parsed


def _create_engine(url: URL, *, for_locks: bool) -> Engine:
    if url.get_backend_name() == "sqlite":
        engine = sa.create_engine(url, json_serializer=canonical_json)
        sa.event.listen(engine, "connect", _sqlite_connect)
        sa.event.listen(engine, "begin", _sqlite_begin)
        return engine
    args: dict[str, Any] = {} if "connect_timeout" in url.query else {"connect_timeout": 10}
    if for_locks:
        args.update(keepalives=1, keepalives_idle=30, keepalives_interval=10, keepalives_count=3)
        engine = sa.create_engine(url, poolclass=sa.NullPool, connect_args=args)
    else:
        engine = sa.create_engine(
            url, connect_args=args, pool_pre_ping=True, json_serializer=canonical_json
        )
    sa.event.listen(engine, "connect", _pg_connect)
    return engine


def _pg_connect(dbapi_conn: Any, _record: Any) -> None:
    """Send lists (the arrays of ``column = ANY(...)`` look-ups: a group's job names, id
    map ids, lock keys) in binary: psycopg writes a text array element by element in
    Python, quoting each (15,000 job names: 82 ms as text, 6 ms in binary)."""
    from psycopg.types.array import ListBinaryDumper  # the PostgreSQL driver: only here

    dbapi_conn.adapters.register_dumper(list, ListBinaryDumper)


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    # pysqlite's own transaction handling cannot BEGIN IMMEDIATE: we send BEGIN ourselves.
    dbapi_conn.isolation_level = None
    for pragma in (f"busy_timeout={_BUSY_TIMEOUT_MS}", "foreign_keys=ON"):
        dbapi_conn.execute(f"PRAGMA {pragma}")
    _wal(dbapi_conn)


def _wal(dbapi_conn: Any) -> None:
    """Switch to WAL. Switching needs the file to itself, and SQLite answers "locked" at
    once, without its busy handler, while another opener of a fresh store holds it: so wait
    here, as long as the busy timeout."""
    deadline = time.monotonic() + _BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _sqlite_begin(conn: Connection) -> None:
    options = conn.get_execution_options()
    # FULL syncs the WAL at each commit (a commit survives a power loss); a transaction that
    # a durable earlier one covers (a batch after its write-ahead intent) may ask for NORMAL,
    # which survives a crash of the process, and is synced by the next FULL commit.
    conn.exec_driver_sql(f"PRAGMA synchronous={options.get('sqlite_sync', 'FULL')}")
    # IMMEDIATE takes the write lock up front, so two writers queue instead of deadlocking.
    conn.exec_driver_sql(f"BEGIN {options.get('sqlite_begin', 'DEFERRED')}")


def _migrate(engine: Engine) -> None:
    with engine.connect() as conn:
        if not migrations.needs_upgrade(conn):
            return
    with engine.connect() as conn:
        conn.execution_options(sqlite_begin="IMMEDIATE")
        with conn.begin():
            if engine.dialect.name == "postgresql":  # two workers opening a fresh store
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
            migrations.upgrade(conn)


def _open_reason(exc: Exception, url: URL) -> str:
    if isinstance(exc, sa.exc.DBAPIError):
        return driver_reason(exc, url)
    return f"its schema is unknown to this version of the connector ({exc})"


def _open_hint(url: URL) -> str:
    if url.get_backend_name() == "sqlite":
        return "Check state.url in connector.yaml: the folder must exist and be writable."
    return (
        "Check state.url in connector.yaml, and that the PostgreSQL server is running and "
        "accepts this user and database."
    )


def driver_reason(exc: sa.exc.DBAPIError, url: URL) -> str:
    """The driver's first line, without the password should a driver ever echo it."""
    text = (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]
    if url.password:
        text = text.replace(str(url.password), "***")
    return text
