"""Running a job: read the source, plan with the policy, write the target, record each batch.

:func:`run_job` keeps the mirror promise of DESIGN.md §8:

- A run reads what changed since the job's cursor. It reads everything (a *full* run) on
  the first run, after the policy or either connection's mapping or settings changed, when
  changes are outstanding from an earlier run, and when reconciliation is due
  (``options.reconcile_every``, default daily) or forced. A source with row fingerprints
  (``Capability.ROW_FINGERPRINTS``) lists every row on a changed read but decodes only the
  rows that changed since the cursor, and decodes outstanding changes alone instead of a
  full read; a full run decodes every row.
- Changes go to the target in batches. Before a batch is sent, its keys and actions are
  written ahead (the intent log, :meth:`StateStore.write_ahead`) in their own transaction;
  after the target answered, what it acknowledged is recorded (id map, ledger, and the
  cursor once every change before it is recorded) in one transaction, which clears them.
  A run killed between the two leaves the batch *outstanding*: the next run re-decides
  exactly those records, whatever the source says by then, at the cost of that one batch.
- Outcomes are the target's: counts, the id map and ledger rows follow what the target
  acknowledged (created, updated, unchanged, deleted), never the plan. A change the target
  rejected stays outstanding ("failed") and is tried again by the next run; the run exits 1
  while any change is outstanding.
- The mass-delete guard: deletes that are not explicit withdrawals (out of scope, missing at
  the source, no consent evidence) wait until the whole source is read; if there are more
  than the job's ``max_delete`` (default: more than 10 and more than 10% of what the job
  holds), or the read was empty, none of them is written: they are held ("held"), and the
  run exits 5 until a person accepts them (``accept_deletes``). Withdrawals go through.
- An adapter error (outage, refused credentials) stops the run: what was recorded stays
  recorded, and the next run resumes from the stored cursor.
- The batches go to one write session per run (:meth:`Adapter.open_writes`), opened at the
  first batch that changes anything and committed after the last. A *deferred* session (a
  file written once per run) answers each batch provisionally: its batches are written ahead
  as usual, but recorded (id map, ledger, cursor, counts) only once the commit succeeded;
  meanwhile their outcomes wait in a temporary spool (:mod:`connector_core.sync.deferred`),
  not in memory. A run stopped before the commit leaves them all outstanding, as a killed
  run leaves one batch.

A run is a page consumer: :meth:`_Run.begin` (full or incremental, and from which cursor),
:meth:`_Run.feed` per page, :meth:`_Run.end` after the last, :meth:`_Run.finish`.
:func:`run_job` feeds a run from its own read; :func:`connector_core.sync.fanout.run_jobs`
feeds the runs of many jobs from one read of their shared source, each page decided for all
of them at once (:class:`DecidedPage`), every job keeping its own cursor, state and result.

Field values never reach a log line, an exception or :class:`RunResult`; source ids are
logged at DEBUG only.
"""

from __future__ import annotations

import array
import contextlib
import dataclasses
import datetime as dt
import functools
import gc
import logging
import operator
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal

from connector_core.adapters import (
    Adapter,
    Capability,
    KnownRows,
    Page,
    WriteResult,
    WriteSession,
)
from connector_core.errors import AdapterError, ConnectorError, ExitCode, RecordRejected
from connector_core.policy.compiler import Decision
from connector_core.query import Condition
from connector_core.records import FIELDS, Record, storable, usable_id
from connector_core.scrub import scrub_values
from connector_core.sync.approvals import ApprovalStage, lapse_open_sets, request_approvals
from connector_core.sync.batches import Batches
from connector_core.sync.blocks import BlockKeeper, StoredBlocks
from connector_core.sync.deferred import Spool
from connector_core.sync.dialect import chunks
from connector_core.sync.job import LoadedJob, full_reasons
from connector_core.sync.model import (
    UNKNOWN_HASH,
    AppliedChange,
    JobState,
    Mapped,
    Outstanding,
    OutstandingStatus,
    RunCounts,
)
from connector_core.sync.planner import (
    MISSING_AT_SOURCE,
    PagePlan,
    PlannedChange,
    Planner,
    Step,
)
from connector_core.sync.state import KEEP, StateStore

__all__ = ["DecidedPage", "JobRun", "PlannedChange", "RunResult", "new_run", "run_job", "seen_ids"]

log = logging.getLogger("connector.sync")

#: Why a record is deleted when a read filtered by the policy (pushdown) did not list it.
MISSING_FROM_FILTERED_READ = "missing-or-out-of-scope"
#: Always read: a record deleted at the source must be taken back whatever the policy tests.
_ALWAYS_READ = frozenset({"id", "deleted"})


def read_fields(job: LoadedJob) -> frozenset[str]:
    """The fields a read for `job` fetches: what its policy tests and shares, id, deleted."""
    decision, shared = job.policy.read_fields
    return decision | shared | _ALWAYS_READ


@dataclasses.dataclass
class RunResult:
    """What one run did.

    ``planned`` lists the changes of a dry run (empty otherwise); ``failures`` holds one
    line per rejected record (source id and error, never field values); ``problems`` the
    read problems (location, key, column and what was expected, never a value); ``aborted``
    why the run stopped early, with ``error`` the exception (its ``hint`` says what to do);
    ``full`` whether the whole source was read, and ``full_reasons`` why.
    """

    job: str
    counts: RunCounts
    planned: list[PlannedChange] = dataclasses.field(default_factory=list)
    failures: list[str] = dataclasses.field(default_factory=list)
    aborted: str | None = None
    full: bool = False
    full_reasons: list[str] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)
    dry_run: bool = False
    error: ConnectorError | None = None
    held: str | None = None  # why deletes were held back, and how to accept them
    #: what the approval stage did: sets waiting, escalated, decided, expired, released
    approvals: list[str] = dataclasses.field(default_factory=list)
    #: a dry run's changes that would wait for approval (with their masked projections)
    awaiting: list[PlannedChange] = dataclasses.field(default_factory=list)

    @property
    def exit_code(self) -> ExitCode:
        """DESIGN §10: the error's code if the run stopped, 5 if deletes were held back,
        1 if records failed or changes are outstanding, else 0."""
        if self.error is not None:
            return self.error.exit_code
        if self.counts.held:
            return ExitCode.DELETES_HELD
        if self.counts.failed or self.counts.problems or self.counts.outstanding:
            return ExitCode.RECORDS_FAILED
        return ExitCode.OK


