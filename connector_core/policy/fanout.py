"""Evaluate one record against many recipients' policies without trying every policy.

Thousands of recipient policies typically differ only in the region or group they select.
:class:`PolicySet` indexes each policy by what its allow rules test: when every allow rule
of a policy has a top-level (AND-ed) ``eq``, ``in`` or ``any_of`` test on one field, the
policy can only share records whose value (or, for ``any_of``, one of whose list items) is
among those tested, so it is filed under those values. A record is then evaluated only by
its candidate policies and by the policies that could not be indexed.

The index only ever narrows the policies to try; each candidate is evaluated in full by
its compiled functions, so results are exactly those of evaluating every policy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from connector_core.policy.compiler import CompiledPolicy, Decision
from connector_core.query import All, Compare, Condition, lookup
from connector_core.records import Record

_SCALAR_OPS = ("eq", "in")


class _Index:
    """Policies filed by the values a field must hold (scalar) or contain (element)."""

    def __init__(self, field: str) -> None:
        self.field = field
        self.plain = "." not in field
        self.scalar: dict[Any, list[int]] = {}
        self.element: dict[Any, list[int]] = {}
        self.every_scalar: list[int] = []

    def add(self, position: int, scalars: set[Any], elements: set[Any]) -> None:
        """File the policy at `position` under its values."""
        for value in scalars:
            self.scalar.setdefault(value, []).append(position)
        for value in elements:
            self.element.setdefault(value, []).append(position)
        if scalars:
            self.every_scalar.append(position)

    def positions(self, record: Record) -> Sequence[int]:
        """Positions, in order, of the policies that may share `record` (a superset)."""
        value = record.get(self.field) if self.plain else lookup(record, self.field)
        if value is None:
            return ()
        if not self.element:
            try:
                return self.scalar.get(value, ())
            except TypeError:  # unhashable: it equals no filed value, but stay on the safe side
                return self.every_scalar
        hits = self._element_hits(value)
        if self.scalar:
            try:
                hits.append(self.scalar.get(value, []))
            except TypeError:
                hits.append(self.every_scalar)
        hits = [h for h in hits if h]
        if len(hits) <= 1:
            return hits[0] if hits else ()
        return sorted(set().union(*hits))

    def _element_hits(self, value: Any) -> list[list[int]]:
        try:
            items = iter(value)
        except TypeError:
            return []
        hits = []
        for item in items:
            try:
                found = self.element.get(item)
            except TypeError:
                continue
            if found:
                hits.append(found)
        return hits


def _conjuncts(condition: Condition | None) -> Iterator[Compare]:
    """The comparisons a condition AND-s at its top level."""
    if isinstance(condition, Compare):
        yield condition
    elif isinstance(condition, All):
        for item in condition.items:
            yield from _conjuncts(item)


def _values(test: Compare) -> tuple[set[Any], set[Any]] | None:
    """(scalar values, element values) a test requires, or None if it cannot be indexed."""
    if test.op == "eq":
        values = [] if test.value is None else [test.value]
    elif test.op in ("in", "any_of") and isinstance(test.value, list | tuple | set | frozenset):
        values = list(test.value)
    else:
        return None
    try:
        found = set(values)
    except TypeError:
        return None
    return (found, set()) if test.op in _SCALAR_OPS else (set(), found)


def index_terms(policy: CompiledPolicy) -> tuple[str, set[Any], set[Any]] | None:
    """The field and values to file `policy` under, or None when it cannot be indexed.

    Every allow rule of the policy itself must test the same field with eq, in or any_of
    at its top level (the policies it narrows can only withhold more)."""
    allows = policy.links[0].allows()
    tests = [
        {t.field: v for t in _conjuncts(rule.condition) if (v := _values(t)) is not None}
        for rule in allows
    ]
    if not tests:
        return ("", set(), set())  # no allow rule: it never shares anything
    for field in tests[0]:
        if all(field in found for found in tests):
            scalars = set().union(*(found[field][0] for found in tests))
            elements = set().union(*(found[field][1] for found in tests))
            return field, scalars, elements
    return None


class PolicySet:
    """Many compiled policies evaluated together; ``shared`` uses the index."""

    def __init__(self, policies: Sequence[CompiledPolicy]) -> None:
        self.policies = tuple(policies)
        self._evaluate: list[Callable[[Record], tuple[Decision, Record | None]]] = [
            p.evaluate for p in self.policies
        ]
        self._indexes: dict[str, _Index] = {}
        self._unindexed: list[int] = []
        self.indexed: set[int] = set()
        for position, policy in enumerate(self.policies):
            terms = index_terms(policy)
            if terms is None:
                self._unindexed.append(position)
                continue
            self.indexed.add(position)
            field, scalars, elements = terms
            if scalars or elements:
                self._indexes.setdefault(field, _Index(field)).add(position, scalars, elements)
        self._single = (
            next(iter(self._indexes.values()))
            if len(self._indexes) == 1 and not self._unindexed
            else None
        )

    def candidates(self, record: Record) -> Sequence[int]:
        """Positions (in order) of the policies that may share `record`."""
        if self._single is not None:
            return self._single.positions(record)
        found = set(self._unindexed)
        for index in self._indexes.values():
            found.update(index.positions(record))
        return sorted(found)

    def shared(self, record: Record) -> Iterator[tuple[CompiledPolicy, Record]]:
        """Each policy that shares `record`, in order, with its projection (the fast path)."""
        policies, evaluate = self.policies, self._evaluate
        single = self._single
        positions = single.positions(record) if single is not None else self.candidates(record)
        for position in positions:
            decision, projection = evaluate[position](record)
            if decision.share:
                yield policies[position], projection  # type: ignore[misc]

    def evaluate(
        self, record: Record
    ) -> Iterator[tuple[CompiledPolicy, Decision, Record | None]]:
        """Every policy's result for `record`, in order, identical to its own ``evaluate``.

        A policy the index rules out gets what full evaluation would give it: its consent
        or forbid decision (computed once per group of policies sharing those checks), else
        ``no-allow``."""
        candidates = set(self.candidates(record))
        gates: dict[str, Decision | None] = {}
        for position, policy in enumerate(self.policies):
            if position in candidates or position not in self.indexed:
                yield policy, *self._evaluate[position](record)
                continue
            if policy.gate_key not in gates:
                gates[policy.gate_key] = policy.gate(record)
            yield policy, gates[policy.gate_key] or policy.no_allow, None
