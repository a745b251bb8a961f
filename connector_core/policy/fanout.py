"""Evaluate one record against many recipients' policies without trying every policy.

Thousands of recipient policies typically differ only in the region or group they select.
:class:`PolicySet` indexes each policy by what its allow rules test: when every allow rule
of a policy has a top-level (AND-ed) ``eq``, ``in`` or ``any_of`` test on one field, the
policy can only share records whose value (or, for ``any_of``, one of whose list items) is
among those tested, so it is filed under those values. A record is then tried only by its
candidate policies and by the policies that could not be indexed.

Policies that differ only in their own allow rules (the same consent gates, forbids,
narrowed policies and field outcomes: an equal ``share_key``) form a group: for each
record, the group's checks run once and its projection is built once.

The index only ever narrows the policies to try, and a group's parts are exactly the
parts of each member's own evaluation, so results equal evaluating every policy alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from connector_core.policy.compiler import CompiledPolicy, Decision
from connector_core.query import All, Compare, Condition, lookup
from connector_core.records import Record

_SCALAR_OPS = ("eq", "in")
_NOTHING: Iterator[Any] = iter(())  # exhausted for good: safe to hand out again and again


class _Index:
    """Policies filed by the values a field must hold (scalar) or contain (element)."""

    def __init__(self, field: str) -> None:
        self.field = field
        self.plain = "." not in field
        self.scalar: dict[Any, list[int]] = {}
        self.element: dict[Any, list[int]] = {}
        #: no policy can be found twice for one record (else results need deduplicating)
        self.unique = True

    def add(self, position: int, scalars: set[Any], elements: set[Any]) -> None:
        """File the policy at `position` under its values."""
        for value in scalars:
            self.scalar.setdefault(value, []).append(position)
        for value in elements:
            self.element.setdefault(value, []).append(position)
        if len(elements) > 1 or (scalars and elements):
            self.unique = False

    def collect(self, record: Record, out: list[int]) -> int:
        """Add to `out` the positions of the policies whose test on this field `record`
        passes; return how many sorted runs were added.

        Only plain values are filed (see :func:`_indexable`), so an unhashable value equals
        none of them, and a list holding an unhashable item makes ``any_of`` false."""
        value = record.get(self.field) if self.plain else lookup(record, self.field)
        if value is None:
            return 0
        runs = 0
        if self.scalar:
            try:
                found = self.scalar.get(value)
            except TypeError:
                found = None
            if found:
                out += found
                runs = 1
        if self.element:
            runs += self._collect_items(value, out)
        return runs

    def _collect_items(self, value: Any, out: list[int]) -> int:
        element = self.element
        found: list[list[int]] = []
        try:
            for item in value:
                hit = element.get(item)
                if hit and hit not in found:  # an item listed twice finds its policies once
                    found.append(hit)
        except TypeError:  # not iterable, or an unhashable item: any_of does not hold
            return 0
        for hit in found:
            out += hit
        return len(found)


def _conjuncts(condition: Condition | None) -> Iterator[Compare]:
    """The comparisons a condition AND-s at its top level."""
    if isinstance(condition, Compare):
        yield condition
    elif isinstance(condition, All):
        for item in condition.items:
            yield from _conjuncts(item)


def _indexable(value: Any) -> bool:
    """Text, numbers and booleans: values a record's value equals only by hash and ``==``."""
    if isinstance(value, float):
        return not math.isnan(value)
    return isinstance(value, str | int)


def _values(test: Compare) -> tuple[set[Any], set[Any]] | None:
    """(scalar values, element values) a test requires, or None if it cannot be indexed."""
    if test.op == "eq":
        values = [] if test.value is None else [test.value]
    elif test.op in ("in", "any_of") and isinstance(test.value, list | tuple | set | frozenset):
        values = [v for v in test.value if v is not None or test.op == "any_of"]
    else:
        return None
    if not all(_indexable(v) for v in values):
        return None
    return (set(values), set()) if test.op in _SCALAR_OPS else (set(), set(values))


def index_terms(policy: CompiledPolicy) -> tuple[str, set[Any], set[Any]] | None:
    """The field and values to file `policy` under, or None when it cannot be indexed.

    Every allow rule of the policy itself must test the same field with eq, in or any_of
    at its top level (the policies it narrows can only withhold more)."""
    tests = [
        {t.field: v for t in _conjuncts(rule.condition) if (v := _values(t)) is not None}
        for rule in policy.links[0].allows()
    ]
    if not tests:
        return ("", set(), set())  # no allow rule: it never shares anything
    for field in tests[0]:
        if all(field in found for found in tests):
            scalars = set().union(*(found[field][0] for found in tests))
            elements = set().union(*(found[field][1] for found in tests))
            return field, scalars, elements
    return None