def run_job(
    job: LoadedJob,
    store: StateStore,
    *,
    dry_run: bool = False,
    reconcile: bool | None = None,
    batch_size: int | None = None,
    progress: Callable[[int], None] | None = None,
    now: dt.datetime | None = None,
    lock: bool = True,
    accept_deletes: int = 0,
) -> RunResult:
    """Run `job` once against `store`; the adapters stay open (see :meth:`LoadedJob.close`).

    Args:
        job: the loaded job.
        store: the state store.
        dry_run: plan only: write nothing to the target or the state; the result lists the
            planned changes. A dry run does not take the job's lock.
        reconcile: True forces a full read that also finds records deleted at the source;
            False skips the periodic one; None (default) reconciles when it is due.
        batch_size: changes per target write and state transaction (default: the job's
            ``batch_size`` option, else the target connection's ``page_size``).
        progress: called with the number of records of each page read.
        now: the run's time (default: now, UTC).
        lock: hold the job's lock and its target's (``store.lock``) for a real run; pass
            False only when the caller holds them already (the locks are not reentrant).
        accept_deletes: write up to this many deletes that the mass-delete guard would
            hold back (a person checked them).

    Raises:
        JobLocked: another process is running this job.
        TargetLocked: another job is writing this job's target connection.
    """
    run = new_run(
        job,
        store,
        dry_run=dry_run,
        batch_size=batch_size,
        progress=progress,
        now=now,
        accept_deletes=accept_deletes,
    )
    if dry_run or not lock:
        return run.execute(reconcile)
    with store.lock(job.name, target=job.config.target):
        return run.execute(reconcile)


def new_run(
    job: LoadedJob,
    store: StateStore,
    *,
    dry_run: bool = False,
    batch_size: int | None = None,
    progress: Callable[[int], None] | None = None,
    now: dt.datetime | None = None,
    accept_deletes: int = 0,
) -> JobRun:
    """One run of `job`, not started: for a caller that feeds it pages itself (a group of
    jobs sharing one read, :mod:`connector_core.sync.fanout`); the arguments are
    :func:`run_job`'s. The caller holds the locks."""
    return _Run(
        job,
        store,
        dry_run=dry_run,
        batch_size=batch_size or job.options.batch_size or job.target.page_size,
        progress=progress,
        now=now,
        accept_deletes=accept_deletes,
    )


@dataclasses.dataclass
class DecidedPage:
    """One job's part of a page that a group of jobs decided at once (see
    :mod:`connector_core.sync.fanout`).

    ``identified`` holds the page's records that have an id (one list for the group);
    ``records`` those of them this job must plan, in page order: the ones its policy may
    share, the ones its id map or its outstanding changes hold, and records deleted at the
    source; ``decide`` gives their decisions, equal to the job's own ``evaluate``; every
    other record is withheld by the job, with no change, and ``withheld`` counts them by
    reason."""

    identified: list[Record]
    records: list[Record]
    decide: Callable[[Record], tuple[Decision, Record | None]]
    withheld: Mapping[str, int]
    #: ids of `records` the job's id map cannot hold (no id map lookup needed)
    unheld: frozenset[str] = frozenset()
    #: id map rows of `records` read ahead, current (no lookup needed either)
    mapped: Mapping[str, Mapped] = dataclasses.field(default_factory=dict)


