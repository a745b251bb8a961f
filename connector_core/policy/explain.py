"""Explain one decision: which consent was checked, which rule matched and why, and for every
field why it is shown, masked or absent.

This interprets the policy (it is the admin's tool, not the hot path) and must agree with
the compiled functions; the tests check that it does. Its "why" texts quote the record's
values, which is right for the admin's own ``policy explain`` command and nowhere else.
"""

from __future__ import annotations

import dataclasses
import reprlib
from pathlib import Path
from typing import Any

from connector_core.errors import RecordRejected
from connector_core.masks import mask_view, same_text
from connector_core.policy.codegen import safe_compare
from connector_core.policy.compiler import (
    CompiledPolicy,
    Decision,
    FieldSource,
    Link,
    Resolution,
)
from connector_core.policy.conditions import show
from connector_core.policy.models import Rule
from connector_core.query import All, AnyOf, Compare, Condition, Not, lookup
from connector_core.records import Record

_repr = reprlib.Repr()
_repr.maxstring = 60

# op: (text when it holds, text when it does not); {f} field, {a} actual, {e} expected
_TEXTS = {
    "eq": ("{f} is {a}", "{f} is {a}, not {e}"),
    "ne": ("{f} is {a}, not {e}", "{f} is {e}"),
    "in": ("{f} is {a}, one of {e}", "{f} is {a}, not one of {e}"),
    "not_in": ("{f} is {a}, not one of {e}", "{f} is {a}, one of {e}"),
    "any_of": ("{f} has one of {e}", "{f} has none of {e}"),
    "all_of": ("{f} has all of {e}", "{f} does not have all of {e}"),
    "gt": ("{f} is {a}, after {e}", "{f} is {a}, not after {e}"),
    "gte": ("{f} is {a}, not before {e}", "{f} is {a}, before {e}"),
    "lt": ("{f} is {a}, before {e}", "{f} is {a}, not before {e}"),
    "lte": ("{f} is {a}, not after {e}", "{f} is {a}, after {e}"),
    "starts_with": ("{f} is {a}, starting with {e}", "{f} is {a}, not starting with {e}"),
}


@dataclasses.dataclass(frozen=True)
class Step:
    """One check: ``kind`` is consent, rule, field or decision; ``ok`` whether it passed."""

    kind: str
    subject: str
    ok: bool
    detail: str
    policy: str
    line: int | None


@dataclasses.dataclass(frozen=True)
class Explanation:
    """The decision for one record, every step that led to it, and what would be sent."""

    decision: Decision
    steps: list[Step]
    projection: Record | None

    def render(self) -> str:
        """A human-readable trace: consent, rules, fields, then the decision."""
        verdict = "shared" if self.decision.share else "withheld"
        lines = [f"Decision: {verdict} ({self.decision.reason})"]
        for kind, title in (("consent", "Consent"), ("rule", "Rules"), ("field", "Fields")):
            steps = [s for s in self.steps if s.kind == kind]
            if steps:
                lines.append(f"{title}:")
                lines.extend(_render_step(s) for s in steps)
        return "\n".join(lines)


def _render_step(step: Step) -> str:
    if step.kind == "field":
        return f"  {step.subject:<16} {step.detail}"
    mark = "[x]" if step.ok else "[ ]"
    if step.kind == "consent":
        return f"  {mark} {step.subject} (required by {step.policy}): {step.detail}"
    return f"  {mark} {step.subject}: {step.detail}"


def explain(compiled: CompiledPolicy, record: Record) -> Explanation:
    """Explain how `compiled` decides `record`, step by step."""
    consents = _consent_steps(compiled, record)
    checked = [
        (link, rule, *holds(rule.condition, record))
        for link in compiled.links
        for rule in (*link.forbids(), *link.allows())
    ]
    decision = _decide(compiled, consents, checked)
    steps = [*consents, *(_rule_step(*check) for check in checked)]
    steps.extend(_field_step(compiled, r) for r in compiled.resolutions.values())
    steps.append(
        Step("decision", compiled.name, decision.share, decision.reason, compiled.name, None)
    )
    projection = _project(compiled, record) if decision.share else None
    return Explanation(decision, steps, projection)


_Check = tuple[Link, Rule, bool, str]


def _consent_steps(compiled: CompiledPolicy, record: Record) -> list[Step]:
    consent = record.get("consent")
    steps = []
    for link in compiled.links:
        for purpose in link.policy.require_consent:
            state = consent.get(purpose) if isinstance(consent, dict) else None
            if not isinstance(state, dict):
                ok, detail = False, "no evidence, so no consent"
            else:
                ok = state.get("granted") is True
                origin = [f"{k} {state[k]}" for k in ("source", "at") if state.get(k)]
                detail = ("granted" if ok else "not granted") + (
                    f" ({', '.join(origin)})" if origin else ""
                )
            steps.append(Step("consent", purpose, ok, detail, link.policy.name, None))
    return steps


