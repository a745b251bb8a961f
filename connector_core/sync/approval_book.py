"""Where held change sets, their members and the signed statements about them are kept.

The state store's tables ``approval_sets``, ``approval_members`` and ``approval_statements``
(schema 0010), read and written through :class:`ApprovalBook`
(:meth:`StateStore.approvals <connector_core.sync.state.StateStore.approvals>`). Nothing here
holds a record's values: members are source ids with the hash and field labels of what would
be sent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy import Connection

from connector_core.sync.dialect import chunks
from connector_core.sync.tables import approval_members, approval_sets, approval_statements

#: The statuses of a set still open: a run of its job settles it (or lets it lapse).
OPEN_STATUSES = ("waiting", "approved")

#: waiting (for quorum), approved (quorum reached, not yet written), released (written),
#: denied, expired (nobody decided in time: denied), lapsed (what it covered changed)
SetStatus = Literal["waiting", "approved", "released", "denied", "expired", "lapsed"]
OPEN: tuple[SetStatus, ...] = ("waiting", "approved")
Decision = Literal["approve", "deny"]


@dataclasses.dataclass(frozen=True, slots=True)
class Member:
    """One held change: what the target would receive, by hash and field labels."""

    source_id: str
    action: str
    target_key: str
    digest: str  # the hash of the masked projection (the id map's projection hash)
    fields: dict[str, str]  # field -> outcome label
    kinds: tuple[str, ...]

    def line(self) -> list[Any]:
        """What the set's hash covers of this member."""
        return [
            self.source_id,
            self.action,
            self.target_key,
            self.digest,
            sorted(self.fields.items()),
        ]


@dataclasses.dataclass(frozen=True, slots=True)
class ApprovalSet:
    """A held change set, bound to its job, its policy's content hash and `set_hash`."""

    id: int
    job: str
    policy: str
    policy_hash: str
    set_hash: str
    status: SetStatus
    created_at: dt.datetime
    escalated_at: dt.datetime | None
    decided_at: dt.datetime | None
    summary: dict[str, Any]
    note: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class Statement:
    """A signed approval or denial of a set, as stored (verified when it was taken)."""

    set_id: int
    person: str
    decision: Decision
    at: dt.datetime
    signature: str
    digest: str  # SHA-256 of the armored signature: the statement's hash
    fingerprint: str  # of the key that signed it


class ApprovalBook:
    """The approval tables of one state store; `transaction` is the store's."""

    def __init__(
        self, transaction: Callable[..., contextlib.AbstractContextManager[Connection]]
    ) -> None:
        self._transaction = transaction

    def sets(
        self, job: str | None = None, statuses: Iterable[str] | None = None
    ) -> list[ApprovalSet]:
        """The sets (of `job`, with one of `statuses`), oldest first."""
        query = sa.select(approval_sets).order_by(approval_sets.c.id)
        if job is not None:
            query = query.where(approval_sets.c.job == job)
        if statuses is not None:
            query = query.where(approval_sets.c.status.in_(list(statuses)))
        with self._transaction() as conn:
            return [ApprovalSet(**row._mapping) for row in conn.execute(query)]

    def get(self, set_id: int) -> ApprovalSet | None:
        """The set `set_id`, None if there is none."""
        query = sa.select(approval_sets).where(approval_sets.c.id == set_id)
        with self._transaction() as conn:
            row = conn.execute(query).first()
        return None if row is None else ApprovalSet(**row._mapping)

    def members(self, set_id: int) -> list[Member]:
        """The held changes of set `set_id`, by source id."""
        query = (
            sa.select(approval_members)
            .where(approval_members.c.set_id == set_id)
            .order_by(approval_members.c.source_id)
        )
        with self._transaction() as conn:
            rows = list(conn.execute(query))
        return [
            Member(r.source_id, r.action, r.target_key, r.digest, dict(r.fields), tuple(r.kinds))
            for r in rows
        ]

    def held_ids(self, job: str) -> set[str]:
        """Source ids held in `job`'s open sets (a run reads them again)."""
        query = (
            sa.select(approval_members.c.source_id)
            .join(approval_sets, approval_sets.c.id == approval_members.c.set_id)
            .where(approval_sets.c.job == job, approval_sets.c.status.in_(OPEN))
        )
        with self._transaction() as conn:
            return set(conn.scalars(query))

    def denied(self, job: str, policy_hash: str) -> set[tuple[str, str]]:
        """(source id, digest) of members of `job`'s denied or expired sets under `policy_hash`:
        the same change is not asked about again until it (or the policy) changes."""
        query = (
            sa.select(approval_members.c.source_id, approval_members.c.digest)
            .join(approval_sets, approval_sets.c.id == approval_members.c.set_id)
            .where(
                approval_sets.c.job == job,
                approval_sets.c.policy_hash == policy_hash,
                approval_sets.c.status.in_(("denied", "expired")),
            )
        )
        with self._transaction() as conn:
            return {(r.source_id, r.digest) for r in conn.execute(query)}

    def create(
        self,
        *,
        job: str,
        policy: str,
        policy_hash: str,
        set_hash: str,
        members: Sequence[Member],
        summary: dict[str, Any],
        now: dt.datetime,
    ) -> int:
        """Store a new waiting set with its members; return its id."""
        row = {
            "job": job,
            "policy": policy,
            "policy_hash": policy_hash,
            "set_hash": set_hash,
            "status": "waiting",
            "created_at": now,
            "summary": summary,
        }
        with self._transaction(write=True) as conn:
            key = conn.execute(sa.insert(approval_sets).values(row)).inserted_primary_key
            if key is None:
                raise RuntimeError("the database returned no id for the approval set")
            set_id = int(key[0])
            for chunk in chunks(members):
                conn.execute(
                    sa.insert(approval_members),
                    [
                        {"set_id": set_id, **dataclasses.asdict(m), "kinds": list(m.kinds)}
                        for m in chunk
                    ],
                )
        return set_id

    def update(self, set_id: int, **values: Any) -> None:
        """Change a set's status, escalated_at, decided_at or note."""
        with self._transaction(write=True) as conn:
            conn.execute(
                approval_sets.update().where(approval_sets.c.id == set_id).values(**values)
            )

    def statements(self, set_id: int) -> list[Statement]:
        """The statements about set `set_id`, oldest first."""
        query = (
            sa.select(approval_statements)
            .where(approval_statements.c.set_id == set_id)
            .order_by(approval_statements.c.id)
        )
        with self._transaction() as conn:
            rows = list(conn.execute(query))
        return [
            Statement(r.set_id, r.person, r.decision, r.at, r.signature, r.digest, r.fingerprint)
            for r in rows
        ]

    def add_statement(self, statement: Statement) -> None:
        """Store a verified statement; a person's newer statement about a set replaces theirs."""
        row = dataclasses.asdict(statement)
        with self._transaction(write=True) as conn:
            conn.execute(
                approval_statements.delete().where(
                    approval_statements.c.set_id == statement.set_id,
                    approval_statements.c.person == statement.person,
                )
            )
            conn.execute(sa.insert(approval_statements).values(row))
