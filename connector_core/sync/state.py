"""The state store: id map, cursors, runs, the ledger and locks, on SQLite or PostgreSQL.

A SQLite file is the zero-setup default; PostgreSQL lets several workers share one store. The
schema is migrated on open. :meth:`StateStore.record_batch` is the crash-safety primitive: the
id map, the ledger and the cursor move together, in one transaction, after the target has
acknowledged the batch, so a killed run resumes exactly where its records end.

:meth:`StateStore.lock` holds a job's lock and its target connection's; each lock taken bumps
a fence token, and :meth:`StateStore.record_batch` checks in its own transaction that the
tokens this store took are still current, so a worker that lost its lock records nothing.
"""

from __future__ import annotations

import array
import contextlib
import dataclasses
import datetime as dt
import enum
import functools
import itertools
import sys
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal, TextIO, cast

import sqlalchemy as sa
from sqlalchemy import Connection, Engine

from connector_core.errors import ConnectorError
from connector_core.scrub import scrub
from connector_core.sync import bulk, dialect, fences, locks
from connector_core.sync import ledger as ledger_rows
from connector_core.sync.approval_book import OPEN_STATUSES, ApprovalBook
from connector_core.sync.database import (
    StateStoreError,
    advisory_key,
    connect_engine,
    display_url,
    failures,
)
from connector_core.sync.dialect import chunks
from connector_core.sync.ledger import LedgerReport
from connector_core.sync.model import (
    UNKNOWN_HASH,
    AppliedChange,
    JobState,
    LedgerEntry,
    Mapped,
    Outstanding,
    RunCounts,
)
from connector_core.sync.request_book import RequestBook
from connector_core.sync.tables import (
    SecondTime,
    approval_sets,
    fingerprint_blocks,
    id_map,
    intents,
    job_state,
    outstanding,
    row_fingerprints,
    runs,
    store_secrets,
)
from connector_core.sync.terms import (
    Terms,
    ids_of_kind,
    pack_field_hashes,
    pack_hash,
    pack_key,
    unpack_field_hashes,
    unpack_hash,
    unpack_key,
)

__all__ = ["KEEP", "LedgerReport", "SavedBlocks", "StateStore", "StateStoreError", "split_ids"]

#: locks whose fences one check in a joined block reads (see _check_fences): a whole group's
#: (256 jobs, two locks each), so its jobs' checks take one statement, not one per 16 jobs
_FENCES_AHEAD = 512
_PAGE = 1000  # rows per keyset page when streaming
_ID_PAGE = 20_000  # source ids per page (a run's take-back check reads every one: ~1 MB)
_ANALYZE_FIRST = 2000  # PostgreSQL: rows a store records before its first ANALYZE
RUN_STATUSES = frozenset({"ok", "failed-records", "deletes-held", "aborted", "killed"})


class _Keep(enum.Enum):
    KEEP = "keep"


KEEP: Final = _Keep.KEEP
"""Pass as ``cursor=`` to leave a job's cursor where it is."""


