"""The floor is a ceiling for reads too: what a narrowing policy may read of a record.

A policy that narrows others (the network floor at the root) may read a field of a record —
have a mask read it, or test it in a rule — only where every policy it narrows lets the
recipient read that field. Otherwise a mask (``region: city_only``) ships a field the floor
keeps back, and a rule (``street_address: {starts_with: …}``) turns who appears in the
recipient's file into an oracle on it. For each policy it narrows:

- a field it ``forbid``\\ s (by name or classification) is never read below it;
- a mask below may read a field only if that policy **shows** it: a masked field's raw value
  is more than the policy lets out, an absent or unlisted one is none of it;
- a rule below may test a field that policy shows or masks (a masked one only with
  ``exists``), that its own rules test (it already selects on it), or that it names
  ``absent`` by field name (not shared, but others may select on it), and nothing else:
  a field it leaves unlisted is not theirs to read.

Consent purposes are always readable: they are the gate, not the data. The rule is checked
here, once, when a policy loads (:func:`check_reads`); a policy that narrows nothing reads
what it likes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from connector_core.errors import Problem
from connector_core.hookspecs import MaskFactory
from connector_core.masks import MaskContext
from connector_core.policy.compiler import policy_outcome, tested_fields
from connector_core.policy.models import FieldOutcome, Policy
from connector_core.yaml_errors import Loc, LocatedDocument

_COMBINATORS = ("all", "any", "not")


def mask_reads(factory: MaskFactory, param: Any) -> frozenset[str]:
    """The other fields a mask reads (its function's ``reads``); empty if it cannot be made."""
    try:
        function = factory(param, MaskContext.for_validation())
    except (ValueError, TypeError):
        return frozenset()  # the outcome parser reports the parameter
    return frozenset(getattr(function, "reads", ()))


def check_reads(
    doc: LocatedDocument,
    fields: Mapping[str, FieldOutcome],
    classes: Mapping[str, FieldOutcome],
    parent: Policy,
    masks: Mapping[str, MaskFactory],
    *,
    refusals: dict[tuple[int, str, bool, tuple[str, ...]], str | None] | None = None,
) -> list[Problem]:
    """Every read of the policy in `doc` that a policy it narrows does not allow.

    `refusals` keeps what the chain above `parent` answered, for the next policy loaded
    under the same parent object (the partners of a template: one answer for all); the
    caller keeps `parent` alive as long as `refusals` (its id is in the keys)."""
    ancestors = parent.chain()
    problems = []

    def _first_refusal(field: str, *, for_mask: bool, ops: tuple[str, ...]) -> str | None:
        if refusals is None:
            return _first_refused(ancestors, field, for_mask=for_mask, ops=ops)
        key = (id(parent), field, for_mask, ops)
        if key not in refusals:
            refusals[key] = _first_refused(ancestors, field, for_mask=for_mask, ops=ops)
        return refusals[key]

    for key, outcome in [*fields.items(), *classes.items()]:
        factory = masks.get(outcome.mask or "") if outcome.kind == "mask" else None
        for read in sorted(mask_reads(factory, outcome.param)) if factory else ():
            why = _first_refusal(read, for_mask=True, ops=())
            if why is not None:
                message = (
                    f"fields: {key}: the {outcome.mask} mask reads {read}, which {why}, and "
                    "this policy narrows it; a mask may read only fields the policies it "
                    f"narrows show (use another mask, or `{key}: absent`)"
                )
                problems.append(doc.problem(("fields", key), message, key=True))
    for field, ops, loc in _rule_tests(doc):
        why = _first_refusal(field, for_mask=False, ops=ops)
        if why is not None:
            message = (
                f"rules: this rule tests {field}, which {why}, and this policy narrows it; "
                "who appears in the recipient's file would tell them about it (remove the "
                "test, or test a field that policy shows)"
            )
            problems.append(doc.problem(loc, message, key=True))
    return problems


def _first_refused(
    ancestors: list[Policy], field: str, *, for_mask: bool, ops: tuple[str, ...]
) -> str | None:
    reasons = (_unreadable(a, field, for_mask=for_mask, ops=ops) for a in ancestors)
    return next((why for why in reasons if why is not None), None)


def _unreadable(policy: Policy, field: str, *, for_mask: bool, ops: tuple[str, ...]) -> str | None:
    """Why `policy` does not let a narrowing policy read `field`; None when it does."""
    if field == "consent" or field.startswith("consent."):
        return None
    source = policy_outcome(policy, field)
    outcome, key = source.outcome, source.key
    where = f"{policy.path}:{outcome.line}" if outcome and outcome.line else str(policy.path)
    if outcome is not None and outcome.kind == "forbid":
        return f"{where} forbids ({key}: forbid)"
    if outcome is not None and outcome.kind == "show":
        return None
    if outcome is not None and outcome.kind == "mask":
        if for_mask:
            return f"{where} shows only masked ({key}: {outcome.label().removeprefix('mask:')})"
        if set(ops) <= {"exists"}:
            return None  # whether it is there: the mask shows that much
        return f"{where} shows only masked ({key}: {outcome.label().removeprefix('mask:')})"
    if for_mask:
        return f"{policy.path} does not show"  # absent, unlisted: none of it leaves
    if _tests(policy, field) or (outcome is not None and key == field):
        return None  # it selects on the field itself, or says `field: absent` by name
    return f"{policy.path} neither shows nor tests (`{field}: absent` there would allow tests)"


def _tests(policy: Policy, field: str) -> bool:
    return any(field in tested_fields(rule.condition) for rule in policy.rules)


def _rule_tests(doc: LocatedDocument) -> Iterator[tuple[str, tuple[str, ...], Loc]]:
    """Each field tested in the ``when:`` of the rules in `doc`, with its operators and place."""
    rules = doc.get(("rules",))
    for i, rule in enumerate(rules if isinstance(rules, list) else []):
        when = rule.get("when") if isinstance(rule, dict) else None
        yield from _condition_tests(when, ("rules", i, "when"))


def _condition_tests(value: Any, loc: Loc) -> Iterator[tuple[str, tuple[str, ...], Loc]]:
    if not isinstance(value, dict):
        return
    for key, item in value.items():
        if key in ("all", "any") and isinstance(item, list):
            for j, sub in enumerate(item):
                yield from _condition_tests(sub, (*loc, key, j))
        elif key == "not":
            yield from _condition_tests(item, (*loc, key))
        elif isinstance(key, str) and key not in _COMBINATORS:
            ops = tuple(item) if isinstance(item, dict) else ("eq",)
            yield key, ops, (*loc, key)
