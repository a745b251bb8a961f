"""Running a job: read the source, plan with the policy, write the target, record each batch.

:func:`run_job` keeps the mirror promise of DESIGN.md §8:

- A run reads what changed since the job's cursor. It reads everything (a *full* run) on
  the first run, after the policy or either connection's mapping or settings changed, and
  when reconciliation is due (``options.reconcile_every``, default daily) or forced.
- Changes go to the target in batches; each batch is recorded (id map, ledger, and the
  cursor once every change before it is recorded) in one transaction, after the target
  acknowledged it. Keys are deterministic and writes are upserts, so a run killed at any
  point and run again converges to what one uninterrupted run leaves.
- A run after an interrupted one (killed, or stopped by an outage) also deletes, from the
  target, the derived key of every withheld record it reads that is not in the id map: the
  target may have acknowledged a create that the interruption kept from being recorded.
- A record the target rejects is counted, reported and skipped. A failed delete makes the
  next run a full one, so that the record is taken back as soon as the target accepts.
  A failed create or update is tried again at the next full run.
- An adapter error (outage, refused credentials) stops the run: what was recorded stays
  recorded, and the next run resumes from the stored cursor.

Field values never reach a log line, an exception or :class:`RunResult`; source ids are
logged at DEBUG only.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Iterator, Sequence

from connector_core.adapters import Capability, Page, WriteResult
from connector_core.errors import ConnectorError, ExitCode, RecordRejected
from connector_core.query import Condition
from connector_core.sync.batches import Batches
from connector_core.sync.job import LoadedJob, full_reasons, interrupted
from connector_core.sync.model import AppliedChange, RunCounts
from connector_core.sync.planner import (
    MISSING_AT_SOURCE,
    PagePlan,
    PlannedChange,
    Planner,
    Step,
)
from connector_core.sync.state import KEEP, StateStore

__all__ = ["PlannedChange", "RunResult", "run_job"]

log = logging.getLogger("connector.sync")

#: Why a record is deleted when a read filtered by the policy (pushdown) did not list it.
MISSING_FROM_FILTERED_READ = "missing-or-out-of-scope"
_ID_CHUNK = 500
#: Always read: a record deleted at the source must be taken back whatever the policy tests.
_ALWAYS_READ = frozenset({"id", "deleted"})


@dataclasses.dataclass
class RunResult:
    """What one run did.

    ``planned`` lists the changes of a dry run (empty otherwise); ``failures`` holds one
    line per rejected record (source id and error, never field values); ``problems`` the
    read problems (location and the adapter's message); ``aborted`` why the run stopped
    early, with ``error`` the exception (its ``hint`` says what to do); ``full`` whether the
    whole source was read, and ``full_reasons`` why.
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

    @property
    def exit_code(self) -> ExitCode:
        """DESIGN §10: the error's code if the run stopped, 1 if records failed, else 0."""
        if self.error is not None:
            return self.error.exit_code
        if self.counts.failed or self.counts.problems:
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

    Raises:
        JobLocked: another process is running this job.
        TargetLocked: another job is writing this job's target connection.
    """
    run = _Run(
        job,
        store,
        dry_run=dry_run,
        batch_size=batch_size or job.options.batch_size or job.target.page_size,
        progress=progress,
        now=now,
    )
    if dry_run or not lock:
        return run.execute(reconcile)
    with store.lock(job.name, target=job.config.target):
        return run.execute(reconcile)


class _Run:
    """The mutable state of one run; :meth:`execute` is the whole of it."""

    def __init__(
        self,
        job: LoadedJob,
        store: StateStore,
        *,
        dry_run: bool,
        batch_size: int,
        progress: Callable[[int], None] | None,
        now: dt.datetime | None,
    ) -> None:
        self.job = job
        self.store = store
        self.dry_run = dry_run
        self.progress = progress
        self.now = now or dt.datetime.now(dt.UTC)
        self.recorded_at = now  # None: the ledger notes when each batch is recorded
        self.result = RunResult(job.name, RunCounts(), dry_run=dry_run)
        keys = job.target_keys(store.key_secret, legacy=store.legacy_keys(job.name))
        self.planner = Planner(
            job.name, job.policy, keys=keys, salt=job.target_hash, with_diff=dry_run
        )
        self.batches = Batches(self.write, batch_size)
        self.cleanup = False
        self.failed_delete = False

    @property
    def counts(self) -> RunCounts:
        """The run's counts, updated as it goes."""
        return self.result.counts

    def execute(self, reconcile: bool | None) -> RunResult:
        """Run: decide full or incremental, sync, then record the run and the job's state."""
        state = self.store.job_state(self.job.name)
        reasons = full_reasons(self.job, state, reconcile, self.now)
        self.result.full, self.result.full_reasons = bool(reasons), reasons
        self.cleanup = not self.dry_run and interrupted(state)
        self.batches.saved = state.cursor
        run_id = self.store.start_run(self.job.name, dry_run=self.dry_run)
        if not self.dry_run:
            self.store.set_job_state(dataclasses.replace(state, last_run_at=self.now))
        try:
            self._sync(None if reasons else state.cursor)
        except ConnectorError as exc:
            self._abort(exc)
        except BaseException as exc:
            self.store.finish_run(
                run_id,
                status="aborted",
                counts=self.counts,
                error=f"internal error: {type(exc).__name__}",
            )
            raise
        if not self.dry_run and self.result.aborted is None:
            self._save_state()
        self.store.finish_run(
            run_id, status=self._status(), counts=self.counts, error=self.result.aborted
        )
        self._log_summary()
        return self.result

    def _sync(self, cursor: str | None) -> None:
        fields, where = self._query(cursor is None)
        seen: set[str] | None = set()  # None once a page is not a snapshot
        pages = 0
        held: str | None = None  # the last page's cursor waits for the deletes of missing ids
        reader = self.job.source.read(cursor=cursor, fields=fields, where=where)
        while (page := self._next_page(reader, held)) is not None:
            if held is not None:
                self.batches.mark(held)
            seen = seen if page.snapshot else None
            self._page(page, seen)
            held, pages = page.cursor, pages + 1
        if seen is not None and pages:
            self._missing(seen, MISSING_AT_SOURCE if where is None else MISSING_FROM_FILTERED_READ)
        if not self.dry_run:
            self.batches.finish(held)

    def _next_page(self, reader: Iterator[Page], held: str | None) -> Page | None:
        """The next page; when the source fails, first record the work of the pages read."""
        try:
            return next(reader, None)
        except ConnectorError:
            if not self.dry_run:
                self.batches.finish(held)
            raise

    def _query(self, full: bool) -> tuple[frozenset[str], Condition | None]:
        """The fields to fetch and, on a full read from a pushdown source, the filter."""
        pushdown = self.job.policy.pushdown
        fields = pushdown.decision_fields | pushdown.shared_fields | _ALWAYS_READ
        pushes = Capability.PUSHDOWN in self.job.source.capabilities
        # An incremental read must see the records that left the scope, so it is not filtered.
        return fields, pushdown.condition if full and pushes else None

    def _page(self, page: Page, seen: set[str] | None) -> None:
        self.counts.read += len(page.records)
        self._problems(page)
        records = [r for r in page.records if r.get("id") not in (None, "")]
        if len(records) < len(page.records):
            self.counts.problems += len(page.records) - len(records)
            self.result.problems.append(f"{self.job.source.connection}: a record without an id")
        ids = [str(r["id"]) for r in records]
        if seen is not None:
            seen.update(ids)
        mapped = self.store.mapped(self.job.name, ids) if ids else {}
        plan = self.planner.plan_page(records, mapped, cleanup=self.cleanup)
        self._count(plan)
        self._take(plan.steps)
        if self.progress is not None:
            self.progress(len(page.records))

    def _problems(self, page: Page) -> None:
        for problem in page.problems:
            self.counts.problems += 1
            self.result.problems.append(str(problem))
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
        for source_id, error in plan.rejected:
            self.fail(source_id, error)

    def _take(self, steps: Sequence[Step]) -> None:
        if self.dry_run:
            for step in steps:
                if not step.cleanup:
                    self.result.planned.append(step.planned)
                    self._count_applied(step.applied)
        else:
            self.batches.add(steps)

    def _missing(self, seen: set[str], reason: str) -> None:
        """Take back the mapped records that a complete listing of the source did not show."""
        missing = [sid for sid in self.store.source_ids(self.job.name) if sid not in seen]
        for start in range(0, len(missing), _ID_CHUNK):
            rows = self.store.mapped(self.job.name, missing[start : start + _ID_CHUNK])
            self._take(self.planner.plan_missing(rows.values(), reason))

    def write(self, steps: Sequence[Step], cursor: str | None) -> None:
        """Write one batch to the target and record what it acknowledged."""
        results = self._send(steps) if steps else []
        applied = [self._outcome(s, r) for s, r in zip(steps, results[: len(steps)], strict=True)]
        recorded = [a for a in applied if a is not None]
        self.store.record_batch(
            self.job.name,
            self.job.config.target,
            self.job.policy.name,
            self.job.policy.content_hash,
            recorded,
            cursor=KEEP if cursor is None else cursor,
            now=self.recorded_at,
        )
        for change in recorded:
            self._count_applied(change)

    def _send(self, steps: Sequence[Step]) -> list[WriteResult | None]:
        """One result per step; None where the target gave none."""
        try:
            results: list[WriteResult | None] = list(
                self.job.target.write([s.change for s in steps])
            )
        except RecordRejected as exc:  # the adapter refused the batch as a whole
            return [WriteResult(s.change.key, "failed", error=str(exc)) for s in steps]
        return results + [None] * (len(steps) - len(results))

    def _outcome(self, step: Step, result: WriteResult | None) -> AppliedChange | None:
        if result is None or not result.ok or result.key != step.change.key:
            self.fail(step.applied.source_id, _write_error(result), step)
            return None
        if step.cleanup and result.action != "deleted":
            return None  # the target never held it: nothing to record
        return step.applied

    def fail(self, source_id: str, error: str, step: Step | None = None) -> None:
        """Count and report a record that could not be shared or taken back."""
        self.counts.failed += 1
        self.result.failures.append(f"{source_id}: {error}")
        if step is not None and step.applied.action == "delete":
            self.failed_delete = True
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

    def _abort(self, exc: ConnectorError) -> None:
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
                last_reconciled_at=None if self.failed_delete else reconciled,
            )
        )

    def _status(self) -> str:
        if self.result.aborted is not None:
            return "aborted"
        return "failed-records" if self.counts.failed else "ok"

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


def _write_error(result: WriteResult | None) -> str:
    if result is None:
        return "the target returned no result for it"
    if result.ok:
        return "the target answered for another key"
    return result.error or "rejected by the target"