class _Run:
    """The mutable state of one run; :meth:`execute` is the whole of it.

    A run is also a page consumer, so that one read can feed several jobs: :meth:`begin`
    (returns the cursor this job would read from, None for a full read), then
    :meth:`feed` for each page, :meth:`end` after the last one (or :meth:`read_failed` when
    the source failed), and :meth:`finish`, which records the run and returns its result.
    A ConnectorError from any of them is the job's alone: pass it to :meth:`abort`.
    """

    def __init__(
        self,
        job: LoadedJob,
        store: StateStore,
        *,
        dry_run: bool,
        batch_size: int,
        progress: Callable[[int], None] | None,
        now: dt.datetime | None,
        accept_deletes: int = 0,
    ) -> None:
        self.job = job
        self.store = store
        self.dry_run = dry_run
        self.progress = progress
        self.now = now or dt.datetime.now(dt.UTC)
        self.recorded_at = now  # None: the ledger notes when each batch is recorded
        self.result = RunResult(job.name, RunCounts(), dry_run=dry_run)
        legacy = store.legacy_keys(job.name)  # interrupted before keyed keys and intents
        self.legacy = legacy
        self.planner = Planner(
            job.name,
            job.policy,
            keys=job.target_keys(store.key_secret, legacy=legacy),
            salt=job.target_hash,
            with_diff=dry_run,
            cleanup=legacy and not dry_run,
            approvals=request_approvals(store.approvals(), store.share_requests(), job.name),
        )
        self.batches = Batches(self.write, batch_size)
        self.stage = _approval_stage(job, store, self.now, dry_run)  # None: nothing waits
        self.waiting: frozenset[str] = frozenset()  # source ids held for approval
        self.session: WriteSession | None = None  # opened by the first batch with changes
        self.unrecorded: Spool[_Outcome] = Spool()  # a deferred session's uncommitted batches
        self.accept_deletes = accept_deletes
        self.owed: dict[str, Outstanding] = {}  # outstanding from earlier runs, by source id
        self.touched: set[str] = set()  # owed source ids this run's read decided again
        self.deferred: list[Step] = []  # deletes the mass-delete guard decides on at the end
        self._holdings: int | None = None  # see `holdings`
        self.recorded = False  # this run recorded changes in the id map
        self.run_id: int | None = None
        self._begun: JobState | None = None  # the job's state as the run began
        self.seen: set[str] | None = set()  # ids a complete read listed; None once it is not
        self.seen_whole: list[Collection[str]] = []  # and those of its unchanged blocks
        self.own_seen = True  # False when a group keeps `seen` for all its jobs
        self.filtered = False  # the read was filtered by the policy (pushdown)
        self.pages = 0
        self.held: str | None = None  # the last page's cursor waits for the deletes of missing ids
        self.unidentified = 0  # unreadable records without a key: nobody counts as missing
        #: the source ids the id map held as the run began, when a group read them ahead (the
        #: ones a complete read did not list are taken back; ids mapped since were listed)
        self.held_ahead: Collection[str] | None = None
        # row fingerprints (Capability.ROW_FINGERPRINTS), see _known_rows
        self.known: KnownRows | None = None  # what the read may skip
        self.fingerprints: array.array[int] | None = None  # this read's, for its last cursor
        self.blocks: BlockKeeper | None = None  # this read's blocks (and loose fingerprints)
        self.final_cursor: str | None = None  # the last cursor of a complete read
        self.skipped = 0  # rows the read did not decode (unchanged since the cursor)
        #: the cursor whose decided rows a group's read may skip for this job: its cursor,
        #: when its last run read to the end and nothing but the rows themselves decides
        #: (see _known_rows); None: decode every row
        self.skip_from: str | None = None
        #: ids of the records the policy could not decide (a group shares one set)
        self.rejected: set[str] = set()
        #: our own words in errors, never scrubbed as record values (see :meth:`fail`)
        self.own_words = (
            job.name,
            job.policy.name,
            job.config.source,
            job.config.target,
            job.source.connection,
            job.target.connection,
            *FIELDS,
        )

    @property
    def counts(self) -> RunCounts:
        """The run's counts, updated as it goes."""
        return self.result.counts

    def execute(self, reconcile: bool | None) -> RunResult:
        """Run: decide full or incremental, sync, then record the run and the job's state."""
        cursor = self.begin(reconcile)
        try:
            with fewer_collections():
                self._sync(cursor)
        except ConnectorError as exc:
            self.abort(exc)
        except BaseException as exc:
            self.crashed(exc)
            raise
        return self.finish()

    def begin(self, reconcile: bool | None, *, start: bool = True) -> str | None:
        """Start: adopt interrupted intents, decide full or incremental, note the run
        (unless not `start`: then the caller notes it with :meth:`started`, as a group
        notes all its runs at once).

        Returns the cursor to read from, None when the whole source must be read."""
        state = self.store.job_state(self.job.name)
        self.owed = self.store.outstanding(self.job.name)
        # A batch sent but not recorded is read again from the cursor; failed and held
        # changes were passed by the cursor, so only a full read decides them again, also
        # when an interrupted run had sent them again (its intents would make them "sent").
        passed = sum(o.status != "sent" for o in self.owed.values())
        if not self.dry_run and self.store.adopt_intents(self.job.name):
            self.owed = self.store.outstanding(self.job.name)
        if self.stage is not None:  # held changes are decided again, like outstanding ones
            self.waiting = self.stage.begin()
        elif not self.dry_run and self.store.has_open_sets(self.job.name):
            # no approval asked (any more): no set waits
            self.result.approvals = lapse_open_sets(self.store.approvals(), self.job.name, self.now)
        waiting = len(self.waiting - self.owed.keys())
        reasons = full_reasons(self.job, state, reconcile, self.now, passed, waiting)
        reasons, selective = self._known_rows(state, reasons, reconcile)
        self.result.full, self.result.full_reasons = bool(reasons), reasons
        # A full run to a target that compares before writing sends the unchanged shares too,
        # so that edits made at the target by others are put right (reconciliation).
        self.planner.verify = bool(reasons) and (
            Capability.VERIFIES_CONTENT in self.job.target.capabilities
        )
        self.batches.saved = state.cursor
        self._begun = state
        if start:
            self.started(None if self.dry_run else self.store.start_run(self.job.name))
        return None if reasons or selective else state.cursor

    def started(self, run_id: int | None) -> None:
        """The run was noted as `run_id` (None: a dry run, noted nowhere): note when it
        began in the job's state."""
        self.run_id = run_id
        if run_id is not None:
            assert self._begun is not None, "started before begin"
            self.store.set_job_state(dataclasses.replace(self._begun, last_run_at=self.now))

    @property
    def holdings(self) -> int:
        """How many records the job held in its target when the run began.

        Counted when first asked (a scan of the job's id map, which a run reading nothing
        new never needs), at the latest just before the run records anything (the job's
        lock keeps other runs from changing its id map meanwhile)."""
        if self._holdings is None:
            self._holdings = self.store.mapped_count(self.job.name)
        return self._holdings

    def holdings_are(self, count: int) -> None:
        """What :attr:`holdings` counts, counted for many jobs at once before this run
        recorded anything."""
        if self._holdings is None and not self.recorded:
            self._holdings = count

    def crashed(self, exc: BaseException) -> None:
        """Note an unexpected error (a bug, an interrupt) in the run's row; the caller re-raises."""
        self._close_writes()
        if self.run_id is not None:
            error = f"internal error: {type(exc).__name__}"
            self.store.finish_run(self.run_id, status="aborted", counts=self.counts, error=error)

    def finish(self) -> RunResult:
        """Record the run (and, unless it was stopped, the job's state); return its result."""
        self._close_writes()  # a session still open here was not committed: the run stopped
        if self.stage is not None:
            if self.result.aborted is None:
                self.stage.settle()
            self.result.approvals, self.result.awaiting = self.stage.messages, self.stage.awaiting
            self.counts.awaiting = len(self.stage.held) - self.stage.released
        if self.run_id is not None:
            self.counts.outstanding = len(self.store.outstanding(self.job.name))
            if self.result.aborted is None:
                self._save_state()
            self.store.finish_run(
                self.run_id, status=self._status(), counts=self.counts, error=self.result.aborted
            )
        self._log_summary()
        self.batches.close()  # reference counting frees the run once it is dropped
        return self.result

    def _sync(self, cursor: str | None) -> None:
        fields, where = self.query(cursor is None)
        self.filtered = where is not None
        read: Callable[..., Iterator[Page]] = self.job.source.read
        known = {} if self.known is None else {"known": self.known}
        reader = checked_pages(
            read(cursor=cursor, fields=fields, where=where, **known), self.job.source
        )
        while (page := self._next_page(reader)) is not None:
            self.feed(page)
        self.end()

    def feed(self, page: Page, decided: DecidedPage | None = None) -> None:
        """Take one page of the read: decide it and queue its changes. Its cursor is stored
        once they are recorded (and the last one once the whole read is settled)."""
        self._enter(page)
        self._page(page, decided)
        self.held, self.pages = page.cursor, self.pages + 1

    def _enter(self, page: Page) -> None:
        """The previous page's cursor may be stored; the page's ids are seen."""
        if self.held is not None:
            self.batches.mark(self.held)
        if not page.snapshot:
            self.seen = None
        elif self.seen is not None and self.own_seen and self._may_miss():
            self.seen.update(seen_ids(page))
            if page.unchanged and self.known is not None and self.known.blocks is not None:
                self.seen_whole.append(self.known.blocks.ids(page.unchanged))  # not copied
        self.skipped += len(page.skipped)

    def pass_page(self, page: Page, withheld: Mapping[str, int]) -> None:
        """Take a page of a group's read in which this job has nothing to plan (it may
        share, holds and owes none of its records, none was deleted, and the page reports no
        problem; see :mod:`connector_core.sync.fanout`): what :meth:`feed` does with such a
        page, without planning it. `withheld` counts its records by reason."""
        self._enter(page)
        self.counts.read += len(page.records)
        counted = self.counts.withheld
        for reason, n in withheld.items():
            counted[reason] = counted.get(reason, 0) + n
        if self.progress is not None:
            self.progress(len(page.records))
        self.held, self.pages = page.cursor, self.pages + 1

    def pass_pages(
        self,
        pages: int,
        mark: str | None,
        cursor: str | None,
        read: int,
        skipped: int,
        withheld: Mapping[str, int],
        *,
        snapshot: bool,
    ) -> None:
        """:meth:`pass_page` for `pages` pages in a row at once (a group's job that had
        nothing in any of them): `mark` the cursor of the last of them but the final one
        that had a cursor (None: none had), `cursor` the final one's, `read` and `skipped`
        their records, `withheld` their counts by reason; `snapshot` False when one of
        them was not a snapshot."""
        mark = self.held if mark is None else mark
        if mark is not None:  # the marks of the pages in turn: each later one replaces
            self.batches.mark(mark)
        if not snapshot:
            self.seen = None
        self.skipped += skipped
        self.counts.read += read
        counted = self.counts.withheld
        for reason, n in withheld.items():
            counted[reason] = counted.get(reason, 0) + n
        if self.progress is not None:
            self.progress(read)
        self.held, self.pages = cursor, self.pages + pages

    def end(self, *, commit: bool = True) -> None:
        """After the last page: take back what a complete read missed, settle what an
        interrupted run left, let the mass-delete guard decide, write the rest (unless not
        `commit`: then all but the target's commit and what waits for it, left to
        :meth:`commit`, as a group ends all its jobs' writes before it commits any)."""
        seen = self.seen
        if seen is not None and self.pages and not self.unidentified and self._may_miss():
            self._missing(seen, MISSING_FROM_FILTERED_READ if self.filtered else MISSING_AT_SOURCE)
        self._untouched()
        if self.stage is not None:
            self._take(self.stage.end())  # the approved sets' changes
        self._guard(empty=self.counts.read == 0 and not self.skipped)
        if not self.dry_run:
            self.batches.unblock()
            self.final_cursor = self.held
            self.batches.finish(self.held)
            if commit:
                self._commit()

    def commit(self, *, committed: bool = False) -> None:
        """After :meth:`end` without its commit: commit the target's writes (unless the
        group `committed` them, see :meth:`to_commit`), record them."""
        if not self.dry_run:
            self._commit(committed)

    def to_commit(self) -> WriteSession | None:
        """After :meth:`end` without its commit: the write session :meth:`commit` would
        commit (None: none), for a group that commits its jobs' sessions together
        (:meth:`WriteSession.commit_many`) once their intents are durable, then calls
        :meth:`commit` with ``committed``."""
        return None if self.dry_run else self.session

    def _mapped(self, ids: list[str]) -> dict[str, Mapped]:
        """The id map rows of `ids`; none looked up while the id map holds nothing but what
        this run recorded, and it recorded nothing yet (a first run to a deferred target:
        a lookup per page of a million records, all in vain)."""
        if not ids or (self.holdings == 0 and not self.recorded):
            return {}
        return self.store.mapped(self.job.name, ids)

    def _may_miss(self) -> bool:
        """Whether a complete read may miss a record the id map holds: not when the job held
        nothing when the run began (a first run), as every record it maps since was listed
        by this read; then its own `seen` is not kept (a million ids, on a first run)."""
        return self.holdings > 0 or not self.own_seen

    def read_failed(self) -> None:
        """The source failed: record the work of the pages read (then :meth:`abort`)."""
        if not self.dry_run:
            self._finish(self.held)

    def _next_page(self, reader: Iterator[Page]) -> Page | None:
        """The next page; when the source fails, first record the work of the pages read."""
        try:
            return next(reader, None)
        except ConnectorError:
            self.read_failed()
            raise

    def query(self, full: bool) -> tuple[frozenset[str], Condition | None]:
        """The fields to fetch and, on a full read from a pushdown source, the filter."""
        pushdown = self.job.policy.pushdown
        pushes = Capability.PUSHDOWN in self.job.source.capabilities
        # An incremental read must see the records that left the scope, so it is not filtered.
        return read_fields(self.job), pushdown.condition if full and pushes else None

    def _page(self, page: Page, decided: DecidedPage | None = None) -> None:
        self.counts.read += len(page.records)
        self._problems(page)
        records = _identified(page) if decided is None else decided.identified
        if len(records) < len(page.records):
            self.counts.problems += len(page.records) - len(records)
            self.unidentified += len(page.records) - len(records)
            missing = f"{self.job.source.connection}: a record without a usable id"
            self.result.problems.append(missing)
        if decided is not None:  # the group decided the page: plan only what may change
            records = list(decided.records)
            for reason, n in decided.withheld.items():
                self.counts.withheld[reason] = self.counts.withheld.get(reason, 0) + n
        records += self._refused_while_held(page)
        ids = [str(r["id"]) for r in records]
        if decided is not None:  # what the group knows of the id map needs no lookup
            lookup = [i for i in ids if i not in decided.unheld and i not in decided.mapped]
            mapped = {**decided.mapped, **self._mapped(lookup)}
        else:
            mapped = self._mapped(ids)
        owed = [sid for sid in ids if sid in self.owed]
        for source_id in owed:
            mapped[source_id] = self._uncertain(self.owed[source_id], mapped.get(source_id))
        self.touched.update(owed)
        decide = None if decided is None else decided.decide
        plan = self.planner.plan_page(records, mapped, decide)
        self._count(plan)
        self._keep_fingerprints(page, plan)
        steps = plan.steps if self.stage is None else self._approve(self.stage, plan.steps)
        self._take(steps)
        self._settle_held(owed, steps)
        if self.progress is not None:
            self.progress(len(page.records))

    # -- row fingerprints (Capability.ROW_FINGERPRINTS) ----------------------------------

    def _known_rows(
        self, state: JobState, reasons: list[str], reconcile: bool | None
    ) -> tuple[list[str], bool]:
        """What a ``row_fingerprints`` source may skip; returns the run's full reasons and
        whether outstanding changes are decoded selectively instead of by a full read.

        Rows decided at the job's cursor (their fingerprints, saved with it) are skipped when
        unchanged, if the run is incremental or full only because changes are outstanding:
        those are then decoded again whatever their fingerprint (``KnownRows.decode``), the
        unchanged rest skipped. Any reason that changes decisions (first run, policy or
        connections changed, reconciliation, unkeyed legacy keys) decodes every row; every
        read reports the fingerprints, which the batch storing its last cursor saves.
        """
        if Capability.ROW_FINGERPRINTS not in self.job.source.capabilities:
            return reasons, False
        self.blocks = BlockKeeper()
        self.fingerprints = self.blocks.loose
        self.known = KnownRows()
        decisive = full_reasons(self.job, state, reconcile, self.now)  # without the owed
        if decisive or self.legacy:
            return reasons, False
        if not self.store.has_fingerprints(self.job.name, state.cursor):
            return reasons, False
        # Its last run read the source to its end at this cursor (its fingerprints, or the
        # empty ones a group's job keeps: the group's are kept once for all).
        self.skip_from = state.cursor
        # loaded only if the source asks: an unchanged file needs none of them
        stored = Loaded(functools.partial(self.store.fingerprints, self.job.name, state.cursor))
        decode = frozenset(self.owed) | self.waiting
        blocks = StoredBlocks(self.store, self.job.name, decode)
        self.known = KnownRows(stored, decode, blocks)
        return [], bool(reasons)

    def _keep_fingerprints(self, page: Page, plan: PagePlan) -> None:
        """The page's fingerprints and blocks, but for records the policy could not decide;
        the rows of its unchanged blocks count as read without decoding (skipped)."""
        if self.blocks is None or self.fingerprints is None:
            return
        known = None if self.known is None else self.known.blocks
        unchanged = page.unchanged
        count = None if known is None else (lambda: len(known.ids(unchanged)))
        rejected = (source_id for source_id, _, _ in plan.rejected)
        self.skipped += self.blocks.keep(page, rejected, count)

    # -- problems ------------------------------------------------------------------------

    def _refused_while_held(self, page: Page) -> list[Record]:
        """Held records (conflicting evidence) of which some piece refuses a purpose this job needs.

        The refusal is stated, so it goes through: the record is decided on its consent
        alone, which withholds it. Any other held record is neither shared nor taken back."""
        needed = self.planner.purposes
        return [
            {"id": p.key, "consent": dict(p.consent)}
            for p in page.problems
            if usable_id(p.key) and p.consent and any(_refuses(p.consent.get(q)) for q in needed)
        ]

    def _problems(self, page: Page) -> None:
        """Report what the source could not read. Never delete on absent evidence: an
        unreadable record was seen (the target keeps what it has); one without a key could
        be anybody, so then no record counts as missing at the source in this run."""
        for problem in page.problems:
            self.counts.problems += 1
            self.result.problems.append(str(problem))
            if not usable_id(problem.key):  # none, or none a store can hold
                self.unidentified += 1
            log.warning(
                "job %s: could not read the record at %s",
                self.job.name,
                problem.location,
                extra={"job": self.job.name},
            )

    def _count(self, plan: PagePlan) -> None:
        self.counts.shared += plan.shared
        self.counts.unchanged += plan.unchanged
        for reason, n in plan.withheld.items():
            self.counts.withheld[reason] = self.counts.withheld.get(reason, 0) + n
        for source_id, error, record in plan.rejected:
            self.rejected.add(source_id)
            self.fail(source_id, error, record.values())

    def _uncertain(self, owed: Outstanding, known: Mapped | None) -> Mapped:
        """The id map row the planner sees for an outstanding change."""
        if known is not None:
            if owed.status == "held":  # never sent: the target holds what the id map says
                return known
            return dataclasses.replace(known, projection_hash=UNKNOWN_HASH)
        return Mapped(
            self.job.name,
            owed.source_id,
            owed.target_key,
            UNKNOWN_HASH,
            owed.fields,
            {},
            "",
            recorded=False,
        )

    def _settle_held(self, owed: Sequence[str], steps: Sequence[Step]) -> None:
        """Held deletes of records the run now shares unchanged need nothing any more."""
        stepped = {s.applied.source_id for s in steps}
        done = [sid for sid in owed if sid not in stepped and self.owed[sid].status == "held"]
        if done and not self.dry_run:
            _ = self.holdings  # counted before this run changes the id map
            self.store.record_batch(
                self.job.name,
                self.job.config.target,
                self.job.policy.name,
                self.job.policy.content_hash,
                [],
                resolved=done,
            )

    def _approve(self, stage: ApprovalStage, steps: Sequence[Step]) -> list[Step]:
        """The steps the approval stage lets through; while it holds any, no cursor is stored
        before the end of the run has kept them in a change set (a killed run forgets none)."""
        before = len(stage.held)
        passing = stage.take(steps)
        if len(stage.held) > before:
            self.batches.block()
        return passing

    def _take(self, steps: Sequence[Step]) -> None:
        ready = []
        for step in steps:
            if step.applied.action == "delete" and not (step.cleanup or step.withdrawal):
                self.deferred.append(step)  # the guard decides once the whole read is seen
                self.batches.block()
            else:
                ready.append(step)
        self._queue(ready)

    def _queue(self, steps: Sequence[Step]) -> None:
        if self.dry_run:
            for step in steps:
                if not (step.cleanup or step.verify):  # a plan cannot tell what the target holds
                    self.result.planned.append(step.planned)
                    self._count_applied(step.applied)
        else:
            self.batches.add(steps)

    def _guard(self, *, empty: bool) -> None:
        """Write the deferred deletes, or hold them all back when they are too many."""
        deletes, self.deferred = self.deferred, []
        limit = 0 if empty else self.job.options.delete_limit(self.holdings)
        if len(deletes) <= max(limit, self.accept_deletes):
            self._queue(deletes)
            return
        self.counts.held = len(deletes)
        self.result.held = (
            f"{len(deletes)} of the {self.holdings} record(s) this job holds in its target "
            + (
                "would be taken back after an empty read of the source"
                if empty
                else f"would be taken back, more than its limit of {limit}"
            )
            + "; none of them was written"
        )
        if self.dry_run:  # a plan lists them, so that a person can check them
            self.result.planned.extend(s.planned for s in deletes)
        else:
            self.store.hold([self._owed(s, "held") for s in deletes], self.recorded_at)
        log.warning("job %s: %s", self.job.name, self.result.held, extra={"job": self.job.name})

    def _owed(self, step: Step, status: OutstandingStatus, error: str | None = None) -> Outstanding:
        a = step.applied
        return Outstanding(
            self.job.name,
            a.source_id,
            a.target_key,
            a.action,
            status,
            a.reason,
            a.fields or (self.owed[a.source_id].fields if a.source_id in self.owed else {}),
            error,
        )

    def _missing(self, seen: set[str], reason: str) -> None:
        """Take back the mapped records that a complete listing of the source did not show."""
        held: Iterable[str] = (
            self.store.source_ids(self.job.name)
            if self.held_ahead is None
            else sorted(self.held_ahead)
        )
        missing = [sid for sid in held if sid not in seen]
        if self.seen_whole and missing:  # a million ids each: scanned, not made a set
            left = set(missing)
            for whole in self.seen_whole:
                left.difference_update(whole)
            missing = [sid for sid in missing if sid in left]
        for chunk in chunks(missing):
            rows = self.store.mapped(self.job.name, chunk)
            self.touched.update(sid for sid in rows if sid in self.owed)
            found = [
                self._uncertain(self.owed[s], r) if s in self.owed else r for s, r in rows.items()
            ]
            self._take(self.planner.plan_missing(found, reason))

    def take_back_everything(self, reason: str) -> None:
        """Queue a delete of every record the job holds (a retired partner's), as explicit
        take-backs: a person decided them, so the mass-delete guard does not hold them."""
        ids = list(self.store.source_ids(self.job.name))
        for chunk in chunks(ids):
            rows = self.store.mapped(self.job.name, chunk)
            self.touched.update(sid for sid in rows if sid in self.owed)
            found = [
                self._uncertain(self.owed[s], r) if s in self.owed else r for s, r in rows.items()
            ]
            steps = self.planner.plan_missing(found, reason)
            self._take([dataclasses.replace(s, withdrawal=True) for s in steps])

    def _untouched(self) -> None:
        """Settle the outstanding changes this read did not list.

        Their records were read again (the cursor never passed a change an interrupted run
        sent; one that failed or was held makes the run read everything or decode it), so
        the source no longer lists them: a create the id map does not hold, sent or refused,
        is taken back in case the target got it (a cleanup delete, recorded only if it did),
        and is then owed no more; a recorded change an interrupted run sent keeps its id map
        row, marked unknown, so it is rewritten or taken back when the source shows it again,
        and the periodic reconciliation finds it if it is gone. (A recorded change that
        failed or was held stays owed: a complete read took it back as missing already.)
        """
        left = [o for sid, o in self.owed.items() if sid not in self.touched]
        known = self.store.mapped(self.job.name, [o.source_id for o in left]) if left else {}
        rows = [self._uncertain(o, None) for o in left if o.source_id not in known]
        self.touched.update(r.source_id for r in rows)
        self._take(self.planner.plan_missing(rows, MISSING_AT_SOURCE))
        sent = [o.source_id for o in left if o.status == "sent" and o.source_id in known]
        if sent and not self.dry_run:
            self.store.forget_contents(self.job.name, sent)

    def write(self, steps: Sequence[Step], cursor: str | None) -> None:
        """Write one batch ahead, send it, and record what the target acknowledged (for a
        deferred target: once it committed, see :meth:`_commit`)."""
        intent = None
        if steps:
            if self.session is None:
                self.session = self.job.target.open_writes()
            changes = [(a.source_id, a.target_key, a.action, a.reason) for a in _applied(steps)]
            # A deferred session writes nothing before its commit: its intents need to be
            # durable only then (see _commit), so a group makes all its jobs' durable at once.
            durable = not self.session.deferred
            intent = self.store.write_ahead(
                self.job.name, changes, self.recorded_at, durable=durable
            )
        results = self._send(steps) if steps else []
        outcome = _Outcome(cursor=cursor, intent=intent)
        for step, result in zip(steps, results[: len(steps)], strict=True):
            self._outcome(step, result, outcome)
        # From here on only what recording needs is kept: no record, no projection.
        if self.session is not None and self.session.deferred:
            self.unrecorded.add(outcome)
        else:
            self._record(outcome)

    def _record(self, outcome: _Outcome) -> None:
        """Record one batch the target acknowledged (and committed), and count it."""
        _ = self.holdings  # counted before this run changes the id map
        self.recorded = self.recorded or bool(outcome.applied)
        final = outcome.cursor is not None and outcome.cursor == self.final_cursor
        self.store.record_batch(
            self.job.name,
            self.job.config.target,
            self.job.policy.name,
            self.job.policy.content_hash,
            outcome.applied,
            cursor=KEEP if outcome.cursor is None else outcome.cursor,
            now=self.recorded_at,
            resolved=outcome.resolved,
            failed=outcome.failed,
            ledgered=outcome.ledgered,
            intent=outcome.intent,
            fingerprints=(self.fingerprints if final else None),
            blocks=None if self.blocks is None or not final else self.blocks.saved,
        )
        for source_id, error in outcome.failures:
            self._count_failure(source_id, error)
        self.counts.created += outcome.created
        self.counts.updated += outcome.updated
        self.counts.deleted += outcome.deleted
        self.counts.unchanged += outcome.unchanged

    def _send(self, steps: Sequence[Step]) -> list[WriteResult | None]:
        """One result per step; None where the target gave none (the session is open:
        :meth:`write` opened it before writing the batch's intent)."""
        assert self.session is not None
        try:
            results: list[WriteResult | None] = list(self.session.write([s.change for s in steps]))
        except RecordRejected as exc:  # the adapter refused the batch as a whole
            return [WriteResult(s.change.key, "failed", error=str(exc)) for s in steps]
        return results + [None] * (len(steps) - len(results))

    def _finish(self, cursor: str | None) -> None:
        """Write the batches left, commit the run's writes, record what was committed."""
        self.batches.finish(cursor)
        self._commit()

    def _commit(self, committed: bool = False) -> None:
        """Commit the write session (unless `committed` already); then record a deferred
        target's batches, in order.

        If the commit fails, nothing is recorded: the batches' intents stay, and the next
        run decides those records again."""
        session = self.session
        if session is None:
            return
        if not committed:
            self.store.durable()  # the intents of its batches, before the target is written
            session.commit()
        self.session = None
        session.abort()  # releases what it held; a no-op once committed
        for outcome in self.unrecorded.drain():
            self._record(outcome)

    def _close_writes(self) -> None:
        """After the run: drop a session that was not committed (the run stopped)."""
        session, self.session = self.session, None
        self.unrecorded.close()
        if session is not None:
            session.abort()

    def _outcome(self, step: Step, result: WriteResult | None, out: _Outcome) -> None:
        """Sort one acknowledged change into what the state records, by what the target did."""
        if step.verify and (result is None or result.action != "unchanged"):
            out.unchanged -= 1  # counted unchanged when planned; the target differed (or failed)
        if result is None or not result.ok or result.key != step.change.key:
            error = self._scrub(_write_error(result), step.values())
            out.failures.append((step.applied.source_id, error))
            out.failed.append(self._owed(step, "failed", error))
            return
        applied = step.applied
        owed = self.owed.get(applied.source_id)
        landed = owed is not None and owed.status != "held"  # an interrupted run sent it
        if applied.action == "delete":
            if result.action != "deleted" and step.cleanup:
                out.resolved.append(applied.source_id)  # the target never held it
                return
            gone = result.action == "deleted"
            out.deleted += gone
            out.unchanged += not gone
            if step.cleanup:
                applied = dataclasses.replace(applied, reason=f"{applied.reason} {_UNRECORDED}")
            elif not gone and not landed:
                applied = dataclasses.replace(applied, reason=f"{applied.reason} {_ABSENT}")
            out.record(applied, ledger=True)
            return
        if result.action == "unchanged":
            out.unchanged += not step.verify
            # The ledger already shows this share, unless an earlier run sent it and was
            # interrupted before recording it: then the target got it from that run.
            out.record(applied, ledger=applied.action == "create" or landed)
            return
        # The first share the ledger records is a create, whatever an interrupted run left at
        # the target; a record that vanished from the target is created anew.
        created = applied.action == "create" or result.action == "created"
        action: Literal["create", "update"] = "create" if created else "update"
        out.created += result.action == "created"  # the counts say what the target did
        out.updated += result.action == "updated"
        if applied.action != action:
            applied = dataclasses.replace(applied, action=action)
        out.record(applied, ledger=True)

    def fail(self, source_id: str, error: str, values: Iterable[Any] = ()) -> str:
        """Count and report a record that could not be shared or taken back.

        The one place an error about a record is reported (``failed:`` lines, ``run --json``,
        the state's outstanding changes): every value of the record (`values`: its projection
        and source record) is scrubbed from `error` first, whatever an adapter or a server
        put in it. Returns the scrubbed error."""
        error = self._scrub(error, values)
        self._count_failure(source_id, error)
        return error

    def _scrub(self, error: str, values: Iterable[Any]) -> str:
        """`error` without any of `values` (see :meth:`fail`)."""
        return scrub_values(error, values, keep=self.own_words)

    def _count_failure(self, source_id: str, error: str) -> None:
        """Count and report a failed record whose `error` is scrubbed already."""
        self.counts.failed += 1
        self.result.failures.append(f"{source_id}: {error}")
        log.debug(
            "job %s: record %s failed",
            self.job.name,
            source_id,
            extra={"job": self.job.name, "source_id": source_id},
        )

    def _count_applied(self, change: AppliedChange) -> None:
        if change.action == "create":
            self.counts.created += 1
        elif change.action == "update":
            self.counts.updated += 1
        else:
            self.counts.deleted += 1

    def abort(self, exc: ConnectorError) -> None:
        """Stop the run for `exc` (the job's own: other jobs of a group go on)."""
        self.result.aborted = str(exc)
        self.result.error = exc
        log.error(
            "job %s stopped: %s",
            self.job.name,
            exc,
            extra={"job": self.job.name, "counts": self.counts.as_dict()},
        )

    def _save_state(self) -> None:
        """After a run that was not stopped: hashes, times; a full read reconciled."""
        current = self.store.job_state(self.job.name)
        reconciled = self.now if self.result.full else current.last_reconciled_at
        self.store.set_job_state(
            dataclasses.replace(
                current,
                policy_hash=self.job.policy.content_hash,
                config_hash=self.job.config_hash,
                last_run_at=self.now,
                last_success_at=self.now,
                last_reconciled_at=reconciled,
            )
        )

    def _status(self) -> str:
        if self.result.aborted is not None:
            return "aborted"
        if self.counts.held:
            return "deletes-held"
        return "failed-records" if self.counts.failed or self.counts.outstanding else "ok"

    def _log_summary(self) -> None:
        kind = "dry run" if self.dry_run else "run"
        log.info(
            "job %s: %s done",
            self.job.name,
            kind,
            extra={
                "job": self.job.name,
                "counts": self.counts.as_dict(),
                "full": self.result.full,
                "dry_run": self.dry_run,
            },
        )


