"""The neutral query form used for pushdown: a condition tree over canonical fields.

The policy compiler produces it; an adapter with the ``pushdown`` capability translates it
into its own query language (CiviCRM APIv4 ``where``) or declines, and the engine then
filters locally with :func:`matches`, so the result is identical either way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Literal

from connector_core.records import Record

Op = Literal[
    "eq",
    "ne",
    "in",
    "not_in",
    "any_of",
    "all_of",
    "exists",
    "gt",
    "gte",
    "lt",
    "lte",
    "starts_with",
]


@dataclasses.dataclass(frozen=True, slots=True)
class Compare:
    """``field op value``; ``field`` may be a dotted path such as ``consent.contact_me``."""

    field: str
    op: Op
    value: Any = None


@dataclasses.dataclass(frozen=True, slots=True)
class All:
    """Every item holds (an empty All is true)."""

    items: Sequence[Condition]


@dataclasses.dataclass(frozen=True, slots=True)
class AnyOf:
    """At least one item holds (an empty AnyOf is false)."""

    items: Sequence[Condition]


@dataclasses.dataclass(frozen=True, slots=True)
class Not:
    """The item does not hold."""

    item: Condition


Condition = Compare | All | AnyOf | Not


def lookup(record: Record, path: str) -> Any:
    """Read a field or a dotted path (``consent.local_organizing.granted``) from a record."""
    if path in record:
        return record[path]
    head, _, rest = path.partition(".")
    value: Any = record.get(head)
    for part in rest.split(".") if rest else ():
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def matches(condition: Condition | None, record: Record) -> bool:
    """Evaluate a condition on one record (the engine's local fallback for pushdown)."""
    match condition:
        case None:
            return True
        case All(items):
            return all(matches(c, record) for c in items)
        case AnyOf(items):
            return any(matches(c, record) for c in items)
        case Not(item):
            return not matches(item, record)
        case Compare(field, op, value):
            return _compare(lookup(record, field), op, value)
    raise TypeError(f"not a condition: {condition!r}")


def _compare(actual: Any, op: Op, expected: Any) -> bool:
    if op == "exists":
        return (actual is not None and actual != "" and actual != []) == bool(expected)
    if actual is None:
        return op in ("ne", "not_in")
    if op == "eq":
        return bool(actual == expected)
    if op == "ne":
        return bool(actual != expected)
    if op == "in":
        return actual in expected
    if op == "not_in":
        return actual not in expected
    if op == "any_of":
        return bool(set(actual) & set(expected))
    if op == "all_of":
        return set(expected) <= set(actual)
    if op == "starts_with":
        return isinstance(actual, str) and actual.startswith(expected)
    try:
        if op == "gt":
            return bool(actual > expected)
        if op == "gte":
            return bool(actual >= expected)
        if op == "lt":
            return bool(actual < expected)
        if op == "lte":
            return bool(actual <= expected)
    except TypeError:
        return False
    raise ValueError(f"unknown operator {op!r}")
