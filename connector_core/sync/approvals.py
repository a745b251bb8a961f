"""Approvals: the stage between plan and write (DESIGN.md §2 step 5).

A policy's ``approval:`` block names the kinds of change that wait for people: the first
share of a person with this recipient (``first_share``), a field (or a field's outcome) not
shared before (``new_fields``), a change of a field shared before (``field_changes``), or
``all`` of them. :class:`ApprovalStage` takes each page's planned steps, lets everything else
through, and holds those changes in a *change set* kept in the state store
(:mod:`connector_core.sync.approval_book`). Take-backs (deletes, withdrawals) never wait.

A set is bound to its job, the policy's content hash and :func:`set_hash`, the hash of its
members' masked projections (source id, action, target key, projection hash, field labels).
Every run decides the held records again (the runner reads them again) and:

- a set whose members are still planned exactly so keeps waiting; one whose members changed
  (or whose policy changed) *lapses*: its approvals no longer count, and its members are held
  again in a new set, with the changes no set holds yet;
- a set with a verified denial is denied; one that nobody decided within ``expire_after``
  *expires* (denied). The same changes are not asked about again until they change;
- after ``escalate_after`` without quorum, the fallback approvers may decide too;
- a set with quorum (distinct people, each statement verified against the person's key
  declared in connector.yaml) is written by the run, and each of its ledger rows carries the
  approvals (who, when, the statement's hash). It is *released* once the id map holds all of
  it (a run stopped half-way writes the rest next time, under the same approvals).

A held record is not written, not recorded as shared, and decided again each run, so a
crashed run and its rerun end as an uninterrupted run would.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import hashlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from connector_core.errors import ConfigError, ConfigValidationError
from connector_core.records import is_known_field
from connector_core.sync.approval_book import (
    OPEN_STATUSES,
    ApprovalBook,
    ApprovalSet,
    Decision,
    Member,
    Statement,
)
from connector_core.sync.keys import canonical_json
from connector_core.sync.planner import PlannedChange, Step
from connector_core.sync.request_book import RequestBook
from connector_core.yaml_errors import load_yaml

if TYPE_CHECKING:
    from connector_core.config import ApproverConfig, Config, NoticeKind
    from connector_core.notify import Notice
    from connector_core.policy.models import ApprovalModel, Policy
    from connector_core.sync.model import Mapped

__all__ = [
    "APPROVAL_NAMESPACE",
    "ApprovalStage",
    "Tally",
    "check_approvers",
    "request_approvals",
    "set_hash",
    "statement_text",
    "tally",
]

log = logging.getLogger("connector.approvals")

#: The SSHSIG namespace of approval statements (``ssh-keygen -Y sign -n ...``); equal to
#: ``connector_core.signing.NAMESPACE_APPROVAL``.
APPROVAL_NAMESPACE = "commons-connector-approval"
_DECISIONS: tuple[Decision, ...] = ("approve", "deny")
#: the name prefix of an approved share request's job (``connector_core.config.REQUEST_PREFIX``)
REQUEST_JOB = "request-"


def set_hash(job: str, policy_hash: str, members: Iterable[Member], created: dt.datetime) -> str:
    """The hash a set is bound to (and approvers sign): job, policy hash, members, and the
    instant the set was made, so that a statement about one set never decides a later set
    holding the same changes (a person approved, withdrew and consented again: the approvers
    are asked again, and the old statements cannot be replayed)."""
    lines = sorted(canonical_json(m.line()) for m in members)
    made = created.astimezone(dt.UTC).isoformat(timespec="microseconds")
    body = {"v": 2, "job": job, "policy_hash": policy_hash, "members": lines, "created": made}
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


def statement_text(set_digest: str, decision: str) -> bytes:
    """The exact bytes an approver signs to approve or deny the set with hash `set_digest`."""
    return f"commons-connector approval v1\nset: {set_digest}\ndecision: {decision}\n".encode()


def statement_digest(signature: str) -> str:
    """A statement's hash: the SHA-256 of its armored signature."""
    return hashlib.sha256(signature.strip().encode()).hexdigest()


def people(names: Iterable[str], approvers: Mapping[str, ApproverConfig]) -> set[str]:
    """The declared people `names` (people or groups) stand for."""
    found: set[str] = set()
    for name in names:
        if name in approvers:
            found.add(name)
        found.update(p for p, body in approvers.items() if name in body.groups)
    return found


