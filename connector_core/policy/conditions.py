"""Parse a policy's ``when:`` conditions into the neutral query tree, with located checks.

The tree is :mod:`connector_core.query`'s, so the compiler, explain and pushdown all read
the same thing. Its shape, which they may rely on:

- A mapping's entries are ANDed: one entry gives its condition, several give ``All``;
  ``All`` is flattened, so it never directly holds another ``All``. ``any:`` gives
  ``AnyOf`` (a single item gives the item), ``not:`` gives ``Not``.
- ``field: value`` is ``Compare(field, "eq", value)``; ``field: null`` (and ``eq: null``)
  is ``Compare(field, "exists", False)``; ``ne: null`` is ``exists`` True. On a list field
  (``groups``, ``tags``) a single value means "contains": ``Compare(field, "any_of", (v,))``.
- List operands (``in``, ``not_in``, ``any_of``, ``all_of``) are tuples.
- ``consent.<purpose>: true`` is ``Compare("consent.<purpose>.granted", "eq", True)`` and
  ``false`` is ``Compare("consent.<purpose>.granted", "ne", True)``, so a person with no
  consent evidence at all matches ``false``, as "no evidence means no consent" requires.
- ``{days_ago: N}`` is :class:`~connector_core.policy.models.RelativeTime` (``N`` a float),
  allowed only as the operand of ``gt``/``gte``/``lt``/``lte`` on dates and times.
- Dates YAML reads as date objects (unquoted ``2024-01-31``) become ISO text, as in records.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Collection
from typing import Any, Final, cast, get_args

from connector_core.errors import Problem
from connector_core.policy.contradictions import clash
from connector_core.policy.models import LONGEST, RelativeTime
from connector_core.query import All, AnyOf, Compare, Condition, Not, Op
from connector_core.records import FIELDS, FieldType, consent_purpose, is_extra
from connector_core.yaml_errors import Loc, LocatedDocument, did_you_mean

OPERATORS: Final[tuple[str, ...]] = get_args(Op)
COMBINATORS: Final = ("all", "any", "not")
LIST_OPERATORS: Final = frozenset({"in", "not_in", "any_of", "all_of"})
ORDER_OPERATORS: Final = frozenset({"gt", "gte", "lt", "lte"})
_ORDERED = frozenset({FieldType.INTEGER, FieldType.NUMBER, FieldType.DATE, FieldType.DATETIME})
_TIMES = frozenset({FieldType.DATE, FieldType.DATETIME})
_INVALID: Final = object()

_KIND = {
    FieldType.STRING: "text",
    FieldType.INTEGER: "a whole number",
    FieldType.NUMBER: "a number",
    FieldType.BOOLEAN: "true or false",
    FieldType.DATE: "a date",
    FieldType.DATETIME: "a date and time",
    FieldType.LIST: "a list",
    FieldType.MAPPING: "a mapping",
}


def warning(doc: LocatedDocument, loc: Loc, message: str, *, key: bool = False) -> Problem:
    """A located problem with severity ``warning``: reported, but loading goes on."""
    problem = doc.problem(loc, message, key=key)
    problem.severity = "warning"
    return problem


def show(value: Any) -> str:
    """A value as a message shows it: text quoted, lists and mappings as YAML writes them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(show(v) for v in value) + "]"
    if isinstance(value, RelativeTime):
        return f"{{days_ago: {value.days_ago:g}}}"
    if isinstance(value, dict):
        return "a mapping"
    return repr(value) if isinstance(value, str) else str(value)


@dataclasses.dataclass(frozen=True, slots=True)
class _Target:
    """The field an entry tests: its path in the record, and its type (None if unknown)."""

    name: str
    path: str
    type: FieldType | None
    purpose: str | None = None