class StateStore:
    """Everything the connector remembers between runs. Open it with :meth:`open`."""

    def __init__(self, engine: Engine, url: str, *, ledger_key: bytes | None = None) -> None:
        self._engine = engine
        self._ledger_key = ledger_key  # never stored in the database, never shown
        self._pg = engine.dialect.name == "postgresql"
        self._locks: locks.AdvisorySession | None = None  # PostgreSQL: every lock, one session
        self._fences: dict[str, int] = {}  # lock name -> the fence token this store took
        self._joined: Connection | None = None  # the transaction of a joined() block
        self._broken: Exception | None = None  # the error that broke it (see joined)
        self._ledger_checked = False  # in a joined block: see _check_ledger
        self._behind = _Behind()  # the block's writes held back (see _defer)
        #: in a joined block, the fence rows read FOR UPDATE since its last commit (see
        #: _check_fences), by lock name
        self._fenced: dict[str, Any] = {}
        self._fence_order: dict[str, int] | None = None  # see _fence_at
        self._undurable = False  # a joined block holds intents not yet committed
        #: in a joined block, the ids of the intents written ahead not durable, by the
        #: provisional (negative) id write_ahead gave (see _flush_intents)
        self._intent_ids: dict[int, int] = {}
        self._ahead: _Ahead | None = None  # rows read ahead for a joined() block
        self._terms = Terms()  # the terms this store has read or written (never change)
        self._grown = 0  # PostgreSQL: rows this store recorded (see _analyze_when_grown)
        self._analyze_at = _ANALYZE_FIRST
        self._analyze_due = False  # due once the joined block commits
        self._upserts: dict[str, Any] = {}  # the deferred writes' statements (see _deferred)
        self.url = url  #: the store's URL with any password hidden

    @classmethod
    def open(cls, url: str, *, ledger_key: bytes | None = None) -> StateStore:
        """Connect to `url` (SQLAlchemy form) and migrate its schema to the newest revision.

        `ledger_key` (the network's ``ledger_key`` secret) keys the ledger's hash chain:
        without it the store reads and maps as usual, but recording a batch or verifying the
        ledger raises :class:`~connector_core.sync.ledger.LedgerKeyError`.
        """
        engine = connect_engine(url)
        return cls(engine, display_url(engine.url), ledger_key=ledger_key)

    def set_ledger_key(self, key: bytes) -> None:
        """Give the store its ledger key after opening it (the CLI first asks
        :meth:`ledger_keyed` to decide whether it may generate one)."""
        self._ledger_key = key

    def close(self) -> None:
        """Close every pooled connection."""
        self._engine.dispose()
        if self._locks is not None:
            self._locks.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"StateStore({self.url!r})"

    # -- transactions ------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(
        self,
        *,
        write: bool = False,
        snapshot: bool = False,
        covered: bool = False,
        atomic: bool = False,
        behind: bool = False,
    ) -> Iterator[Connection]:
        """A transaction; database failures become StateStoreError naming the store.

        `covered`: a durable write-ahead intent covers this write should a power loss undo
        it, so SQLite may commit it without syncing (it still survives a crash of the process).

        In a :meth:`joined` block the call runs in the block's transaction. `atomic`: in a
        savepoint of its own, so that whatever it raises undoes only its part (for a call
        that may raise something other than a database error after it wrote, such as a
        ledger append without its key). Otherwise directly (a savepoint costs two round
        trips: on PostgreSQL nearly half the statements of a group's bookkeeping): such a
        call raises nothing of its own after its first write, and a database error in it
        breaks the block (see :meth:`joined`).

        `behind`: the call's own statements commute with the writes the block holds back
        (:meth:`_defer`), which it leaves held; any other call writes them first.
        """
        joined = self._joined
        if joined is not None:  # a part of the one transaction of a joined block
            if self._broken is not None:
                raise self._broken_block()
            if not behind:
                self._flush_behind(joined)
            if atomic:
                with failures(self._engine.url), joined.begin_nested():
                    try:
                        yield joined
                    except BaseException:
                        self._terms.discard()  # a cache: what the rest wrote is read again
                        self._fenced = {}  # row locks taken in the savepoint go with it
                        raise
                return
            try:
                with failures(self._engine.url):
                    yield joined
            except StateStoreError as exc:
                self._broken = exc  # PostgreSQL aborted the transaction: nothing more goes in
                self._terms.discard()
                raise
            return
        with failures(self._engine.url), self._engine.connect() as conn:
            if write:
                conn.execution_options(
                    sqlite_begin="IMMEDIATE", sqlite_sync="NORMAL" if covered else "FULL"
                )
            elif snapshot and self._pg:
                conn.execution_options(isolation_level="REPEATABLE READ")
            try:
                with conn.begin():
                    yield conn
            except BaseException:
                self._terms.discard()  # what it wrote was rolled back
                raise
            self._terms.settle()

    def _broken_block(self) -> StateStoreError:
        """The error a joined block raises once an error broke it (see :meth:`joined`)."""
        broken = self._broken
        what = str(broken) if isinstance(broken, StateStoreError) else repr(broken)
        return StateStoreError(
            f"{what} (in the middle of recording a group of jobs: what the group did since "
            "its last commit was not kept)",
            hint="What was recorded before is kept; the next run resumes from there.",
        )

    @contextlib.contextmanager
    def joined(self) -> Iterator[None]:
        """Run every call of the store in the block in one write transaction, committed when
        the block ends (rolled back, with all of it, if the block raises).

        For the bookkeeping of many jobs at once (a group's runs starting, recording their
        last batches, finishing): one commit instead of a dozen per job, and the writes
        every job makes sent for all of them at once (:meth:`_defer`: job states, cursors,
        run ends, fingerprint marks, ledger rows). What a call raises of its own (a lost
        lock, a missing ledger key) it raises before it writes, or in a savepoint (see
        :meth:`_transaction`): that call alone fails, the block goes on. A database error
        breaks the block: every later call raises, and the block rolls back and raises
        when it ends, keeping nothing since its last commit (as a crash there would: the
        next run resumes from what was committed). Writes held back (see :meth:`_defer`
        and :meth:`_Behind.record`) meet their database errors when written: at the next
        call that is not ``behind``, or at the block's end.

        A write ahead (:meth:`write_ahead`, an intent that must be durable before a target
        is written) commits what the block did so far and itself at once; the block goes
        on in a new transaction (one not `durable` waits for :meth:`durable`). So a batch
        recorded in a block, after its target acknowledged it, is committed at the next
        intent or at the block's end: a crash before that loses the record, not the
        intent, and the next run decides those records again (as after a crash between a
        target's write and its record). Nested blocks join the outer one.
        """
        if self._joined is not None:
            yield
            return
        with failures(self._engine.url), self._engine.connect() as conn:
            conn.execution_options(sqlite_begin="IMMEDIATE", sqlite_sync="FULL")
            self._joined, self._broken = conn, None
            try:
                yield
                if self._broken is None:
                    with contextlib.suppress(Exception):  # a failure breaks the block
                        self._flush_behind(conn)
                if self._broken is not None:
                    raise self._broken_block()
                if conn.in_transaction():
                    conn.commit()
            except BaseException:
                if conn.in_transaction():
                    conn.rollback()
                self._terms.discard()  # what it wrote was rolled back
                raise
            finally:
                self._joined, self._ahead, self._broken = None, None, None
                self._behind, self._fenced, self._undurable = _Behind(), {}, False
                self._intent_ids, self._ledger_checked = {}, False
            self._terms.settle()
        if self._analyze_due:
            self._analyze()

    def _commit_joined(self) -> None:
        """In a :meth:`joined` block: commit what it did so far (it goes on afresh)."""
        conn = self._joined
        if self._broken is not None:
            raise self._broken_block()
        if conn is not None:
            self._flush_behind(conn)
        if conn is not None and conn.in_transaction():
            conn.commit()
            self._terms.settle()
        self._fenced = {}  # their row locks went with the commit
        self._undurable = False

    def _check_fences(self, conn: Connection, job: str, target: str) -> None:
        """Raise LockLost if this store no longer holds `job`'s lock or `target`'s (see
        :mod:`~connector_core.sync.fences`). In a joined block a check reads the rows of
        the job's locks and of the next ones the store holds (up to :data:`_FENCES_AHEAD`,
        in the order taken: the next jobs of the group) at once, ``FOR UPDATE``: they stay
        checked until the block commits, so the next jobs' batches need no statement."""
        if conn is not self._joined:
            fences.check(conn, self._fences, job, target)
            return
        names = [n for n in fences.lock_names(job, target) if n in self._fences]
        if any(name not in self._fenced for name in names):
            wanted = dict.fromkeys(names)
            for name in itertools.islice(self._fences, self._fence_at(names[0]), None):
                if len(wanted) >= _FENCES_AHEAD:
                    break
                if name not in self._fenced:
                    wanted[name] = None
            self._fenced.update(fences.read(conn, list(wanted)))
        fences.verify(self._fenced, self._fences, job, target)

    def _fence_at(self, name: str) -> int:
        """The place of lock `name` among the locks this store holds, in the order taken."""
        order = self._fence_order
        if order is None:
            order = self._fence_order = {n: i for i, n in enumerate(self._fences)}
        return order[name]

    def _defer(
        self, conn: Connection, kind: str, key: Any, params: dict[str, Any], replaces: str = ""
    ) -> None:
        """Write `params` with the statement of `kind` (see :data:`_DEFERRED`): in a joined
        block, held back until the block's next call that is not ``behind`` (or its commit),
        then written with every other write of its kind in one statement (``executemany``);
        outside one, now. A later write of the same kind and `key` replaces an earlier one
        (each sets the same columns of the same row), as does one of the kind it `replaces`
        (a delete of the row it upserts, or the reverse).

        Only writes to tables no ``behind`` call otherwise touches (job states, a run's
        end, fingerprint marks; ledger rows, see :meth:`_append_ledger`) are held back: so
        holding them back reorders nothing that a statement of the block could see."""
        if conn is not self._joined:
            conn.execute(self._deferred(kind), params)
            return
        self._behind.add(kind, key, params, replaces)

    def _flush_behind(self, conn: Connection) -> None:
        """Write what the joined block holds back (a failure breaks the block)."""
        if self._behind.empty():
            return
        behind, self._behind = self._behind, _Behind()
        try:
            with failures(self._engine.url):
                self._flush_intents(conn, behind.intents)
                self._flush_records(conn, behind)
                for kind, rows in behind.writes.items():
                    if rows:
                        self._write_deferred(conn, kind, list(rows.values()))
                if behind.ledger:
                    ledger_rows.append(conn, behind.ledger, self._ledger_key, self._terms)
        except Exception as exc:  # the block holds part of them: it keeps none
            self._broken = exc
            self._terms.discard()
            raise

    def _write_deferred(self, conn: Connection, kind: str, rows: list[dict[str, Any]]) -> None:
        """Write the `rows` held back of `kind`: on PostgreSQL, the deletes of many jobs
        (a group's) by one statement (see :data:`_SET_WRITES`), not one per job."""
        if self._pg and len(rows) >= _SET_WRITE and kind in _SET_WRITES:
            _SET_WRITES[kind](conn, rows)
        else:
            conn.execute(self._deferred(kind), rows)

    def _flush_intents(self, conn: Connection, rows: list[tuple[int, dict[str, Any]]]) -> None:
        """Insert the intents written ahead in the block (not durable: see
        :meth:`write_ahead`), all in one statement per 500, and note their ids."""
        ids = _new_ids(conn, _NEW_INTENTS, [row for _, row in rows])
        self._intent_ids.update(zip((p for p, _ in rows), ids, strict=True))

    def _flush_records(self, conn: Connection, behind: _Behind) -> None:
        """Write the id map rows, outstanding rows and intent deletes that the batches
        recorded in a joined block hold back (see :meth:`_Behind.record`): each kind for
        every job at once, deletes before the writes they may precede."""
        if behind.id_gone:
            conn.execute(_DROP_ID_ROW, [{"v_job": j, "v_id": s} for j, s in behind.id_gone])
        rows = self._interned(conn, list(behind.id_rows.values()))
        bulk.insert_many(conn, id_map, rows, conflict=("job", "source_id"))
        if behind.owed_gone:
            conn.execute(_DROP_OWED, [{"v_job": j, "v_id": s} for j, s in behind.owed_gone])
        self._put_outstanding(conn, list(behind.owed.values()), _utc(None))
        gone = [self._intent_ids.get(i, i) for i in behind.intents_gone]
        for chunk in chunks(gone):
            conn.execute(intents.delete().where(dialect.among(conn, intents.c.id, chunk)))

    def _deferred(self, kind: str) -> Any:
        """The statement of a deferred write's `kind` (built once per store)."""
        stmt = self._upserts.get(kind)
        if stmt is None:
            stmt = self._upserts[kind] = _DEFERRED[kind](self._insert)
        return stmt

    def read_ahead(self, jobs: Sequence[str]) -> None:
        """In a :meth:`joined` block: read the job states, outstanding changes, intents,
        fingerprint marks, unkeyed-key marks, unfinished runs and open approval sets of
        `jobs` for the block's calls of :meth:`job_state`, :meth:`outstanding`,
        :meth:`adopt_intents`, :meth:`has_fingerprints`, :meth:`legacy_keys`,
        :meth:`has_open_sets`, :meth:`start_run` and :meth:`set_job_state` (a write through
        the store drops what it may change), each kind in one query per 500 jobs when the
        block first asks for it (a block that ends runs asks for states and outstanding
        changes, not for intents or fingerprints); their name ids now (added if new).
        Outside a block it does nothing."""
        conn = self._joined
        if conn is None:
            return
        names = list(jobs)
        for chunk in chunks(names):  # their ids (start_run would add them)
            self._terms.intern(conn, "job", chunk)
        self._ahead = _Ahead(conn, names)

    def _known_ahead(self, job: str) -> _Ahead | None:
        ahead = self._ahead
        if ahead is None or job not in ahead.jobs or self._broken is not None:
            return None  # (a broken block: the call raises as any other does)
        return ahead

    def _forget_ahead(self, job: str | None = None) -> None:
        """Drop what was read ahead of `job` (of every job: None)."""
        if self._ahead is not None:
            if job is None:
                self._ahead = None
            else:
                self._ahead.jobs.discard(job)

    def _insert(self, table: sa.Table) -> Any:
        return dialect.insert(table, pg=self._pg)

    # -- job state ---------------------------------------------------------------------

    def job_state(self, job: str) -> JobState:
        """What the store remembers about `job`; a blank JobState when it never ran."""
        ahead = self._known_ahead(job)
        if ahead is not None:
            return ahead.states.get(job) or JobState(job)
        with self._transaction() as conn:
            row = conn.execute(sa.select(job_state).where(job_state.c.job == job)).first()
        return JobState(job) if row is None else JobState(**row._mapping)

    def set_job_state(self, state: JobState) -> None:
        """Save every field of `state` except the cursor (only record_batch moves a cursor).

        Keeping the cursor out means a JobState read at the start of a run can be saved at
        its end without moving the cursor back past batches recorded meanwhile. A run that
        finished (``last_success_at == last_run_at``) ends the job's use of unkeyed keys
        (see :meth:`legacy_keys`).
        """
        values = {
            "policy_hash": state.policy_hash,
            "config_hash": state.config_hash,
            "last_run_at": _aware(state.last_run_at),
            "last_success_at": _aware(state.last_success_at),
            "last_reconciled_at": _aware(state.last_reconciled_at),
        }
        finished = state.last_success_at is not None and state.last_success_at == state.last_run_at
        ahead = self._known_ahead(state.job)
        finished = finished and (ahead is None or state.job in ahead.legacy)  # else none to end
        self._forget_ahead(state.job)
        with self._transaction(write=True, behind=True) as conn:
            self._upsert_job(conn, state.job, values)
            if finished:
                conn.execute(
                    store_secrets.delete().where(store_secrets.c.name == _legacy(state.job))
                )

    def _upsert_job(self, conn: Connection, job: str, values: dict[str, Any]) -> None:
        """Insert or update `job`'s row with `values`: the job's state (every column but the
        cursor) or its cursor (two sets of columns that never overlap, so the two kinds of
        write commute); held back in a joined block (see :meth:`_defer`)."""
        kind = "cursor" if "cursor" in values else "job state"
        assert set(values) == _JOB_COLUMNS[kind], values
        self._defer(conn, kind, job, {"v_job": job, **{f"v_{c}": v for c, v in values.items()}})

    # -- id map ------------------------------------------------------------------------

    def mapped(self, job: str, source_ids: Iterable[str]) -> dict[str, Mapped]:
        """The id map rows of `job` for those of `source_ids` it holds, by source id."""
        ids = list(dict.fromkeys(source_ids))
        found: dict[str, Mapped] = {}
        with self._transaction() as conn:
            job_id = self._job_id(conn, job)
            if job_id is None:
                return found
            for chunk in chunks(ids):
                query = sa.select(id_map).where(
                    id_map.c.job == job_id, dialect.among(conn, id_map.c.source_id, chunk)
                )
                rows = list(conn.execute(query))
                found.update((m.source_id, m) for m in self._mapped_rows(conn, rows, {job_id: job}))
        return found

    def mapped_counts(self, jobs: Sequence[str]) -> dict[str, int]:
        """How many records each of `jobs` holds in its target (as :meth:`mapped_count`),
        in one query per 500 jobs."""
        found = dict.fromkeys(jobs, 0)
        with self._transaction() as conn:
            ids = self._job_ids(conn, jobs)
            for chunk in chunks(list(ids)):
                query = (
                    sa.select(id_map.c.job, sa.func.count())
                    .where(dialect.among(conn, id_map.c.job, chunk))
                    .group_by(id_map.c.job)
                )
                found.update((ids[job_id], int(n)) for job_id, n in conn.execute(query))
        return found

    def mapped_all(
        self, jobs: Sequence[str], among: Collection[str] | None = None
    ) -> dict[str, Mapping[str, Mapped]]:
        """Every id map row of `jobs` (only those of the source ids `among`, if given), by
        job and source id, in one read per 500 jobs (and 500 ids) (for a group of jobs
        holding a few records each; see :meth:`mapped_counts`). A row becomes a
        :class:`Mapped` when it is first looked up (:class:`MappedRows`): a run that
        decides few of them (an incremental one) makes few."""
        found: dict[str, dict[str, Any]] = {job: {} for job in jobs}
        values: dict[int, Any] = {}
        wanted = None if among is None else list(among)
        with self._transaction() as conn:
            self._plan_for_arrays(conn)
            ids = self._job_ids(conn, jobs)
            for chunk in chunks(list(ids)):
                query = _ID_MAP_UNTYPED.where(dialect.among(conn, id_map.c.job, chunk))
                queries = (
                    [query]
                    if wanted is None
                    else [
                        query.where(dialect.among(conn, id_map.c.source_id, w))
                        for w in chunks(wanted)
                    ]
                )
                for one in queries:
                    rows = conn.execute(one).all()
                    terms_of = {r.shape for r in rows} | {r.consent for r in rows}
                    values.update(self._terms.values(conn, terms_of - values.keys()))
                    for row in rows:
                        found[ids[row.job]][row.source_id] = row
            read_time = functools.partial(_UPDATED_AT.process_result_value, dialect=conn.dialect)
        return {job: MappedRows(job, rows, values, read_time) for job, rows in found.items()}

    def mapped_ids(self, jobs: Sequence[str]) -> dict[str, list[str]]:
        """The source ids in each of `jobs`' id map, in one read per 500 jobs: the ids
        alone, a fraction of :meth:`mapped_all`'s cost (a group whose read decoded few
        records reads their rows alone, with `among`)."""
        found: dict[str, list[str]] = {job: [] for job in jobs}
        with self._transaction() as conn:
            self._plan_for_arrays(conn)
            ids = self._job_ids(conn, jobs)
            for chunk in chunks(list(ids)):
                among = dialect.among(conn, id_map.c.job, chunk)
                if self._pg:  # a row per job, its ids in one array: a third of a row per id
                    for job_id, source_ids in conn.execute(_ID_MAP_ID_ARRAYS.where(among)):
                        found[ids[job_id]] = source_ids
                    continue
                for job_id, source_id in conn.execute(_ID_MAP_IDS.where(among)):
                    found[ids[job_id]].append(source_id)
        return found

    def _plan_for_arrays(self, conn: Connection) -> None:
        """PostgreSQL 12+: plan the rest of `conn`'s transaction for each statement's own
        arrays. psycopg prepares a statement after 5 runs of its text, and the server then
        uses a generic plan, blind to how many values an ``= ANY`` array holds: a group's id
        map rows of 90 people among 255 jobs took 16-23 ms that way, 3-4 ms planned for
        their arrays (525,000 rows, measured). Not for the whole session: a batch's
        executemany rows would each be planned again."""
        if self._pg and (conn.dialect.server_version_info or (0,)) >= (12,):
            conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")

    def _job_ids(self, conn: Connection, jobs: Sequence[str]) -> dict[int, str]:
        """The ids of those of `jobs` ever recorded, as {id: name}."""
        found = ((self._job_id(conn, job), job) for job in jobs)
        return {job_id: job for job_id, job in found if job_id is not None}

    def _job_id(self, conn: Connection, job: str, *, add: bool = False) -> int | None:
        """The id of `job`'s name (a "job" term); None if it was never recorded (`add`: add
        it)."""
        if add:
            return self._terms.intern(conn, "job", [job])[0]
        return self._terms.find(conn, "job", job)

    def _mapped_rows(
        self, conn: Connection, rows: Sequence[Any], jobs: dict[int, str]
    ) -> list[Mapped]:
        values = self._terms.values(conn, {r.shape for r in rows} | {r.consent for r in rows})
        return [
            _as_mapped(row, jobs[row.job], values[row.shape], values[row.consent]) for row in rows
        ]

    def source_ids(self, job: str) -> Iterator[str]:
        """Every source id in `job`'s id map, in Python's str order, a page at a time."""
        last: str | None = None
        with self._transaction() as conn:
            job_id = self._job_id(conn, job)
        if job_id is None:
            return
        while True:
            query = sa.select(id_map.c.source_id).where(id_map.c.job == job_id)
            if last is not None:
                query = query.where(id_map.c.source_id > last)
            query = query.order_by(id_map.c.source_id).limit(_ID_PAGE)
            with self._transaction() as conn:
                if self._pg:  # the page as one array, in order: a third of a row per id
                    page = conn.scalar(_as_array(query)) or []
                else:
                    page = list(conn.scalars(query))
            yield from page
            if len(page) < _ID_PAGE:
                return
            last = page[-1]

    def mapped_count(self, job: str) -> int:
        """How many records `job` holds in its target."""
        with self._transaction() as conn:
            job_id = self._job_id(conn, job)
            if job_id is None:
                return 0
            query = sa.select(sa.func.count()).select_from(id_map).where(id_map.c.job == job_id)
            return int(conn.scalar(query) or 0)

    def who_has(self, source_id: str, *, job: str | None = None) -> list[Mapped]:
        """Every job whose target currently holds the person `source_id` (by job name).

        One primary-key lookup per job (the id map has no index on source ids alone)."""
        with self._transaction() as conn:
            jobs = {i: name for i, name in ids_of_kind(conn, "job").items() if job in (None, name)}
            if not jobs:
                return []
            query = sa.select(id_map).where(
                id_map.c.job.in_(sorted(jobs)), id_map.c.source_id == source_id
            )
            found = self._mapped_rows(conn, list(conn.execute(query)), jobs)
        return sorted(found, key=lambda m: m.job)

    # -- recording ---------------------------------------------------------------------

    def record_batch(
        self,
        job: str,
        target: str,
        policy: str,
        policy_hash: str,
        applied: Sequence[AppliedChange],
        *,
        cursor: str | _Keep | None = KEEP,
        now: dt.datetime | None = None,
        resolved: Iterable[str] = (),
        failed: Sequence[Outstanding] = (),
        ledgered: Sequence[AppliedChange] | None = None,
        intent: int | None = None,
        fingerprints: Iterable[int] | None = None,
        blocks: SavedBlocks | None = None,
    ) -> None:
        """Record a batch the target acknowledged: id map, ledger and cursor, all or nothing.

        Creates and updates upsert the id map, deletes remove from it; every change in
        `ledgered` (default: `applied`) appends one ledger row; unless `cursor` is KEEP, the
        job's cursor becomes `cursor`, and the row `fingerprints` of the read that ended there
        are kept with it (None: forgotten, see :meth:`fingerprints`), with the read's
        `blocks` (see :class:`SavedBlocks`). The batch's `intent`
        (from :meth:`write_ahead`) and the outstanding rows of every applied change and of
        the `resolved` source ids are cleared, and `failed` become outstanding "failed"
        rows, retried by the next run.

        Raises:
            LockLost: this store holds `job`'s (or `target`'s) lock, and another holder has
                taken it since (checked in the same transaction; nothing is recorded).
        """
        self._forget_ahead()
        now = _utc(now)
        ledgered = applied if ledgered is None else ledgered
        settled = {c.source_id for c in applied} | set(resolved)
        last = {change.source_id: change for change in applied}  # the last change of an id wins
        gone = [sid for sid, change in last.items() if change.action == "delete"]
        kept = [c for c in last.values() if c.action != "delete"]
        _check_keys(kept)
        entries = [_ledger_row(job, target, policy, policy_hash, c, now) for c in ledgered]
        # With an intent, a batch lost to a power loss is found again by the next run (its
        # intent is synced, and this transaction deletes it): no sync of its own.
        # In a joined block no savepoint: whatever it raises of its own (a lost lock, a
        # missing ledger key, a change without a projection hash) it raises before it
        # writes a row of the job's; its ledger rows are held back (see _append_ledger).
        cleared = settled - {f.source_id for f in failed}
        with self._transaction(
            write=True, covered=intent is not None, behind=blocks is None
        ) as conn:
            self._check_fences(conn, job, target)
            if entries:
                self._check_ledger(conn)
            job_id = self._job_id(conn, job, add=True)
            joined = conn is self._joined
            # in a joined block the rows' terms are interned at the flush, for every job at
            # once (one look-up of the terms this process has not seen, not one per job)
            rows = self._id_rows(conn, job_id, policy_hash, kept, now, intern=not joined)
            if joined:  # written with the other jobs' at the block's next flush
                self._behind.record(job, job_id, rows, gone, intent, cleared, failed, now)
            else:
                for chunk in chunks(gone):
                    conn.execute(
                        id_map.delete().where(
                            id_map.c.job == job_id, dialect.among(conn, id_map.c.source_id, chunk)
                        )
                    )
                bulk.insert_many(conn, id_map, rows, conflict=("job", "source_id"))
                if intent is not None:
                    conn.execute(intents.delete().where(intents.c.id == intent))
                self._clear_outstanding(conn, job, cleared)
                self._put_outstanding(conn, failed, now)  # their intents become failures
            if cursor is not KEEP:
                self._upsert_job(conn, job, {"cursor": cursor})
                self._put_fingerprints(conn, job, cursor, fingerprints, blocks)
            self._append_ledger(conn, entries)  # last: its head is locked the least time
        if self._pg:
            self._analyze_when_grown(len(kept) + len(entries))

    def _check_ledger(self, conn: Connection) -> None:
        """Raise what appending to the ledger would (no key, another key, rows to migrate),
        before a batch writes anything; in a joined block once."""
        joined = conn is self._joined
        if joined and self._ledger_checked:
            return
        ledger_rows.check_writable(conn, self._ledger_key, lock=False)
        if joined:
            self._ledger_checked = True

    def _append_ledger(self, conn: Connection, entries: list[dict[str, Any]]) -> None:
        """Append `entries` to the ledger: in a joined block held back and appended with the
        block's others in one go, in order (before its next call that is not ``behind``, or
        its commit; its ledger was checked by :meth:`_check_ledger`), else now."""
        if not entries:
            return
        if conn is self._joined:
            self._behind.ledger.extend(entries)
        else:
            ledger_rows.append(conn, entries, self._ledger_key, self._terms)

    def _analyze_when_grown(self, added: int) -> None:
        """ANALYZE the id map, ledger and terms each time the rows this store recorded, of
        every job, double (2,000 first): a fresh table's planner statistics say "empty",
        and its plans scan whole tables. Counted for the store, not per job: 15,000 partner
        jobs recording 35 rows each never reached 2,000 apiece, and every later group's id
        map read scanned all 525,000 rows (60-100 ms a group). In a joined block, once the
        block committed: ANALYZE sees committed rows only."""
        self._grown += added
        if self._grown < self._analyze_at:
            return
        self._analyze_at = 2 * self._grown
        if self._joined is not None:
            self._analyze_due = True
        else:
            self._analyze()

    def _analyze(self) -> None:
        self._analyze_due = False
        with failures(self._engine.url), self._engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.execute(sa.text("ANALYZE id_map, ledger, terms"))

    def _id_rows(
        self,
        conn: Connection,
        job: int | None,
        policy_hash: str,
        changes: Sequence[AppliedChange],
        now: dt.datetime,
        *,
        intern: bool = True,
    ) -> list[dict[str, Any]]:
        """The id map rows of `changes`; with `intern` False their ``shape`` and
        ``consent`` hold the terms' values, not their ids (see :meth:`_interned`)."""
        if not changes:
            return []
        packed = [pack_field_hashes(c.field_hashes) for c in changes]
        shapes: list[Any] = [
            {"fields": c.fields, "policy_hash": policy_hash, **p[0]}
            for c, p in zip(changes, packed, strict=True)
        ]
        consents: list[Any] = [c.consent_basis for c in changes]
        rows = [
            _id_row(job, c, shape, consent, blob, now)
            for c, shape, consent, (_, blob) in zip(changes, shapes, consents, packed, strict=True)
        ]
        return self._interned(conn, rows) if intern else rows

    def _interned(self, conn: Connection, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """`rows` (id map rows whose ``shape`` and ``consent`` hold values) with the ids of
        those terms, added if new."""
        if rows:
            shapes = self._terms.intern(conn, "map", [r["shape"] for r in rows])
            consents = self._terms.intern(conn, "consent", [r["consent"] for r in rows])
            for row, shape, consent in zip(rows, shapes, consents, strict=True):
                row["shape"], row["consent"] = shape, consent
        return rows

    # -- row fingerprints (Capability.ROW_FINGERPRINTS) ----------------------------------

    def fingerprints(self, job: str, cursor: str | None) -> frozenset[int] | None:
        """The fingerprints of the rows `job` decided at `cursor`, saved with that cursor by
        :meth:`record_batch` (those of its blocks' rows included); None when none are kept
        for this cursor."""
        if cursor is None:
            return None
        query = sa.select(row_fingerprints.c.fingerprints).where(
            row_fingerprints.c.job == job, row_fingerprints.c.cursor == cursor
        )
        with self._transaction() as conn:
            blob = conn.scalar(query)
            if blob is None:
                return None
            blobs = [bytes(blob)]
            blocks = sa.select(fingerprint_blocks.c.fingerprints).where(
                fingerprint_blocks.c.job == job
            )
            blobs += [bytes(b) for b in conn.scalars(blocks)]
        return frozenset(_unpacked(b"".join(blobs)))

    def keep_fingerprints(self, job: str, cursor: str, fingerprints: Iterable[int]) -> None:
        """Keep the row `fingerprints` of a read that ended at `cursor` under `job` (a name
        of a shared read's, see :mod:`connector_core.sync.fanout`), replacing any."""
        with self._transaction(write=True) as conn:
            self._put_fingerprints(conn, job, cursor, fingerprints)

    def keep_shared(
        self,
        name: str,
        cursor: str,
        loose: Iterable[int],
        blocks: SavedBlocks,
        start: str | None = None,
    ) -> None:
        """Keep the row fingerprints of a shared read that ended at `cursor` under `name` (see
        :func:`connector_core.sync.fanout.fingerprints_name`): those of the rows in no block
        (`loose`, replacing any) and `blocks`, its new ones and the kept ones copied from the
        name `start` its read began from (the names are per cursor). What this read keeps
        replaces what the name held, its blocks as its fingerprints (a block another task of
        a queue kept whole goes when this task's jobs rejected one of its rows), as one job's
        read replaces its own (:meth:`_put_fingerprints`). On PostgreSQL one task at a time
        keeps a name's (two writing the same blocks at once would collide, or deadlock);
        SQLite writes one transaction at a time."""
        with self._transaction(write=True) as conn:
            if self._pg:
                key = advisory_key(f"shared fingerprints:{name}")
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))
            self._put_fingerprints(conn, name, cursor, loose, blocks, start=start)

    def prune_fingerprints(
        self, prefix: str, length: int, keep: Iterable[str], *, also: str | None = None
    ) -> None:
        """Forget the fingerprints (and blocks) kept under the names of `length` characters
        that start with `prefix`, and under `also`, unless at a cursor of `keep` (the names
        of a shared read's, see :func:`connector_core.sync.fanout.fingerprints_name`); and
        blocks under such a name without fingerprints (one task's blocks committed as
        another task forgot the name: never read, as no cursor names them)."""

        def named(column: sa.Column[Any]) -> Any:
            found = sa.and_(
                sa.func.substr(column, 1, len(prefix)) == prefix,
                sa.func.length(column) == length,
            )
            return found if also is None else sa.or_(found, column == also)

        table, blocks = row_fingerprints, fingerprint_blocks
        query = sa.select(table.c.job).where(
            named(table.c.job), table.c.cursor.not_in(sorted(keep))
        )
        unread = (
            sa.select(blocks.c.job)
            .distinct()
            .where(named(blocks.c.job), ~sa.exists().where(table.c.job == blocks.c.job))
        )
        with self._transaction(write=True) as conn:
            doomed = list(conn.scalars(query)) + list(conn.scalars(unread))
            for chunk in chunks(doomed):
                conn.execute(sa.delete(table).where(dialect.among(conn, table.c.job, chunk)))
                conn.execute(
                    sa.delete(fingerprint_blocks).where(
                        dialect.among(conn, fingerprint_blocks.c.job, chunk)
                    )
                )
            for job in doomed:
                self._forget_ahead(job)

    def forget_reads(self, job: str) -> None:
        """Forget where `job` read up to: its cursor, the hashes its last run was made
        with, and its row fingerprints. Its next run is then a first run (for a job whose
        records were all taken back: a retired partner that may come back)."""
        blank = dict.fromkeys(("cursor", "policy_hash", "config_hash", "last_reconciled_at"))
        with self._transaction(write=True) as conn:
            conn.execute(job_state.update().where(job_state.c.job == job).values(blank))
            conn.execute(_FINGERPRINTS_OF, {"v_job": job})
            conn.execute(_DROP_BLOCKS, {"v_job": job})
        self._forget_ahead(job)

    def has_fingerprints(self, job: str, cursor: str | None) -> bool:
        """Whether :meth:`fingerprints` has any for `job` at `cursor` (without loading them)."""
        if cursor is None:
            return False
        ahead = self._known_ahead(job)
        if ahead is not None:
            return (job, cursor) in ahead.fingerprinted
        query = sa.select(row_fingerprints.c.job).where(
            row_fingerprints.c.job == job, row_fingerprints.c.cursor == cursor
        )
        with self._transaction() as conn:
            return conn.scalar(query) is not None

    def block_digests(self, job: str) -> set[bytes]:
        """The digests of the blocks kept with `job`'s fingerprints (see :class:`SavedBlocks`);
        valid while :meth:`has_fingerprints` says so for the job's cursor."""
        query = sa.select(fingerprint_blocks.c.digest).where(fingerprint_blocks.c.job == job)
        with self._transaction() as conn:
            return {bytes(d) for d in conn.scalars(query)}

    def block_ids(self, job: str, digests: Iterable[bytes] | None = None) -> dict[bytes, bytes]:
        """The ids of the rows of `job`'s blocks `digests` (None: all), by digest, as kept:
        joined by newlines, UTF-8 with surrogates escaped (see :func:`split_ids`)."""
        return self._block_column(job, fingerprint_blocks.c.ids, digests)

    def block_parts(self, job: str, digests: Iterable[bytes] | None = None) -> dict[bytes, bytes]:
        """The digests of the parts of `job`'s blocks `digests` (None: all) that have them,
        by block (see :attr:`~connector_core.adapters.Block.parts`)."""
        return self._block_column(job, fingerprint_blocks.c.parts, digests)

    def block_rows(
        self, job: str, digests: Iterable[bytes]
    ) -> dict[bytes, tuple[list[str], array.array[int]]]:
        """The ids and fingerprints of the rows of `job`'s blocks `digests`, by block."""
        table = fingerprint_blocks
        found = self._block_values(job, [table.c.ids, table.c.fingerprints], digests)
        return {d: (split_ids(ids), _unpacked(marks)) for d, ids, marks in found}

    def block_fingerprints(self, job: str, digests: Iterable[bytes]) -> array.array[int]:
        """The row fingerprints of `job`'s blocks `digests`, and of its rows in no block."""
        found = self._block_column(job, fingerprint_blocks.c.fingerprints, digests)
        query = sa.select(row_fingerprints.c.fingerprints).where(row_fingerprints.c.job == job)
        with self._transaction() as conn:
            loose = conn.scalar(query)
        return _unpacked(b"".join([bytes(loose or b""), *found.values()]))

    def _block_column(
        self, job: str, column: sa.Column[Any], digests: Iterable[bytes] | None
    ) -> dict[bytes, bytes]:
        """`column` of `job`'s blocks `digests` (None: all) that hold a value, by digest."""
        return {row[0]: row[1] for row in self._block_values(job, [column], digests)}

    def _block_values(
        self, job: str, columns: list[sa.Column[Any]], digests: Iterable[bytes] | None
    ) -> list[tuple[bytes, ...]]:
        """(digest, the values of `columns`) of each of `job`'s blocks `digests` (None: all)
        whose `columns` all hold a value, read by chunks of digests."""
        table = fingerprint_blocks
        query = sa.select(table.c.digest, *columns).where(
            table.c.job == job, *(column.is_not(None) for column in columns)
        )
        with self._transaction() as conn:
            if digests is None:
                return [tuple(map(bytes, row)) for row in conn.execute(query)]
            found: list[tuple[bytes, ...]] = []
            for chunk in chunks(list(digests)):
                rows = conn.execute(query.where(dialect.among(conn, table.c.digest, chunk)))
                found += [tuple(map(bytes, row)) for row in rows]
            return found

    def _put_fingerprints(
        self,
        conn: Connection,
        job: str,
        cursor: str | None,
        fingerprints: Iterable[int] | None,
        blocks: SavedBlocks | None = None,
        *,
        start: str | None = None,
    ) -> None:
        """Keep `fingerprints` and `blocks` with the job's new cursor, or forget the old ones.
        The blocks `blocks` keeps stay; with `start` (a shared read's, see
        :meth:`keep_shared`) they are copied from that name where `job` has none of them."""
        self._forget_ahead(job)
        table = fingerprint_blocks
        if fingerprints is None or cursor is None:
            self._defer(conn, "no fingerprints", job, {"v_job": job}, replaces="fingerprints")
            self._defer(conn, "no blocks", job, {"v_job": job})
            return
        row = {"v_job": job, "v_cursor": cursor, "v_fingerprints": _packed(fingerprints)}
        self._defer(conn, "fingerprints", job, row, replaces="no fingerprints")
        if blocks is None:  # none kept: every block goes
            self._defer(conn, "no blocks", job, {"v_job": job})
            return
        kept = set(blocks.kept)
        found = conn.scalars(_BLOCKS_OF, {"v_job": job})
        gone = [d for d in (bytes(d) for d in found) if d not in kept]
        for chunk in chunks(gone):
            conn.execute(
                table.delete().where(table.c.job == job, dialect.among(conn, table.c.digest, chunk))
            )
        if start is not None and start != job:
            columns = [table.c.digest, table.c.ids, table.c.fingerprints, table.c.parts]
            for chunk in chunks(sorted(kept)):
                copied = sa.select(sa.literal(job, sa.String()), *columns).where(
                    table.c.job == start, dialect.among(conn, table.c.digest, chunk)
                )
                stmt = self._insert(table).from_select([table.c.job, *columns], copied)
                conn.execute(stmt.on_conflict_do_nothing())
        new = [
            {"job": job, "digest": d, "ids": ids, "fingerprints": marks, "parts": parts}
            for d, ids, marks, parts in blocks.new
            if d not in kept
        ]
        for rows in chunks(new):
            conn.execute(sa.insert(table), rows)

    # -- outstanding changes (the intent log, failures, held deletes) --------------------

    def outstanding(self, job: str) -> dict[str, Outstanding]:
        """Every change still owed to `job`'s target, by source id: the outstanding rows,
        and the changes of intents an interrupted run left (as "sent")."""
        ahead = self._known_ahead(job)
        if ahead is not None:
            return _owed(job, ahead.owed.get(job, []), ahead.left.get(job, []))
        query = sa.select(outstanding).where(outstanding.c.job == job)
        with self._transaction() as conn:
            rows = list(conn.execute(query))
            left = list(conn.execute(sa.select(intents).where(intents.c.job == job)))
        return _owed(job, rows, left)

    def adopt_intents(self, job: str) -> int:
        """Turn the intents an interrupted run of `job` left into outstanding "sent" rows,
        so that each is cleared as soon as its record is settled; return how many changes."""
        ahead = self._known_ahead(job)
        if ahead is not None and not ahead.left.get(job):
            return 0  # the last run ended as it should (nearly always)
        self._forget_ahead(job)
        with self._transaction(write=True) as conn:
            left = list(conn.execute(sa.select(intents).where(intents.c.job == job)))
            if not left:
                return 0
            rows = _intended(job, left)
            self._put_outstanding(conn, rows, _utc(None), attempt=True)
            conn.execute(intents.delete().where(intents.c.id.in_([i.id for i in left])))
        return len(rows)

    def write_ahead(
        self,
        job: str,
        changes: Sequence[tuple[str, str, str, str]],
        now: dt.datetime | None = None,
        *,
        durable: bool = True,
    ) -> int:
        """Record a batch's (source id, target key, action, reason) before it is sent, in a
        transaction of its own (in a :meth:`joined` block: after committing the block's work
        so far); return the intent's id for :meth:`record_batch`.

        In a joined block, not `durable`: held back and inserted with the block's other
        intents at its next flush (one statement for every job's), durable at the next
        :meth:`durable` (for a target that writes nothing before its commit: a group's
        jobs make their intents durable with one commit). The id returned is then a
        provisional one (negative), which :meth:`record_batch` takes as the real one."""
        row = {"job": job, "at": _utc(now), "changes": [list(c) for c in changes]}
        self._forget_ahead(job)
        joined = self._joined
        if joined is not None and not durable:
            # held back: inserted with the block's others at its next flush (an intent is
            # new: nothing reads it before), under the id this provisional one stands for
            with self._transaction(write=True, behind=True):
                provisional = -1 - len(self._intent_ids) - len(self._behind.intents)
                self._behind.intents.append((provisional, row))
            self._undurable = True
            return provisional
        if joined is not None:  # durable now, with what the block did before it
            self._commit_joined()
            with failures(self._engine.url), joined.begin():
                key = joined.execute(_NEW_INTENT, row).inserted_primary_key
            return _new_id(key)
        with self._transaction(write=True) as conn:
            key = conn.execute(_NEW_INTENT, row).inserted_primary_key
        return _new_id(key)

    def durable(self) -> None:
        """Make durable the intents written ahead without being so (in a joined block: commit
        what the block did so far, once for all of them; elsewhere every intent is)."""
        if self._joined is not None and self._undurable:
            self._commit_joined()

    def hold(self, rows: Sequence[Outstanding], now: dt.datetime | None = None) -> None:
        """Record deletes the mass-delete guard held back (status "held")."""
        self._forget_ahead()
        if rows:
            with self._transaction(write=True) as conn:
                self._put_outstanding(conn, rows, _utc(now))

    def _put_outstanding(
        self, conn: Connection, rows: Sequence[Outstanding], now: dt.datetime, attempt: bool = False
    ) -> None:
        """Upsert `rows`; `attempt` counts one more try of a row that was there already."""
        if not rows:
            return
        stmt = self._insert(outstanding)
        values = [
            {
                "job": r.job,
                "source_id": r.source_id,
                "target_key": r.target_key,
                "action": r.action,
                "status": r.status,
                "reason": r.reason,
                "error": r.error and scrub(r.error),
                "fields": r.fields,
                "since": r.since or now,
                "attempts": r.attempts,
            }
            for r in rows
        ]
        kept = ("target_key", "action", "status", "reason", "error", "fields")
        updated: dict[str, Any] = {name: stmt.excluded[name] for name in kept}
        updated["attempts"] = outstanding.c.attempts + (1 if attempt else 0)
        conn.execute(
            stmt.on_conflict_do_update(index_elements=["job", "source_id"], set_=updated), values
        )

    def forget_contents(self, job: str, source_ids: Sequence[str]) -> None:
        """Mark what the target holds for `source_ids` as unknown (their next decision
        rewrites or deletes them) and clear their outstanding rows, in one transaction."""
        with self._transaction(write=True) as conn:
            job_id = self._job_id(conn, job)
            for chunk in chunks(source_ids if job_id is not None else []):
                conn.execute(
                    id_map.update()
                    .where(id_map.c.job == job_id, dialect.among(conn, id_map.c.source_id, chunk))
                    .values(projection_hash=None, field_hashes=None)
                )
            self._clear_outstanding(conn, job, source_ids)

    def _clear_outstanding(self, conn: Connection, job: str, source_ids: Iterable[str]) -> None:
        ids = sorted(source_ids)
        for chunk in chunks(ids):
            conn.execute(
                outstanding.delete().where(
                    outstanding.c.job == job,
                    dialect.among(conn, outstanding.c.source_id, chunk),
                )
            )

    # -- approvals ---------------------------------------------------------------------

    def approvals(self) -> ApprovalBook:
        """The held change sets and the signed statements about them."""
        return ApprovalBook(functools.partial(self._transaction, atomic=True))

    def share_requests(self) -> RequestBook:
        """The share requests received, and where each stands."""
        return RequestBook(functools.partial(self._transaction, atomic=True))

    def record_events(self, rows: Sequence[dict[str, Any]]) -> None:
        """Append ledger rows that record no share of a record: a share request received,
        decided, ended or taken back (``source_id`` and ``record_key`` empty)."""
        with self._transaction(write=True, atomic=True) as conn:
            ledger_rows.append(conn, [dict(r) for r in rows], self._ledger_key, self._terms)

    # -- runs --------------------------------------------------------------------------

    def start_run(self, job: str, *, dry_run: bool = False) -> int:
        """Note that a run of `job` started; return its id for :meth:`finish_run`."""
        row = {"job": job, "started_at": _utc(None), "status": "running", "dry_run": dry_run}
        ahead = self._known_ahead(job)
        # behind: a run killed here is one still "running", which no held end touches
        with self._transaction(write=True, behind=True) as conn:
            # The job's name as a term now: its id map and ledger are looked up by its id,
            # and a job not yet recorded is otherwise looked for again and again in vain.
            self._job_id(conn, job, add=True)
            # The caller holds the job's lock: an earlier run still "running" was killed.
            if ahead is None or job in ahead.running:
                conn.execute(
                    runs.update()
                    .where(runs.c.job == job, runs.c.status == "running")
                    .values(status="killed")
                )
            if ahead is not None:
                ahead.running.add(job)  # this one, from now on
            # inserted_primary_key rather than RETURNING, which SQLite has only since 3.35
            key = conn.execute(_NEW_RUN, row).inserted_primary_key
        return _new_id(key)

    def start_runs(self, jobs: Sequence[str]) -> list[int]:
        """:meth:`start_run` for each of `jobs` (a group's, each locked by the caller), in
        one statement each where the database returns the ids of many rows inserted at once
        in their order (PostgreSQL, SQLite ≥ 3.35); their ids, in that order."""
        conn_dialect = self._engine.dialect
        if len(jobs) < 2 or not conn_dialect.insert_executemany_returning_sort_by_parameter_order:
            return [self.start_run(job) for job in jobs]
        now = _utc(None)
        rows = [
            {"job": job, "started_at": now, "status": "running", "dry_run": False} for job in jobs
        ]
        ahead = self._ahead
        known = ahead is not None and all(job in ahead.jobs for job in jobs)
        killed = [job for job in jobs if ahead is None or not known or job in ahead.running]
        with self._transaction(write=True, behind=True) as conn:  # as start_run
            self._terms.intern(conn, "job", list(jobs))
            for chunk in chunks(killed):
                conn.execute(
                    runs.update()
                    .where(
                        dialect.among(conn, runs.c.job, chunk),
                        runs.c.status == "running",
                    )
                    .values(status="killed")
                )
            if ahead is not None:
                ahead.running.update(jobs)
            ids = _new_ids(conn, _NEW_RUNS, rows)
        return ids

    def finish_run(
        self, run_id: int, *, status: str, counts: RunCounts, error: str | None = None
    ) -> None:
        """Close run `run_id` with its status ("ok", "failed-records" or "aborted") and counts."""
        if status not in RUN_STATUSES:
            raise ValueError(f"unknown run status {status!r}: use one of {sorted(RUN_STATUSES)}")
        values = {
            "v_id": run_id,
            "v_finished_at": _utc(None),
            "v_status": status,
            "v_counts": counts.as_dict(),
            "v_error": error and scrub(error),
        }
        with self._transaction(write=True, behind=True) as conn:
            self._defer(conn, "run end", run_id, values)

    def runs(self, job: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        """The latest runs (of `job`, or of every job), newest first."""
        query = sa.select(runs).order_by(runs.c.id.desc()).limit(limit)
        if job is not None:
            query = query.where(runs.c.job == job)
        with self._transaction() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    # -- ledger ------------------------------------------------------------------------

    def ledger_entries(
        self, *, job: str | None = None, after_seq: int = 0
    ) -> Iterator[LedgerEntry]:
        """The ledger in order (of `job`, or all), from after `after_seq`, a page at a time."""
        while True:
            with self._transaction() as conn:
                page = ledger_rows.page(conn, job=job, after_seq=after_seq, size=_PAGE)
            yield from page
            if len(page) < _PAGE:
                return
            after_seq = page[-1].seq

    def verify_ledger(self, expect: Iterable[tuple[int, str]] = ()) -> LedgerReport:
        """Recompute the whole keyed hash chain and check it against the ledger head, against
        each written-down (seq, hash) anchor in `expect`, and against the id map."""
        with self._transaction(snapshot=True) as conn:
            return ledger_rows.verify(conn, self._ledger_key, expect)

    def ledger_anchor(self) -> tuple[int, str]:
        """The ledger head's (seq, hash), to keep outside the store (an anchor)."""
        with self._transaction() as conn:
            return ledger_rows.anchor(conn)

    def check_ledger_writable(self) -> None:
        """Raise the ConfigError recording a batch would raise: no key, another key than the
        ledger's, or a ledger to migrate first. Call it before writing to a target."""
        with self._transaction() as conn:
            ledger_rows.check_writable(conn, self._ledger_key, lock=False)

    def ledger_keyed(self) -> bool:
        """Whether the ledger was ever written with a ledger key (then only that key fits)."""
        with self._transaction() as conn:
            return ledger_rows.keyed(conn)

    def migrate_ledger(self) -> int:
        """Re-chain the rows written before the ledger key with it; return how many."""
        with self._transaction(write=True, atomic=True) as conn:
            return ledger_rows.migrate(conn, self._ledger_key)

    def export_ledger(self, out: TextIO, *, fmt: Literal["jsonl", "csv"] = "jsonl") -> int:
        """Write the whole ledger to `out` as JSON lines or CSV; return the row count."""
        with self._transaction(snapshot=True) as conn:
            return ledger_rows.export(ledger_rows.stream(conn), out, fmt)

    # -- locks -------------------------------------------------------------------------

    def lock(
        self, job: str, *, target: str | None = None
    ) -> contextlib.AbstractContextManager[None]:
        """Hold `job`'s run lock, and with `target` its target connection's, for a with-block.

        Never waits: JobLocked if the job is running, TargetLocked if another job is writing
        `target`. Each lock taken bumps its fence token, which :meth:`record_batch` checks.
        """
        return self._locked(job, target)

    @contextlib.contextmanager
    def _locked(self, job: str, target: str | None) -> Iterator[None]:
        with self.lock_many([(job, target)]) as refused:
            if refused:
                raise refused[job]
            yield

    @contextlib.contextmanager
    def lock_many(
        self, jobs: Sequence[tuple[str, str | None]]
    ) -> Iterator[dict[str, ConnectorError]]:
        """Hold the locks :meth:`lock` takes for each of `jobs` (``(job, target)`` pairs) for
        a with-block, their fence tokens all bumped in one transaction (a group of jobs
        starting). Yields the jobs refused, by name, with the error :meth:`lock` would raise
        (JobLocked, TargetLocked, a failing lock server): they hold no lock.
        """
        with contextlib.ExitStack() as stack:
            refused: dict[str, ConnectorError] = {}
            taken: list[tuple[str, str]] = []
            if self._pg:  # every advisory lock tried in one statement, released in one
                taken = self._advisory_many(jobs, refused, stack)
            for job, target in [] if self._pg else jobs:
                names = fences.lock_names(job, target)
                held = contextlib.ExitStack()
                try:
                    for name in names:
                        held.enter_context(self._os_held(name, job))
                except ConnectorError as exc:
                    held.close()
                    refused[job] = exc
                    continue
                stack.enter_context(held)
                taken += [(name, job) for name in names]
            if taken:
                with self._transaction(write=True) as conn:
                    tokens = fences.take_many(conn, taken)
                self._fences.update(tokens)
                self._fence_order = None
                stack.callback(self._drop_fences, list(tokens))  # before the locks go
            yield refused

    def _advisory_many(
        self,
        jobs: Sequence[tuple[str, str | None]],
        refused: dict[str, ConnectorError],
        stack: contextlib.ExitStack,
    ) -> list[tuple[str, str]]:
        """PostgreSQL's part of :meth:`lock_many`: the locks of `jobs` tried at once; a job
        refused either lock (added to `refused`, with the error :meth:`lock` would raise)
        keeps neither. Returns the (lock name, job) pairs held until `stack` closes."""
        session = self._advisory_session()
        wanted = [(job, name) for job, target in jobs for name in fences.lock_names(job, target)]
        keys = [advisory_key(name) for _, name in wanted]
        with failures(self._engine.url):
            pairs = [(job, key) for (job, _), key in zip(wanted, keys, strict=True)]
            denied = session.try_many(pairs)
        got = [key for n, key in enumerate(keys) if n not in denied]
        stack.callback(session.release, got)  # whatever follows: released as the stack closes
        taken: list[tuple[str, str]] = []
        free: list[int] = []
        position = 0
        for job, target in jobs:
            names = fences.lock_names(job, target)
            places = range(position, position + len(names))
            position += len(names)
            lost = [(names[n - places[0]], denied[n]) for n in places if n in denied]
            if not lost:
                taken += [(name, job) for name in names]
                continue
            free += [keys[n] for n in places if n not in denied]
            name, holder = lost[0]
            if name.startswith(fences.JOB):
                refused[job] = locks.JobLocked(job, holder)
            else:
                refused[job] = self._target_locked(name, holder)
        session.release(free)  # at once: those jobs do not run
        return taken

    def _advisory_session(self) -> locks.AdvisorySession:
        if self._locks is None:
            engine = connect_engine(self._engine.url, for_locks=True)
            self._locks = locks.AdvisorySession(engine)
        return self._locks

    def _drop_fences(self, names: list[str]) -> None:
        for name in names:
            self._fences.pop(name, None)
        self._fence_order = None

    @contextlib.contextmanager
    def _os_held(self, name: str, job: str) -> Iterator[None]:
        """Hold the operating-system or server lock `name` for `job` (see :meth:`_os_lock`);
        JobLocked for a job's lock held elsewhere, TargetLocked for a target's."""
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(self._os_lock(name, job))
            except locks.JobLocked as refused:
                if name.startswith(fences.JOB):
                    raise
                raise self._target_locked(name, refused.holder) from None
            yield

    def _os_lock(self, name: str, job: str) -> contextlib.AbstractContextManager[None]:
        """The lock the server or the kernel frees when its holder dies."""
        if self._pg:
            return self._advisory_session().hold(job, advisory_key(name))
        database = self._engine.url.database
        if not database or database == ":memory:" or database.startswith("file:"):
            return locks.memory_lock(f"{id(self)}:{name}", job)
        if name.startswith(fences.JOB):
            return locks.file_lock(locks.lock_path(Path(database), job), job)
        path = locks.target_lock_path(Path(database), name.removeprefix(fences.TARGET))
        return locks.file_lock(path, job)

    def _target_locked(self, name: str, holder: str | None) -> locks.TargetLocked:
        with self._transaction() as conn:
            writer = fences.writer(conn, name)
        return locks.TargetLocked(name.removeprefix(fences.TARGET), writer, holder)

    # -- target keys -------------------------------------------------------------------

    def legacy_keys(self, job: str) -> bool:
        """True while `job` must create under unkeyed keys: its last run before the upgrade
        to keyed keys was interrupted, and no run has finished since (the interrupted run may
        have left records under unkeyed keys that only those keys find)."""
        ahead = self._known_ahead(job)
        if ahead is not None:
            return job in ahead.legacy
        query = sa.select(store_secrets.c.name).where(store_secrets.c.name == _legacy(job))
        with self._transaction() as conn:
            return conn.scalar(query) is not None

    def has_open_sets(self, job: str) -> bool:
        """Whether `job` has approval sets still open (waiting or approved)."""
        ahead = self._known_ahead(job)
        if ahead is not None:
            return job in ahead.open_sets
        query = sa.select(approval_sets.c.id).where(
            approval_sets.c.job == job, approval_sets.c.status.in_(OPEN_STATUSES)
        )
        with self._transaction() as conn:
            return conn.scalar(query.limit(1)) is not None

    def key_secret(self) -> bytes:
        """The secret this store generated for target keys (see :mod:`.keys`)."""
        query = sa.select(store_secrets.c.value).where(store_secrets.c.name == _TARGET_KEYS)
        with self._transaction() as conn:
            value = conn.scalar(query)
        if value is None:
            raise StateStoreError(
                f"the state store at {self.url} has lost its target-key secret",
                hint="Restore the store from a backup, or set network.key_secret in "
                "connector.yaml to the secret its target keys were made with.",
            )
        return bytes.fromhex(value)


_TARGET_KEYS = "target_keys"


def _new_ids(conn: Connection, insert: Any, rows: Sequence[dict[str, Any]]) -> list[int]:
    """The ids of `rows`, in order, inserted by `insert` (RETURNING the id in parameter
    order), one statement per 500 rows; on PostgreSQL one statement of arrays
    (:func:`bulk.insert_ids`)."""
    if dialect.is_pg(conn):
        return bulk.insert_ids(conn, insert.table, rows)
    ids: list[int] = []
    for chunk in chunks(rows):
        ids.extend(int(row[0]) for row in conn.execute(insert, chunk))
    return ids


def _new_id(key: Any) -> int:
    """The id of the row an insert of one row added."""
    if key is None:  # only for multi-row inserts, never here
        raise RuntimeError("the database returned no id for the new row")
    return int(key[0])


# Statements run for every job of a run, built once.
_NEW_RUN = sa.insert(runs)
_NEW_RUNS = sa.insert(runs).returning(runs.c.id, sort_by_parameter_order=True)
_NEW_INTENT = sa.insert(intents)
_NEW_INTENTS = sa.insert(intents).returning(intents.c.id, sort_by_parameter_order=True)
#: the id map's rows with their columns untyped (:meth:`StateStore.mapped_all`): no result
#: processing for rows never looked up (most, in an incremental run); MappedRows reads
#: `updated_at` with the column's own type (_UPDATED_AT)
_UNTYPED: list[sa.ColumnClause[Any]] = [sa.literal_column(c.name) for c in id_map.c]
_ID_MAP_UNTYPED: sa.Select[Any] = sa.select(*_UNTYPED).select_from(id_map)
_ID_MAP_IDS: sa.Select[Any] = sa.select(*_UNTYPED[:2]).select_from(id_map)  # job, source_id


def _as_array(query: sa.Select[Any]) -> sa.Select[Any]:
    """PostgreSQL: the one column of `query`'s rows as one array, in their order."""
    from sqlalchemy.dialects.postgresql import aggregate_order_by

    rows = query.subquery()
    column = next(iter(rows.c))
    return sa.select(sa.func.array_agg(aggregate_order_by(column, column)))


#: PostgreSQL: each job's source ids as one array (525,000 ids of 15,000 jobs: 0.3 s, where
#: a row per id took 0.6-0.9 s, measured with the driver alone)
_ID_MAP_ID_ARRAYS: sa.Select[Any] = sa.select(
    id_map.c.job, sa.func.array_agg(id_map.c.source_id)
).group_by(id_map.c.job)
_UPDATED_AT = cast(SecondTime, id_map.c.updated_at.type)
_FINISH_RUN = (
    runs.update()
    .where(runs.c.id == sa.bindparam("v_id"))
    .values(
        {
            c: sa.bindparam(f"v_{c}", type_=runs.c[c].type)
            for c in ("finished_at", "status", "counts", "error")
        }
    )
)
_FINGERPRINTS_OF = row_fingerprints.delete().where(row_fingerprints.c.job == sa.bindparam("v_job"))
_BLOCKS_OF = sa.select(fingerprint_blocks.c.digest).where(
    fingerprint_blocks.c.job == sa.bindparam("v_job")
)
_DROP_BLOCKS = fingerprint_blocks.delete().where(fingerprint_blocks.c.job == sa.bindparam("v_job"))
#: The columns of a job's row each kind of :meth:`StateStore._upsert_job` sets.
_JOB_COLUMNS = {
    "job state": {
        "policy_hash",
        "config_hash",
        "last_run_at",
        "last_success_at",
        "last_reconciled_at",
    },
    "cursor": {"cursor"},
}


def _upsert(table: sa.Table, key: str, columns: Iterable[str]) -> Callable[[Any], Any]:
    """An insert of `columns` into `table` (bound as ``v_<column>``) that updates them
    where the row of `key` is there already (for the backend's insert)."""

    def build(insert: Callable[[sa.Table], Any]) -> Any:
        names = [key, *columns]
        params = {c: sa.bindparam(f"v_{c}", type_=table.c[c].type) for c in names}
        stmt = insert(table).values(**params)
        return stmt.on_conflict_do_update(
            index_elements=[key], set_={c: stmt.excluded[c] for c in names if c != key}
        )

    return build


#: The writes a joined block may hold back (see StateStore._defer), by kind: each built
#: from the backend's insert. Fingerprint marks are upserted (a job's row replaced).
_DEFERRED: dict[str, Callable[[Callable[[sa.Table], Any]], Any]] = {
    "job state": _upsert(job_state, "job", sorted(_JOB_COLUMNS["job state"])),
    "cursor": _upsert(job_state, "job", ["cursor"]),
    "run end": lambda _: _FINISH_RUN,
    "fingerprints": _upsert(row_fingerprints, "job", ["cursor", "fingerprints"]),
    "no fingerprints": lambda _: _FINGERPRINTS_OF,
    "no blocks": lambda _: _DROP_BLOCKS,
}


#: From this many rows up, a PostgreSQL store writes the rows of many jobs held back of a
#: kind by one statement, not one per job: deletes by ``job = ANY(:jobs)`` (measured, 15,000
#: jobs in groups of 256: 0.56 s -> 0.18 s), job states and run ends from arrays
#: (:func:`~connector_core.sync.bulk.write_arrays`; through a temporary table they were no
#: faster than the driver's pipelined rows, 1.48 s against 1.58 s; from arrays, the whole
#: unchanged run of 15,000 partners went from 14.7-16.5 s to 11.8-14.0 s with the compile
#: change beside it).
_SET_WRITE = 16


def _set_delete(table: sa.Table) -> Callable[[Connection, list[dict[str, Any]]], None]:
    def write(conn: Connection, rows: list[dict[str, Any]]) -> None:
        jobs = [row["v_job"] for row in rows]
        conn.execute(table.delete().where(dialect.among(conn, table.c.job, jobs)))

    return write


#: The kinds of :data:`_DEFERRED` a PostgreSQL store writes for many jobs at once: the same
#: rows deleted as by the kind's statement once per job.
_SET_WRITES: dict[str, Callable[[Connection, list[dict[str, Any]]], None]] = {
    "no fingerprints": _set_delete(row_fingerprints),
    "no blocks": _set_delete(fingerprint_blocks),
    # the same rows written as the kind's statement writes them, by one statement of arrays
    "job state": lambda conn, rows: bulk.write_arrays(conn, job_state, "job", rows),
    "cursor": lambda conn, rows: bulk.write_arrays(conn, job_state, "job", rows),
    "run end": lambda conn, rows: bulk.write_arrays(conn, runs, "id", rows, update=True),
}


_DROP_ID_ROW = id_map.delete().where(
    id_map.c.job == sa.bindparam("v_job"), id_map.c.source_id == sa.bindparam("v_id")
)
_DROP_OWED = outstanding.delete().where(
    outstanding.c.job == sa.bindparam("v_job"), outstanding.c.source_id == sa.bindparam("v_id")
)


class _Behind:
    """The writes a joined block holds back: by kind, by key (see StateStore._defer); and
    the rows its recorded batches write (see :meth:`record`)."""

    def __init__(self) -> None:
        self.writes: dict[str, dict[Any, dict[str, Any]]] = {}
        self.ledger: list[dict[str, Any]] = []  # ledger rows to append, in order
        #: by (job id, source id): id map rows to delete, then rows to upsert
        self.id_gone: dict[tuple[int | None, str], None] = {}
        self.id_rows: dict[tuple[int | None, str], dict[str, Any]] = {}
        #: by (job, source id): outstanding rows to delete, then rows to upsert
        self.owed_gone: dict[tuple[str, str], None] = {}
        self.owed: dict[tuple[str, str], Outstanding] = {}
        self.intents_gone: list[int] = []  # the intents of the recorded batches
        #: intents written ahead, to insert (provisional id, row), in order
        self.intents: list[tuple[int, dict[str, Any]]] = []

    def empty(self) -> bool:
        """Whether nothing is held back."""
        return not (
            self.writes
            or self.ledger
            or self.id_gone
            or self.id_rows
            or self.owed_gone
            or self.owed
            or self.intents_gone
            or self.intents
        )

    def record(
        self,
        job: str,
        job_id: int | None,
        rows: Sequence[dict[str, Any]],
        gone: Sequence[str],
        intent: int | None,
        cleared: Iterable[str],
        failed: Sequence[Outstanding],
        now: dt.datetime,
    ) -> None:
        """Hold back what :meth:`StateStore.record_batch` writes of one batch: the id map
        rows it `gone`s and upserts (`rows`, their terms interned at the flush), its
        `intent`'s delete, the outstanding rows it `cleared` and those of the changes that
        `failed`.

        Flushed as deletes first, then upserts, each the latest write of its row; so the
        rows end as the batches' statements in turn would leave them: a row deleted then
        written is written afresh, a row written then deleted is deleted, a row written
        twice holds the second write (an outstanding row keeps the time it was first owed,
        as the upsert of the second would keep it)."""
        for source_id in gone:
            key = (job_id, source_id)
            self.id_rows.pop(key, None)
            self.id_gone[key] = None
        for row in rows:
            self.id_rows[(job_id, row["source_id"])] = row
        if intent is not None:
            self.intents_gone.append(intent)
        for source_id in cleared:
            owed_key = (job, source_id)
            self.owed.pop(owed_key, None)
            self.owed_gone[owed_key] = None
        for owed in failed:
            owed_key = (job, owed.source_id)
            earlier = self.owed.get(owed_key)
            since = earlier.since if earlier is not None else (owed.since or now)
            self.owed[owed_key] = dataclasses.replace(owed, since=since)

    def add(self, kind: str, key: Any, params: dict[str, Any], replaces: str = "") -> None:
        if replaces and replaces in self.writes:
            self.writes[replaces].pop(key, None)
        rows = self.writes.setdefault(kind, {})
        rows.pop(key, None)  # the latest last (its place among its kind's rows is moot)
        rows[key] = params


def _legacy(job: str) -> str:
    return f"legacy_keys:{job}"


def _intended(job: str, left: Iterable[Any]) -> list[Outstanding]:
    """The changes of intent rows an interrupted run left, as outstanding "sent" changes."""
    return [
        Outstanding(job, source_id, key, action, "sent", reason, since=intent.at)
        for intent in left
        for source_id, key, action, reason in intent.changes
    ]


def _check_keys(kept: Sequence[AppliedChange]) -> None:
    """Refuse a batch that gives two records one target key (no index checks it: keys are
    HMACs of job and source id, so only a bug could repeat one)."""
    if len({c.target_key for c in kept}) < len(kept):
        raise StateStoreError(
            "two records of one batch have the same target key; nothing was recorded",
            hint="This is a bug: please report it with the job's configuration.",
        )


def _id_row(
    job: int | None,
    change: AppliedChange,
    shape: Any,
    consent: Any,
    field_hashes: bytes | None,
    now: dt.datetime,
) -> dict[str, Any]:
    if change.projection_hash is None:
        raise ValueError(f"a {change.action} of {change.source_id!r} needs a projection_hash")
    known = change.projection_hash != UNKNOWN_HASH
    return {
        "job": job,
        "source_id": change.source_id,
        "target_key": pack_key(change.target_key),
        "projection_hash": pack_hash(change.projection_hash) if known else None,
        "shape": shape,
        "consent": consent,
        "field_hashes": field_hashes,
        "updated_at": now,
    }


class MappedRows(Mapping[str, Mapped]):
    """One job's id map rows as read, by source id: each made a :class:`Mapped` when first
    looked up, then kept (the same object on every look-up, as a dict of them would give)."""

    __slots__ = ("_job", "_made", "_read_time", "_rows", "_values")

    def __init__(
        self,
        job: str,
        rows: dict[str, Any],
        values: dict[int, Any],
        read_time: Callable[[Any], dt.datetime],
    ) -> None:
        self._job, self._rows, self._values, self._read_time = job, rows, values, read_time
        self._made: dict[str, Mapped] = {}

    def __getitem__(self, source_id: str) -> Mapped:
        made = self._made.get(source_id)
        if made is None:
            row = self._rows[source_id]
            values = self._values
            shape, consent = values[row.shape], values[row.consent]
            made = _as_mapped(row, self._job, shape, consent, self._read_time)
            self._made[source_id] = made
        return made

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, source_id: object) -> bool:
        return source_id in self._rows