def check_approvers(config: Config, policy: Policy) -> None:
    """Every approver and fallback approver of `policy` names a person or a group declared
    in connector.yaml's ``approvers:``; a ConfigValidationError naming the line otherwise."""
    policy = policy.approver() or policy  # the policy whose approval: block governs
    approval = policy.approval
    if approval is None:
        return
    declared = config.model.approvers
    groups = {g for body in declared.values() for g in body.groups}
    doc = None
    problems = []
    for key in ("approvers", "fallback_approvers"):
        for index, name in enumerate(getattr(approval, key)):
            if name in declared or name in groups:
                continue
            doc = doc or load_yaml(policy.path)
            known = ", ".join(sorted({*declared, *groups})) or "none yet"
            problems.append(
                doc.problem(
                    ("approval", key, index),
                    f"approval.{key}: {name!r} is not a person or group declared under "
                    f"approvers: in {config.path} (declared: {known})",
                )
            )
    if problems:
        raise ConfigValidationError(
            problems,
            hint="Declare each approver in connector.yaml under approvers: with their "
            "organization, email and OpenSSH public key (docs/approvals.md), or fix the name.",
        )


@dataclasses.dataclass
class Tally:
    """What the verified statements about a set add up to."""

    approvals: list[Statement]
    denials: list[Statement]
    refused: list[str]  # statements that no longer verify or whose signer may not decide
    quorum: int
    escalated: bool

    @property
    def approved(self) -> bool:
        """Quorum reached (distinct people) and nobody denied."""
        return not self.denials and len({s.person for s in self.approvals}) >= self.quorum


def eligible(
    aset: ApprovalSet, approval: ApprovalModel, approvers: Mapping[str, ApproverConfig],
    now: dt.datetime,
) -> tuple[set[str], bool]:  # fmt: skip
    """Who may decide `aset` at `now`, and whether it has escalated (fallbacks may decide)."""
    allowed = people(approval.approvers, approvers)
    escalation = approval.escalation()
    escalated = aset.escalated_at is not None or (
        escalation is not None and now - aset.created_at >= escalation
    )
    if escalated:
        allowed |= people(approval.fallback_approvers, approvers)
    return allowed, escalated


def tally(
    aset: ApprovalSet,
    statements: Sequence[Statement],
    approval: ApprovalModel,
    approvers: Mapping[str, ApproverConfig],
    now: dt.datetime,
) -> Tally:
    """Verify every statement about `aset` again, with the keys connector.yaml declares now,
    and count the approvals of distinct eligible people and the denials."""
    from connector_core import signing  # imported only when someone made a statement

    allowed, escalated = eligible(aset, approval, approvers, now)
    result = Tally([], [], [], approval.quorum, escalated)
    for statement in statements:
        person = approvers.get(statement.person)
        if person is None or statement.person not in allowed:
            result.refused.append(f"{statement.person} may not decide this set")
            continue
        try:
            key = signing.load_public_key(person.key)
            message = statement_text(aset.set_hash, statement.decision)
            signing.verify(message, statement.signature, key, signing.NAMESPACE_APPROVAL)
        except signing.SignatureError as exc:
            result.refused.append(f"{statement.person}'s statement does not verify: {exc}")
            continue
        (result.approvals if statement.decision == "approve" else result.denials).append(statement)
    return result


def approval_entries(
    aset: ApprovalSet, statements: Sequence[Statement]
) -> tuple[dict[str, Any], ...]:
    """What each ledger row of a share made under `aset` carries about its approvals."""
    return tuple(
        {
            "by": s.person,
            "at": s.at.isoformat(),
            "statement": s.digest,
            "key": s.fingerprint,
            "set": aset.id,
            "set_hash": aset.set_hash,
        }
        for s in statements
    )


def request_approvals(
    book: ApprovalBook, requests: RequestBook, job: str
) -> tuple[dict[str, Any], ...]:
    """What each ledger row of a share made by an approved share request's job (``request-
    <id>``) carries: the approving statements of the set that approved the request. Empty
    for any other job, and for a request not (or no longer) approved."""
    if not job.startswith(REQUEST_JOB):
        return ()
    stored = requests.get(job.removeprefix(REQUEST_JOB))
    if stored is None or stored.status != "approved" or stored.set_id is None:
        return ()
    aset = book.get(stored.set_id)
    if aset is None or aset.status != "released":
        return ()
    statements = [s for s in book.statements(aset.id) if s.decision == "approve"]
    return approval_entries(aset, statements)