class ConditionParser:
    """Parses the ``when:`` conditions of one policy file, collecting problems and warnings.

    Args:
        doc: the policy file.
        purposes: the network's declared consent purposes; None when unknown (unchecked).
        extra_fields: the ``extra.`` fields the connections map; None accepts any.
        require_consent: the policy's consent gates (to spot conditions that cannot hold).
    """

    def __init__(
        self,
        doc: LocatedDocument,
        *,
        purposes: Collection[str] | None = None,
        extra_fields: Collection[str] | None = None,
        require_consent: Collection[str] = (),
    ) -> None:
        self.doc = doc
        self.purposes = purposes
        self.extra_fields = extra_fields
        self.require_consent = frozenset(require_consent)
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        self._rule = ""
        self._locs: dict[int, Loc] = {}

    def parse(self, value: Any, loc: Loc, *, rule: str) -> Condition | None:
        """The condition written at `loc` for the rule named `rule`; None if it has errors."""
        self._rule = rule
        return self._condition(value, loc)

    def _error(self, loc: Loc, message: str, *, key: bool = False) -> None:
        self.problems.append(self.doc.problem(loc, message, key=key))

    def _warn(self, loc: Loc, message: str, *, key: bool = True) -> None:
        self.warnings.append(warning(self.doc, loc, f"rule {self._rule!r} {message}", key=key))

    # --- structure ---------------------------------------------------------------------

    def _condition(self, value: Any, loc: Loc) -> Condition | None:
        if not isinstance(value, dict):
            self._error(loc, f"a condition is a mapping such as `region: North`, not {show(value)}")
            return None
        if not value:
            self._error(
                loc,
                "an empty condition; write `field: value`, or leave out `when:` to match everyone",
            )
            return None
        parts = [self._entry(key, item, (*loc, key)) for key, item in value.items()]
        return self._conjunction(parts)

    def _entry(self, key: str, item: Any, loc: Loc) -> Condition | None:
        if key in ("all", "any"):
            return self._combination(key, item, loc)
        if key == "not":
            inner = self._condition(item, loc)
            return None if inner is None else Not(inner)
        target = self._target(key, loc)
        return None if target is None else self._field(target, item, loc)

    def _combination(self, key: str, item: Any, loc: Loc) -> Condition | None:
        if not isinstance(item, list):
            self._error(
                loc,
                f"`{key}:` takes a list of conditions (lines starting with '- '), not {show(item)}",
            )
            return None
        if not item:
            self._error(loc, f"`{key}: []` is empty; give it at least one condition", key=True)
            return None
        items = [self._condition(sub, (*loc, i)) for i, sub in enumerate(item)]
        if key == "all":
            return self._conjunction(items)
        if any(i is None for i in items):
            return None
        return items[0] if len(items) == 1 else AnyOf(tuple(cast(list[Condition], items)))

    def _conjunction(self, parts: list[Condition | None]) -> Condition | None:
        """AND the parts, flattening nested All; warn when two parts can never both hold."""
        flat: list[Condition] = []
        for part in parts:
            if part is None:
                return None
            flat.extend(part.items if isinstance(part, All) else [part])
        self._check_clashes(flat)
        return flat[0] if len(flat) == 1 else All(tuple(flat))

    # --- fields ------------------------------------------------------------------------

    def _target(self, key: str, loc: Loc) -> _Target | None:
        purpose = consent_purpose(key)
        if purpose is not None:
            self._check_purpose(purpose, loc)
            return _Target(key, f"{key}.granted", FieldType.BOOLEAN, purpose)
        field = FIELDS.get(key)
        if field is not None and field.type is not FieldType.MAPPING:
            return _Target(key, key, field.type)
        if key == "consent":
            self._error(
                loc,
                "a condition on consent names a purpose, e.g. `consent.contact_me: true`",
                key=True,
            )
        elif is_extra(key):
            return self._extra(key, loc)
        else:
            choices = [*COMBINATORS, *FIELDS, *(f"consent.{p}" for p in self.purposes or ())]
            suggestion = did_you_mean(key, choices) or (
                "; use a canonical field, consent.<purpose>, extra.<adapter>.<name>, "
                "or all, any, not"
            )
            self._error(loc, f"unknown field {key!r}{suggestion}", key=True)
        return None

    def _check_purpose(self, purpose: str, loc: Loc) -> None:
        if self.purposes is None or purpose in self.purposes:
            return
        suggestion = did_you_mean(purpose, self.purposes) or (
            f"; declared purposes: {', '.join(self.purposes) or 'none'}"
        )
        self._error(
            loc,
            f"consent purpose {purpose!r} is not declared in connector.yaml{suggestion}",
            key=True,
        )

    def _extra(self, key: str, loc: Loc) -> _Target | None:
        if self.extra_fields is not None and key not in self.extra_fields:
            suggestion = did_you_mean(key, self.extra_fields) or (
                "; no connection maps it (add it to a connection's mapping in connector.yaml)"
            )
            self._error(loc, f"unknown custom field {key!r}{suggestion}", key=True)
            return None
        return _Target(key, key, None)

    def _field(self, target: _Target, item: Any, loc: Loc) -> Condition | None:
        if isinstance(item, list):
            self._error(loc, _bare_list(target))
            return None
        if not isinstance(item, dict):
            op = "any_of" if target.type is FieldType.LIST else "eq"
            return self._operator(target, op, [item] if op == "any_of" else item, loc, False)
        if not item:
            self._error(
                loc,
                f"`{target.name}: {{}}` has no operator; write e.g. `{target.name}: {{eq: VALUE}}`",
            )
            return None
        parts = [self._operator(target, op, v, (*loc, op), True) for op, v in item.items()]
        return self._conjunction(list(parts))

    def _operator(
        self, target: _Target, op: str, value: Any, loc: Loc, explicit: bool
    ) -> Compare | None:
        if op not in OPERATORS:
            hint = "; days_ago is a value: write e.g. `gte: {days_ago: 30}`"
            if op != "days_ago":
                hint = did_you_mean(op, OPERATORS) or f"; operators: {', '.join(OPERATORS)}"
            self._error(loc, f"unknown operator {op!r}{hint}", key=True)
            return None
        if value is None and op in ("eq", "ne"):
            return self._compare(target, "exists", op == "ne", loc)
        mismatch = _op_mismatch(target, op)
        if mismatch:
            self._error(loc, mismatch, key=explicit)
            return None
        operand = self._operand(target, op, value, loc)
        return None if operand is _INVALID else self._compare(target, op, operand, loc)

    def _compare(self, target: _Target, op: str, value: Any, loc: Loc) -> Compare:
        if target.purpose is not None and op in ("eq", "ne") and value is False:
            op, value = ("ne" if op == "eq" else "eq"), True
        compare = Compare(target.path, cast(Op, op), value)
        self._locs[id(compare)] = loc
        if target.purpose in self.require_consent and (op, value) == ("ne", True):
            self._warn(
                loc,
                f"can never match: {target.name}: false never holds, because "
                f"require_consent already withholds everyone without {target.purpose}",
            )
        elif op in ("in", "any_of") and value == ():
            self._warn(loc, f"can never match: `{op}: []` matches nothing")
        return compare

    # --- operands ----------------------------------------------------------------------

    def _operand(self, target: _Target, op: str, value: Any, loc: Loc) -> Any:
        if op == "exists":
            if isinstance(value, bool):
                return value
            self._error(loc, f"exists takes true or false, not {show(value)}")
            return _INVALID
        if op in LIST_OPERATORS:
            return self._list_operand(target, op, value, loc)
        if isinstance(value, dict):
            return self._relative(target, op, value, loc)
        return self._scalar(target, target.type, value, loc)

    def _list_operand(self, target: _Target, op: str, value: Any, loc: Loc) -> Any:
        if not isinstance(value, list):
            self._error(loc, f"{op} takes a list, e.g. `{op}: [{show(value)}]`, not {show(value)}")
            return _INVALID
        item_type = FieldType.STRING if target.type is FieldType.LIST else target.type
        items = [self._scalar(target, item_type, v, (*loc, i)) for i, v in enumerate(value)]
        return _INVALID if _INVALID in items else tuple(items)

    def _scalar(self, target: _Target, type_: FieldType | None, value: Any, loc: Loc) -> Any:
        if value is None:
            self._error(
                loc,
                f"{target.name}: null is not a value to compare with; "
                "test for an empty field with `exists: false`",
            )
            return _INVALID
        if isinstance(value, list | dict):
            self._error(loc, f"{target.name}: expected a single value here, not {show(value)}")
            return _INVALID
        if isinstance(value, dt.date):  # a datetime is a date too
            value = value.isoformat()
        message = None if type_ is None else _type_problem(target, type_, value)
        if message:
            self._error(loc, message)
            return _INVALID
        return value

    def _relative(self, target: _Target, op: str, value: dict[str, Any], loc: Loc) -> Any:
        if set(value) != {"days_ago"}:
            self._error(
                loc, f"{target.name}: a mapping here must be a relative time, `{{days_ago: N}}`"
            )
        elif op not in ORDER_OPERATORS:
            self._error(loc, f"days_ago works only with gt, gte, lt and lte, not {op}")
        elif target.type is not None and target.type not in _TIMES:
            kind = _KIND[target.type]
            self._error(loc, f"days_ago works only on dates and times; {target.name} is {kind}")
        elif (
            not _is_number(value["days_ago"])
            or not 0 <= value["days_ago"] <= LONGEST.days  # NaN and infinity too
        ):
            self._error(
                (*loc, "days_ago"),
                f"days_ago takes a number of days from 0 to {LONGEST.days} (100 years), not "
                f"{show(value['days_ago'])}",
            )
        else:
            return RelativeTime(float(value["days_ago"]))
        return _INVALID

    # --- conditions that can never hold -------------------------------------------------

    def _check_clashes(self, items: list[Condition]) -> None:
        compares = [c for c in items if isinstance(c, Compare)]
        for i, later in enumerate(compares):
            for earlier in compares[:i]:
                if earlier.field == later.field and clash(earlier, later):
                    name = later.field.removesuffix(".granted")
                    self._warn(
                        self._locs.get(id(later), ()),
                        f"can never match: {name} cannot "
                        f"satisfy `{_phrase(earlier)}` and `{_phrase(later)}` at once",
                    )
                    return