def _as_mapped(
    row: Any,
    job: str,
    shape: dict[str, Any],
    consent: dict[str, Any],
    read_time: Callable[[Any], dt.datetime] | None = None,
) -> Mapped:
    """The id map row `row` of `job` (its `shape` and `consent` terms read) as the API gives
    it; `read_time` reads `updated_at` when the row was read untyped."""
    digest = row.projection_hash
    return Mapped(
        job=job,
        source_id=row.source_id,
        target_key=unpack_key(row.target_key),
        projection_hash=UNKNOWN_HASH if digest is None else unpack_hash(digest),
        fields=dict(shape["fields"]),  # copies: the term's value is cached and shared
        consent_basis={k: dict(v) if isinstance(v, dict) else v for k, v in consent.items()},
        policy_hash=shape["policy_hash"],
        updated_at=row.updated_at if read_time is None else read_time(row.updated_at),
        field_hashes=unpack_field_hashes(shape, row.field_hashes),
    )


def _ledger_row(
    job: str, target: str, policy: str, policy_hash: str, change: AppliedChange, now: dt.datetime
) -> dict[str, Any]:
    return {
        "at": now,
        "job": job,
        "target": target,
        "record_key": change.target_key,
        "source_id": change.source_id,
        "action": change.action,
        "fields": change.fields,
        "policy": policy,
        "policy_hash": policy_hash,
        "consent_basis": change.consent_basis,
        "approvals": list(change.approvals),
        "reason": change.reason,
    }