class ApprovalStage:
    """Holds the changes a policy's ``approval:`` names; see the module docstring.

    Args:
        job: the job's name.
        policy: the compiled policy's name and content hash, and its approval block.
        approvers: connector.yaml's declared people.
        book: the state store's approval tables.
        lookup: the job's id map rows of some source ids (``StateStore.mapped``).
        now: the run's time (the clock escalation and expiry are measured with).
        dry_run: decide, but change nothing in the store; keep the held changes to show.
        recipient: the job's target connection (named in notices).
        notify: sends a notice (:func:`connector_core.notify.send` with connector.yaml),
            returning its problems; None sends nothing.
    """

    def __init__(
        self,
        job: str,
        policy: str,
        policy_hash: str,
        approval: ApprovalModel,
        approvers: Mapping[str, ApproverConfig],
        book: ApprovalBook,
        lookup: Callable[[Sequence[str]], Mapping[str, Mapped]],
        *,
        now: dt.datetime,
        dry_run: bool = False,
        recipient: str = "",
        notify: Callable[[Notice], list[str]] | None = None,
    ) -> None:
        self.lookup = lookup
        self.recipient = recipient
        self.notify = notify
        self.job, self.policy, self.policy_hash = job, policy, policy_hash
        self.approval = approval
        self.approvers = approvers
        self.book = book
        self.now = now
        self.dry_run = dry_run
        self.kinds = approval.kinds()
        self.held: dict[str, Member] = {}  # this run's held changes, by source id
        self.kept: dict[str, Step] = {}  # held steps of approved sets, to write if still equal
        self.awaiting: list[PlannedChange] = []  # a dry run's held changes, to show
        self.denied_count = 0
        self.released = 0  # held changes written this run (approved sets)
        self.messages: list[str] = []  # for the run's output
        self.open: list[ApprovalSet] = []
        self.releasing: list[ApprovalSet] = []
        self._approved: dict[int, Tally] = {}
        self._denied: set[tuple[str, str]] = set()
        self._release_ids: set[str] = set()

    def begin(self) -> frozenset[str]:
        """Load the open sets; return the source ids they hold (the run reads them again)."""
        self.open = self.book.sets(self.job, ("waiting", "approved"))
        self._denied = self.book.denied(self.job, self.policy_hash)
        for aset in self.open:
            if aset.policy_hash != self.policy_hash:
                continue
            statements = self.book.statements(aset.id)
            if not statements:
                continue
            counted = tally(aset, statements, self.approval, self.approvers, self.now)
            if counted.approved:
                self._approved[aset.id] = counted
                self._release_ids.update(m.source_id for m in self.book.members(aset.id))
        return frozenset(self.book.held_ids(self.job))

    def take(self, steps: Sequence[Step]) -> list[Step]:
        """The steps that go on to the write; the rest are held (not written, not recorded)."""
        if not steps:
            return []
        passing: list[Step] = []
        for step in steps:
            if step.verify or not (step.kinds & self.kinds):
                passing.append(step)
                continue
            if step.takeback is not None:  # take-backs never wait: that part goes on now
                passing.append(step.takeback)
            member = _member(step)
            if (member.source_id, member.digest) in self._denied:
                self.denied_count += 1  # denied before, unchanged since: not asked again
                continue
            self.held[member.source_id] = member
            if member.source_id in self._release_ids:
                self.kept[member.source_id] = step
            if self.dry_run:
                self.awaiting.append(step.planned)
        return passing

    def end(self) -> list[Step]:
        """After the whole read: settle each open set; return the approved steps to write."""
        current = dict(self.held)
        # members of approved sets this run did not plan: written by an interrupted release?
        unplanned = sorted(self._release_ids - set(current))
        mapped = self.lookup(unplanned) if unplanned else {}
        released: list[Step] = []
        lapsed: list[tuple[ApprovalSet, str]] = []
        for aset in self.open:
            members = self.book.members(aset.id)
            why = self._changed(aset, members, current, mapped)
            if why is not None:
                lapsed.append((aset, why))
                continue
            for m in members:
                current.pop(m.source_id, None)
            if aset.id in self._approved:
                released += self._release(aset, members)
            else:
                self._settle_waiting(aset, members)
        if current:  # stored before the lapsed sets close: a killed run forgets nothing
            self._new_set(list(current.values()))
        for aset, why in lapsed:
            self._close(aset, "lapsed", f"lapsed: {why}; its changes are reviewed again")
        if self.denied_count:
            self.messages.append(
                f"{self.denied_count} change(s) stay unshared: their set was denied or "
                "expired, and they have not changed since"
            )
        self.released = len(released)
        return released

    def settle(self) -> None:
        """After the writes: a released set whose members the id map now all holds, as
        approved, is marked released."""
        for aset in self.releasing:
            members = self.book.members(aset.id)
            mapped = self.lookup([m.source_id for m in members])
            done = all(
                (row := mapped.get(m.source_id)) is not None and row.projection_hash == m.digest
                for m in members
            )
            if done and not self.dry_run:
                self.book.update(aset.id, status="released", decided_at=self.now)

    # -- the fate of one set -------------------------------------------------------------

    def _changed(
        self,
        aset: ApprovalSet,
        members: Sequence[Member],
        current: Mapping[str, Member],
        mapped: Mapping[str, Mapped],
    ) -> str | None:
        """Why `aset` no longer covers what this run would send (None: it still does)."""
        if aset.policy_hash != self.policy_hash:
            return "the policy changed"
        for m in members:
            now = current.get(m.source_id)
            if now is not None and now.line() == m.line():
                continue
            row = mapped.get(m.source_id)
            if aset.id in self._approved and row is not None and row.projection_hash == m.digest:
                continue  # written already by an interrupted release
            return "the records or fields it holds changed"
        if set_hash(self.job, self.policy_hash, members, aset.created_at) != aset.set_hash:
            return "its members no longer match its hash"
        return None

    def _release(self, aset: ApprovalSet, members: Sequence[Member]) -> list[Step]:
        counted = self._approved[aset.id]
        entries = approval_entries(aset, counted.approvals)
        steps = [
            _with_approvals(self.kept[m.source_id], entries)
            for m in members
            if m.source_id in self.kept
        ]
        names = ", ".join(sorted({s.person for s in counted.approvals}))
        self.messages.append(
            f"set #{aset.id}: approved by {names}; {len(steps)} change(s) written now"
        )
        self.releasing.append(aset)
        if aset.status != "approved":  # told once, not again when a cut-short release resumes
            if not self.dry_run:
                self.book.update(aset.id, status="approved")
            self._tell("decided", aset, decision="approved")
        return steps

    def _settle_waiting(self, aset: ApprovalSet, members: Sequence[Member]) -> None:
        if aset.status == "approved" and not self.dry_run:  # its statements count no more
            self.book.update(aset.id, status="waiting")
        statements = self.book.statements(aset.id)
        counted = tally(aset, statements, self.approval, self.approvers, self.now) if (
            statements
        ) else None  # fmt: skip
        if counted is not None and counted.denials:
            names = ", ".join(sorted({s.person for s in counted.denials}))
            self._close(aset, "denied", f"denied by {names}; {len(members)} change(s) not made")
            self._tell("decided", aset, decision="denied")
            return
        if self.now - aset.created_at >= self.approval.expiry():
            self._close(
                aset,
                "expired",
                f"expired: nobody decided within {self.approval.expire_after}, so it is "
                f"denied; {len(members)} change(s) not made",
            )
            self._tell("expired", aset, decision="expired")
            return
        escalation = self.approval.escalation()
        if (
            aset.escalated_at is None
            and escalation is not None
            and self.now - aset.created_at >= escalation
        ):
            if not self.dry_run:
                self.book.update(aset.id, escalated_at=self.now)
            self.messages.append(
                f"set #{aset.id}: no quorum after {self.approval.escalate_after}; the fallback "
                f"approvers ({', '.join(self.approval.fallback_approvers)}) may decide now"
            )
            self._tell("escalated", aset)
        have = 0 if counted is None else len({s.person for s in counted.approvals})
        self.messages.append(
            f"set #{aset.id}: {len(members)} change(s) wait for approval "
            f"({have} of {self.approval.quorum}); review: connector approvals show {aset.id}"
        )

    def _close(self, aset: ApprovalSet, status: str, note: str) -> None:
        self.messages.append(f"set #{aset.id}: {note}")
        if not self.dry_run:
            self.book.update(aset.id, status=status, decided_at=self.now, note=note)

    def _new_set(self, members: list[Member]) -> None:
        digest = set_hash(self.job, self.policy_hash, members, self.now)
        summary = summarize(members) | {
            "quorum": self.approval.quorum,
            "approvers": list(self.approval.approvers),
            "fallback_approvers": list(self.approval.fallback_approvers),
            "escalate_after": self.approval.escalate_after,
            "expire_after": self.approval.expire_after,
        }
        if self.dry_run:
            self.messages.append(
                f"{len(members)} change(s) would wait for approval in a new set ({digest[:12]})"
            )
            return
        set_id = self.book.create(
            job=self.job,
            policy=self.policy,
            policy_hash=self.policy_hash,
            set_hash=digest,
            members=members,
            summary=summary,
            now=self.now,
        )
        self.messages.append(
            f"set #{set_id}: {len(members)} change(s) wait for approval (0 of "
            f"{self.approval.quorum}); review: connector approvals show {set_id}"
        )
        aset = self.book.get(set_id)
        if aset is not None:
            self._tell("waiting", aset)

    def _tell(self, kind: NoticeKind, aset: ApprovalSet, decision: str | None = None) -> None:
        """Tell people about `aset` (no personal data: counts, field names, the command that
        reviews it): its approvers when it waits, the fallback approvers when it escalates,
        the admin (``notifications.admin``) when it is decided or expires."""
        log.info(
            "job %s: approval set #%s %s",
            self.job,
            aset.id,
            decision or kind,
            extra={"job": self.job, "set": aset.id, "kind": kind},
        )
        if self.notify is None or self.dry_run:
            return
        from connector_core.notify import Notice  # requests and smtplib: only to tell someone

        names = {
            "waiting": self.approval.approvers,
            "escalated": self.approval.fallback_approvers,
        }.get(kind, [])
        summary = aset.summary
        counts = {"changes": int(summary.get("changes", 0))}
        counts.update((k, int(v)) for k, v in summary.get("kinds", {}).items())
        try:
            notice = Notice(
                kind=kind,
                job=self.job,
                policy=self.policy,
                recipient=self.recipient or self.job,
                set_id=str(aset.id),
                counts=counts,
                fields=tuple(f for f in summary.get("fields", {}) if is_known_field(f)),
                review=f"connector approvals show {aset.id}",
                to=tuple(sorted(people(names, self.approvers))),
                decision=decision,
            )
        except ValueError as exc:  # the notice refused a text: never sent, said so
            self.messages.append(f"set #{aset.id}: notice not sent: {exc}")
            return
        self.messages.extend(f"set #{aset.id}: {p}" for p in self.notify(notice))