def _exact(policy: CompiledPolicy, terms: tuple[str, set[Any], set[Any]] | None) -> bool:
    """True when being found in the index proves the policy's allow rules match: its one
    allow rule is the indexed test itself."""
    allows = policy.links[0].allows()
    return terms is not None and len(allows) == 1 and isinstance(allows[0].condition, Compare)


class PolicySet:
    """Many compiled policies evaluated together; ``shared`` is the fast path."""

    def __init__(self, policies: Sequence[CompiledPolicy]) -> None:
        # A policy's generated functions are made when first used (see CompiledPolicy):
        # only those of the policies a record is a candidate for, and one per group here.
        self.policies = tuple(policies)
        self._allow: list[Callable[[Record], Decision | None] | None] = []
        self._group: list[int] = []
        self._passes: list[Callable[[Record], bool]] = []
        self._project: list[Callable[[Record], Record]] = []
        self._indexes: dict[str, _Index] = {}
        self._unindexed: list[int] = []
        self.indexed: set[int] = set()
        groups: dict[tuple[Any, ...], int] = {}
        for position, policy in enumerate(self.policies):
            group = groups.setdefault(policy.share_key, len(groups))
            if group == len(self._passes):
                self._passes.append(policy.passes)
                self._project.append(policy.project)
            self._group.append(group)
            terms = index_terms(policy)
            self._allow.append(None if _exact(policy, terms) else policy.allow)
            self._file(position, terms)
        self._index_list = list(self._indexes.values())
        self._unique = all(index.unique for index in self._index_list)
        self._simple = len(self._passes) == 1 and not any(self._allow)

    def _file(self, position: int, terms: tuple[str, set[Any], set[Any]] | None) -> None:
        if terms is None:
            self._unindexed.append(position)
            return
        self.indexed.add(position)
        field, scalars, elements = terms
        if scalars or elements:
            self._indexes.setdefault(field, _Index(field)).add(position, scalars, elements)

    def candidates(self, record: Record) -> list[int]:
        """Positions (in order) of the policies that may share `record`."""
        out: list[int] = []
        runs = 0
        for index in self._index_list:
            runs += index.collect(record, out)
        if self._unindexed:
            out += self._unindexed
            runs += 1
        if runs > 1:
            out.sort()
            if not self._unique:
                out = list(dict.fromkeys(out))
        return out

    def shared(self, record: Record) -> Iterator[tuple[CompiledPolicy, Record]]:
        """Each policy that shares `record`, in order, with its projection.

        When several policies share the record, each gets its own copy of the projection."""
        if self._simple:  # one group, and the index proves every allow rule
            if not self._passes[0](record):  # cheaper than finding candidates: first
                return _NOTHING
            positions = self.candidates(record)
            if not positions:
                return _NOTHING
            projection = self._project[0](record)
            policies = self.policies
            shares = [(policies[positions[0]], projection)]
            for position in positions[1:]:
                shares.append((policies[position], projection.copy()))
            return iter(shares)
        positions = self.candidates(record)
        return self._shared(record, positions) if positions else _NOTHING

    def _shared(
        self, record: Record, positions: list[int]
    ) -> Iterator[tuple[CompiledPolicy, Record]]:
        allow, group_of, policies = self._allow, self._group, self.policies
        copy = len(positions) > 1
        done: dict[int, Record | None] = {}
        for position in positions:
            check = allow[position]
            if check is not None and check(record) is None:
                continue
            group = group_of[position]
            if group in done:
                projection = done[group]
            else:
                passes = self._passes[group](record)
                projection = done[group] = self._project[group](record) if passes else None
            if projection is not None:
                yield policies[position], projection.copy() if copy else projection

    def evaluate(self, record: Record) -> Iterator[tuple[CompiledPolicy, Decision, Record | None]]:
        """Every policy's result for `record`, in order, identical to its own ``evaluate``.

        A policy the index rules out gets what full evaluation would give it: its consent
        or forbid decision (computed once per group of policies sharing those checks), else
        ``no-allow``."""
        candidates = set(self.candidates(record))
        gates: dict[str, Decision | None] = {}
        for position, policy in enumerate(self.policies):
            if position in candidates or position not in self.indexed:
                yield policy, *policy.evaluate(record)
                continue
            if policy.gate_key not in gates:
                gates[policy.gate_key] = policy.gate(record)
            yield policy, gates[policy.gate_key] or policy.no_allow, None