#: Young collections between two of the middle generation while a run holds the collector
#: back (the interpreter's default is 10): see :func:`fewer_collections`.
_MIDDLE = 100


@contextlib.contextmanager
def fewer_collections() -> Iterator[None]:
    """Run the body with the cyclic garbage collector mostly out of the way.

    A run allocates a few dicts per record read (records, projections, changes), freed by
    reference counting; the collector would still scan the young ones every 700
    allocations and, now and then, every object the process holds (SQLAlchemy's, the
    policy's): 15% of a first run. So what exists when the run starts is frozen (never
    scanned again until the run ends) and the young generation is collected every 100,000
    allocations, not 700: most of a run's objects are freed by reference counting before
    a collection would scan them (at 10,000, the young collections of a 15,000-partner
    network's first run still took 12% of it). What outlives a young collection (id maps,
    a kept read) is scanned again by the middle generation's, every 100 young ones instead
    of 10 (a 15,000-partner network's incremental run: 9 of ~50 ms each, 3% of it, before).
    Memory is unaffected, as records hold no cycles, and neither does a finished run (see
    :meth:`_Run.finish`)."""
    with _COLLECTIONS_LOCK:  # runs in several threads: the first in sets, the last out resets
        if not _COLLECTIONS_HELD:
            thresholds = gc.get_threshold()
            _COLLECTIONS_HELD.append(thresholds)
            gc.freeze()
            gc.set_threshold(100_000, _MIDDLE, thresholds[2])
        _COLLECTIONS_HELD.append(None)
    try:
        yield
    finally:
        with _COLLECTIONS_LOCK:
            _COLLECTIONS_HELD.pop()
            if len(_COLLECTIONS_HELD) == 1:
                before = _COLLECTIONS_HELD.pop()
                assert before is not None
                gc.set_threshold(*before)
                gc.unfreeze()