def lapse_open_sets(book: ApprovalBook, job: str, now: dt.datetime) -> list[str]:
    """A job whose policy no longer asks for approval: its open sets lapse (their changes
    are decided again under the policy as it is). Returns what the run says about it."""
    note = "lapsed: the policy no longer asks for approval"
    lines = []
    for aset in book.sets(job, OPEN_STATUSES):
        book.update(aset.id, status="lapsed", decided_at=now, note=note)
        lines.append(f"set #{aset.id}: {note}")
    return lines


def summarize(members: Sequence[Member]) -> dict[str, Any]:
    """Counts by action and kind, and the field labels held: what a set's row keeps."""
    actions = collections.Counter(m.action for m in members)
    kinds = collections.Counter(k for m in members for k in m.kinds)
    fields: dict[str, str] = {}
    for m in members:
        fields.update(m.fields)
    return {
        "changes": len(members),
        "actions": dict(sorted(actions.items())),
        "kinds": dict(sorted(kinds.items())),
        "fields": dict(sorted(fields.items())),
    }


def _member(step: Step) -> Member:
    a = step.applied
    if a.projection_hash is None:  # never: deletes are not held
        raise ValueError("a held change needs a projection hash")
    return Member(
        a.source_id,
        a.action,
        a.target_key,
        a.projection_hash,
        dict(a.fields),
        tuple(sorted(step.kinds)),
    )


