"""Batches recorded in a joined block (a group's jobs) end exactly as recorded one by one.

In a :meth:`StateStore.joined` block, :meth:`StateStore.record_batch` holds back its id map
rows, outstanding rows and intent deletes, and the block writes each kind for every job at
once (``_Behind.record``). Whatever the batches, the id map, the outstanding changes, the
intents left and the ledger must be those of the same batches recorded outside a block.
"""

from __future__ import annotations

import datetime as dt
import itertools
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector_core.sync.model import Outstanding
from connector_core.sync.state import StateStore
from connector_core.sync.tables import intents
from connector_core.testing import TEST_LEDGER_KEY
from tests.postgres import new_schema
from tests.unit.sync.conftest import change

IDS = ("p1", "p2", "p3", "p4")
JOBS = ("north", "south")
ACTIONS = ("create", "update", "delete")
T0 = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC)

#: one batch: job, applied changes (source id, action, digest), failed ids, resolved ids,
#: whether an intent was written ahead of it
batches = st.tuples(
    st.sampled_from(JOBS),
    st.lists(
        st.tuples(
            st.sampled_from(IDS),
            st.sampled_from(["create", "update", "delete"]),
            st.sampled_from("abc"),
        ),
        max_size=4,
    ),
    st.lists(st.sampled_from(IDS), max_size=2, unique=True),
    st.lists(st.sampled_from(IDS), max_size=2, unique=True),
    st.booleans(),
)


class Stores:
    """Two state stores of one backend, kept for every example of a test (a store's
    migrations take a while); each example's jobs have names of their own."""

    def __init__(self, backend: str, request: pytest.FixtureRequest, tmp: Path) -> None:
        self.alone, self.joined = (self._new(backend, request, tmp) for _ in range(2))
        self.examples = itertools.count()

    @staticmethod
    def _new(backend: str, request: pytest.FixtureRequest, tmp: Path) -> StateStore:
        if backend == "sqlite":
            url = f"sqlite:///{tmp / f'{secrets.token_hex(4)}.db'}"
        else:
            url = new_schema(request.getfixturevalue("pg_database"), "joined")[1]
        return StateStore.open(url, ledger_key=TEST_LEDGER_KEY)

    def close(self) -> None:
        self.alone.close()
        self.joined.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    both = Stores(str(request.param), request, tmp_path)
    yield both
    both.close()


def record(store: StateStore, n: int, batch: Any, jobs: dict[str, str], *, joined: bool) -> None:
    """Record `batch` as the runner would, at time T0 + `n` seconds (`jobs`: the example's
    name of each job)."""
    name, applied, failed_ids, resolved, with_intent = batch
    job = jobs[name]
    now = T0 + dt.timedelta(seconds=n)
    changes = [change(sid, action, digest=digest) for sid, action, digest in applied]
    failed = [
        Outstanding(job, sid, f"key-{sid}", "create", "failed", "shared:members", error="no")
        for sid in failed_ids
    ]
    intent = None
    if with_intent:
        ahead = [(c.source_id, c.target_key, c.action, c.reason) for c in changes]
        intent = store.write_ahead(job, ahead, now, durable=not joined)
    store.record_batch(
        job, f"out-{job}", "members.yaml", "p" * 64, changes,
        now=now, resolved=resolved, failed=failed, intent=intent,
    )  # fmt: skip


def contents(store: StateStore, jobs: Iterable[str]) -> Any:
    """Everything the batches decide for `jobs`: id map, outstanding changes, intents,
    ledger rows."""
    engine = sa.create_engine(store.url, poolclass=sa.NullPool)
    with engine.connect() as conn:  # the intents left
        query = sa.select(intents).where(intents.c.job.in_(list(jobs)))
        left = sorted((r.job, r.at, str(r.changes)) for r in conn.execute(query))
    engine.dispose()
    return [
        (
            store.mapped(job, IDS),
            store.outstanding(job),
            [(e.action, e.source_id, e.record_key, e.at) for e in store.ledger_entries(job=job)],
        )
        for job in jobs
    ] + [left, store.verify_ledger().ok]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(before=st.lists(batches, max_size=3), block=st.lists(batches, min_size=1, max_size=8))
def test_batches_recorded_in_a_joined_block_end_as_recorded_one_by_one(
    stores: Stores, before: list[Any], block: list[Any]
) -> None:
    """`before` recorded alike on both stores (rows the block's batches then update, delete
    or settle), then `block` one by one on one store and in one joined block on the other."""
    example = next(stores.examples)
    jobs = {name: f"{name}-{example}" for name in JOBS}
    alone, joined = stores.alone, stores.joined
    for n, batch in enumerate(before):
        record(alone, n, batch, jobs, joined=False)
        record(joined, n, batch, jobs, joined=False)
    for n, batch in enumerate(block, start=len(before)):
        record(alone, n, batch, jobs, joined=False)
    with joined.joined():
        for n, batch in enumerate(block, start=len(before)):
            record(joined, n, batch, jobs, joined=True)
    assert contents(joined, jobs.values()) == contents(alone, jobs.values())