_COLLECTIONS_LOCK = threading.Lock()
#: the collector's thresholds before the first run in, then one entry per run in progress
_COLLECTIONS_HELD: list[tuple[int, ...] | None] = []


#: The page-consumer face of a run (see :func:`new_run`).
JobRun = _Run


def _approval_stage(
    job: LoadedJob, store: StateStore, now: dt.datetime, dry_run: bool
) -> ApprovalStage | None:
    """The approval stage of a run whose policy has an ``approval:`` block."""
    governing = job.policy.policy.approver()
    if governing is None or governing.approval is None:
        return None
    approval = governing.approval
    return ApprovalStage(
        job.name,
        job.policy.name,
        job.policy.content_hash,
        approval,
        job.approvers,
        store.approvals(),
        functools.partial(store.mapped, job.name),
        now=now,
        dry_run=dry_run,
        recipient=job.config.target,
        notify=job.notify,
    )


def checked_pages(pages: Iterable[Page], source: Adapter) -> Iterator[Page]:
    """`pages` of a read of `source`, as the engine takes them: a page whose cursor no state
    store can keep as it is (a NUL, a lone surrogate: :func:`~connector_core.records.storable`)
    is the adapter's error, raised before the page is decided, so nothing of it is written
    and the job resumes from its stored cursor once the adapter is mended."""
    for page in pages:
        cursor = page.cursor
        if cursor is not None and not storable(cursor):
            raise AdapterError(
                f"{source.connection}: the {source.name} adapter's read gave a cursor that no "
                "state store can keep (it holds a NUL or bytes that are not text); nothing "
                "past the job's stored cursor was written",
                hint=f"A fault of the {source.name} adapter, whose cursors must be plain text: "
                "report it to its authors. The job runs again as it is once it is mended.",
            )
        yield page


