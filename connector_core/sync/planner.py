"""Planning: from source records and the id map to the creates, updates and deletes of a run.

Pure logic, no I/O: the runner feeds it pages of records with the id map rows of their
source ids, and it decides per record, with the compiled policy, what the target must
receive for the mirror promise to hold:

- shared and not in the id map: create (under the job's deterministic key);
- shared and in the id map with another projection hash: update; with the same: unchanged;
- withheld (or deleted at the source) and in the id map: delete, with the reason
  (``withdrawn:<purpose>`` when the source says no to a required purpose: a *withdrawal*,
  which the mass-delete guard never holds back);
- withheld and not in the id map: nothing;
- in the id map but missing from a read that listed every source record: delete, as
  ``missing-at-source``.

A change still *outstanding* from an earlier run (sent but not recorded, rejected, held)
reaches the planner as a :class:`Mapped` row with :data:`UNKNOWN_HASH`: its content at the
target is not known, so it is written again if shared and deleted if withheld. When the id map
does not hold it (``recorded`` false: a create whose acknowledgement the interruption lost),
a share is a create under the key already sent and a delete is a *cleanup*, recorded only if
the target really held the record.

The state keeps hashes of projections and of each shared field, never their values (a
recipient's data is not copied into the connector's own database), so a planned update lists
exactly the fields that change, with their new values, and None as the old side.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from connector_core.adapters import Change
from connector_core.cells import strip_controls_deep
from connector_core.errors import RecordRejected
from connector_core.policy.compiler import CompiledPolicy, Decision
from connector_core.records import Record
from connector_core.sync.keys import projection_hashes
from connector_core.sync.model import AppliedChange, Mapped

MISSING_AT_SOURCE = "missing-at-source"
DELETED_AT_SOURCE = "deleted-at-source"
MERGED_AT_SOURCE = "merged-at-source"
WITHDRAWN = "withdrawn:"
AFTER_INTERRUPTION = "(cleanup after a run interrupted before the upgrade)"


@dataclasses.dataclass
class PlannedChange:
    """One change a run makes (or, in a dry run, would make) to the target.

    ``projection`` is what the recipient receives (masked values), None for deletes.
    ``diff`` maps each field that changes to ``(old, new)`` in the recipient's view. Old
    values are not kept in the state (only per-field hashes), so ``old`` is None; a field
    shared before and absent now appears as ``(None, None)``. For records the state holds
    no field hashes for (written before they were kept), every field is listed. ``reason``
    is the decision's reason (``shared:<rule>``, ``consent:<purpose>``,
    ``missing-at-source``…).
    """

    action: Literal["create", "update", "delete"]
    source_id: str
    target_key: str
    projection: Record | None
    diff: dict[str, tuple[Any, Any]]
    reason: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Step:
    """A planned change with what the target is sent and what the state records after it.

    ``cleanup`` marks a delete of a key that is not in the id map (an outstanding create):
    it is recorded only if the target really held the record. ``withdrawal`` marks a delete
    the source asked for explicitly (consent withdrawn), which is never held back."""

    planned: PlannedChange
    change: Change
    applied: AppliedChange
    cleanup: bool = False
    withdrawal: bool = False
    verify: bool = False  #: an unchanged share sent again, for the target to compare
    #: what the change is, for approval (only when the planner classifies): "first_share",
    #: "new_fields" (a field, or a field's outcome, not shared before), "field_changes"
    kinds: frozenset[str] = frozenset()
    #: for an update the approval stage holds that also takes fields back: the record as the
    #: recipient holds it now minus what is taken back, with every field whose change waits
    #: cleared (the state keeps no copy of old values); written at once, so that a take-back
    #: never waits (docs/approvals.md)
    takeback: Step | None = dataclasses.field(default=None, repr=False, compare=False)
    #: the source record the step was planned from (None for records missing at the
    #: source): its values, with the projection's, are scrubbed from any error about it
    source: Record | None = dataclasses.field(default=None, repr=False, compare=False)

    def values(self) -> list[Any]:
        """Every value of the record this step is about: what an error must not carry."""
        found: list[Any] = [] if self.change.record is None else list(self.change.record.values())
        if self.source is not None:
            found.extend(self.source.values())
        return found


@dataclasses.dataclass
class PagePlan:
    """What one page of records needs, and what it counts."""

    steps: list[Step] = dataclasses.field(default_factory=list)
    shared: int = 0
    unchanged: int = 0
    withheld: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    #: (id, error, record) of the records the policy could not be applied to
    rejected: list[tuple[str, str, Record]] = dataclasses.field(default_factory=list)


class Planner:
    """Plans the changes of one job's run with its compiled policy.

    Args:
        job: the job's name.
        policy: the compiled policy.
        keys: the job's key function (:class:`~connector_core.sync.keys.TargetKeys`): the
            target key of a source id not yet in the id map.
        salt: the target's fingerprint, mixed into projection hashes.
        with_diff: fill :attr:`PlannedChange.diff` (dry runs); real runs skip the work.
        approvals: what each share's ledger row carries about the approvals it is made
            under (a share request's job: :func:`~connector_core.sync.approvals.request_approvals`).
        cleanup: also take back the derived key of every withheld record the id map does not
            hold: only for a job whose run was interrupted before the connector kept an
            intent log (then nothing says which creates the target acknowledged).
    """

    def __init__(
        self,
        job: str,
        policy: CompiledPolicy,
        *,
        keys: Callable[[str], str],
        salt: str = "",
        with_diff: bool = False,
        cleanup: bool = False,
        verify: bool = False,
        approvals: tuple[dict[str, Any], ...] = (),
    ) -> None:
        self.job = job
        #: the approvals every share of this job is made under (a share request's job)
        self.approvals = approvals
        self.cleanup = cleanup
        #: Send unchanged shares too (a full run to a target that compares before writing).
        self.verify = verify
        self.policy = policy
        self.keys = keys
        self.salt = salt
        self.with_diff = with_diff
        self.labels = {name: outcome.label() for name, outcome in policy.outcomes.items()}
        self._memo: dict[str, str] = {}  # field hashes by what they hash (see projection_hashes)
        self.purposes = tuple(
            dict.fromkeys(p for link in policy.links for p in link.policy.require_consent)
        )
        #: classify shares for the approval stage (only when the policy asks for approval)
        governing = policy.policy.approver()
        self.classify = governing is not None
        #: the kinds of change that wait (for the take-back of a held update)
        self.held_kinds = (
            governing.approval.kinds()
            if governing is not None and governing.approval is not None
            else frozenset()
        )

    def plan_page(
        self,
        records: Iterable[Record],
        mapped: Mapping[str, Mapped],
        decide: Callable[[Record], tuple[Decision, Record | None]] | None = None,
    ) -> PagePlan:
        """Decide every record of a page against the id map rows of its source ids.

        `decide` (default: the policy's own ``evaluate``) may give decisions made already,
        for many jobs at once (:mod:`connector_core.sync.fanout`): it must equal ``evaluate``.
        """
        plan = PagePlan()
        evaluate = self.policy.evaluate if decide is None else decide
        withheld, steps = plan.withheld, plan.steps
        for record in records:
            source_id = str(record["id"])
            try:
                decision, projection = evaluate(record)
            except RecordRejected as exc:  # a mask's fixed text; the runner scrubs it anyway
                plan.rejected.append((source_id, str(exc), record))
                continue
            if record.get("deleted") is True:
                decision, projection = Decision(False, _deleted_reason(record)), None
            known = mapped.get(source_id)
            if projection is None:
                withheld[decision.reason] += 1
                if known is None and not self.cleanup:
                    continue  # nothing to take back: the common case, kept short
                step = self._withheld(record, source_id, decision.reason, known)
            else:
                plan.shared += 1
                step = self._shared(record, source_id, decision, projection, known)
                plan.unchanged += step is None or step.verify
            if step is not None:
                steps.append(step)
        return plan

    def plan_missing(self, rows: Iterable[Mapped], reason: str = MISSING_AT_SOURCE) -> list[Step]:
        """Deletes for id map rows whose source records a complete listing did not include."""
        return [self._delete_known(row, reason, {}) for row in rows]

    def _shared(
        self,
        record: Record,
        source_id: str,
        decision: Decision,
        projection: Record,
        known: Mapped | None,
    ) -> Step | None:
        # NUL and other control characters never reach a target: removed here, once for
        # every adapter, and before hashing, so the state holds the hash of what was sent.
        projection = _without_controls(projection)
        digest, hashes = projection_hashes(projection, self.salt, self._memo)
        same = known is not None and known.projection_hash == digest
        if same and not self.verify:
            return None
        action: Literal["create", "update"] = "update" if known and known.recorded else "create"
        key = self.keys(source_id) if known is None else known.target_key
        fields = {f: self.labels[f] for f, v in projection.items() if v is not None}
        basis = self._basis(record, self.purposes)
        applied = AppliedChange(
            action, source_id, key, digest, fields, basis, decision.reason, hashes,
            self.approvals,
        )  # fmt: skip
        diff = self._diff(projection, hashes, known) if self.with_diff else {}
        planned = PlannedChange(action, source_id, key, projection, diff, decision.reason)
        kinds = _kinds(known, fields, hashes) if self.classify and not same else _NO_KINDS
        takeback = None
        if kinds & self.held_kinds and known is not None and known.recorded:
            takeback = self._takeback(record, applied, projection, known)
        return Step(
            planned, Change.upsert(key, projection), applied,
            verify=same, source=record, kinds=kinds, takeback=takeback,
        )  # fmt: skip

    def _takeback(
        self, record: Record, applied: AppliedChange, projection: Record, known: Mapped
    ) -> Step | None:
        """The take-back part of a held update (:attr:`Step.takeback`), or None when it takes
        nothing back. A field keeps its value only if the recipient holds it already, or if
        its change is of a kind that does not wait; every other field is cleared (None). The
        cleared fields' old hashes stay in the recorded field hashes, so that their change
        is still a change (and still waits) in the runs after it."""
        shared = known.fields
        if not any(name not in applied.fields for name in shared):
            return None  # nothing taken back: the whole update waits
        old = known.field_hashes or {}
        hashes = applied.field_hashes or {}
        kept: dict[str, Any] = {}
        for name, value in projection.items():
            label = self.labels.get(name)
            if value is None:
                kept[name] = None
                continue
            kinds = set()
            if shared.get(name) != label:
                kinds.add("new_fields")
            if known.field_hashes is None or (name in shared and old.get(name) != hashes.get(name)):
                kinds.add("field_changes")
            kept[name] = None if kinds & self.held_kinds else value
        digest, narrowed = projection_hashes(kept, self.salt, self._memo)
        fields = {f: self.labels[f] for f, v in kept.items() if v is not None}
        for name, value in projection.items():  # cleared, shared before: remember its hash
            if value is not None and kept.get(name) is None and name in old:
                narrowed[name] = old[name]
        key = applied.target_key
        reason = f"{applied.reason} (taken back while a change waits for approval)"
        change = AppliedChange(
            "update", applied.source_id, key, digest, fields, applied.consent_basis, reason,
            narrowed, self.approvals,
        )  # fmt: skip
        diff = self._diff(kept, narrowed, known) if self.with_diff else {}
        planned = PlannedChange("update", applied.source_id, key, kept, diff, reason)
        return Step(planned, Change.upsert(key, kept), change, source=record)

    def _withheld(
        self, record: Record, source_id: str, reason: str, known: Mapped | None
    ) -> Step | None:
        purpose = reason.removeprefix("consent:") if reason.startswith("consent:") else None
        basis = self._basis(record, (purpose,) if purpose else ())
        if known is None:
            if not self.cleanup:
                return None
            return self._legacy_cleanup(source_id, reason, basis, record)
        withdrawn = purpose is not None and _says_no(basis.get(purpose))
        if withdrawn:
            reason = f"{WITHDRAWN}{purpose}"
        return self._delete_known(known, reason, basis, withdrawal=withdrawn, source=record)

    def _legacy_cleanup(
        self, source_id: str, reason: str, basis: dict[str, Any], source: Record
    ) -> Step:
        key = self.keys(source_id)
        reason = f"{reason} {AFTER_INTERRUPTION}"
        return self.delete(source_id, key, reason, None, basis, cleanup=True, source=source)

    def _delete_known(
        self,
        known: Mapped,
        reason: str,
        basis: dict[str, Any],
        *,
        withdrawal: bool = False,
        source: Record | None = None,
    ) -> Step:
        key, cleanup = known.target_key, not known.recorded
        return self.delete(
            known.source_id, key, reason, known, basis,
            cleanup=cleanup, withdrawal=withdrawal, source=source,
        )  # fmt: skip

    def delete(
        self,
        source_id: str,
        key: str,
        reason: str,
        known: Mapped | None,
        basis: dict[str, Any] | None = None,
        *,
        cleanup: bool = False,
        withdrawal: bool = False,
        source: Record | None = None,
    ) -> Step:
        """A step that takes a record back from the target."""
        diff: dict[str, tuple[Any, Any]] = {}
        if self.with_diff and known is not None:
            diff = dict.fromkeys(known.fields, (None, None))
        planned = PlannedChange("delete", source_id, key, None, diff, reason)
        applied = AppliedChange("delete", source_id, key, None, {}, basis or {}, reason)
        return Step(
            planned, Change.delete(key), applied,
            cleanup=cleanup, withdrawal=withdrawal, source=source,
        )  # fmt: skip

    @staticmethod
    def _diff(
        projection: Record, hashes: Mapping[str, str], known: Mapped | None
    ) -> dict[str, tuple[Any, Any]]:
        before = known.field_hashes if known is not None else None
        diff = {
            f: (None, v)
            for f, v in projection.items()
            if v is not None and (before is None or before.get(f) != hashes[f])
        }
        if known is not None:
            diff.update((f, (None, None)) for f in (before or known.fields) if f not in hashes)
        return diff

    @staticmethod
    def _basis(record: Record, purposes: Iterable[str]) -> dict[str, Any]:
        """The consent states behind a decision, as the source reported them."""
        consent = record.get("consent")
        if not isinstance(consent, dict):
            return {}
        return {p: consent[p] for p in purposes if p in consent}


_NO_KINDS: frozenset[str] = frozenset()
_FIRST_SHARE = frozenset({"first_share"})


def _kinds(
    known: Mapped | None, fields: Mapping[str, str], hashes: Mapping[str, str]
) -> frozenset[str]:
    """What a share is, for approval: the first share of the person with this recipient, a
    field (or a field's outcome: ``show`` where it was masked) not shared before, a change of
    a field shared before. A field only taken away is none of them (take-backs never wait)."""
    if known is None or not known.recorded:
        return _FIRST_SHARE
    before, old = known.fields, known.field_hashes
    kinds = set()
    if any(before.get(name) != label for name, label in fields.items()):
        kinds.add("new_fields")
    if old is None or any(
        (name in before or name in old) and old.get(name) != hashes.get(name) for name in fields
    ):
        kinds.add("field_changes")
    return frozenset(kinds)


_FLAT = frozenset({int, float, bool, type(None)})


def _without_controls(projection: Record) -> Record:
    """:func:`strip_controls_deep` of a projection (a new dict), without walking it when
    there is nothing to strip: names and text values all printable (no control character
    is), every other value a number, a boolean or None."""
    for name, value in projection.items():
        plain = (value.__class__ is str and value.isprintable()) or value.__class__ in _FLAT
        if not (plain and name.__class__ is str and name.isprintable()):
            return strip_controls_deep(projection)  # type: ignore[no-any-return]
    return dict(projection)


def _says_no(state: Any) -> bool:
    """True when a consent state is an explicit no (not merely missing evidence)."""
    return isinstance(state, dict) and state.get("granted") is False


def _deleted_reason(record: Record) -> str:
    """``merged-at-source:<survivor id>`` for a merged record, else ``deleted-at-source``."""
    survivor = record.get("merged_into")
    return f"{MERGED_AT_SOURCE}:{survivor}" if survivor else DELETED_AT_SOURCE
