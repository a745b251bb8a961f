"""Compile a checked policy (and the chain it narrows) into fast per-record functions.

Evaluation order, for a policy and every policy it narrows down to the network floor:

1. the consent gates of every policy in the chain (no evidence means no consent):
   withheld as ``consent:<purpose>``;
2. the forbid rules of every policy in the chain: ``forbid:<policy>:<rule>``;
3. every policy in the chain needs a matching allow rule: else ``no-allow:<policy>``;
4. shared, as ``shared:<rule>`` with the leaf policy's first matching allow rule.

Checks run in chain order (the policy itself first, the floor last), so a reason names the
first check that failed. Field outcomes are resolved once, here: per policy, a forbid that
covers the field (by name or classification) binds, else the field's own entry, else its
longest matching classification prefix, else absent; across the chain the strictest wins
(forbid or absent, then mask, then show), and masks of several policies compose, the
floor's first. ``consent`` is projected only when listed by name.

A masked field never carries its original value: when a mask's output equals its input
(coarsening an already coarse coordinate, truncating a short name, ``last4`` of four
characters) the field is sent as None, since passing it through would show what the policy
said to hide.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import functools
import hashlib
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from connector_core.errors import PolicyError
from connector_core.hookspecs import MaskFactory
from connector_core.masks import BUILTIN_MASKS, CONTEXT_FREE, MaskContext, MaskFunction
from connector_core.policy import codegen
from connector_core.policy.models import FieldOutcome, Policy, RelativeTime, Rule
from connector_core.query import All, AnyOf, Compare, Condition, Not
from connector_core.records import FIELDS, Record, is_extra


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    """Share or withhold one record, and why.

    ``reason`` is ``shared:<rule>``, ``consent:<purpose>``, ``forbid:<policy>:<rule>`` or
    ``no-allow:<policy>``; ``rule`` names the allow rule that shared it."""

    share: bool
    reason: str
    rule: str | None = None


@dataclasses.dataclass(frozen=True)
class Pushdown:
    """What a source may be asked for: a filter and the fields needed.

    ``condition`` holds exactly for the records the policy shares, except that the
    pushed-down consent test is ``granted == True``, which a source may also pass for a
    truthy non-boolean; the engine still decides every record locally, so the filter only
    has to be a superset. None means every record."""

    condition: Condition | None
    decision_fields: frozenset[str]
    shared_fields: frozenset[str]


@dataclasses.dataclass(frozen=True)
class FieldSource:
    """Where one policy's outcome for a field came from (``key`` None: not listed): the
    policy's name and file, not the policy, so that the partners of a job template, whose
    policies differ only in their rules' values, share their fields' resolutions."""

    policy: str
    path: Path
    outcome: FieldOutcome | None
    key: str | None


@dataclasses.dataclass(frozen=True)
class Resolution:
    """A field's effective outcome, each policy's contribution, and the masks applied."""

    field: str
    outcome: FieldOutcome
    sources: tuple[FieldSource, ...]
    masks: tuple[MaskFunction, ...] = ()
    #: what makes two policies' masks of this field identical: name, parameter, factory,
    #: and the context unless the factory ignores it
    mask_keys: tuple[tuple[Any, ...], ...] = ()


@dataclasses.dataclass(frozen=True)
class Link:
    """One policy of the chain, with its rules' relative times resolved."""

    policy: Policy
    rules: tuple[Rule, ...]

    def allows(self) -> tuple[Rule, ...]:
        """The allow rules, in file order."""
        return tuple(r for r in self.rules if r.kind == "allow")

    def forbids(self) -> tuple[Rule, ...]:
        """The forbid rules, in file order."""
        return tuple(r for r in self.rules if r.kind == "forbid")

    @functools.cached_property
    def forbid_texts(self) -> tuple[tuple[str, str], ...]:
        """Each forbid rule's name and its condition's repr (what policies compare)."""
        return tuple((r.name, repr(r.condition)) for r in self.forbids())

    @functools.cached_property
    def allow_texts(self) -> frozenset[str]:
        """The repr of each allow rule's condition."""
        return frozenset(repr(r.condition) for r in self.allows())

    @functools.cached_property
    def forbid_plan(self) -> tuple[tuple[Condition | None, Decision, str], ...]:
        """Each forbid rule's condition, the decision it gives, and its condition's repr
        (what a plan and a gate's checks are made of), in file order: made once for a
        Link that many compiles share (a template's partners share their floor's)."""
        return tuple(
            (r.condition, Decision(False, f"forbid:{self.policy.name}:{r.name}"), text)
            for r, (_, text) in zip(self.forbids(), self.forbid_texts, strict=True)
        )

    @functools.cached_property
    def tested(self) -> frozenset[str]:
        """Every field the rules' conditions test (see :func:`tested_fields`): found once
        for a Link that many compiles share (a template's partners share their floor's)."""
        return frozenset(f for r in self.rules for f in tested_fields(r.condition))


