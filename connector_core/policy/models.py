"""The policy language: pydantic models for a policy file, and the checked policy they become.

A policy file (one per file) is validated in two steps. :class:`PolicyFile` checks the
structure with pydantic (unknown keys, types, enums), keeping ``when:`` conditions and
``fields:`` outcomes raw; the loader then parses those into :class:`Rule` conditions (the
neutral :mod:`connector_core.query` tree) and :class:`FieldOutcome` values with their own
line-numbered checks, and returns a :class:`Policy`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from connector_core.errors import Problem
from connector_core.query import Condition

NAME_RE = r"^[a-z][a-z0-9_-]*$"
_DURATION_RE = re.compile(r"^(\d+)\s*(m|h|d|w)$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}

#: ``deletes`` stays in the vocabulary only to be refused with a clear message (see
#: :meth:`ApprovalModel._no_takebacks`): take-backs never wait for anyone.
ApprovalTrigger = Literal["first_share", "new_fields", "field_changes", "deletes", "all"]
#: What a planned change can be, for approval (see :mod:`connector_core.sync.approvals`).
APPROVAL_KINDS = ("first_share", "new_fields", "field_changes")
DEFAULT_EXPIRY = "14d"


class _Block(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RuleModel(_Block):
    """One record rule: ``allow: NAME`` or ``forbid: NAME``, with an optional ``when:``."""

    allow: str | None = Field(None, description="Name of an allow rule (shown in explain)")
    forbid: str | None = Field(None, description="Name of a forbid rule; forbid beats allow")
    when: dict[str, Any] | None = Field(
        None, description="Record condition; without it the rule matches every record"
    )
    description: str = Field("", description="Why this rule exists, for people")

    @model_validator(mode="after")
    def _one_kind(self) -> RuleModel:
        if (self.allow is None) == (self.forbid is None):
            raise ValueError("a rule has exactly one of `allow: NAME` or `forbid: NAME`")
        return self


#: The longest duration anything may last: a time this far ahead is still a date (a share
#: request's expiry, an approval's deadline), where 99999999w would overflow every run.
LONGEST = dt.timedelta(days=36525)


def parse_duration(text: str) -> dt.timedelta:
    """``30m``, ``48h``, ``2d``, ``1w`` as a timedelta, at most 100 years (:data:`LONGEST`);
    raises ValueError otherwise."""
    found = _DURATION_RE.match(text.strip())
    if not found:
        raise ValueError(f"{text!r} is not a duration; write a number and a unit, e.g. 48h or 2d")
    unit, count = _UNITS[found.group(2)], int(found.group(1))
    if count > LONGEST / dt.timedelta(**{unit: 1}):
        raise ValueError(f"{text.strip()!r} is longer than 100 years; write a shorter duration")
    return dt.timedelta(**{unit: count})


class ApprovalModel(_Block):
    """Which changes wait for people to approve them, who approves, and escalation."""

    required_for: list[ApprovalTrigger] = Field(
        description="Changes that need approval: first_share, new_fields, field_changes, "
        "deletes, or all"
    )
    approvers: list[str] = Field(min_length=1, description="People or groups who may approve")
    quorum: int = Field(1, ge=1, description="How many approvers must approve")
    escalate_after: str | None = Field(
        None, description="Duration (e.g. 48h) after which fallback approvers may decide"
    )
    fallback_approvers: list[str] = Field(
        default_factory=list, description="Who decides once escalate_after has passed"
    )
    expire_after: str = Field(
        DEFAULT_EXPIRY,
        description="Duration (e.g. 14d) after which a change set nobody decided expires "
        "and is denied",
    )

    @field_validator("escalate_after", "expire_after")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @field_validator("required_for")
    @classmethod
    def _no_takebacks(cls, value: list[str]) -> list[str]:
        if "deletes" in value:
            raise ValueError(
                "`deletes` cannot need approval: take-backs (withdrawn consent, records that "
                "left the policy's scope) never wait for anyone; remove `deletes` (the job's "
                "max_delete option holds back unusually many deletes instead)"
            )
        return value

    def kinds(self) -> frozenset[str]:
        """The kinds of change that wait (``all`` spelled out)."""
        if "all" in self.required_for:
            return frozenset(APPROVAL_KINDS)
        return frozenset(self.required_for) & frozenset(APPROVAL_KINDS)

    def escalation(self) -> dt.timedelta | None:
        """:attr:`escalate_after` as a timedelta."""
        return None if self.escalate_after is None else parse_duration(self.escalate_after)

    def expiry(self) -> dt.timedelta:
        """:attr:`expire_after` as a timedelta."""
        return parse_duration(self.expire_after)

    @model_validator(mode="after")
    def _consistent(self) -> ApprovalModel:
        if self.quorum > len(self.approvers):
            raise ValueError(
                f"quorum {self.quorum} is more than the {len(self.approvers)} approver(s) listed"
            )
        if self.escalate_after and not self.fallback_approvers:
            raise ValueError("escalate_after needs fallback_approvers to escalate to")
        escalation, expiry = self.escalation(), self.expiry()
        if escalation is not None and escalation >= expiry:
            raise ValueError(
                f"escalate_after ({self.escalate_after}) must be shorter than expire_after "
                f"({self.expire_after}), or nobody is ever asked"
            )
        return self


class PolicyFile(_Block):
    """The structure of one policy file."""

    policy: str = Field(pattern=NAME_RE, description="The policy's name (lowercase, - or _)")
    description: str = Field("", description="What this policy shares, with whom, and why")
    narrows: str | None = Field(
        None,
        description="Path (relative to this file) of a policy this one can only narrow: "
        "a record needs both to allow it, and each field gets the stricter outcome",
    )
    require_consent: list[str] = Field(
        default_factory=list,
        description="Consent purposes every shared record needs; checked before any rule",
    )
    rules: list[RuleModel] = Field(
        default_factory=list, description="Allow and forbid rules; no allow rule = nothing shared"
    )
    fields: dict[str, str | dict[str, Any]] = Field(
        default_factory=dict,
        description="Field (or classification such as pii.location) -> show, absent, forbid, "
        "or a mask (last4, hash, {truncate: 3}, ...); unlisted fields are absent",
    )
    approval: ApprovalModel | None = Field(None, description="Changes that need approval")


OutcomeKind = Literal["show", "absent", "forbid", "mask"]


@dataclasses.dataclass(frozen=True, slots=True)
class FieldOutcome:
    """What happens to one field: shown, absent, forbidden, or masked with ``mask(param)``.

    ``forbid`` is ``absent`` that also binds every policy narrowing this one.
    """

    kind: OutcomeKind
    mask: str | None = None
    param: Any = None
    line: int | None = None

    def label(self) -> str:
        """``show``, ``absent``, ``forbid``, ``mask:last4`` or ``mask:truncate(3)``."""
        if self.kind != "mask":
            return self.kind
        return f"mask:{self.mask}" + ("" if self.param is None else f"({self.param})")


@dataclasses.dataclass(frozen=True, slots=True)
class Rule:
    """A parsed rule; ``condition`` None matches every record."""

    kind: Literal["allow", "forbid"]
    name: str
    condition: Condition | None
    line: int | None = None
    description: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class RelativeTime:
    """A time relative to ``now``, written ``{days_ago: N}`` in a comparison."""

    days_ago: float

    def resolve(self, now: dt.datetime) -> str:
        """The ISO timestamp this stands for, given the evaluation time."""
        return (now - dt.timedelta(days=self.days_ago)).isoformat()


@dataclasses.dataclass(frozen=True)
class Policy:
    """A loaded, checked policy. ``fields`` holds field names; ``classes`` classification
    prefixes. ``narrows`` is the loaded parent policy (the network floor sits at the root)."""

    name: str
    path: Path
    description: str
    require_consent: tuple[str, ...]
    rules: tuple[Rule, ...]
    fields: dict[str, FieldOutcome]
    classes: dict[str, FieldOutcome]
    approval: ApprovalModel | None
    content_hash: str
    narrows: Policy | None = None
    warnings: tuple[Problem, ...] = ()

    def approver(self) -> Policy | None:
        """The policy whose ``approval:`` block governs this one: its own, else the nearest
        policy it narrows that has one (a floor's approval binds the policies narrowing it)."""
        return next((p for p in self.chain() if p.approval is not None), None)

    def chain(self) -> list[Policy]:
        """This policy and every policy it narrows, root (floor) last."""
        chain: list[Policy] = []
        policy: Policy | None = self
        while policy is not None:
            chain.append(policy)
            policy = policy.narrows
        return chain
