"""Python source generation for compiled policies: nothing walks a syntax tree per record.

Each policy becomes a handful of straight-line functions, generated as source and compiled
once. User-written values (rule values, consent purposes, odd field names) never appear in
the source: they are constants the functions close over, by generated names; only names
that match a strict identifier pattern are written as literals.

Every decision function exists twice. The *fast* variant compares values inline; when a
record holds a value of an unexpected type (a string where a number is expected, a number
where a list is expected) an inline comparison may raise TypeError, and the fast function
then hands the record to the *safe* variant, which compares through :func:`safe_compare`:
the semantics of :func:`connector_core.query.matches`, with a type mismatch being False.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from typing import Any

from connector_core.errors import RecordRejected
from connector_core.masks import MaskFunction, same_text
from connector_core.query import All, AnyOf, Compare, Condition, Not, Op, lookup, matches

_LITERAL_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_COLLECTIONS = (list, tuple, set, frozenset)
_SMALL = 8  # up to this many values, a tuple scan beats hashing into a frozenset
_GRANTED = "(v.get('granted') if v.__class__ is dict else _granted(v))"
_ORDER = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def safe_compare(actual: Any, op: Op, expected: Any) -> bool:
    """``actual op expected`` as :func:`~connector_core.query.matches` decides it, except
    that a value of the wrong type gives False instead of raising."""
    try:
        return matches(Compare("value", op, expected), {"value": actual})
    except TypeError:
        return False


def _safe(condition: Compare, actual: Any) -> bool:
    try:
        return matches(condition, {"v": actual})
    except TypeError:
        return False


def _granted(state: Any) -> Any:
    return state.get("granted") if isinstance(state, dict) else None


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


@dataclasses.dataclass(frozen=True)
class DecisionPlan:
    """The checks of a policy chain in evaluation order; decisions are opaque constants."""

    consents: Sequence[tuple[str, object]]  # purpose, decision when it is missing
    forbids: Sequence[tuple[Condition | None, object]]  # condition, decision when it holds
    leaf_allows: Sequence[tuple[Condition | None, object]]  # condition, shared decision
    leaf_withheld: object  # no allow rule of the leaf matched
    parents: Sequence[tuple[Sequence[Condition | None], object]]  # allow conditions, withheld


@dataclasses.dataclass(frozen=True)
class FieldPlan:
    """One projected field: shown as is (no masks) or masked by each mask in turn."""

    name: str
    masks: tuple[MaskFunction, ...]
    failure: str  # the message when a mask raises; it never includes the value


_HELPERS: dict[str, Any] = {
    "_lookup": lookup,
    "_safe": _safe,
    "_granted": _granted,
    "_EMPTY": {},
    "_FAILED": object(),
    "_Rejected": RecordRejected,
    "_same_text": same_text,
}


class Source:
    """Generated source lines and the constants they refer to by name.

    Constants are numbered in the order they are bound, so two policies that differ only
    in their values (one per region, say) generate the same source, and share one
    compiled code object (see :func:`build`)."""

    def __init__(self) -> None:
        self.constants: dict[str, Any] = {}
        self.lines: list[str] = []
        self._names: dict[int, str] = {}
        self._pairs: dict[int, str] = {}

    def const(self, value: Any, prefix: str = "K") -> str:
        """Bind `value` as a constant and return its generated name."""
        if id(value) in self._names:
            return self._names[id(value)]
        name = f"{prefix}{len(self.constants)}"
        self.constants[name] = value
        self._names[id(value)] = name
        return name

    def withheld(self, decision: object) -> str:
        """The name of the preallocated ``(decision, None)`` pair ``evaluate`` returns."""
        if id(decision) not in self._pairs:
            self._pairs[id(decision)] = self.const((decision, None), "W")
        return self._pairs[id(decision)]

    def literal(self, text: str) -> str:
        """A string as a source literal if it is a plain (dotted) name, else a constant."""
        return repr(text) if _LITERAL_RE.fullmatch(text) else self.const(text, "S")

    def emit(self, depth: int, line: str) -> None:
        """Add one line at `depth` levels of indentation."""
        self.lines.append("    " * depth + line)


def condition_expr(src: Source, condition: Condition | None, *, safe: bool) -> str:
    """A Python expression over the record ``r`` that is true when `condition` holds."""
    match condition:
        case None:
            return "True"
        case All(items):
            return (
                "(" + " and ".join(condition_expr(src, c, safe=safe) for c in items) + ")"
                if items
                else "True"
            )
        case AnyOf(items):
            return (
                "(" + " or ".join(condition_expr(src, c, safe=safe) for c in items) + ")"
                if items
                else "False"
            )
        case Not(item):
            return f"(not {condition_expr(src, item, safe=safe)})"
        case Compare():
            return _compare_expr(src, condition, safe=safe)
    raise TypeError(f"not a condition: {type(condition).__name__}")


def _access(src: Source, path: str) -> str:
    if "." in path:
        return f"_lookup(r, {src.literal(path)})"
    return f"r.get({src.literal(path)})"


def _compare_expr(src: Source, cmp: Compare, *, safe: bool) -> str:
    acc = _access(src, cmp.field)
    fast = None if safe else _fast_compare(src, acc, cmp.op, cmp.value)
    if fast is not None:
        return fast
    return f"_safe({src.const(Compare('v', cmp.op, cmp.value), 'C')}, {acc})"


def _fast_compare(src: Source, acc: str, op: str, value: Any) -> str | None:
    """An inline expression for one comparison, or None to use the safe helper."""
    bound = f"(_a := {acc}) is not None"
    if op == "eq":
        return "False" if value is None else f"({acc} == {src.const(value)})"
    if op == "ne":
        return "True" if value is None else f"({acc} != {src.const(value)})"
    if op in ("in", "not_in"):
        return _membership(src, acc, value, negate=op == "not_in")
    if op in ("any_of", "all_of"):
        if not (isinstance(value, _COLLECTIONS) and all(_hashable(v) for v in value)):
            return None
        test = "not {}.isdisjoint(_a)" if op == "any_of" else "{}.issubset(_a)"
        return f"({bound} and {test.format(src.const(frozenset(value)))})"
    if op == "exists":
        present = f"({bound} and _a != '' and _a != [])"
        return present if value else f"(not {present})"
    if op in _ORDER:
        return f"({bound} and _a {_ORDER[op]} {src.const(value)})"
    if op == "starts_with":
        return f"(isinstance((_a := {acc}), str) and _a.startswith({src.const(value)}))"
    return None


def _membership(src: Source, acc: str, value: Any, *, negate: bool) -> str:
    if not isinstance(value, _COLLECTIONS):
        test = f"_a in {src.const(value)}"
    elif len(value) > _SMALL and all(_hashable(v) for v in value):
        test = f"_a in {src.const(frozenset(value))}"
    else:
        items = tuple(value)
        if None not in items:  # a missing value is then simply not among them
            return f"({acc} {'not in' if negate else 'in'} {src.const(items)})"
        test = f"_a in {src.const(items)}"
    if negate:
        return f"((_a := {acc}) is None or not ({test}))"
    return f"((_a := {acc}) is not None and {test})"


def _decision_body(
    src: Source, plan: DecisionPlan, *, safe: bool, result: Callable[[object], str], depth: int
) -> None:
    """Emit the consent gates, then the forbid rules, each returning its withheld decision."""
    if plan.consents:
        src.emit(depth, "c = r.get('consent')")
        src.emit(depth, "if c.__class__ is not dict:")
        src.emit(depth + 1, "c = c if isinstance(c, dict) else _EMPTY")
    for purpose, withheld in plan.consents:
        src.emit(depth, f"v = c.get({src.literal(purpose)})")
        src.emit(depth, f"if {_GRANTED} is not True:")
        src.emit(depth + 1, f"return {result(withheld)}")
    for condition, withheld in plan.forbids:
        src.emit(depth, f"if {condition_expr(src, condition, safe=safe)}:")
        src.emit(depth + 1, f"return {result(withheld)}")


def _leaf_body(
    src: Source, plan: DecisionPlan, *, safe: bool, depth: int, matched: str, otherwise: str
) -> None:
    """Emit the leaf's allow rules: ``matched`` (with ``{}`` for the shared decision) for
    the first that matches, else ``otherwise``."""
    keyword = "if"
    for condition, shared in plan.leaf_allows:
        statement = matched.format(src.const(shared, "D"))
        if condition is None:
            src.emit(depth, "else:" if keyword == "elif" else "if True:")
            src.emit(depth + 1, statement)
            return
        src.emit(depth, f"{keyword} {condition_expr(src, condition, safe=safe)}:")
        src.emit(depth + 1, statement)
        keyword = "elif"
    if keyword == "elif":
        src.emit(depth, "else:")
        depth += 1
    src.emit(depth, otherwise)


def _parents_body(
    src: Source, plan: DecisionPlan, *, safe: bool, result: Callable[[object], str], depth: int
) -> None:
    """Emit each narrowed policy's allow check: one of its allow rules must match."""
    for conditions, withheld in plan.parents:
        if any(c is None for c in conditions):
            continue
        test = " or ".join(condition_expr(src, c, safe=safe) for c in conditions) or "False"
        src.emit(depth, f"if not ({test}):")
        src.emit(depth + 1, f"return {result(withheld)}")