_STRICTNESS = {"show": 0, "mask": 1, "absent": 2, "forbid": 3}


class _Facts:
    """What a compile derives from the fields' resolutions alone: made once for every
    policy sharing them (a template's partners, through compile_policy's memo), not once
    per partner. ``outcomes``: each shown or masked field's outcome (read-only: shared);
    ``shared``: those fields and what their masks read; ``outcome_key``: their part of a
    policy's share key."""

    __slots__ = ("outcome_key", "outcomes", "shared")

    def __init__(self, resolutions: Mapping[str, Resolution]) -> None:
        outcomes = {
            f: r.outcome for f, r in resolutions.items() if r.outcome.kind in ("show", "mask")
        }
        self.outcomes: Mapping[str, FieldOutcome] = types.MappingProxyType(outcomes)
        shared = set(outcomes)
        for name in outcomes:
            shared.update(f for m in resolutions[name].masks for f in getattr(m, "reads", ()))
        self.shared = frozenset(shared)
        self.outcome_key = tuple(
            (f, r.outcome.kind, r.mask_keys) for f, r in resolutions.items() if f in outcomes
        )


#: CompiledPolicy's generated functions, then their source (made on first use)
_GENERATED = ("decide", "evaluate", "project", "gate", "allow", "passes", "source")


