"""Running many jobs that share a source: one read, every job decided from it.

:func:`run_jobs` sorts the jobs into groups by source connection (a job whose target
another job of the group writes waits for the next group: a target has one writer at a
time), and runs each group from one read of its source:

- **Locks.** Each job's lock and its target's are taken for the whole group read; a job
  locked by another process is left out and reported (``refused``), the rest go on.
- **The read.** When every job would read incrementally from the same cursor, the group
  does (an incremental page is a snapshot only when the source says so, as for one job).
  Otherwise the group reads everything, unfiltered (no pushdown), with the union of the
  fields the jobs need; every page of that read is a snapshot for every job, so each takes
  back what the source no longer lists (``missing-at-source``), as a full run would. A job
  that alone would have read incrementally so sees deletions sooner; its own reasons for a
  full read (``full_reasons``), its reconciliation time and its checks of the target's
  content stay its own. A record unreadable with the union of fields (a bad value in a
  field only another job needs, rows of a repeated key that disagree in such a field) is
  unreadable for each job: kept, never taken back. The union is the read's: a task of a
  queue reads for its own jobs, so a job's outcome for such a record follows its task's
  fields (rows that agree in all of them but consent merge with the strictest consent).
- **Decisions.** The jobs' policies form one :class:`~connector_core.policy.fanout.PolicySet`;
  for each record only the policies the index names are evaluated, and a policy's consent
  and forbid checks run once per record for all policies sharing them. Each job then plans
  only the records it may share, holds (id map, outstanding changes) or that were deleted
  at the source; it withholds every other record with no change, counted by reason. So a
  job's work is proportional to what it shares and holds, not to the source.
- **Each job its own.** Cursor (advanced only past the changes it recorded), state,
  intent log, outstanding changes, batches, ledger rows, mass-delete guard, counts and
  result. A ConnectorError of one job (its target down, its lock lost) stops that job
  alone; a failing source stops every job of the group, each keeping what it recorded.
- **Unchanged rows.** A source with row fingerprints (a CSV file) reports them on a shared
  read, with the blocks its rows form; they are kept once per source, field set and cursor
  (under :func:`fingerprints_name`), each job noting only that it read to the end. A read
  keeps its fingerprints beside those its jobs started from (the jobs of the source in
  another task of a queue, still at that cursor, skip the unchanged rows too), and forgets
  the source's others (see :meth:`_Reads.done`). The next group read skips the rows found
  unchanged when every job of the group read to the end at the same cursor and nothing
  but the rows decides for any of them (see :meth:`_Group._known`); a job's owed changes
  are decoded whatever their fingerprint. A block found unchanged is not split at all:
  its rows' kept ids are listed as the page's skipped ones (:func:`_listed`), so every job
  sees them as rows skipped one by one. Else every row is decoded, as before.
- **Memory.** Pages flow: one page at a time, plus the group's set of the ids read (for
  finding what is missing), per job the source ids it holds and, for a group holding up to
  200,000 records in all, their id map rows, read once instead of page by page and job by
  job (larger groups look them up per page, as a single run does).
- **Limits, and one read for all groups.** Every job of a group holds its two locks for
  the whole read (with SQLite two open lock files, with PostgreSQL two advisory locks on the
  process's one lock connection), so a group holds at most 256 jobs. The first group's read
  of a source is kept (its pages pickled and compressed, in memory) for the later groups of
  the run that read the same source from the same cursor with the same fields: they are
  fed that read's pages, and the source is read once per run. A read that failed is not
  kept (the next group reads again); the pages go when the last group of the source ran.
  Each kept page notes (:class:`_PageMeta`) which of its records a job of each group may
  share (one :class:`PolicySet` of every job of the source), whether it has a deletion or
  a problem, and its withheld counts: a later group decides only those records and the
  ones its jobs hold (a page with a deletion or a problem whole), and passes the others
  with the counts kept for them. A kept page's records are pickled in parts, by the groups
  that may share them (:class:`_Read`): a later group unpickles its own records of a page,
  not all of them.
- **Passing.** A job passes the pages with nothing for it (no record it may share, holds
  or owes) in one step when it next has something, or at the end (:class:`_Passed`: the
  pages' counts and cursors summed as the read goes), not one call per page and job.

A group of one job runs exactly as :func:`~connector_core.sync.runner.run_job` does
(its own query, with pushdown).
"""

from __future__ import annotations

import array
import collections
import contextlib
import dataclasses
import datetime as dt
import functools
import hashlib
import pickle
import zlib
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence, Set
from typing import Any

from connector_core.adapters import (
    Adapter,
    Block,
    Capability,
    KnownBlocks,
    KnownRows,
    Page,
    WriteSession,
)
from connector_core.errors import ConnectorError, RecordRejected
from connector_core.policy.compiler import CompiledPolicy, Decision
from connector_core.policy.fanout import PolicySet
from connector_core.records import Record, usable_id
from connector_core.sync.blocks import BlockKeeper, StoredBlocks
from connector_core.sync.job import LoadedJob
from connector_core.sync.model import Mapped
from connector_core.sync.runner import (
    DecidedPage,
    JobRun,
    Loaded,
    RunResult,
    checked_pages,
    fewer_collections,
    new_run,
    read_fields,
    seen_ids,
)
from connector_core.sync.state import SavedBlocks, StateStore

__all__ = ["GroupResult", "groups", "run_jobs"]

#: Jobs one read serves at most: each holds two locks meanwhile (SQLite: two open lock
#: files; PostgreSQL: two advisory locks on the process's one lock connection).
_GROUP = 256
#: At most this many id map rows (of all the group's jobs) are read ahead, once.
_ROWS_AHEAD = 200_000
#: A decision made ahead, or the error evaluating the record raised.
_Verdict = tuple[Decision, Record | None] | RecordRejected


@dataclasses.dataclass
class GroupResult:
    """What :func:`run_jobs` did: each run's result (in the order of the jobs given), the
    jobs that did not run (``(name, error)``: locked elsewhere, or failing to start), and
    how many reads of a source it started."""

    results: list[RunResult] = dataclasses.field(default_factory=list)
    refused: list[tuple[str, ConnectorError]] = dataclasses.field(default_factory=list)
    reads: int = 0