def _rule_step(link: Link, rule: Rule, ok: bool, why: str) -> Step:
    where = _where(link.policy.path, rule.line)
    detail = ("matched" if ok else "did not match") + f" ({where}): {why}"
    return Step("rule", f"{rule.kind} {rule.name}", ok, detail, link.policy.name, rule.line)


def _decide(compiled: CompiledPolicy, consents: list[Step], checked: list[_Check]) -> Decision:
    """The decision the compiled functions make, from the interpreted checks."""
    for step in consents:
        if not step.ok:
            return Decision(False, f"consent:{step.subject}")
    for link, rule, ok, _ in checked:
        if ok and rule.kind == "forbid":
            return Decision(False, f"forbid:{link.policy.name}:{rule.name}")
    shared: Rule | None = None
    for link in compiled.links:
        allowed = [r for k, r, ok, _ in checked if k is link and ok and r.kind == "allow"]
        if not allowed:
            return Decision(False, f"no-allow:{link.policy.name}")
        shared = shared or allowed[0]
    assert shared is not None
    return Decision(True, f"shared:{shared.name}", shared.name)


def holds(condition: Condition | None, record: Record) -> tuple[bool, str]:
    """Whether `condition` holds for `record`, and why, quoting the record's values."""
    match condition:
        case None:
            return True, "no condition, so every record"
        case Compare(field, op, expected):
            actual = lookup(record, field)
            ok = safe_compare(actual, op, expected)
            if op == "exists":
                present = bool(expected) == ok
                return ok, f"{field} is {'present' if present else 'missing or empty'}"
            shown = "missing" if actual is None else _show(actual)
            text = _TEXTS[op][0 if ok else 1]
            return ok, text.format(f=field, a=shown, e=_show(expected))
        case All(items):
            results = [holds(c, record) for c in items]
            failed = [why for ok, why in results if not ok]
            return not failed, "; ".join(failed[:1] or [why for _, why in results])
        case AnyOf(items):
            results = [holds(c, record) for c in items]
            passed = [why for ok, why in results if ok]
            if passed:
                return True, passed[0]
            return False, " and ".join(why for _, why in results) or "no alternatives"
        case Not(item):
            ok, why = holds(item, record)
            return not ok, f"not ({why})"
    raise TypeError(f"not a condition: {type(condition).__name__}")


def _show(value: Any) -> str:
    """A value as the policy file writes it: text quoted, lists in brackets, true/false."""
    if isinstance(value, list | tuple | set | frozenset):
        items = [_show(v) for v in list(value)[:8]]
        return "[" + ", ".join(items) + (", ...]" if len(value) > 8 else "]")
    if isinstance(value, str):
        return _repr.repr(value)
    return show(value)


def _where(path: Path, line: int | None) -> str:
    return f"{path.name}:{line}" if line else path.name


def _by(source: FieldSource) -> str:
    assert source.outcome is not None
    return f"fields.{source.key} ({_where(source.path, source.outcome.line)})"


def _field_step(compiled: CompiledPolicy, resolution: Resolution) -> Step:
    kind = resolution.outcome.kind
    deciding = [s for s in resolution.sources if s.outcome and s.outcome.kind == kind]
    if kind == "show":
        detail = f"shown by {_by(resolution.sources[0])}"
    elif kind == "mask":
        detail = "masked with " + ", then ".join(
            f"{s.outcome.label().removeprefix('mask:')} by {_by(s)}"
            for s in reversed(deciding)
            if s.outcome
        )
    elif kind == "forbid":
        detail = f"forbidden by {_by(deciding[-1])}"
    elif deciding:
        detail = f"absent by {_by(deciding[0])}"
    else:
        unlisted = next(s for s in resolution.sources if s.outcome is None)
        detail = _not_listed(compiled, resolution.field, unlisted)
    source = (deciding or resolution.sources)[0]
    line = source.outcome.line if source.outcome else None
    ok = kind in ("show", "mask")
    return Step("field", resolution.field, ok, detail, source.policy, line)


def _not_listed(compiled: CompiledPolicy, field: str, source: FieldSource) -> str:
    where = f" in {source.policy}" if len(compiled.links) > 1 else ""
    if field == "consent":
        return f"absent: consent is shared only when listed by name{where}"
    return f"absent: not listed{where}"


def _project(compiled: CompiledPolicy, record: Record) -> Record:
    """The projection, built from the field outcomes rather than the generated code."""
    projection: dict[str, Any] = {}
    for name, resolution in compiled.resolutions.items():
        if resolution.outcome.kind == "show":
            projection[name] = record.get(name)
        elif resolution.outcome.kind == "mask":
            projection[name] = _mask(compiled, resolution, record)
    return projection


def _mask(compiled: CompiledPolicy, resolution: Resolution, record: Record) -> Any:
    original = value = record.get(resolution.field)
    try:
        for mask in resolution.masks:
            value = None if value is None else mask(value, mask_view(mask, record))
    except Exception:
        value = RecordRejected
    if value is RecordRejected:
        raise RecordRejected(
            f"policy {compiled.name}: the {resolution.outcome.mask} mask failed on field "
            f"{resolution.field}"
        )
    return None if value == original or same_text(value, original) else value
