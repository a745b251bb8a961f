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
import os
import socket
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from connector_core.sync import dialect
from connector_core.sync.locks import LockLost
from connector_core.sync.tables import lock_fences

JOB = "job:"
TARGET = "target:"


def lock_names(job: str, target: str | None) -> list[str]:
    """The names of the locks a run of `job` writing `target` holds, in the order taken."""
    return [JOB + job] + ([] if target is None else [TARGET + target])


def take(conn: Connection, name: str, job: str) -> int:
    """Give lock `name` a new token for its new holder `job`; return the token."""
    holder = {
        "job": job,
        "holder": f"pid {os.getpid()} on host {socket.gethostname()}",
        "acquired_at": dt.datetime.now(dt.UTC),
    }
    stmt = dialect.insert(lock_fences, pg=conn.dialect.name == "postgresql")
    stmt = stmt.values(name=name, token=1, **holder).on_conflict_do_update(
        index_elements=["name"], set_={"token": lock_fences.c.token + 1, **holder}
    )
    conn.execute(stmt)
    return int(conn.execute(_query(name)).one().token)


def check(conn: Connection, held: Mapping[str, int], job: str, target: str) -> None:
    """Raise LockLost if a lock in `held` (name -> token) for `job` or `target` has a newer
    holder. Locks not in `held` are not checked (their caller holds them some other way)."""
    for name in lock_names(job, target):
        token = held.get(name)
        if token is None:
            continue
        query = _query(name)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        row = conn.execute(query).first()
        if row is None or row.token != token:
            what = f"job {job!r}" if name.startswith(JOB) else f"target {target!r}"
            raise LockLost(what, None if row is None else f"job {row.job!r} ({row.holder})")


def writer(conn: Connection, name: str) -> str | None:
    """The job that last took lock `name`, if any."""
    row = conn.execute(_query(name)).first()
    return None if row is None else str(row.job)


def _query(name: str) -> sa.Select[Any]:
    return sa.select(lock_fences).where(lock_fences.c.name == name)