def _identified(page: Page) -> list[Record]:
    """The page's records that have a usable id (:func:`~connector_core.records.usable_id`)."""
    return [r for r in page.records if usable_id(r.get("id"))]


class Loaded(Collection[int]):
    """A collection loaded on first use (the stored row fingerprints of a job).

    Once loaded, ``loaded.__contains__`` looked up on the instance (as an adapter does to
    test many rows at once, ``map(known.__contains__, marks)``) is the loaded set's own
    test, in C, not a Python call per row; ``in`` goes through the class, as before."""

    def __init__(self, load: Callable[[], Collection[int] | None]) -> None:
        self._load: Callable[[], Collection[int] | None] | None = load
        self._values: Collection[int] = frozenset()

    def _get(self) -> Collection[int]:
        if self._load is not None:
            self._values, self._load = self._load() or frozenset(), None
            vars(self)["__contains__"] = self._values.__contains__
        return self._values

    def __contains__(self, value: object) -> bool:
        return value in self._get()

    def __iter__(self) -> Iterator[int]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())


def seen_ids(page: Page) -> Iterator[str]:
    """The ids a snapshot page lists: its records' and its unreadable records' keys (an
    unreadable record was seen: the target keeps what it has)."""
    for record in page.records:
        if usable_id(record.get("id")):
            yield str(record["id"])
    for problem in page.problems:
        if usable_id(problem.key):
            yield str(problem.key)
    yield from page.skipped  # rows a fingerprinted read found unchanged: seen, not decoded