def even_sizes(count: int, limit: int) -> list[int]:
    """The sizes of the fewest groups of at most `limit` that hold `count` jobs, at most
    one apart: 257 jobs at 256 a group are 129 + 128, not 256 + 1 (a group of one job reads
    the source on its own, and a task of one job makes a worker wait for little)."""
    parts = -(-count // max(limit, 1))
    if not parts:
        return []
    size, larger = divmod(count, parts)
    return [size + 1] * larger + [size] * (parts - larger)


def groups(jobs: Sequence[LoadedJob], limit: int = 1_000_000) -> list[list[LoadedJob]]:
    """The jobs sorted into groups that share a source connection, in the order given, of
    at most `limit` jobs (as even as can be: see :func:`even_sizes`); a job whose target
    connection another job of its group writes starts a later group."""
    sources = collections.Counter(job.config.source for job in jobs)
    sizes = {source: even_sizes(n, limit) for source, n in sources.items()}
    found: list[list[LoadedJob]] = []
    #: per source, its groups not yet full (in `found`'s order): each the group, the most
    #: jobs it takes, and the target connections its jobs write
    unfilled: dict[str, list[tuple[list[LoadedJob], int, set[str]]]] = {}
    made: collections.Counter[str] = collections.Counter()  # groups by source so far
    for job in jobs:
        source, target = job.config.source, job.config.target
        groups_of = unfilled.setdefault(source, [])
        for at, (group, cap, written) in enumerate(groups_of):
            if target not in written:
                group.append(job)
                written.add(target)
                if len(group) >= cap:
                    del groups_of[at]
                break
        else:
            planned = sizes[source]
            cap = planned[made[source]] if made[source] < len(planned) else limit
            made[source] += 1
            found.append([job])
            if cap > 1:
                groups_of.append((found[-1], cap, {target}))
    return found


def run_jobs(
    jobs: Sequence[LoadedJob],
    store: StateStore,
    *,
    dry_run: bool = False,
    reconcile: bool | None = None,
    batch_size: int | None = None,
    progress: Callable[[int], None] | None = None,
    now: dt.datetime | None = None,
    accept_deletes: int = 0,
    group_size: int | None = None,
) -> GroupResult:
    """Run `jobs`, each group sharing a source from one read of it (see the module).

    The arguments are :func:`~connector_core.sync.runner.run_job`'s, for every job;
    `progress` is called with the number of records of each page read. `group_size` caps
    the jobs one read serves (each holds two locks meanwhile; default 256). The adapters
    stay open. An error other
    than a ConnectorError (a bug, an interrupt) is noted in the run rows of the group's
    jobs and raised.
    """
    out = GroupResult()
    options: dict[str, Any] = {
        "dry_run": dry_run,
        "batch_size": batch_size,
        "now": now,
        "accept_deletes": accept_deletes,
    }
    if group_size is None:
        group_size = _GROUP
    found = groups(jobs, group_size)
    reads = _Reads(found, None if dry_run else store)
    with fewer_collections():  # as one job's run: the group's read is as hot
        for group in found:
            _Group(group, store, options, progress, reads).run(reconcile, out)
            reads.done(group[0].config.source)
    order = {job.name: n for n, job in enumerate(jobs)}
    out.results.sort(key=lambda r: order[r.job])
    out.refused.sort(key=lambda refused: order[refused[0]])
    return out


class _Group:
    """One read of a source feeding every job of a group."""

    def __init__(
        self,
        jobs: Sequence[LoadedJob],
        store: StateStore,
        options: dict[str, Any],
        progress: Callable[[int], None] | None,
        reads: _Reads | None = None,
    ) -> None:
        self.jobs = jobs
        self.store = store
        self.options = options
        self.progress = progress
        self.reads = reads or _Reads([list(jobs)])
        self.final: str | None = None  # the cursor of the read's last page
        self.runs: list[JobRun] = []
        self.live: list[JobRun] = []
        self.passed: _Passed | None = None  # a shared read's pages, for the jobs passing them
        self.skip_from: str | None = None  # the cursor of the fingerprints a read skips by

    def run(self, reconcile: bool | None, out: GroupResult) -> None:
        """Lock, start, read once, feed every page to every job, finish each run."""
        with contextlib.ExitStack() as locks:
            cursors = self._start(reconcile, locks, out)
            if not self.runs:
                return
            try:
                self._read(cursors, out)
            except BaseException as exc:
                for run in self.runs:
                    run.crashed(exc)
                raise
            with self._joined():  # every job's run and state noted in one transaction
                self.store.read_ahead([run.job.name for run in self.runs])
                results = [run.finish() for run in self.runs]
            out.results.extend(results)

    def _joined(self) -> contextlib.AbstractContextManager[None]:
        """The store's :meth:`~StateStore.joined` block for the group's bookkeeping (none in
        a dry run, which writes nothing)."""
        return contextlib.nullcontext() if self.options["dry_run"] else self.store.joined()

    def _start(
        self, reconcile: bool | None, locks: contextlib.ExitStack, out: GroupResult
    ) -> list[str | None]:
        cursors = []
        with self._joined():  # the jobs' fences, runs and states: one commit for all
            refused: dict[str, ConnectorError] = {}
            if not self.options["dry_run"]:
                pairs = [(job.name, job.config.target) for job in self.jobs]
                refused = locks.enter_context(self.store.lock_many(pairs))
                self.store.read_ahead([job.name for job in self.jobs if job.name not in refused])
            for job in self.jobs:
                try:
                    if job.name in refused:  # locked elsewhere (JobLocked, TargetLocked), ...
                        raise refused[job.name]
                    run = new_run(job, self.store, **self.options)
                    cursors.append(run.begin(reconcile, start=False))
                except ConnectorError as exc:
                    out.refused.append((job.name, exc))
                    continue
                self.runs.append(run)
            if self.options["dry_run"]:
                ids: list[int | None] = [None] * len(self.runs)
            else:  # every run noted at once
                ids = list(self.store.start_runs([run.job.name for run in self.runs]))
            for run, run_id in zip(self.runs, ids, strict=True):
                run.started(run_id)
        self.live = list(self.runs)
        return cursors

    def _read(self, cursors: list[str | None], out: GroupResult) -> None:
        shared = len(self.runs) > 1
        cursor = cursors[0] if len(set(cursors)) == 1 else None
        if shared:  # what every job of the source in this run needs: one read serves all
            fields = self.reads.fields[self.jobs[0].config.source]
            where = None
        else:
            fields, where = self.runs[0].query(cursor is None)
        self.runs[0].filtered = where is not None
        known: dict[str, Any] = {}
        skipping = False
        if shared:  # the group's fingerprints, not each job's (see _known)
            group_known, skipping = self._known()
            for run in self.runs:
                run.known, run.blocks, run.rejected = None, None, self.reads.rejected
                # a job keeps none of its own, but notes that it read to the end
                run.fingerprints = None if group_known is None else array.array("Q")
            if group_known is not None:
                known["known"] = group_known
        elif self.runs[0].known is not None:
            known["known"] = self.runs[0].known
        source = self.jobs[0].config.source
        key = (source, cursor, fields, skipping)
        kept = self.reads.kept(key) if shared else None
        decider = None
        if shared:
            # a kept read: only the id map rows of the records it decoded can be asked for
            among = None if kept is None else kept.page_of
            idle = kept is not None and kept.idle
            with self._joined():  # each job's id map: reads in one transaction
                decider = _Decider(self.runs, self.store, among, idle=idle)
            self.passed = _Passed(decider)
        pages: Iterator[Page] | None
        collect: _Kept | None = None  # the row fingerprints and blocks this read reports
        if kept is not None:  # an earlier group's read of the same source: not read again
            assert decider is not None  # a kept read feeds a shared one
            self._replay(kept, decider)
            pages = None
        else:
            out.reads += 1
            try:
                adapter = self.source()
                reader = adapter.read(cursor=cursor, fields=fields, where=where, **known)
                pages = checked_pages(reader, adapter)
            except ConnectorError as exc:
                pages = None
                self._source_failed(exc)
            if pages is not None and shared:
                if "known" in known:
                    starts = (cursor, *(run.skip_from for run in self.runs))
                    protect = {c for c in starts if c is not None}
                    collect = self.reads.collecting(source, protect, self.skip_from)
                    blocks = known["known"].blocks
                    if blocks is not None:  # before it is kept: later groups see the ids too
                        pages = _listed(pages, blocks, collect.kept)
                pages = self.reads.keep(key, pages)
        while pages is not None:
            try:
                page = next(pages, None)
            except ConnectorError as exc:
                self._source_failed(exc)
                break
            if page is None:
                if collect is not None and self.final != cursor:  # else nothing new was read:
                    self.reads.collected(source, self.final)  # the kept ones stay
                break
            decided = self._feed(page, decider)
            if decided is not None and decider is not None:
                self.reads.note_counts(key, decider, decided)
            if page.cursor is not None:
                self.final = page.cursor
            if collect is not None:
                collect.add(page, self.reads.rejected)
        self._catch_up_all()
        # Each job's last batches recorded in one transaction (an intent commits what came
        # before it: see StateStore.joined). A job whose approval stage may notify someone
        # ends on its own, its held sets committed before anyone is told of them.
        # Every job's writes first, then their commits: the intents of the jobs whose
        # targets write nothing before they commit (a CSV file) become durable at once.
        with self._joined():
            ending = [run for run in self.live if run.stage is None]
            for run in ending:
                self._each(run, functools.partial(run.end, commit=False))
            committed = self._commit_together([run for run in ending if run in self.live])
            for run in [run for run in ending if run in self.live]:
                self._each(run, functools.partial(run.commit, committed=run in committed))
        for run in [run for run in self.live if run.stage is not None]:
            self._each(run, run.end)

    def source(self) -> Adapter:
        """The source adapter the group reads through (its first job's)."""
        return self.runs[0].job.source

    def _known(self) -> tuple[KnownRows | None, bool]:
        """What the group's read of a ``row_fingerprints`` source may skip, and whether it
        skips anything (None: the source has no fingerprints, or a dry run).

        The rows decided at a cursor are kept once per source, not per job (see
        :class:`_Reads`), with their blocks. They are skipped when unchanged if every job of
        the group read to the end at that cursor in its last run and nothing but the rows
        decides for any of them (no first run, no changed policy or connection, no
        reconciliation: see the runner's ``_known_rows``); the changes any job still owes,
        or holds for approval, are decoded whatever their fingerprint (a block holding one
        is split). A block found unchanged is named by its digest, and its rows' ids become
        the page's skipped ones (see :func:`_listed`). Otherwise every row is decoded, and
        the read reports the fingerprints and blocks to keep.
        """
        if Capability.ROW_FINGERPRINTS not in self.source().capabilities:
            return None, False
        if self.options["dry_run"]:
            return None, False
        starts = {run.skip_from for run in self.runs}  # None: a job decodes every row
        start = starts.pop() if len(starts) == 1 else None
        source = self.jobs[0].config.source
        if start is None:
            return KnownRows(), False
        name = fingerprints_name(source, self.reads.fields[source], start)
        if not self.store.has_fingerprints(name, start):
            return KnownRows(), False
        decode = frozenset().union(*(frozenset(run.owed) | run.waiting for run in self.runs))
        stored = Loaded(functools.partial(self.store.fingerprints, name, start))
        self.skip_from = start
        return KnownRows(stored, decode, StoredBlocks(self.store, name, decode)), True

    def _replay(self, kept: _Read, decider: _Decider) -> None:
        """Feed the group an earlier group's read of the same source: of each page, only the
        records that a job of the group may share or holds are decided (see
        :class:`_PageMeta`); the others, and the pages with none of them, are passed with
        the counts kept for them. A page with a deletion or a problem is decided whole."""
        number = self.reads.group_of[self.jobs[0].name]
        held: dict[int, set[int]] = collections.defaultdict(set)  # page -> places
        if decider.holders:
            where = kept.page_of()
            for source_id in decider.holders:
                if source_id in where:
                    n, at = where[source_id]
                    held[n].add(at)
        gates = decider.gate_keys
        decider.seen = kept.seen  # the ids of every page (a set the groups share)
        decider.listed = True  # ... complete already: the pages' ids are not added again
        for run in self.runs:
            run.seen = kept.seen
        passed = self.passed
        assert passed is not None  # made with the decider
        for n, meta in enumerate(kept.metas):
            if meta.busy or decider.always or any(gate not in meta.counts for gate in gates):
                self._feed(kept.page(n), decider)  # decided whole
            elif number in meta.members or n in held:
                # only the group's own part of the page is unpickled, and of the other
                # parts those holding its held records (they may be anywhere on the page)
                part = kept.places(n, number, held.get(n, ()))
                decided = decider.page(part)
                rest = [  # the other records, withheld by each gate as the page's counts say
                    meta.counts[gate] - decider.by_check(g, found)
                    for g, (gate, found) in enumerate(zip(gates, decided.counts, strict=True))
                ]
                others = meta.records - len(part.records)
                # passed first as a page without a cursor, then the part, with the cursor
                passed.add(None, others, 0, part.snapshot, decider.by_reason(rest))
                if self.progress is not None:
                    self.progress(others)
                self._feed(part, decider, decided)
            else:  # nothing for any job of the group: each passes it
                counts = decider.by_reason([meta.counts[gate] for gate in gates])
                passed.add(meta.cursor, meta.records, meta.skipped, meta.snapshot, counts)
                if self.progress is not None:
                    self.progress(meta.records)
            if meta.cursor is not None:
                self.final = meta.cursor

    def _feed(
        self, page: Page, decider: _Decider | None, decided: _PageDecisions | None = None
    ) -> _PageDecisions | None:
        """Feed `page` to the group's jobs (decided at once, with a decider, unless
        `decided` already); returns the decisions."""
        if decider is None:
            for run in list(self.live):
                self._each(run, functools.partial(run.feed, page))
        else:
            decided = decided or decider.page(page)
            passed = self.passed
            assert passed is not None  # made with the decider
            here = passed.pages  # this page's place in the read
            everyone = range(len(self.runs))
            for position in everyone if decided.active is None else decided.active:
                run = self.runs[position]
                if run.result.error is not None:  # stopped
                    continue
                self._catch_up(position, here)
                withheld = decided.idle(position)
                if withheld is not None:  # nothing to plan after all
                    self._each(run, functools.partial(run.pass_page, page, withheld))
                else:
                    self._each(run, functools.partial(run.feed, page, decided.view(position)))
                passed.synced[position] = here + 1
            passed.add(
                page.cursor, len(page.records), len(page.skipped), page.snapshot, decided.counts
            )
        if self.progress is not None:
            self.progress(len(page.records))
        return decided

    def _catch_up(self, position: int, upto: int) -> None:
        """Job `position` passes, at once, the pages of the read before page `upto` that held
        nothing for it since it last planned one (see :class:`_Passed`)."""
        passed = self.passed
        assert passed is not None  # a shared read's
        start = passed.synced[position]
        if start >= upto:
            return
        run = self.runs[position]
        counts = passed.counts_between(passed.decider.gate_of[position], start, upto)
        withheld = passed.decider.named(position, counts)
        mark = passed.last_cursor(start, upto - 1)  # the marks pass_page would leave
        step = functools.partial(
            run.pass_pages,
            upto - start,
            mark,
            passed.cursors[upto - 1],
            passed.read[upto] - passed.read[start],
            passed.skipped[upto] - passed.skipped[start],
            withheld,
            snapshot=passed.partial[upto] == passed.partial[start],
        )
        passed.synced[position] = upto
        self._each(run, step)

    def _catch_up_all(self) -> None:
        """Every job still running passes the pages left (after the read, or as it fails)."""
        passed = self.passed
        if passed is None:
            return
        for position, run in enumerate(self.runs):
            if run in self.live:
                self._catch_up(position, passed.pages)

    def _commit_together(self, runs: list[JobRun]) -> set[JobRun]:
        """Commit the write sessions of `runs` (whose writes all ended) together, by
        session class (:meth:`WriteSession.commit_many`: a folder of partners' CSV files
        synced once, not twice a file), once their batches' intents are durable; a session
        that failed stops its job alone. The runs whose sessions committed."""
        sessions = {run: session for run in runs if (session := run.to_commit()) is not None}
        if len(sessions) < 2:
            return set()  # one session commits as a job alone commits it
        try:
            self.store.durable()  # every batch's intent, before any target is written
        except ConnectorError:
            return set()  # each job's own commit meets the error, and stops
        by_kind: dict[type[WriteSession], list[JobRun]] = {}
        for run, session in sessions.items():
            by_kind.setdefault(type(session), []).append(run)
        committed: set[JobRun] = set()
        for members in by_kind.values():
            group = [sessions[run] for run in members]
            errors = group[0].commit_many(group)  # (the class's, found through a session)
            for run, error in zip(members, errors, strict=True):
                if error is None:
                    committed.add(run)
                else:
                    self._each(run, functools.partial(_raise, error))
        return committed

    def _each(self, run: JobRun, step: Callable[[], None]) -> None:
        """Do `step` of `run`; a ConnectorError stops that job alone."""
        try:
            step()
        except ConnectorError as exc:
            run.abort(exc)
            self.live.remove(run)

    def _source_failed(self, exc: ConnectorError) -> None:
        """The source failed: each job records what it did, then stops."""
        self._catch_up_all()
        for run in list(self.live):
            try:
                run.read_failed()
            except ConnectorError as other:
                run.abort(other)
            else:
                run.abort(exc)
        self.live = []


class _Passed:
    """The pages of a group's read so far, summed (prefix sums by page), so that a job with
    nothing to plan in a run of pages passes them in one step (:meth:`JobRun.pass_pages`)
    when it next has something, or at the end, instead of one call per page and job."""

    def __init__(self, decider: _Decider) -> None:
        self.decider = decider
        self.pages = 0
        self.cursors: list[str | None] = []
        self.read = [0]  # records read before page n
        self.skipped = [0]  # rows skipped unchanged before page n
        self.partial = [0]  # pages before page n that were not snapshots
        self.last = [-1]  # the last page before page n with a cursor (-1: none)
        #: per gate group, the withheld counts by reason before page n
        self.counts: list[list[collections.Counter[str | None]]] = [
            [collections.Counter()] for _ in decider.gates
        ]
        #: per job, the pages it has passed or planned
        self.synced = [0] * len(decider.policies)

    def add(
        self,
        cursor: str | None,
        records: int,
        skipped: int,
        snapshot: bool,
        counts: Sequence[collections.Counter[str | None]],
    ) -> None:
        """Page `pages` was read (or passed): its cursor, records read and skipped, whether
        it was a snapshot, and its withheld counts by gate group."""
        self.cursors.append(cursor)
        self.read.append(self.read[-1] + records)
        self.skipped.append(self.skipped[-1] + skipped)
        self.partial.append(self.partial[-1] + (not snapshot))
        self.last.append(self.pages if cursor is not None else self.last[-1])
        for prefix, found in zip(self.counts, counts, strict=True):
            prefix.append(prefix[-1] + found if found else prefix[-1])
        self.pages += 1

    def counts_between(self, gate: int, start: int, end: int) -> collections.Counter[str | None]:
        """Gate group `gate`'s withheld counts of pages `start` to `end` (excluded)."""
        prefix = self.counts[gate]
        return prefix[end] - prefix[start]

    def last_cursor(self, start: int, end: int) -> str | None:
        """The cursor of the last page with one in pages `start` to `end` (excluded)."""
        last = self.last[end]
        return self.cursors[last] if last >= start else None


#: source connection, cursor, fields, whether the read skips known rows
_ReadKey = tuple[str, str | None, frozenset[str], bool]


def _meta(page: Page, index: PolicySet, group_of: Sequence[int]) -> _PageMeta:
    """A kept page's :class:`_PageMeta` (the counts come from the group reading it)."""
    busy = bool(page.problems)
    members: dict[int, list[int]] = {}
    candidates = index.candidates
    for n, record in enumerate(page.records):
        if not usable_id(record.get("id")) or record.get("deleted") is True:
            busy = True
            break
        for group in {group_of[position] for position in candidates(record)}:
            members.setdefault(group, []).append(n)
    return _PageMeta(
        page.cursor, len(page.records), len(page.skipped), page.snapshot, busy, members
    )


def fingerprints_name(source: str, fields: frozenset[str], cursor: str) -> str:
    """The name the row fingerprints of a shared read of `source` with `fields` that ended
    at `cursor` are kept under (where one job's are kept under its name; no job name has
    spaces). A row's fingerprint depends on the fields read (a CSV file's does): jobs
    reading other fields find none of theirs here. One name per cursor, so that a read
    ending at a new cursor keeps those its jobs started from for the jobs still there."""
    text = repr((sorted(fields), cursor)).encode("utf-8", "surrogatepass")
    return _SHARED % source + hashlib.blake2b(text, digest_size=8).hexdigest()


#: the names of a source's shared read fingerprints: this, then 16 hexadecimal digits
_SHARED = "shared read of %s "


def _listed(pages: Iterator[Page], blocks: KnownBlocks, kept: list[bytes]) -> Iterator[Page]:
    """`pages` with the rows of their unchanged blocks listed as skipped, by id: each job of
    the group (and of a later group fed the kept read) sees them as it sees rows skipped
    one by one, which keeps no blocks of its own. Their digests are added to `kept`."""
    for page in pages:
        if page.unchanged:
            kept.extend(page.unchanged)
            ids = blocks.ids(page.unchanged)
            page = dataclasses.replace(page, skipped=[*page.skipped, *ids], unchanged=[])
        yield page


class _Kept:
    """What a shared read reports to keep with the cursor it ends at (see :meth:`_Reads.done`):
    the fingerprints of its rows in no block, by source id, its new blocks, and the digests
    of the blocks it found unchanged under the name of the cursor it started from."""

    def __init__(self, protect: set[str], start: str | None) -> None:
        self.protect = protect  # the cursors the read's jobs started from
        self.start = start  # the cursor whose blocks the read was given (None: none)
        self.final: str | None = None  # the cursor it ended at, once complete
        self.loose: dict[str, int] = {}
        self.blocks: list[Block] = []
        self.kept: list[bytes] = []

    def add(self, page: Page, rejected: set[str]) -> None:
        """Note the page's row fingerprints and blocks; the keys of its unreadable records
        are rejected (never skipped later, as for one job)."""
        self.loose.update(page.fingerprints)
        self.blocks += page.blocks
        rejected.update(p.key for p in page.problems if p.key is not None)

    def saved(self, rejected: Set[str]) -> tuple[Sequence[int], SavedBlocks]:
        """The fingerprints and blocks to keep, but for the `rejected` records (decoded
        again next time), as one job's read keeps them (:class:`BlockKeeper`; known only
        once every group ran). The unchanged blocks stay (none of their rows was decoded,
        nor rejected)."""
        keeper = BlockKeeper()
        keeper.rejected.update(rejected)
        keeper.loose.extend(fp for sid, fp in self.loose.items() if sid not in rejected)
        keeper.unchanged(self.kept)
        for block in self.blocks:
            keeper.block(block)
        return keeper.loose, keeper.saved


@dataclasses.dataclass
class _PageMeta:
    """What a later group needs of a kept page that holds nothing for any of its jobs."""

    cursor: str | None
    records: int
    skipped: int
    snapshot: bool
    #: a deleted record, a problem or a record without an id: every job plans the page
    busy: bool
    #: per group (by number) with a job whose policy may share one of its records, the
    #: places of those records in the page
    members: dict[int, list[int]]
    #: withheld counts by the check that withheld them (None: no rule allowed), by the
    #: gate's checks (filled by the group reading it)
    counts: dict[tuple[str, ...], collections.Counter[str | None]] = dataclasses.field(
        default_factory=dict
    )


class _Read:
    """The pages of one complete read of a source, pickled and compressed, each with what
    a later group needs to pass it without unpickling it (:class:`_PageMeta`).

    A page is kept in parts: its fields but the records and the ids of the rows it skipped
    unchanged (the skeleton), then its records cut by the set of groups that may share each
    (a part per set, with the records' places in the page). A later group unpickles the
    skeleton and the parts of its own records (:meth:`part`, about 1/k of the page with k
    groups; :meth:`places` adds the parts holding given places); :meth:`page` puts a whole
    page back together. Each record is pickled once, whatever the number of groups. The
    skipped ids (most of an incremental read's) are kept as they are, one list per page
    that every replayed page shares (read, never changed), not unpickled once per group:
    they are in :attr:`seen` too, the same strings.
    """

    def __init__(self) -> None:
        #: per page, the skeleton then each part, pickled and compressed
        self.pages: list[list[bytes]] = []
        #: per page, each part's groups and the places of its records
        self.layouts: list[list[tuple[frozenset[int], array.array[int]]]] = []
        self.metas: list[_PageMeta] = []
        #: per page, the ids of the rows it skipped unchanged
        self.skipped: list[list[str]] = []
        self.complete = False
        #: the ids the read listed (None: a page was not a snapshot), for every group
        self.seen: set[str] | None = set()
        self._where: dict[str, tuple[int, int]] | None = None  # see page_of

    def add(self, page: Page, meta: _PageMeta) -> None:
        """Keep `page` (its row fingerprints dropped: they serve a job's own read only)."""
        by_groups: dict[frozenset[int], list[int]] = {}
        if meta.busy:  # decided whole by every group: one part
            by_groups[frozenset()] = list(range(len(page.records)))
        else:
            groups_of: list[set[int]] = [set() for _ in page.records]
            for group, places in meta.members.items():
                for at in places:
                    groups_of[at].add(group)
            for at, of in enumerate(groups_of):
                by_groups.setdefault(frozenset(of), []).append(at)
        skeleton = dataclasses.replace(page, records=[], fingerprints={}, blocks=[], skipped=[])
        blobs = [_pack(skeleton)]
        layout = []
        for groups, places in by_groups.items():
            blobs.append(_pack([page.records[at] for at in places]))
            layout.append((groups, array.array("I", places)))
        self.pages.append(blobs)
        self.layouts.append(layout)
        self.metas.append(meta)
        self.skipped.append(list(page.skipped))  # a copy: the adapter's page is its own

    def __iter__(self) -> Iterator[Page]:
        for n in range(len(self.pages)):
            yield self.page(n)

    def page(self, n: int) -> Page:
        """Page `n`, unpickled whole."""
        return self._unpack(n, lambda groups, places: True)

    def part(self, n: int, group: int) -> Page:
        """Page `n` with only the records group `group` may share (in page order)."""
        return self._unpack(n, lambda groups, places: group in groups)

    def places(self, n: int, group: int, places: Collection[int]) -> Page:
        """Page `n` with the records group `group` may share and those at `places` (in page
        order): only the parts holding them are unpickled, not the whole page."""
        return self._unpack(n, lambda groups, at: group in groups, set(places))

    def _unpack(
        self,
        n: int,
        whole: Callable[[frozenset[int], array.array[int]], bool],
        places: Set[int] = frozenset(),
    ) -> Page:
        """Page `n` with the records of the parts `whole` accepts (by their groups and
        places) and those at `places` (in page order)."""
        blobs = self.pages[n]
        skeleton: Page = pickle.loads(zlib.decompress(blobs[0]))
        found: list[tuple[int, Record]] = []
        for (groups, at), blob in zip(self.layouts[n], blobs[1:], strict=True):
            if whole(groups, at):
                found.extend(zip(at, pickle.loads(zlib.decompress(blob)), strict=True))
            elif not places.isdisjoint(at):
                records = pickle.loads(zlib.decompress(blob))
                found.extend(p for p in zip(at, records, strict=True) if p[0] in places)
        found.sort(key=lambda placed: placed[0])
        skeleton.records = [record for _, record in found]
        skeleton.skipped = self.skipped[n]
        return skeleton

    @property
    def idle(self) -> bool:
        """Whether no job plans anything of the read: no record, no row skipped unchanged,
        no problem, not a listing of the whole source (one with nothing new since the
        cursor)."""
        return self.seen is None and not any(
            m.records or m.skipped or m.busy or m.snapshot for m in self.metas
        )

    def page_of(self) -> dict[str, tuple[int, int]]:
        """The page and place of each record the read decoded, by source id (not the rows it skipped
        unchanged: nobody plans them), made when a group first asks: a group that holds
        records needs the pages where they are."""
        if self._where is None:
            where: dict[str, tuple[int, int]] = {}
            for n, page in enumerate(self):
                for at, record in enumerate(page.records):
                    if usable_id(record.get("id")):
                        where[str(record["id"])] = (n, at)
            self._where = where
        return self._where


def _pack(value: object) -> bytes:
    """`value` pickled and compressed (fast: a kept read lives for one run)."""
    return zlib.compress(pickle.dumps(value, pickle.HIGHEST_PROTOCOL), 1)


class _Reads:
    """The reads of a run's `groups` kept for the later groups of the same source (see the
    module)."""

    def __init__(
        self, groups: Sequence[Sequence[LoadedJob]], store: StateStore | None = None
    ) -> None:
        self.store = store
        #: per source connection, the groups still to run
        self.remaining = collections.Counter(group[0].config.source for group in groups)
        #: the records some job could not decide, or the source not read (run-wide)
        self.rejected: set[str] = set()
        #: per source connection, what its last read reports to keep (see :class:`_Kept`)
        self.fingerprints: dict[str, _Kept] = {}
        #: per source connection, the fields a shared read fetches: every job's
        self.fields: dict[str, frozenset[str]] = collections.defaultdict(frozenset)
        for group in groups:
            source = group[0].config.source
            self.fields[source] = self.fields[source].union(*map(read_fields, group))
        self.reads: dict[_ReadKey, _Read] = {}
        self.groups = groups
        #: each job's group, by number in `groups`
        self.group_of = {job.name: n for n, group in enumerate(groups) for job in group}

    def _index(self, source: str) -> tuple[PolicySet, list[int]]:
        """Every job of `source` as one PolicySet, and the group of each of its positions."""
        jobs = [job for group in self.groups if group[0].config.source == source for job in group]
        return PolicySet([job.policy for job in jobs]), [self.group_of[j.name] for j in jobs]

    def kept(self, key: _ReadKey) -> _Read | None:
        """The complete read of `key`, if one was kept."""
        found = self.reads.get(key)
        return found if found is not None and found.complete else None

    def keep(self, key: _ReadKey, pages: Iterator[Page]) -> Iterator[Page]:
        """`pages`, kept as they pass when a later group reads the same source; the read is
        kept only when all of it passed (a failed read is read again)."""
        if self.remaining[key[0]] <= 1:
            yield from pages
            return
        read = self.reads[key] = _Read()
        index, group_of = self._index(key[0])
        for page in pages:
            read.add(page, _meta(page, index, group_of))
            if not page.snapshot:
                read.seen = None
            elif read.seen is not None:
                read.seen.update(seen_ids(page))
            yield page
        read.complete = True

    def note_counts(self, key: _ReadKey, decider: _Decider, decided: _PageDecisions) -> None:
        """The group reading `key` decided its latest page: keep its withheld counts by gate."""
        read = self.reads.get(key)
        if read is not None and not read.complete and read.metas:
            counts = read.metas[-1].counts
            for g, (gate, found) in enumerate(zip(decider.gate_keys, decided.counts, strict=True)):
                # by check, not by reason: another group's gate names its reasons its own way
                counts[gate] = decider.by_check(g, found)

    def collecting(self, source: str, protect: set[str], start: str | None) -> _Kept:
        """A fresh :class:`_Kept` for a read of `source` starting (not yet complete), its
        jobs at the cursors `protect`, given the blocks kept at the cursor `start` (None:
        none)."""
        found = self.fingerprints[source] = _Kept(protect, start)
        return found

    def collected(self, source: str, final: str | None) -> None:
        """The read of `source` is complete and ended at `final`."""
        self.fingerprints[source].final = final

    def done(self, source: str) -> None:
        """A group of `source` ran: when it was the last, its kept reads go and the row
        fingerprints of its last complete read are kept in the state store, but for the
        records some job could not decide (they are decoded again next time); the source's
        other fingerprints go, but those at a cursor the read's jobs started from."""
        self.remaining[source] -= 1
        if self.remaining[source] > 0:
            return
        for key in [k for k in self.reads if k[0] == source]:
            del self.reads[key]
        found = self.fingerprints.pop(source, None)
        final = None if found is None else found.final
        if found is not None and final is not None and self.store is not None:
            fields = self.fields[source]
            loose, blocks = found.saved(self.rejected)
            start = None if found.start is None else fingerprints_name(source, fields, found.start)
            self.store.keep_shared(
                fingerprints_name(source, fields, final), final, loose, blocks, start
            )
            # the source's others go, but at a cursor the read's jobs started from (another
            # task's jobs may still be there) and those of before the names had field sets
            prefix = _SHARED % source
            self.store.prune_fingerprints(
                prefix, len(prefix) + 16, {final, *found.protect}, also=prefix.rstrip()
            )


class _Decider:
    """The group's policies as one indexed set, and the source ids each job holds."""

    def __init__(
        self,
        runs: Sequence[JobRun],
        store: StateStore,
        among: Callable[[], Collection[str]] | None = None,
        *,
        idle: bool = False,
    ) -> None:
        """`among` gives the source ids of every record the group's pages will hold (a kept
        read's), if known: only their id map rows are read (with every held id). It is
        called only if the group's jobs hold something. `idle`: the group's pages hold
        nothing any job plans (:attr:`_Read.idle`): what each job holds is counted, no id
        read (15,000 partners' run with nothing new read every id map)."""
        self.runs = runs
        policies = [run.job.policy for run in runs]
        self.policies: list[CompiledPolicy] = policies
        self.set = PolicySet(policies)
        # Policies whose gates check the same things share one gate call per record; each
        # renames its reasons (a forbid's reason names its policy).
        keys: dict[tuple[str, ...], int] = {}
        self.gate_of: list[int] = []
        self.gates: list[Callable[[Record], Decision | None]] = []
        self.renames: list[dict[str, Decision]] = []
        firsts: list[CompiledPolicy] = []
        for policy in policies:
            key = tuple(check for check, _ in policy.gate_checks)
            group = keys.setdefault(key, len(keys))
            if group == len(self.gates):
                self.gates.append(policy.gate)
                firsts.append(policy)
            self.gate_of.append(group)
            first = firsts[group].gate_checks
            self.renames.append(
                {a.reason: b for (_, a), (_, b) in zip(first, policy.gate_checks, strict=True)}
            )
        #: the checks of each shared gate (what a kept page's counts are filed under), and
        #: the reasons its decisions give (its first policy's)
        self.gate_keys = list(keys)
        self._reasons = [
            {check: decision.reason for check, decision in first.gate_checks} for first in firsts
        ]
        self._checks = [{reason: check for check, reason in r.items()} for r in self._reasons]
        #: every job plans every record (a legacy cleanup takes back withheld derived keys)
        self.everything = [run.planner.cleanup for run in runs]
        self.always = {position for position, every in enumerate(self.everything) if every}
        #: source id -> positions of the jobs whose id map or outstanding changes hold it
        #: (and, as the read goes on, that shared it in this run); of a kept read, only
        #: the ids it lists are looked up, and only theirs are kept
        self.holders: dict[str, list[int]] = collections.defaultdict(list)
        names = [run.job.name for run in runs]
        # a kept read: every held id is read (a complete read takes back those it did not
        # list), and each job's count is how many it read
        by_job = None if among is None or idle else store.mapped_ids(names)
        if by_job is None:
            counts = store.mapped_counts(names)
        else:
            counts = {name: len(ids) for name, ids in by_job.items()}
        for run in runs:  # what each holds as its run begins (nothing is recorded yet)
            run.holdings_are(counts[run.job.name])
        # A small group's id map rows are read at once, not page by page and job by job: a
        # row changes only when its job records a change it planned in this run, so a row
        # serves until its id is handed to its job (then the job looks it up itself).
        self.rows: list[Mapping[str, Mapped]] | None = None
        held: list[Iterable[str]]
        holding = sum(counts.values())
        if idle:  # no id of the read is ever looked up
            held = [[] for _ in names]
        elif 0 < holding <= _ROWS_AHEAD and among is not None:
            # the rows of the held ids among the read's records (an incremental read's are few)
            assert by_job is not None
            listed = among()
            # only the records of the read are ever looked up as held (here and in _replay)
            held = [[sid for sid in by_job[name] if sid in listed] for name in names]
            wanted = {source_id for ids in held for source_id in ids}
            everything = store.mapped_all(names, among=wanted)
            self.rows = [_RowsAmong(everything[name], listed) for name in names]
            for run, name in zip(runs, names, strict=True):
                run.held_ahead = by_job[name]
        elif holding <= _ROWS_AHEAD:
            everything = store.mapped_all(names)
            self.rows = [everything[name] for name in names]
            held = list(self.rows)
            for run, rows in zip(runs, self.rows, strict=True):
                run.held_ahead = rows.keys()
        elif by_job is not None:  # many: no rows ahead, but the ids are read already
            held = [by_job[name] for name in names]
        else:
            held = [store.source_ids(name) for name in names]
        for position, run in enumerate(runs):
            for source_id in held[position]:
                self.holders[source_id].append(position)
            for source_id in run.owed:
                self.holders[source_id].append(position)
        #: per job, the ids handed to it (and the page problems' keys) in this run
        self.handed: list[set[str]] = [set() for _ in runs]
        # One set of ids read for the whole group (each job's own would repeat it).
        self.seen: set[str] | None = set()
        #: `seen` holds the whole read's ids already (a kept read's: see _Group._replay)
        self.listed = False
        for run in runs:
            run.seen, run.own_seen = self.seen, False

    def by_check(
        self, gate: int, counts: collections.Counter[str | None]
    ) -> collections.Counter[str | None]:
        """Gate group `gate`'s withheld `counts` by reason, by the check that gave each
        (None stays None: no rule allowed): what a kept page files them under."""
        checks = self._checks[gate]
        return collections.Counter({None if r is None else checks[r]: n for r, n in counts.items()})

    def by_reason(
        self, counts: Sequence[collections.Counter[str | None]]
    ) -> list[collections.Counter[str | None]]:
        """Withheld counts by check, one per gate group, by each gate's own reasons."""
        return [
            collections.Counter({None if c is None else reasons[c]: n for c, n in found.items()})
            for found, reasons in zip(counts, self._reasons, strict=True)
        ]

    def named(self, position: int, counts: Mapping[str | None, int]) -> dict[str, int]:
        """Withheld `counts` by the shared gate's reasons, under job `position`'s own names
        (a forbid's reason names its policy; None is "allowed by no rule")."""
        policy = self.policies[position]
        renames = self.renames[position]
        return {
            (policy.no_allow if reason is None else renames[reason]).reason: n
            for reason, n in counts.items()
            if n
        }

    def page(self, page: Page) -> _PageDecisions:
        """Decide `page` for every job at once."""
        if self.listed:  # a kept read's page: its ids are in `seen` already
            pass
        elif not page.snapshot:
            self.seen = None
        elif self.seen is not None:
            self.seen.update(seen_ids(page))
        keys = [p.key for p in page.problems if p.key is not None]
        if keys:  # a job may decide a problem's record (a refusal while held): no row ahead
            for handed in self.handed:
                handed.update(keys)
        return _PageDecisions(self, page)


class _RowsAmong(Mapping[str, Mapped]):
    """A job's id map rows read for the source ids `among` only (see :class:`_Decider`):
    asked for another id, it raises rather than answer that the job does not hold it."""

    def __init__(self, rows: Mapping[str, Mapped], among: Collection[str]) -> None:
        self._rows, self._among = rows, among

    def __getitem__(self, source_id: str) -> Mapped:
        if source_id not in self._among:
            raise RuntimeError(f"id map row of {source_id!r} asked for, not read ahead")
        return self._rows[source_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)


class _PageDecisions:
    """One page decided for a group: each job's candidates evaluated, every other record's
    default decision (its consent and forbid checks) made once per set of such checks."""

    def __init__(self, decider: _Decider, page: Page) -> None:
        self.decider = decider
        records = [r for r in page.records if usable_id(r.get("id"))]
        self.records = records
        #: every record has an id and none is a problem: a job may pass the page unplanned
        self.plain = not page.problems and len(records) == len(page.records)
        self.verdicts: collections.defaultdict[int, dict[int, _Verdict]] = collections.defaultdict(
            dict
        )
        self.deleted: set[int] = set()
        gates = decider.gates
        self.defaults: list[list[Decision | None]] = [[] for _ in gates]
        self.counts: list[collections.Counter[str | None]] = [collections.Counter() for _ in gates]
        candidates = decider.set.candidates
        policies = decider.policies  # each one's code is generated when first evaluated
        verdicts = self.verdicts
        for j, record in enumerate(records):
            deleted = record.get("deleted") is True
            for g, gate in enumerate(gates):
                default = gate(record)
                self.defaults[g].append(default)
                if not deleted:
                    self.counts[g][None if default is None else default.reason] += 1
            if deleted:  # every job decides it (a delete where it holds it)
                self.deleted.add(j)
                continue
            for position in candidates(record):
                try:
                    verdicts[position][j] = policies[position].evaluate(record)
                except RecordRejected as exc:
                    verdicts[position][j] = exc
        self.held: collections.defaultdict[int, set[int]] = collections.defaultdict(set)
        holders = decider.holders
        for j, record in enumerate(records):
            for position in holders.get(str(record["id"]), ()):
                self.held[position].add(j)
        #: the jobs that may have something to plan in the page (None: every job)
        self.active: list[int] | None = (
            None
            if self.deleted or not self.plain
            else sorted(self.verdicts.keys() | self.held.keys() | decider.always)
        )

    def idle(self, position: int) -> dict[str, int] | None:
        """Job `position`'s withheld counts by reason if it has nothing to plan in the page
        (no record it may share, holds or owes, none deleted, no problem), else None."""
        decider = self.decider
        if (
            self.verdicts.get(position)
            or self.held.get(position)
            or self.deleted
            or not self.plain
            or decider.everything[position]
        ):
            return None
        return decider.named(position, self.counts[decider.gate_of[position]])

    def view(self, position: int) -> DecidedPage:
        """Job `position`'s part of the page."""
        decider = self.decider
        policy = decider.policies[position]
        verdicts = self.verdicts.get(position, {})
        defaults = self.defaults[decider.gate_of[position]]
        renames = decider.renames[position]
        held = self.held.get(position, set())
        if decider.everything[position]:
            chosen: Iterable[int] = range(len(self.records))
        else:
            chosen = sorted(verdicts.keys() | held | self.deleted)
        unheld = set()
        ahead: dict[str, Mapped] = {}
        rows = None if decider.rows is None else decider.rows[position]
        handed = decider.handed[position]
        table: dict[int, _Verdict] = {}
        withheld = self.counts[decider.gate_of[position]].copy()
        records = []
        for j in chosen:
            record = self.records[j]
            records.append(record)
            source_id = str(record["id"])
            if j not in held:
                unheld.add(source_id)
            elif rows is not None and source_id not in handed:
                row = rows.get(source_id)
                if row is None:
                    unheld.add(source_id)
                else:
                    ahead[source_id] = row
            handed.add(source_id)
            if j in self.deleted:
                continue  # decided by the job itself, as alone
            default = defaults[j]
            withheld[None if default is None else default.reason] -= 1
            verdict = verdicts.get(j)
            if verdict is None:
                verdict = (policy.no_allow if default is None else renames[default.reason], None)
            elif not isinstance(verdict, RecordRejected) and verdict[1] is not None:
                self._shares(str(record["id"]), position)
            table[id(record)] = verdict
        decide = _lookup(table, policy)
        counted = decider.named(position, withheld)
        return DecidedPage(self.records, records, decide, counted, frozenset(unheld), ahead)

    def _shares(self, source_id: str, position: int) -> None:
        """Job `position` shares `source_id` in this run: from now on it holds it."""
        holders = self.decider.holders[source_id]
        if position not in holders:
            holders.append(position)


def _lookup(
    table: dict[int, _Verdict], policy: CompiledPolicy
) -> Callable[[Record], tuple[Decision, Record | None]]:
    """Decide a record from `table` (made for exactly these record objects), else alone."""

    def decide(record: Record) -> tuple[Decision, Record | None]:
        verdict = table.get(id(record))
        if verdict is None:
            return policy.evaluate(record)
        if isinstance(verdict, RecordRejected):
            raise verdict
        return verdict

    return decide


def _raise(error: ConnectorError) -> None:
    raise error
