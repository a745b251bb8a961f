"""The product's most important promise, checked on random policies and records.

No field outside a policy's allowed set is ever shared; no record lacking a consent any
policy of the chain requires is ever shared; a forbid anywhere in the chain always wins;
a masked field never carries its original value; and the compiled policy, explain and the
small reference interpreter below always agree.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from connector_core.errors import RecordRejected
from connector_core.masks import BUILTIN_MASKS
from connector_core.policy import codegen
from connector_core.policy.compiler import Decision, compile_policy
from connector_core.policy.explain import explain
from connector_core.policy.models import FieldOutcome, Policy, RelativeTime
from connector_core.query import All, AnyOf, Compare, Condition, Not, matches
from connector_core.records import FIELDS, is_extra
from tests.unit.policy.strategies import KEY, NOW, policies, records

# --- a reference interpreter: slow, simple, written from the semantics --------------------


def ref_holds(condition: Condition | None, record: dict[str, Any]) -> bool:
    """A condition as query.matches decides it, a type mismatch being False."""
    if condition is None:
        return True
    if isinstance(condition, All):
        return all(ref_holds(c, record) for c in condition.items)
    if isinstance(condition, AnyOf):
        return any(ref_holds(c, record) for c in condition.items)
    if isinstance(condition, Not):
        return not ref_holds(condition.item, record)
    assert isinstance(condition, Compare)
    value = condition.value
    if isinstance(value, RelativeTime):
        condition = Compare(condition.field, condition.op, value.resolve(NOW))
    try:
        return matches(condition, record)
    except TypeError:
        return False


def granted(record: dict[str, Any], purpose: str) -> bool:
    block = record.get("consent")
    state = block.get(purpose) if isinstance(block, dict) else None
    return isinstance(state, dict) and state.get("granted") is True


def ref_decide(policy: Policy, record: dict[str, Any]) -> Decision:
    chain = policy.chain()
    for member in chain:
        for purpose in member.require_consent:
            if not granted(record, purpose):
                return Decision(False, f"consent:{purpose}")
    for member in chain:
        for rule in member.rules:
            if rule.kind == "forbid" and ref_holds(rule.condition, record):
                return Decision(False, f"forbid:{member.name}:{rule.name}")
    matched = []
    for member in chain:
        allowed = [r for r in member.rules if r.kind == "allow" and ref_holds(r.condition, record)]
        if not allowed:
            return Decision(False, f"no-allow:{member.name}")
        matched.append(allowed[0].name)
    return Decision(True, f"shared:{matched[0]}", matched[0])


def ref_outcome(policy: Policy, field: str) -> FieldOutcome | None:
    """One policy's outcome for a field (None: not listed, so absent)."""
    entry = policy.fields.get(field)
    cls = FIELDS[field].classification if field in FIELDS else None
    covering = [p for p in policy.classes if cls and (cls == p or cls.startswith(p + "."))]
    if entry and entry.kind == "forbid":
        return entry
    if any(policy.classes[p].kind == "forbid" for p in covering):
        return FieldOutcome("forbid")
    if entry:
        return entry
    if field == "consent" or not covering:
        return None
    return policy.classes[max(covering, key=len)]


def ref_field(policy: Policy, field: str) -> tuple[str, list[FieldOutcome]]:
    """The effective kind of a field across the chain, and its masks floor first."""
    outcomes = [ref_outcome(p, field) for p in policy.chain()]
    kinds = [o.kind if o else "absent" for o in outcomes]
    for kind in ("forbid", "absent", "mask"):
        if kind in kinds:
            return kind, [o for o in reversed(outcomes) if o and o.kind == "mask"]
    return "show", []


def all_fields(policy: Policy) -> list[str]:
    extras = sorted({f for p in policy.chain() for f in p.fields if is_extra(f)})
    return [*FIELDS, *extras]