def _bare_list(target: _Target) -> str:
    if target.type is FieldType.LIST:
        fix = "use any_of: [...] (at least one of them) or all_of: [...] (every one)"
    else:
        fix = "use in: [...] to match any of them"
    return f"{target.name}: a bare list is not a value to compare with; {fix}"


def _op_mismatch(target: _Target, op: str) -> str | None:
    """Why `op` cannot test this field, or None when it can."""
    type_, name = target.type, target.name
    if target.purpose is not None and op not in ("eq", "ne", "exists"):
        return f"{name} is true or false; use eq, ne or exists, not {op}"
    if type_ is None or op == "exists":
        return None
    kind = _KIND[type_]
    if op in ("any_of", "all_of") and type_ is not FieldType.LIST:
        return f"{op} works on list fields such as groups and tags; {name} is {kind}, use in"
    if type_ is FieldType.LIST and op in ("eq", "ne", "in", "not_in", "starts_with"):
        return f"{name} is a list; use any_of (at least one of them) or all_of (every one)"
    if op in ORDER_OPERATORS and type_ not in _ORDERED:
        return f"{op} compares numbers, dates and times; {name} is {kind}"
    if op == "starts_with" and type_ is not FieldType.STRING:
        return f"starts_with works on text; {name} is {kind}"
    return None


