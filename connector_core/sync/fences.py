"""Fence tokens: a lock's holder proves, in the transaction that records its work, that it
still holds the lock.

An operating-system or server lock can be lost without its holder noticing: a PostgreSQL
advisory lock goes with its connection, and another worker may then take it. So each time a
lock is taken, its row in ``lock_fences`` gets a new token, and :func:`check` (run inside
the transaction that records a batch) refuses a holder whose token is no longer current.
On PostgreSQL the row is read ``FOR UPDATE``, so a new holder's bump waits for a batch being
recorded, and every batch recorded after it is the new holder's.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import socket
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from connector_core.sync import dialect
from connector_core.sync.dialect import chunks
from connector_core.sync.locks import LockLost
from connector_core.sync.tables import lock_fences

JOB = "job:"
TARGET = "target:"


def lock_names(job: str, target: str | None) -> list[str]:
    """The names of the locks a run of `job` writing `target` holds, in the order taken."""
    return [JOB + job] + ([] if target is None else [TARGET + target])


def take(conn: Connection, name: str, job: str) -> int:
    """Give lock `name` a new token for its new holder `job`; return the token."""
    return take_many(conn, [(name, job)])[name]


def take_many(conn: Connection, locks: Sequence[tuple[str, str]]) -> dict[str, int]:
    """Give each lock (name, its new holder job) a new token, in one statement per 500
    locks (a group of jobs starting); return the tokens by lock name."""
    holder = f"pid {os.getpid()} on host {socket.gethostname()}"
    now = dt.datetime.now(dt.UTC)
    tokens: dict[str, int] = {}
    locks = list(dict(locks).items())  # a lock once (a multi-row upsert takes a row once)
    pg = dialect.is_pg(conn)
    for chunk in chunks(locks):
        if pg:  # two arrays: one statement text, four parameters, whatever the count
            names, jobs = [name for name, _ in chunk], [job for _, job in chunk]
            params = {"names": names, "jobs": jobs, "holder": holder, "at": now}
            found = conn.execute(_bump_arrays(), params)
        else:
            # executemany of one statement (its compiled form cached; SQLAlchemy sends the
            # rows in multi-row INSERTs), each row's new token coming back with it
            # (RETURNING), where the driver can
            rows = [
                {"name": name, "token": 1, "job": job, "holder": holder, "acquired_at": now}
                for name, job in chunk
            ]
            returning = conn.dialect.insert_executemany_returning
            found = conn.execute(_bump(returning), rows)
            if not returning:
                names = [name for name, _ in chunk]
                query = sa.select(lock_fences.c.name, lock_fences.c.token)
                found = conn.execute(query.where(lock_fences.c.name.in_(names)))
        tokens.update((str(name), int(token)) for name, token in found)
    return tokens


@functools.cache
def _bump(returning: bool) -> Any:
    """SQLite's upsert that gives a lock a new token (built once), returning the lock's name
    and new token if `returning`."""
    stmt = dialect.insert(lock_fences, pg=False)
    new = {c: stmt.excluded[c] for c in ("job", "holder", "acquired_at")}
    bump = stmt.on_conflict_do_update(
        index_elements=["name"], set_={"token": lock_fences.c.token + 1, **new}
    )
    return bump.returning(lock_fences.c.name, lock_fences.c.token) if returning else bump


@functools.cache
def _bump_arrays() -> Any:
    """PostgreSQL's upsert of many locks' new tokens from the arrays ``:names`` and
    ``:jobs`` (their holder and time the same for all), returning each lock's name and new
    token. Not an executemany: SQLAlchemy sends that as an INSERT of a VALUES list of five
    parameters a row, rendered and converted by the driver on every call (about 40 ms for a
    group of 256 jobs' 512 locks, profiled; every group's start waited on it)."""
    return sa.text(
        "INSERT INTO lock_fences (name, token, job, holder, acquired_at) "
        "SELECT u.name, 1, u.job, :holder, :at "
        "FROM unnest(CAST(:names AS VARCHAR[]), CAST(:jobs AS VARCHAR[])) AS u(name, job) "
        "ON CONFLICT (name) DO UPDATE SET token = lock_fences.token + 1, job = excluded.job, "
        "holder = excluded.holder, acquired_at = excluded.acquired_at "
        "RETURNING lock_fences.name, lock_fences.token"
    ).bindparams(sa.bindparam("at", type_=lock_fences.c.acquired_at.type))


def check(conn: Connection, held: Mapping[str, int], job: str, target: str) -> None:
    """Raise LockLost if a lock in `held` (name -> token) for `job` or `target` has a newer
    holder. Locks not in `held` are not checked (their caller holds them some other way).
    One statement for both, built once (it runs for every batch recorded)."""
    names = [name for name in lock_names(job, target) if name in held]
    if names:
        verify(read(conn, names), held, job, target)


def read(conn: Connection, names: Sequence[str]) -> dict[str, Any]:
    """The rows of locks `names` (None for a lock never taken), read ``FOR UPDATE`` on
    PostgreSQL: the transaction that read them keeps them until it ends (a new holder's
    bump waits for it), so that a check of them in that transaction holds until then."""
    query = _checks(dialect.is_pg(conn))
    rows: dict[str, Any] = dict.fromkeys(names)
    for chunk in chunks(list(names)):
        rows.update((row.name, row) for row in conn.execute(query, {"names": chunk}))
    return rows


def verify(rows: Mapping[str, Any], held: Mapping[str, int], job: str, target: str) -> None:
    """Raise LockLost if `rows` (see :func:`read`) show a newer holder of a lock of `job`
    or `target` that `held` holds."""
    for name in lock_names(job, target):
        if name not in held:
            continue
        row = rows.get(name)
        if row is None or row.token != held[name]:
            what = f"job {job!r}" if name.startswith(JOB) else f"target {target!r}"
            raise LockLost(what, None if row is None else f"job {row.job!r} ({row.holder})")


def writer(conn: Connection, name: str) -> str | None:
    """The job that last took lock `name`, if any."""
    row = conn.execute(_query(name)).first()
    return None if row is None else str(row.job)


def _query(name: str) -> sa.Select[Any]:
    return sa.select(lock_fences).where(lock_fences.c.name == name)


@functools.cache
def _checks(pg: bool) -> Any:
    """The read of the rows of the locks ``:names`` (built once per backend). PostgreSQL:
    ``= ANY`` of one array (see :func:`~connector_core.sync.dialect.among`), the rows read
    FOR UPDATE (a new holder's bump waits for the batch being recorded)."""
    if pg:
        names = sa.bindparam("names", type_=dialect.pg_array(lock_fences.c.name.type))
        return (
            sa.select(lock_fences).where(lock_fences.c.name == sa.func.any(names)).with_for_update()
        )
    return sa.select(lock_fences).where(
        lock_fences.c.name.in_(sa.bindparam("names", expanding=True))
    )