def _projection(src: Source, fields: Sequence[FieldPlan], depth: int) -> str:
    """Emit the masking statements; return the expression building the projection dict."""
    items = []
    for index, field in enumerate(fields):
        key = src.literal(field.name)
        if not field.masks:
            items.append(f"{key}: r.get({key})")
            continue
        x = f"x{index}"
        src.emit(depth, f"{x} = r.get({key})")
        src.emit(depth, f"if {x} is not None:")
        src.emit(depth + 1, "try:")
        first = field.masks[0]
        src.emit(depth + 2, f"y = {src.const(first, 'M')}({x}, {_view(src, first)})")
        for mask in field.masks[1:]:
            call = f"{src.const(mask, 'M')}(y, {_view(src, mask)})"
            src.emit(depth + 2, f"y = None if y is None else {call}")
        src.emit(depth + 1, "except Exception:")
        src.emit(depth + 2, "y = _FAILED")
        src.emit(depth + 1, "if y is _FAILED:")
        src.emit(depth + 2, f"raise _Rejected({src.const(field.failure, 'E')})")
        # The guarantee: a masked field never carries its original value (nor its text).
        same = f"y == {x} or (y.__class__ is not {x}.__class__ and _same_text(y, {x}))"
        src.emit(depth + 1, f"{x} = None if {same} else y")
        items.append(f"{key}: {x}")
    return "{" + ", ".join(items) + "}"