def _utc(now: dt.datetime | None) -> dt.datetime:
    return dt.datetime.now(dt.UTC) if now is None else _aware(now)


def _aware(value: dt.datetime | None) -> Any:
    if value is not None and value.tzinfo is None:
        raise ValueError(f"a naive datetime cannot be stored: {value!r} (give it a time zone)")
    return value


class SavedBlocks:
    """The blocks of rows a complete read left (:class:`~connector_core.adapters.KnownBlocks`),
    to keep with its cursor: the digests of kept blocks (found unchanged: their stored rows
    stay) and the new ones, each (digest, ids joined by newlines, packed fingerprints, the
    digests of its parts or None)."""

    def __init__(self) -> None:
        self.kept: list[bytes] = []
        self.new: list[tuple[bytes, bytes, bytes, bytes | None]] = []

    def add(
        self, digest: bytes, ids: Sequence[str], fingerprints: Iterable[int], parts: bytes = b""
    ) -> None:
        """Keep a new block: its rows' ids and fingerprints, in order, and its parts'
        digests (:attr:`~connector_core.adapters.Block.parts`)."""
        joined = "\n".join(ids).encode("utf-8", "surrogateescape")
        self.new.append((digest, joined, _packed(fingerprints), parts or None))


def split_ids(joined: bytes) -> list[str]:
    """The ids of a block as :meth:`StateStore.block_ids` gives them."""
    return joined.decode("utf-8", "surrogateescape").split("\n") if joined else []