class CompiledPolicy:
    """A policy compiled into generated functions; build one with :func:`compile_policy`.

    ``decide(record) -> Decision``; ``project(record) -> Record`` (only shown and masked
    fields, in canonical order, extras last); ``evaluate(record) -> (Decision, projection
    or None)``. ``outcomes`` holds the effective outcome of every shown or masked field.

    For evaluating many policies together (:mod:`~connector_core.policy.fanout`), the
    decision also comes in parts: ``gate(record)`` (consent and forbids: the withheld
    decision, or None), ``allow(record)`` (the policy's own allow rules: the shared decision,
    or None) and ``passes(record)`` (everything except those allow rules). Policies with
    equal ``share_key`` have the same ``passes`` and ``project``."""

    decide: Callable[[Record], Decision]
    project: Callable[[Record], Record]
    evaluate: Callable[[Record], tuple[Decision, Record | None]]
    gate: Callable[[Record], Decision | None]
    allow: Callable[[Record], Decision | None]
    passes: Callable[[Record], bool]
    source: str  # the generated functions' source

    def __init__(
        self,
        policy: Policy,
        links: tuple[Link, ...],
        resolutions: dict[str, Resolution],
        now: dt.datetime,
        facts: _Facts | None = None,
    ) -> None:
        facts = _Facts(resolutions) if facts is None else facts
        self.name = policy.name
        self.policy = policy
        self.links = links
        self.now = now
        self.content_hash = _chain_hash(policy)
        self.resolutions = resolutions
        self.outcomes = facts.outcomes
        self.no_allow = Decision(False, f"no-allow:{policy.name}")
        self._shared = facts.shared
        #: the consent purposes of the chain, each once, in order, with the decision that
        #: withholds a record without it
        self._consents = [
            (p, Decision(False, f"consent:{p}"))
            for p in dict.fromkeys(p for link in links for p in link.policy.require_consent)
        ]
        # the generated functions' plan is made with the first of them (see __getattr__):
        # it cannot fail, and most of a network's partner policies never decide a record
        self._build: tuple[codegen.DecisionPlan, list[codegen.FieldPlan]] | bool | None = True
        #: what ``gate`` checks, in order (each consent purpose, then each forbid's
        #: condition), with the decision it gives: policies with equal checks have gates
        #: that differ only in the reasons' names
        self.gate_checks: tuple[tuple[str, Decision], ...] = tuple(
            (f"consent:{p}", d) for p, d in self._consents
        ) + tuple((f"forbid:{text}", d) for link in links for _, d, text in link.forbid_plan)
        self.gate_key = repr(
            ([p for link in links for p in link.policy.require_consent], self._forbid_key())
        )
        self.share_key = self._share_key(facts)

    def __repr__(self) -> str:
        return f"CompiledPolicy({self.name!r})"

    def __getattr__(self, name: str) -> Any:
        """A generated function, made when it is first asked for (with its safe variant);
        ``source``: every function's, made then.

        Everything that can fail (the plan, the fields' masks) was done by ``__init__``;
        generating the code cannot. So a policy never used to decide a record costs no code
        generation (of a network's 15,000 partner policies, an incremental run uses those
        of the partners with a changed record), and one used costs only the functions its
        caller uses (a group's read asks a changed partner's policy for ``evaluate`` alone:
        2 of the 11 functions)."""
        built = self.__dict__.get("_build")
        if name not in _GENERATED or built is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        if not isinstance(built, tuple):  # the first function asked for
            built = self._build = (self._plan(), self._fields())
        names = codegen.FUNCTIONS if name == "source" else (name,)
        functions, source = codegen.build(self.name, built[0], built[1], names)
        made = vars(self)
        for generated, function in functions.items():
            made.setdefault(generated, function)  # one made before stays
        if name == "source":
            self.source = source
            self._build = None  # every function is made
        return getattr(self, name)

    def apply(self, records: Iterable[Record]) -> Iterator[tuple[Record, Decision, Record | None]]:
        """Stream ``(record, decision, projection or None)`` for each record."""
        evaluate = self.evaluate
        for record in records:
            decision, projection = evaluate(record)
            yield record, decision, projection

    def _forbid_key(self) -> list[tuple[str, str, str]]:
        return [
            (link.policy.name, name, text)
            for link in self.links
            for name, text in link.forbid_texts
        ]

    def _share_key(self, facts: _Facts) -> tuple[Any, ...]:
        """Equal for policies that differ at most in their own allow rules."""
        links = self.links
        return (
            frozenset(p for link in links for p in link.policy.require_consent),
            frozenset(text for link in links for _, text in link.forbid_texts),
            tuple(link.allow_texts for link in links[1:]),
            facts.outcome_key,
        )

    @functools.cached_property
    def pushdown(self) -> Pushdown:
        """What a source may be asked for (see :class:`Pushdown`), made when first asked:
        a read of many partners' jobs asks only for their fields (:attr:`read_fields`)."""
        return _pushdown(self.links, self.read_fields)

    @functools.cached_property
    def read_fields(self) -> tuple[frozenset[str], frozenset[str]]:
        """The pushdown's ``decision_fields`` and ``shared_fields``, without its condition."""
        decision = {"id", *(["consent"] if self._consents else [])}
        decision.update(*(link.tested for link in self.links))
        return frozenset(decision), self._shared

    def _plan(self) -> codegen.DecisionPlan:
        leaf, *parents = self.links
        return codegen.DecisionPlan(
            consents=self._consents,
            forbids=[(c, d) for link in self.links for c, d, _ in link.forbid_plan],
            leaf_allows=[
                (r.condition, Decision(True, f"shared:{r.name}", r.name)) for r in leaf.allows()
            ],
            leaf_withheld=self.no_allow,
            parents=[
                (
                    [r.condition for r in link.allows()],
                    Decision(False, f"no-allow:{link.policy.name}"),
                )
                for link in parents
            ],
        )

    def _fields(self) -> list[codegen.FieldPlan]:
        return [
            codegen.FieldPlan(
                name,
                self.resolutions[name].masks,
                f"policy {self.name}: the {self.outcomes[name].mask} mask failed on field {name}",
            )
            for name in self.outcomes
        ]


