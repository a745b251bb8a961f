"""The values the sync engine and the state store exchange.

Kept apart from both so that the runner (which plans and writes) and the state store (which
remembers) agree on one vocabulary without importing each other's machinery.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, Literal

#: A change the runner applied to a target and now records, with the facts the ledger keeps.
Action = Literal["create", "update", "delete"]


@dataclasses.dataclass(frozen=True, slots=True)
class JobState:
    """What the store remembers about one job between runs."""

    job: str
    cursor: str | None = None
    policy_hash: str | None = None
    config_hash: str | None = None
    last_run_at: dt.datetime | None = None
    last_success_at: dt.datetime | None = None
    last_reconciled_at: dt.datetime | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Mapped:
    """One record this job created in its target: the id map row."""

    job: str
    source_id: str
    target_key: str
    projection_hash: str
    fields: dict[str, str]  # field -> outcome label ("show", "mask:last4") as shared
    consent_basis: dict[str, Any]  # purpose -> {"granted", "source", "at"} that allowed it
    policy_hash: str
    updated_at: dt.datetime | None = None
    field_hashes: dict[str, str] | None = None  # field -> short salted hash of what was shared
    recorded: bool = True  # False: an outstanding change's key the id map does not hold


#: The projection hash of a record whose content at the target is not known (an outstanding
#: change): it equals no real hash, so the next decision rewrites or deletes the record.
UNKNOWN_HASH = "?" * 64

#: What an outstanding row says: "sent" (the intent log: sent, not yet recorded), "failed"
#: (the target rejected it), "held" (a delete the mass-delete guard held back).
OutstandingStatus = Literal["sent", "failed", "held"]


@dataclasses.dataclass(frozen=True, slots=True)
class Outstanding:
    """A change owed to the target: written ahead of a batch, rejected, or held back."""

    job: str
    source_id: str
    target_key: str
    action: Action
    status: OutstandingStatus
    reason: str  # the decision's reason, never a value
    fields: dict[str, str] = dataclasses.field(default_factory=dict)
    error: str | None = None
    since: dt.datetime | None = None
    attempts: int = 1


@dataclasses.dataclass(frozen=True, slots=True)
class AppliedChange:
    """A change the target acknowledged; recorded in the id map and the ledger together."""

    action: Action
    source_id: str
    target_key: str
    projection_hash: str | None  # None for deletes
    fields: dict[str, str]
    consent_basis: dict[str, Any]
    reason: str  # the decision's reason: "shared:<rule>", or why it was taken back
    field_hashes: dict[str, str] | None = None  # per shared field, for field-level plans
    #: the signed approvals a share was made under (who, when, the statement's hash)
    approvals: tuple[dict[str, Any], ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One row of the hash-chained ledger, as read back."""

    seq: int
    at: dt.datetime
    job: str
    target: str
    record_key: str
    source_id: str
    action: Action
    fields: dict[str, str]
    policy: str
    policy_hash: str
    consent_basis: dict[str, Any]
    approvals: list[Any]
    reason: str
    prev_hash: str
    row_hash: str
    version: int = 3  # the hash format: 1 unkeyed SHA-256 (rows before the key), 2-3 HMAC


@dataclasses.dataclass
class RunCounts:
    """What one run did; printed as the run summary and stored with the run."""

    read: int = 0
    shared: int = 0
    withheld: dict[str, int] = dataclasses.field(default_factory=dict)
    created: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    failed: int = 0
    problems: int = 0
    held: int = 0  # deletes the mass-delete guard held back
    outstanding: int = 0  # changes still owed to the target when the run ended
    awaiting: int = 0  # changes held for approval (not written)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form (what ``dataclasses.asdict`` gives, without its deep copy of
        every value: each run's end makes it twice, 15,000 times in a network's run)."""
        found = {field.name: getattr(self, field.name) for field in _COUNTS}
        found["withheld"] = dict(self.withheld)
        return found


_COUNTS = dataclasses.fields(RunCounts)