def _packed(values: Iterable[int]) -> bytes:
    """Fingerprints as little-endian uint64, 8 bytes each, in order."""
    packed = array.array("Q", values)
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


def _unpacked(blob: bytes) -> array.array[int]:
    values = array.array("Q")
    values.frombytes(blob)
    if sys.byteorder == "big":
        values.byteswap()
    return values


class _Ahead:
    """What :meth:`StateStore.read_ahead` reads, for the jobs still in `jobs`: each kind
    read for all of them on `conn` (the joined block's) when first asked for. A job leaves
    `jobs` when a write through the store may change what was, or would be, read of it, so
    what is read later is what would have been read at once."""

    def __init__(self, conn: Connection, names: list[str]) -> None:
        self.jobs = set(names)
        self._conn = conn
        self._names = names
        self._read: dict[str, Any] = {}

    def _get(self, kind: str) -> Any:
        found = self._read.get(kind)
        if found is None:
            found = self._read[kind] = _AHEAD_READS[kind](self._conn, self._names)
        return found

    @property
    def states(self) -> dict[str, JobState]:
        return cast(dict[str, JobState], self._get("states"))

    @property
    def owed(self) -> dict[str, list[Any]]:
        return cast(dict[str, list[Any]], self._get("owed"))

    @property
    def left(self) -> dict[str, list[Any]]:
        """The intents each job's interrupted runs left."""
        return cast(dict[str, list[Any]], self._get("left"))

    @property
    def fingerprinted(self) -> set[tuple[str, str]]:
        return cast(set[tuple[str, str]], self._get("fingerprinted"))

    @property
    def legacy(self) -> set[str]:
        """The jobs using unkeyed keys (see :meth:`StateStore.legacy_keys`)."""
        return cast(set[str], self._get("legacy"))

    @property
    def running(self) -> set[str]:
        """The jobs with a run "running"."""
        return cast(set[str], self._get("running"))

    @property
    def open_sets(self) -> set[str]:
        """The jobs with open approval sets (see :meth:`StateStore.has_open_sets`)."""
        return cast(set[str], self._get("open_sets"))