def _type_problem(target: _Target, type_: FieldType, value: Any) -> str | None:
    """Why `value` cannot be compared with a field of `type_`, or None when it can."""
    name = "consent" if target.purpose else target.name
    if type_ is FieldType.STRING and not isinstance(value, str):
        return f"{target.name} holds text; put {show(value)} in quotes"
    if type_ in (FieldType.INTEGER, FieldType.NUMBER) and not _is_number(value):
        fix = "; remove the quotes" if isinstance(value, str) and _numeric(value) else ""
        return f"{target.name} is {_KIND[type_]}, not {show(value)}{fix}"
    if type_ is FieldType.BOOLEAN and not isinstance(value, bool):
        return f"{name} is true or false, not {show(value)}"
    if type_ in _TIMES and not _is_iso(type_, value):
        form = "YYYY-MM-DD" if type_ is FieldType.DATE else "YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS"
        return f"{target.name} is {_KIND[type_]}; write {form}, not {show(value)}"
    return None


def _is_number(value: Any) -> bool:
    """An int or a finite float (YAML's .nan and .inf compare with nothing useful)."""
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int) and not isinstance(value, bool)


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_iso(type_: FieldType, value: Any) -> bool:
    parse = dt.date.fromisoformat if type_ is FieldType.DATE else dt.datetime.fromisoformat
    try:
        parse(value)
    except (TypeError, ValueError):
        return False
    return True


def _phrase(compare: Compare) -> str:
    return f"{compare.op}: {show(compare.value)}"