def ref_project(policy: Policy, record: dict[str, Any]) -> dict[str, Any]:
    projection = {}
    for field in all_fields(policy):
        kind, masks = ref_field(policy, field)
        if kind in ("forbid", "absent"):
            continue
        value = original = record.get(field)
        for outcome in masks:
            function = BUILTIN_MASKS[outcome.mask or ""](outcome.param, KEY)
            value = None if value is None else function(value, record)
        projection[field] = None if masks and _written_alike(value, original) else value
    return projection


def _written_alike(value: Any, original: Any) -> bool:
    """Equal, or the same text as a target writes it (53.8 and "53.8")."""
    plain = (str, int, float)
    texts = all(isinstance(v, plain) and not isinstance(v, bool) for v in (value, original))
    return value == original or (texts and str(value) == str(original))


# --- the properties ----------------------------------------------------------------------

RECORDS = st.lists(st.one_of(records(), records(wild=True)), min_size=1, max_size=8)


@settings(max_examples=400, deadline=None)
@given(policies(), RECORDS)
def test_compiled_explain_and_reference_agree(policy: Policy, batch: list[Any]) -> None:
    compiled = compile_policy(policy, context=KEY, now=NOW)
    for record in batch:
        decision, projection = compiled.evaluate(record)
        expected = ref_decide(policy, record)
        assert decision == expected
        assert projection == (ref_project(policy, record) if expected.share else None)
        explanation = explain(compiled, record)
        assert (explanation.decision, explanation.projection) == (decision, projection)


@settings(max_examples=400, deadline=None)
@given(policies(), RECORDS)
def test_nothing_outside_the_allowed_set_ever_leaves(policy: Policy, batch: list[Any]) -> None:
    compiled = compile_policy(policy, context=KEY, now=NOW)
    chain = policy.chain()
    allowed = {f for f in all_fields(policy) if ref_field(policy, f)[0] in ("show", "mask")}
    forbidden = {
        f
        for f in all_fields(policy)
        if any((o := ref_outcome(p, f)) and o.kind == "forbid" for p in chain)
    }
    for record in batch:
        _, projection = compiled.evaluate(record)
        if projection is None:
            continue
        assert set(projection) == allowed
        assert not set(projection) & forbidden
        for member in chain:
            assert all(granted(record, purpose) for purpose in member.require_consent)
            for rule in member.rules:
                assert rule.kind == "allow" or not ref_holds(rule.condition, record)
        for field, value in projection.items():
            if compiled.outcomes[field].kind == "mask":
                assert value is None or value != record.get(field)


def _outcome(function: Any, record: Any) -> Any:
    try:
        return function(record)
    except RecordRejected as exc:
        return ("rejected", str(exc))


@settings(max_examples=200, deadline=None)
@given(policies(), RECORDS)
def test_a_function_made_alone_gives_what_it_gives_made_with_the_rest(
    policy: Policy, batch: list[Any]
) -> None:
    """Each generated function made alone (as a group's read asks a changed partner's
    policy for ``evaluate`` only) gives what it gives when every function is made at once
    (``source`` makes them all)."""
    whole = compile_policy(policy, context=KEY, now=NOW)
    assert "def passes(r):" in whole.source
    for name in codegen.FUNCTIONS:
        alone = compile_policy(policy, context=KEY, now=NOW)
        for record in batch:
            assert _outcome(getattr(alone, name), record) == _outcome(
                getattr(whole, name), record
            ), name
        assert [n for n in codegen.FUNCTIONS if n in vars(alone)] == [name]


@settings(max_examples=200, deadline=None)
@given(policies(), RECORDS)
def test_gate_gives_the_consent_or_forbid_decision(policy: Policy, batch: list[Any]) -> None:
    compiled = compile_policy(policy, context=KEY, now=NOW)
    for record in batch:
        decision = compiled.decide(record)
        assert compiled.evaluate(record)[0] == decision
        gate = compiled.gate(record)
        if decision.reason.startswith(("consent:", "forbid:")):
            assert gate == decision
        else:
            assert gate is None