def _view(src: Source, mask: MaskFunction) -> str:
    """The record a mask is given: a fresh dict of only the fields it declares it reads
    (:func:`connector_core.masks.mask_view`), so an undeclared read finds nothing."""
    reads = sorted(getattr(mask, "reads", ()))
    return "{" + ", ".join(f"{src.literal(f)}: r.get({src.literal(f)})" for f in reads) + "}"


def _function(
    src: Source,
    name: str,
    plan: DecisionPlan,
    fields: Sequence[FieldPlan],
    *,
    safe: bool,
    kind: str,
) -> None:
    """Emit one function (fast or safe variant) of the given kind:

    ``decide`` and ``evaluate``; ``gate`` (consent and forbids only: a decision or None);
    ``allow`` (the leaf's allow rules only: the shared decision or None); ``passes``
    (everything but the leaf's allow rules: True or False)."""

    def result(decision: object) -> str:
        if kind == "passes":
            return "False"
        return src.withheld(decision) if kind == "evaluate" else src.const(decision, "D")

    src.emit(0, f"def {name}(r):")
    depth = 1
    if not safe:
        src.emit(1, "try:")
        depth = 2
    if kind == "allow":
        _leaf_body(src, plan, safe=safe, depth=depth, matched="return {}", otherwise="return None")
    else:
        _decision_body(src, plan, safe=safe, result=result, depth=depth)
    if kind in ("decide", "evaluate"):
        otherwise = f"return {result(plan.leaf_withheld)}"
        _leaf_body(src, plan, safe=safe, depth=depth, matched="d = {}", otherwise=otherwise)
    if kind in ("decide", "evaluate", "passes"):
        _parents_body(src, plan, safe=safe, result=result, depth=depth)
    if kind in ("gate", "passes"):
        src.emit(depth, "return None" if kind == "gate" else "return True")
    if not safe:
        src.emit(1, "except TypeError:")
        src.emit(2, f"return _safe_{name}(r)")
    if kind == "decide":
        src.emit(1, "return d")
    elif kind == "evaluate":
        src.emit(1, f"return d, {_projection(src, fields, 1)}")
    src.emit(0, "")


DECISIONS = ("decide", "evaluate", "gate", "allow", "passes")
FUNCTIONS = (*DECISIONS, "project")


def build(
    label: str,
    plan: DecisionPlan,
    fields: Sequence[FieldPlan],
    names: Sequence[str] = FUNCTIONS,
) -> tuple[dict[str, Any], str]:
    """Generate and compile those of a policy's functions named in `names` (of
    :data:`FUNCTIONS`; a decision function comes with its safe variant, see
    :func:`_function`).

    The functions are closures over the policy's constants, made by a generated factory.
    Policies with the same structure share the factory's code object, which keeps a
    thousand recipients' policies about as cheap to run as one (the interpreter's caches
    stay warm); the code's file name is then that of the first such policy compiled.
    Returns the functions by name, and the generated source."""
    src = Source()
    for name in names:
        if name == "project":
            src.emit(0, "def project(r):")
            src.emit(1, f"return {_projection(src, fields, 1)}")
        elif name in DECISIONS:
            _function(src, f"_safe_{name}", plan, fields, safe=True, kind=name)
            _function(src, name, plan, fields, safe=False, kind=name)
        else:
            raise ValueError(f"no generated function {name!r}")
    body = "\n".join("    " + line if line else "" for line in src.lines)
    source = f"def _factory({', '.join(src.constants)}):\n{body}\n    return {', '.join(names)},\n"
    functions = _factory(source, label)(*src.constants.values())
    return dict(zip(names, functions, strict=True)), source


_Factory = Callable[..., tuple[Callable[..., Any], ...]]
_FACTORIES: dict[str, _Factory] = {}
_MAX_FACTORIES = 4096


def _factory(source: str, label: str) -> _Factory:
    """The compiled factory for `source`, shared by every policy that generates it."""
    factory = _FACTORIES.get(source)
    if factory is None:
        namespace = dict(_HELPERS)
        # Safe to exec: the source holds only generated names, operators, checked literals.
        exec(compile(source, f"<policy {label}>", "exec"), namespace)
        factory = namespace["_factory"]
        if len(_FACTORIES) >= _MAX_FACTORIES:
            _FACTORIES.clear()
        _FACTORIES[source] = factory
    return factory
