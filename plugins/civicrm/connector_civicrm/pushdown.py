"""The neutral condition tree as an APIv4 ``where``, or a broader one, never a narrower one.

The engine evaluates the policy on every record it reads, so a pushed-down ``where`` may
return *more* contacts than the condition (the extra ones are filtered locally) but never
fewer. Each translation is therefore marked *exact* (same rows as :func:`query.matches`) or
*broader*: MySQL compares text case- and accent-insensitively, so ``=`` on text is broader.
A part that cannot be expressed is declined: dropped inside ``All`` (broader), and it
declines the whole ``AnyOf``; ``Not`` is pushed down only around an exact translation.

A pseudoconstant path (``address_primary.state_province_id:label``) is never pushed as a
label: CiviCRM turns a label in a ``where`` into ONE id, and 48 state/province names are
shared by 109 rows (the Belgian and the Dutch Limburg), so ``= "Limburg"`` would fetch only
one of them. It is pushed as the field's ids whose label matches (``IN [1442, 5025]``), from
the options the adapter looked up, or kept local when there are none.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connector_civicrm.mapping import SPECIAL
from connector_civicrm.settings import ConsentRule
from connector_core.query import All, AnyOf, Compare, Condition, Not
from connector_core.records import FIELDS, FieldType

Clause = list[Any]
Translation = tuple[Clause, bool]  # (APIv4 clause, exact)
#: A pseudoconstant path -> its option labels (or names, abbreviations) -> every id with it.
Options = Mapping[str, Mapping[str, list[Any]]]

_ORDER = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_NEVER: Clause = ["id", "IN", []]  # IN [] is IN (0): no contact has id 0


def to_where(
    condition: Condition | None,
    fields: Mapping[str, str],
    consent: Mapping[str, ConsentRule] | None = None,
    options: Options | None = None,
) -> list[Clause]:
    """The APIv4 ``where`` for `condition` (an empty list when nothing can be pushed down).

    Args:
        condition: the compiled policy's record condition, over canonical fields.
        fields: canonical field -> APIv4 path (the connection's mapping and custom fields).
        consent: the connection's consent rules, for ``consent.<purpose>.granted`` tests.
        options: for pseudoconstant paths, every id of each label (see the module's doc).
    """
    if condition is None:
        return []
    done = _Translator(fields, consent or {}, options or {}).condition(condition)
    if done is None:
        return []
    clause, _ = done
    return list(clause[1]) if clause[0] == "AND" else [clause]


def pseudoconstant_paths(condition: Condition | None, fields: Mapping[str, str]) -> set[str]:
    """The ``field:suffix`` paths a condition tests (their options must be looked up)."""
    match condition:
        case All(items) | AnyOf(items):
            return set().union(*(pseudoconstant_paths(c, fields) for c in items))
        case Not(item):
            return pseudoconstant_paths(item, fields)
        case Compare(field, _, _):
            native = fields.get(field) or ""
            return {native} if is_pseudoconstant(native) else set()
    return set()


def is_pseudoconstant(native: str) -> bool:
    """``address_primary.state_province_id:label`` -> True."""
    return ":" in native.rpartition(".")[2]


class _Translator:
    def __init__(
        self, fields: Mapping[str, str], consent: Mapping[str, ConsentRule], options: Options
    ) -> None:
        self.fields = fields
        self.consent = consent
        self.options = options

    def condition(self, node: Condition) -> Translation | None:
        match node:
            case All(items):
                done = [self.condition(c) for c in items]
                kept = [t for t in done if t is not None]
                if not kept:
                    return None
                exact = len(kept) == len(done) and all(e for _, e in kept)
                return ["AND", [c for c, _ in kept]], exact
            case AnyOf(items):
                if not items:
                    return _NEVER, True
                done = [self.condition(c) for c in items]
                if any(t is None for t in done):
                    return None
                ok = [t for t in done if t is not None]
                return ["OR", [c for c, _ in ok]], all(e for _, e in ok)
            case Not(item):
                inner = self.condition(item)
                if inner is None or not inner[1]:
                    return None
                return ["NOT", [inner[0]]], True
            case Compare(field, op, value):
                return self.compare(field, op, value)
        return None

    def compare(self, field: str, op: str, value: Any) -> Translation | None:
        if field.startswith("consent."):
            return self._consent(field, op, value)
        native = self.fields.get(field)
        if native is None or field in SPECIAL:
            return None
        if field == "id":
            return _ids(op, value)
        if is_pseudoconstant(native):
            return _labels(native, self.options.get(native), op, value)
        if field not in FIELDS:  # a custom field: its type is told by the value only
            return _custom(native, op, value)
        kind = FIELDS[field].type
        if kind in (FieldType.BOOLEAN, FieldType.NUMBER, FieldType.INTEGER, FieldType.DATE):
            return _exact(native, op, value, nullable=kind is not FieldType.BOOLEAN)
        if kind in (FieldType.STRING, FieldType.DATETIME):
            return _text(native, op, value)
        return None

    def _consent(self, field: str, op: str, value: Any) -> Translation | None:
        parts = field.split(".")
        if len(parts) != 3 or parts[2] != "granted":
            return None
        rule = self.consent.get(parts[1])
        if rule is None or rule.field is None or not isinstance(value, bool):
            return None  # group-status consent is evaluated locally
        if op == "eq":
            # granted == value  <=>  field == (granted_value if value else not granted_value)
            clause = [rule.field, "=", rule.granted_value == value]
            return clause, rule.is_flag
        if op == "ne" and rule.is_flag:  # flags are never empty, so "absent" cannot happen
            return [rule.field, "=", rule.granted_value != value], True
        return None


def _labels(
    native: str, options: Mapping[str, list[Any]] | None, op: str, value: Any
) -> Translation | None:
    """A label condition as the ids that carry the label: broader (an id may carry a label
    that differs in case only), never narrower; kept local without the options."""
    raw = native.rpartition(":")[0]
    if op == "exists" and value is True:
        return [raw, "IS NOT NULL"], False
    labels = [value] if op == "eq" else value if op == "in" else None
    if options is None or not isinstance(labels, list | tuple) or not labels:
        return None
    ids: list[Any] = []
    for label in labels:
        found = options.get(label) if isinstance(label, str) else None
        if not found:
            return None  # no option has it (or an inactive one): let the engine decide
        ids += found
    return [raw, "IN", sorted(set(ids))], False


def _ids(op: str, value: Any) -> Translation | None:
    def as_int(v: Any) -> int | None:
        return int(v) if isinstance(v, str) and v.isdigit() else None

    if op in ("eq", "ne"):
        number = as_int(value)
        if number is None:
            return (_NEVER, True) if op == "eq" else None
        return ["id", "=" if op == "eq" else "!=", number], True
    if op in ("in", "not_in") and isinstance(value, list | tuple):
        numbers = [n for n in map(as_int, value) if n is not None]
        return ["id", "IN" if op == "in" else "NOT IN", numbers], len(numbers) == len(value)
    return None


def _exact(native: str, op: str, value: Any, *, nullable: bool) -> Translation | None:
    """Booleans, numbers and ISO dates compare the same way in MySQL and in Python, except for
    NULL: SQL's NOT (NULL > 1) is unknown, Python's ``not (None > 1)`` is true. So a test on a
    nullable field is spelled with an explicit IS NOT NULL, which keeps it exact under NOT."""
    if op == "exists":
        return [native, "IS NOT NULL" if value else "IS NULL"], True
    clause: Clause | None = None
    if isinstance(value, list | tuple):
        if op == "in" and value:
            clause = [native, "IN", list(value)]
        elif op == "not_in" and value:
            negative: Clause = [native, "NOT IN", list(value)]
            return (_or_null(native, negative) if nullable else negative), True
    elif value is None or isinstance(value, dict):
        return None
    elif op == "eq":
        clause = [native, "=", value]
    elif op == "ne":
        negative = [native, "!=", value]
        return (_or_null(native, negative) if nullable else negative), True
    elif op in _ORDER and not isinstance(value, bool):
        clause = [native, _ORDER[op], value]
    if clause is None:
        return None
    return (["AND", [[native, "IS NOT NULL"], clause]] if nullable else clause), True


def _text(native: str, op: str, value: Any) -> Translation | None:
    """Text: MySQL's collation ignores case, accents and trailing spaces, so only operators
    whose result can only grow under that (=, IN, LIKE, emptiness) are pushed down, broader."""
    if op == "exists":
        # IS EMPTY also matches blanks ("  ") which Python counts as present: both broader.
        return [native, "IS NOT NULL" if value else "IS EMPTY"], False
    if op == "eq" and isinstance(value, str) and value:
        return [native, "=", value], False
    texts = (
        isinstance(value, list | tuple) and value and all(isinstance(v, str) and v for v in value)
    )
    if op == "in" and texts:
        return [native, "IN", list(value)], False
    if op == "starts_with" and isinstance(value, str):
        return [native, "LIKE", escape_like(value) + "%"], False
    return None


def _custom(native: str, op: str, value: Any) -> Translation | None:
    """A custom field (``extra.civicrm.*``): text as text; a flag or a number only with the
    operators whose result can only grow if the field is in fact text (MySQL casts '1' = 1,
    Python does not), so never negated and never exact."""
    if (
        isinstance(value, str)
        or op == "exists"
        or (isinstance(value, list | tuple) and all(isinstance(v, str) for v in value))
    ):
        return _text(native, op, value)
    scalar = (bool, int, float)
    if op == "eq" and isinstance(value, scalar):
        return [native, "=", value], False
    if op == "in" and value and all(isinstance(v, scalar) for v in value):
        return [native, "IN", list(value)], False
    if op in _ORDER and isinstance(value, int | float) and not isinstance(value, bool):
        return [native, _ORDER[op], value], False
    return None


def _or_null(native: str, clause: Clause) -> Clause:
    return ["OR", [clause, [native, "IS NULL"]]]


def escape_like(text: str) -> str:
    """Escape LIKE's wildcards (MySQL's default escape character is the backslash)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