def compile_policy(
    policy: Policy,
    *,
    masks: Mapping[str, MaskFactory] | None = None,
    context: MaskContext | None = None,
    now: dt.datetime | None = None,
    memo: dict[Any, Any] | None = None,
) -> CompiledPolicy:
    """Compile `policy` and the chain it narrows.

    Args:
        policy: a loaded, checked policy.
        masks: mask factories by name (default: the built-in masks).
        context: what masks need; by default there is no hash key, so a policy using
            ``hash`` raises PolicyError here, before any record is read.
        now: the time ``{days_ago: N}`` conditions are relative to (default: now, UTC);
            it is fixed at compile time, so compile once per run.
        memo: what earlier compiles with it made: the fields' resolutions, by the identity
            of their chain's ``fields`` and ``classes`` and its policies' names and files (a
            template's partners share them: see
            :class:`~connector_core.policy.loader.PolicyMemo`; they depend on nothing
            else), and the links of policies without relative times (the floor); a
            partner's policy shares them instead of making them again.

    Raises:
        PolicyError: an unknown mask, a bad mask parameter, or a missing hash key.
    """
    now = dt.datetime.now(dt.UTC) if now is None else now
    links = tuple(_link(p, now, memo) for p in policy.chain())
    factories = BUILTIN_MASKS if masks is None else masks
    keyed = None if context is None else id(context)  # every keyless context is alike
    context = MaskContext.without_key() if context is None else context
    chain = tuple(link.policy for link in links)
    key = (*((id(p.fields), id(p.classes), p.name, p.path) for p in chain), id(factories), keyed)
    found = None if memo is None else memo.get(key)
    if found is None:
        resolutions = {
            name: _resolve_field(name, links, factories, context) for name in _field_names(links)
        }
        facts = _Facts(resolutions)
        if memo is not None:  # what the key's ids are of stays alive with the entry
            held = tuple((p.fields, p.classes) for p in chain)
            memo[key] = (held, factories, context, resolutions, facts)
    else:
        resolutions, facts = found[3:]  # they name the policies of `chain` by name and file
    return CompiledPolicy(policy, links, resolutions, now, facts)


def _link(policy: Policy, now: dt.datetime, memo: dict[Any, Any] | None) -> Link:
    """`policy` with its rules' relative times resolved at `now`; a policy with none is one
    Link for every compile sharing `memo` (a template's partners share their floor), found
    there before its rules are looked at again."""
    key = ("link", id(policy))
    found: tuple[Policy, Link] | None = None if memo is None else memo.get(key)
    if found is not None:
        return found[1]
    rules = tuple(_resolved_rule(r, now) for r in policy.rules)
    timeless = all(new is old for new, old in zip(rules, policy.rules, strict=True))
    link = Link(policy, rules)
    if memo is not None and timeless:
        memo[key] = (policy, link)  # the policy kept: its id stays
    return link


def _resolved_rule(rule: Rule, now: dt.datetime) -> Rule:
    condition = resolve(rule.condition, now)
    return rule if condition is rule.condition else dataclasses.replace(rule, condition=condition)


def resolve(condition: Condition | None, now: dt.datetime) -> Condition | None:
    """The condition with every ``{days_ago: N}`` replaced by its ISO timestamp."""
    return None if condition is None else _resolved(condition, now)


def _resolved(condition: Condition, now: dt.datetime) -> Condition:
    """`condition` resolved; the same object when it has no relative time."""
    match condition:
        case Compare(field, op, RelativeTime() as relative):
            return Compare(field, op, relative.resolve(now))
        case All(items) | AnyOf(items):
            resolved = tuple(_resolved(c, now) for c in items)
            if all(new is old for new, old in zip(resolved, items, strict=True)):
                return condition
            return All(resolved) if isinstance(condition, All) else AnyOf(resolved)
        case Not(item):
            inner = _resolved(item, now)
            return condition if inner is item else Not(inner)
    return condition


def _chain_hash(policy: Policy) -> str:
    """The policy's own hash, or, when it narrows others, one hash over the chain's."""
    chain = policy.chain()
    if len(chain) == 1:
        return policy.content_hash
    joined = "\n".join(p.content_hash for p in chain)
    return hashlib.sha256(joined.encode()).hexdigest()


def _field_names(links: tuple[Link, ...]) -> list[str]:
    extras = sorted({name for link in links for name in link.policy.fields if is_extra(name)})
    return [*FIELDS, *extras]