def _with_approvals(step: Step, entries: tuple[dict[str, Any], ...]) -> Step:
    applied = dataclasses.replace(step.applied, approvals=entries)
    return dataclasses.replace(step, applied=applied)


class StatementRefused(ConfigError):
    """A statement that cannot count: wrong key, another set, a set no longer open, a person
    who may not decide (yet). Nothing is stored."""


def take_statement(
    book: ApprovalBook,
    aset: ApprovalSet,
    *,
    person: str,
    decision: Decision,
    signature: str,
    approval: ApprovalModel,
    policy_hash: str,
    approvers: Mapping[str, ApproverConfig],
    now: dt.datetime,
) -> Statement:
    """Verify a signed statement about `aset` and store it; return it.

    Raises:
        StatementRefused: the set is not open or its policy changed since; the person is not
            declared or may not decide it (a fallback approver before escalation); the
            signature is not the person's, or is over another set or decision.
    """
    from connector_core import signing  # only here and in tally: cryptography on use

    where = f"set #{aset.id} (job {aset.job})"
    if aset.status not in ("waiting", "approved"):
        raise StatementRefused(
            f"{where} is {aset.status}: it can no longer be decided",
            hint="`connector approvals list` shows the sets waiting now.",
        )
    if aset.policy_hash != policy_hash:
        raise StatementRefused(
            f"{where} was held under another version of policy {aset.policy!r}; it lapses at "
            "the next run",
            hint="Run the job, then review the new set it holds.",
        )
    if now - aset.created_at >= approval.expiry():
        raise StatementRefused(
            f"{where} waited longer than {approval.expire_after}: it has expired, and the "
            "next run denies it",
            hint="Its changes are asked about again when they change.",
        )
    body = approvers.get(person)
    if body is None:
        raise StatementRefused(
            f"{person!r} is not declared under approvers: in connector.yaml",
            hint="Add the person with their organization, email and OpenSSH public key.",
        )
    allowed, escalated = eligible(aset, approval, approvers, now)
    if person not in allowed:
        later = person in people(approval.fallback_approvers, approvers) and not escalated
        raise StatementRefused(
            f"{person} may not decide {where}"
            + (f" before it escalates (after {approval.escalate_after})" if later else ""),
            hint=f"Its approvers: {', '.join(approval.approvers)}"
            + (f"; after escalation also {', '.join(approval.fallback_approvers)}"
               if approval.fallback_approvers else "")
            + ".",
        )  # fmt: skip
    try:
        key = signing.load_public_key(body.key)
        signing.verify(
            statement_text(aset.set_hash, decision), signature, key, signing.NAMESPACE_APPROVAL
        )
    except signing.SignatureError as exc:
        raise StatementRefused(
            f"the statement for {person} about {where} does not verify: {exc}", hint=exc.hint
        ) from None
    statement = Statement(
        aset.id, person, decision, now, signature.strip() + "\n", statement_digest(signature),
        key.fingerprint,
    )  # fmt: skip
    book.add_statement(statement)
    return statement


