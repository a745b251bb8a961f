"""Spotting comparisons on one field that no value can satisfy together.

Used for warnings only, so it stays conservative: when two comparisons are of different
kinds (a relative time and a date, text and a number) it says nothing.
"""

from __future__ import annotations

from typing import Any

from connector_core.policy.models import RelativeTime
from connector_core.query import Compare, matches

_ORDER_OPERATORS = frozenset({"gt", "gte", "lt", "lte"})


def clash(a: Compare, b: Compare) -> bool:
    """True when no value of the field can satisfy both comparisons."""
    if _is_empty_test(b):
        a, b = b, a
    if _is_empty_test(a):
        return not (_is_empty_test(b) or b.op in ("ne", "not_in"))
    if b.op == "eq":
        a, b = b, a
    if a.op == "eq":
        return _decided(b, a.value) is False
    if a.op == b.op == "in":
        return not set(a.value) & set(b.value)
    if {a.op, b.op} == {"in", "not_in"}:
        inside, outside = (a, b) if a.op == "in" else (b, a)
        return set(inside.value) <= set(outside.value)
    return _bounds_clash(a, b)


def _is_empty_test(compare: Compare) -> bool:
    return compare.op == "exists" and compare.value is False


def _decided(compare: Compare, value: Any) -> bool | None:
    """Whether a record whose field is `value` satisfies `compare`; None when unknowable."""
    if compare.op in _ORDER_OPERATORS:
        mine, theirs = _order_key(value), _order_key(compare.value)
        if mine is None or theirs is None or mine[0] != theirs[0]:
            return None
    try:
        return matches(compare, {compare.field: value})
    except TypeError:  # e.g. a number tested with any_of on an untyped extra field
        return None


def _order_key(value: Any) -> tuple[str, Any] | None:
    """A key comparing values of one kind: numbers, text (ISO dates), relative times."""
    if isinstance(value, RelativeTime):
        return ("relative", -value.days_ago)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return ("number", value)
    return ("text", value) if isinstance(value, str) else None


def _bounds_clash(a: Compare, b: Compare) -> bool:
    lower, upper = (a, b) if a.op in ("gt", "gte") else (b, a)
    if lower.op not in ("gt", "gte") or upper.op not in ("lt", "lte"):
        return False
    low, high = _order_key(lower.value), _order_key(upper.value)
    if low is None or high is None or low[0] != high[0]:
        return False
    strict = lower.op == "gt" or upper.op == "lt"
    return bool(low[1] >= high[1]) if strict else bool(low[1] > high[1])