def policy_outcome(policy: Policy, field: str) -> FieldSource:
    """One policy's outcome for a field: a forbid covering it (by name or classification)
    binds; otherwise its own entry, else the longest matching classification prefix."""
    entry = policy.fields.get(field)
    known = FIELDS.get(field)
    covering = [
        prefix
        for prefix in policy.classes
        if known
        and (known.classification == prefix or known.classification.startswith(prefix + "."))
    ]
    if entry is not None and entry.kind == "forbid":
        return FieldSource(policy.name, policy.path, entry, field)
    forbidding = [p for p in covering if policy.classes[p].kind == "forbid"]
    if forbidding:
        return FieldSource(policy.name, policy.path, policy.classes[forbidding[0]], forbidding[0])
    if entry is not None:
        return FieldSource(policy.name, policy.path, entry, field)
    if not covering or field == "consent":  # consent is projected only when named
        return FieldSource(policy.name, policy.path, None, None)
    best = max(covering, key=len)
    return FieldSource(policy.name, policy.path, policy.classes[best], best)


def _resolve_field(
    field: str,
    links: tuple[Link, ...],
    factories: Mapping[str, MaskFactory],
    context: MaskContext,
) -> Resolution:
    sources = tuple(policy_outcome(link.policy, field) for link in links)
    kinds = [s.outcome.kind if s.outcome else "absent" for s in sources]
    strictest = max(kinds, key=_STRICTNESS.__getitem__)
    if strictest != "mask":
        chosen = next(
            (s.outcome for s in sources if s.outcome and s.outcome.kind == strictest), None
        )
        return Resolution(field, chosen or FieldOutcome("absent"), sources)
    masking = [s for s in reversed(sources) if s.outcome and s.outcome.kind == "mask"]
    made = [_make_mask(s, factories, context) for s in masking]
    functions = tuple(function for function, _ in made)
    keys = tuple(key for _, key in made)
    outcomes = [s.outcome for s in masking if s.outcome]
    if len(outcomes) == 1:
        return Resolution(field, outcomes[0], sources, functions, keys)
    composed = "+".join(o.label().removeprefix("mask:") for o in outcomes)
    return Resolution(
        field, FieldOutcome("mask", composed, None, outcomes[-1].line), sources, functions, keys
    )


def _make_mask(
    source: FieldSource, factories: Mapping[str, MaskFactory], context: MaskContext
) -> tuple[MaskFunction, tuple[Any, ...]]:
    outcome = source.outcome
    assert outcome is not None
    assert outcome.mask is not None
    where = f"{source.path}:{outcome.line}" if outcome.line else str(source.path)
    factory = factories.get(outcome.mask)
    if factory is None:
        close = difflib.get_close_matches(outcome.mask, list(factories), n=1)
        raise PolicyError(
            f"{where}: unknown mask {outcome.mask!r} for {source.key}"
            + (f"; did you mean {close[0]!r}?" if close else ""),
            hint="Known masks: "
            + ", ".join(sorted(factories))
            + ". A plugin may provide more (see `connector plugins`).",
        )
    key = (outcome.mask, repr(outcome.param), factory, None if factory in CONTEXT_FREE else context)
    try:
        return factory(outcome.param, context), key
    except ValueError as exc:
        raise PolicyError(f"{where}: {source.key}: {exc}") from None


def tested_fields(condition: Condition | None) -> Iterator[str]:
    """Each field a condition tests, by its top-level name (``consent.x.granted``: consent)."""
    match condition:
        case Compare(field):
            yield field if field in FIELDS or is_extra(field) else field.split(".", 1)[0]
        case All(items) | AnyOf(items):
            for item in items:
                yield from tested_fields(item)
        case Not(item):
            yield from tested_fields(item)


def _pushdown(links: tuple[Link, ...], fields: tuple[frozenset[str], frozenset[str]]) -> Pushdown:
    purposes = dict.fromkeys(p for link in links for p in link.policy.require_consent)
    parts: list[Condition] = [Compare(f"consent.{p}.granted", "eq", True) for p in purposes]
    for link in links:
        allows = [r.condition for r in link.allows()]
        if None not in allows:
            parts.append(_any([c for c in allows if c is not None]))
    forbids = [r.condition for link in links for r in link.forbids()]
    if None in forbids:
        parts.append(AnyOf(()))  # a forbid rule without a condition withholds everything
    elif forbids:
        parts.append(Not(_any([c for c in forbids if c is not None])))
    condition = None if not parts else parts[0] if len(parts) == 1 else All(tuple(parts))
    return Pushdown(condition, *fields)


def _any(conditions: list[Condition]) -> Condition:
    return conditions[0] if len(conditions) == 1 else AnyOf(tuple(conditions))