def _read_states(conn: Connection, names: list[str]) -> dict[str, JobState]:
    return {
        row.job: JobState(**row._mapping)
        for chunk in chunks(names)
        for row in conn.execute(
            sa.select(job_state).where(dialect.among(conn, job_state.c.job, chunk))
        )
    }


def _read_by_job(table: sa.Table) -> Callable[[Connection, list[str]], dict[str, list[Any]]]:
    def read(conn: Connection, names: list[str]) -> dict[str, list[Any]]:
        found: dict[str, list[Any]] = {}
        for chunk in chunks(names):
            for row in conn.execute(
                sa.select(table).where(dialect.among(conn, table.c.job, chunk))
            ):
                found.setdefault(row.job, []).append(row)
        return found

    return read


def _read_fingerprinted(conn: Connection, names: list[str]) -> set[tuple[str, str]]:
    marks = sa.select(row_fingerprints.c.job, row_fingerprints.c.cursor)
    return {
        (job, cursor)
        for chunk in chunks(names)
        for job, cursor in conn.execute(
            marks.where(dialect.among(conn, row_fingerprints.c.job, chunk))
        )
    }


def _read_legacy(conn: Connection, names: list[str]) -> set[str]:
    found: set[str] = set()
    for chunk in chunks(names):
        legacy = {_legacy(job): job for job in chunk}
        marked = sa.select(store_secrets.c.name).where(
            dialect.among(conn, store_secrets.c.name, legacy)
        )
        found.update(legacy[name] for name in conn.scalars(marked))
    return found