_UNRECORDED = "(a create an interrupted run sent but did not record)"
_ABSENT = "(already gone from the target)"


@dataclasses.dataclass
class _Outcome:
    """What the target acknowledged of one batch, sorted for the state store.

    It holds no record values (``failures`` are scrubbed errors), so that a deferred
    target's batches can wait for the commit in a spool."""

    cursor: str | None = None  # stored with the batch (None: keep)
    intent: int | None = None  # the batch's intent, cleared when it is recorded
    failures: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (id, error)
    applied: list[AppliedChange] = dataclasses.field(default_factory=list)
    ledgered: list[AppliedChange] = dataclasses.field(default_factory=list)
    failed: list[Outstanding] = dataclasses.field(default_factory=list)
    resolved: list[str] = dataclasses.field(default_factory=list)
    created: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0

    def record(self, change: AppliedChange, *, ledger: bool) -> None:
        """Apply `change` to the id map, and to the ledger when `ledger`."""
        self.applied.append(change)
        if ledger:
            self.ledgered.append(change)

    # Spooled by the hundred thousand: each change pickled as a tuple of its fields (a
    # slotted dataclass pickles through dataclasses.fields, twice per change), and the
    # ledgered changes, which are mostly the applied ones, as their places among them.
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        places = {id(change): n for n, change in enumerate(self.applied)}
        state["applied"] = [_APPLIED_FIELDS(c) for c in self.applied]
        state["ledgered"] = [places.get(id(c), _APPLIED_FIELDS(c)) for c in self.ledgered]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        applied = [AppliedChange(*values) for values in state["applied"]]
        state["applied"] = applied
        state["ledgered"] = [
            applied[c] if isinstance(c, int) else AppliedChange(*c) for c in state["ledgered"]
        ]
        self.__dict__.update(state)


#: The fields of an AppliedChange in order, as a tuple (see :meth:`_Outcome.__getstate__`).
_APPLIED_FIELDS = operator.attrgetter(*(f.name for f in dataclasses.fields(AppliedChange)))


def _applied(steps: Sequence[Step]) -> Iterator[AppliedChange]:
    return (step.applied for step in steps)


def _write_error(result: WriteResult | None) -> str:
    if result is None:
        return "the target returned no result for it"
    if result.ok:
        return "the target answered for another key"
    return result.error or "rejected by the target"


def _refuses(state: Any) -> bool:
    return isinstance(state, dict) and state.get("granted") is False