def match_statement(
    signature: str, sets: Sequence[ApprovalSet], approvers: Mapping[str, ApproverConfig]
) -> tuple[str, ApprovalSet, Decision]:
    """Which declared person, open set and decision a bare signature file is about.

    The signature names its key; the statement text is one of the open sets' two texts.

    Raises:
        StatementRefused: no declared approver holds the key, or it signs no open set's text.
    """
    from connector_core import signing

    try:
        key = signing.signer(signature)
    except signing.SignatureError as exc:
        raise StatementRefused(f"not a usable signature: {exc}", hint=exc.hint) from None
    names = [
        name for name, body in approvers.items()
        if _fingerprint(body.key) == key.fingerprint
    ]  # fmt: skip
    if not names:
        raise StatementRefused(
            f"signed by {key.fingerprint}, the key of no approver declared in connector.yaml",
            hint="Check who sent it; a person's current public key goes under approvers:.",
        )
    for aset in sets:
        for decision in _DECISIONS:
            try:
                signing.verify(
                    statement_text(aset.set_hash, decision), signature, key,
                    signing.NAMESPACE_APPROVAL,
                )  # fmt: skip
            except signing.SignatureError:
                continue
            return names[0], aset, decision
    raise StatementRefused(
        f"the statement by {names[0]} is about no set waiting now (another set, one that "
        "lapsed or was decided, or an altered text)",
        hint="`connector approvals list` shows the sets waiting; export the current one again.",
    )


def _fingerprint(text: str) -> str | None:
    from connector_core import signing

    try:
        return signing.load_public_key(text).fingerprint
    except signing.SignatureError:
        return None