def _read_jobs_with(table: sa.Table, row: Any) -> Callable[[Connection, list[str]], set[str]]:
    """A reader of those jobs that have a row of `table` matching `row` (a condition)."""

    def read(conn: Connection, names: list[str]) -> set[str]:
        found: set[str] = set()
        for chunk in chunks(names):
            query = (
                sa.select(table.c.job)
                .where(dialect.among(conn, table.c.job, chunk), row)
                .distinct()
            )
            found.update(conn.scalars(query))
        return found

    return read


#: how :class:`_Ahead` reads each kind, for many jobs
_AHEAD_READS: dict[str, Callable[[Connection, list[str]], Any]] = {
    "states": _read_states,
    "owed": _read_by_job(outstanding),
    "left": _read_by_job(intents),
    "fingerprinted": _read_fingerprinted,
    "legacy": _read_legacy,
    "running": _read_jobs_with(runs, runs.c.status == "running"),
    "open_sets": _read_jobs_with(approval_sets, approval_sets.c.status.in_(OPEN_STATUSES)),
}


def _owed(job: str, rows: Iterable[Any], left: Iterable[Any]) -> dict[str, Outstanding]:
    """The outstanding changes of `job`: its outstanding `rows`, and the changes of the
    intents an interrupted run `left` (as "sent")."""
    found = {row.source_id: Outstanding(**row._mapping) for row in rows}
    for sent in _intended(job, left):
        found.setdefault(sent.source_id, sent)
    return found
