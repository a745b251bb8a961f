"""APIv4 query semantics for the fake: select paths, implicit joins, where, orderBy (reference §3).

Comparisons follow MySQL: a NULL operand makes a comparison unknown (three-valued logic, so
`NOT (x = 1)` does not match a NULL `x`), and string comparisons, `LIKE` and `REGEXP` are
case-insensitive like CiviCRM's default `utf8mb4_unicode_ci` collation.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from .operators import (
    NEGATED,
    OPERATORS,
    UNARY,
    ApiError,
    Getter,
    Pred,
    Row,
    and3,
    coerce,
    compare,
    or3,
    positive,
)
from .schema import BOOL, FLOAT, INT, LOCATION_JOINS, EntitySpec, FieldSpec


class Tables(Protocol):
    schema: dict[str, EntitySpec]
    tables: dict[str, dict[int, Row]]
    loc_index: dict[str, dict[int, int]]
    timezone: ZoneInfo

    def group_member_ids(self, group_ids: list[int]) -> set[int]: ...
    def tagged_ids(self, tag_ids: list[int]) -> set[int]: ...


def _name_to_id(db: Tables, entity: str, values: list[Any]) -> list[int]:
    by_name = {row["name"]: rid for rid, row in db.tables[entity].items()}
    return [by_name.get(v, 0) for v in values]


def resolve(db: Tables, entity: str, path: str) -> tuple[Getter, FieldSpec] | None:
    """Compile a dotted path (`email_primary.email`, `country_id:abbr`) into a getter, or None."""
    spec = db.schema[entity]
    custom = spec.fields.get(path.partition(":")[0])
    parts = [path] if custom is not None and custom.kind == "Custom" else path.split(".")
    steps: list[Getter] = []
    for seg in parts[:-1]:
        fs = spec.fields.get(seg)
        if fs is None or fs.fk is None or fs.kind == "Filter":
            return None
        target = db.tables[fs.fk]
        if seg in LOCATION_JOINS:
            index = db.loc_index[seg]
            steps.append(_loc_step(index, target))
        else:
            steps.append(_fk_step(seg, target))
        spec = db.schema[fs.fk]
    name, _, suffix = parts[-1].partition(":")
    fs = spec.fields.get(name)
    if fs is None or fs.kind == "Filter" or (suffix and not fs.options):
        return None
    if name in LOCATION_JOINS:
        index = db.loc_index[name]

        def base(row: Row) -> Any:
            return index.get(row["id"])
    else:

        def base(row: Row) -> Any:
            return row.get(name)

    get: Getter = base
    if suffix:
        options = fs.options or {}

        def get(row: Row) -> Any:
            value = base(row)
            if value is None:
                return None
            if isinstance(value, list):
                return [options.get(v, {}).get(suffix) for v in value]
            return options.get(value, {}).get(suffix)

    for step in reversed(steps):
        get = _chain(get, step)
    return get, fs


def _loc_step(index: dict[int, int], target: dict[int, Row]) -> Getter:
    return lambda row: target.get(index.get(row["id"], 0))


def _fk_step(seg: str, target: dict[int, Row]) -> Getter:
    return lambda row: target.get(row.get(seg) or 0)


def _chain(inner: Getter, step: Getter) -> Getter:
    def get(row: Row) -> Any:
        joined = step(row)
        return None if joined is None else inner(joined)

    return get


def _sort_by(get: Getter) -> Callable[[Row], tuple[int, Any]]:
    return lambda row: _sort_key(get(row))


def expand_select(
    db: Tables, entity: str, select: list[str], perms: set[str]
) -> list[tuple[str, Getter, FieldSpec]]:
    """The select list as (output key, getter) pairs: wildcards expanded, unknown fields dropped."""
    spec = db.schema[entity]
    if not select:
        select = ["*"]
    out: list[tuple[str, Getter, FieldSpec]] = []
    seen: set[str] = set()

    def add(key: str) -> None:
        if key in seen:
            return
        found = resolve(db, entity, key)
        if found is None or (found[1].permission and not perms.intersection(found[1].permission)):
            return  # §2.2: unknown or unpermitted select fields are silently dropped
        if found[1].kind == "Custom" and "access all custom data" not in perms:
            return  # §6 and "Observed": custom fields need custom data access
        seen.add(key)
        out.append((key, found[0], found[1]))

    if select != ["row_count"]:
        add("id")  # §3.1: id is always prepended
    for item in select:
        if item == "row_count":
            continue
        prefix, dot, last = item.rpartition(".")
        if "*" in last:
            target = spec
            if dot:
                if prefix == "custom":
                    for f in spec.fields.values():
                        if f.kind == "Custom":
                            add(f.name)
                    continue
                custom = [
                    f.name
                    for f in spec.fields.values()
                    if f.kind == "Custom" and f.name.startswith(prefix + ".")
                ]
                if custom:
                    for name in custom:
                        if fnmatch.fnmatchcase(name.rpartition(".")[2], last):
                            add(name)
                    continue
                if resolve(db, entity, prefix + ".id") is None:
                    continue
                target = _entity_of(db, entity, prefix)
            for f in target.fields.values():
                if f.kind == "Field" and fnmatch.fnmatchcase(f.name, last):
                    add(f"{prefix}.{f.name}" if dot else f.name)
        else:
            add(item)
    return out


def _entity_of(db: Tables, entity: str, prefix: str) -> EntitySpec:
    spec = db.schema[entity]
    for seg in prefix.split("."):
        spec = db.schema[spec.fields[seg].fk or spec.name]
    return spec


def compile_clause(db: Tables, entity: str, clause: Any) -> Pred:
    """Compile one where entry: `[field, op, value(, isExpr)]` or `["AND"|"OR"|"NOT", [...]]`."""
    if not isinstance(clause, list) or not clause:
        raise ApiError("Invalid where clause")
    head = clause[0]
    if (
        isinstance(head, str)
        and head.upper() in ("AND", "OR", "NOT")
        and len(clause) == 2
        and isinstance(clause[1], list)
    ):
        preds = [compile_clause(db, entity, c) for c in clause[1]]
        kind = head.upper()
        if kind == "OR":
            return lambda row: or3(p(row) for p in preds)

        def inner(row: Row) -> bool | None:
            return and3(p(row) for p in preds)

        if kind == "AND":
            return inner
        return lambda row: None if (v := inner(row)) is None else not v
    if not isinstance(head, str):
        raise ApiError("Invalid where clause")
    op = str(clause[1]).upper() if len(clause) > 1 else "="
    if op not in OPERATORS:
        raise ApiError("Illegal operator")
    value = clause[2] if len(clause) > 2 else None
    name = head.partition(":")[0]
    spec = db.schema[entity].fields.get(name)
    if spec is not None and spec.kind == "Filter":
        return _filter_pred(db, head, op, value)
    found = resolve(db, entity, head)
    if found is None:
        raise ApiError(f"Invalid field '{head}'")
    get, fs = found
    suffix = ":" in head.rpartition(".")[2]
    if suffix and op in _ONE_ID_OPS and fs.options:
        head, value = _to_one_id(head, fs, value)
        get, fs = resolve(db, entity, head) or found
        suffix = False
    if len(clause) > 3 and clause[3] is True:
        other = resolve(db, entity, str(value))
        if other is None:
            raise ApiError(f"Invalid field '{value}'")
        oget = other[0]
        base = NEGATED.get(op, op)
        if base not in ("=", ">", ">=", "<", "<="):
            raise ApiError("Illegal operator")
        negate = op in NEGATED

        def expr(row: Row) -> bool | None:
            result = compare(base, get(row), oget(row))
            return None if result is None else (not result if negate else result)

        return expr
    tz = db.timezone

    def conv(v: Any) -> Any:
        return coerce(fs, v, tz, suffix)

    if op in UNARY:
        numeric = fs.type in (INT, FLOAT, BOOL)

        def empty(v: Any) -> bool:
            return v is None or v == "" or v == [] or (numeric and not v)

        return {
            "IS NULL": lambda row: get(row) is None,
            "IS NOT NULL": lambda row: get(row) is not None,
            "IS EMPTY": lambda row: empty(get(row)),
            "IS NOT EMPTY": lambda row: not empty(get(row)),
        }[op]
    if op in ("NOT CONTAINS", "NOT CONTAINS ONE OF"):
        pos = positive(op[4:], fs, get, value, conv)
        return lambda row: (
            True if (v := pos(row)) is None else not v
        )  # §3.2: NOT CONTAINS matches NULL
    if op in NEGATED:
        pos = positive(NEGATED[op], fs, get, value, conv)
        return lambda row: None if (v := pos(row)) is None else not v
    return positive(op, fs, get, value, conv)


#: Operators whose `field:suffix` value CiviCRM turns into the field's stored value first.
_ONE_ID_OPS = frozenset({"=", "!=", "<>", "IN", "NOT IN"})


def _to_one_id(head: str, fs: FieldSpec, value: Any) -> tuple[str, Any]:
    """``["state_province_id:label", "=", "Limburg"]`` as the real server runs it: the label is
    replaced by ONE stored value (FormattingUtil), so rows with another option of the same label
    never match (observed on CiviCRM 6.17.2: the Dutch Limburg, never the Belgian one). As
    there, the last option in id order wins; a label no option has matches nothing."""
    path, _, suffix = head.rpartition(":")
    one = {str(opt.get(suffix)): key for key, opt in (fs.options or {}).items()}

    def convert(item: Any) -> Any:
        return one.get(str(item), 0)

    return path, [convert(v) for v in value] if isinstance(value, list) else convert(value)


def _filter_pred(db: Tables, head: str, op: str, value: Any) -> Pred:
    name, _, suffix = head.partition(":")
    if op not in ("IN", "NOT IN"):
        raise ApiError(f"Illegal operator for {name}")
    items = value if isinstance(value, list) else [value]
    target = "Group" if name == "groups" else "Tag"
    ids = _name_to_id(db, target, items) if suffix == "name" else [int(v) for v in items]
    members = db.group_member_ids(ids) if name == "groups" else db.tagged_ids(ids)
    if op == "IN":
        return lambda row: row["id"] in members
    return lambda row: row["id"] not in members


def compile_where(db: Tables, entity: str, where: Any) -> Pred:
    if not isinstance(where, list):
        raise ApiError("Invalid where clause")
    preds = [compile_clause(db, entity, c) for c in where]
    return lambda row: and3(p(row) for p in preds)


def mentions(where: Any, field: str) -> bool:
    """Whether `field` appears anywhere in a where tree (§3.5 default trash filter)."""
    for clause in where if isinstance(where, list) else []:
        if isinstance(clause, list) and clause:
            if (
                isinstance(clause[0], str)
                and clause[0].upper() in ("AND", "OR", "NOT")
                and len(clause) == 2
                and isinstance(clause[1], list)
            ):
                if mentions(clause[1], field):
                    return True
            elif isinstance(clause[0], str) and clause[0].partition(":")[0] == field:
                return True
    return False


def sort_rows(db: Tables, entity: str, rows: list[Row], order_by: Any) -> list[Row]:
    """Apply orderBy (MySQL: NULLs first ascending); without one, a scrambled but stable order."""
    if not order_by:
        return sorted(
            rows, key=lambda r: (r["id"] * 2654435761) % 4294967296
        )  # §3.1: no default ORDER BY
    if not isinstance(order_by, dict):
        raise ApiError("Invalid orderBy")
    keys: list[tuple[Getter, bool]] = []
    for field, direction in order_by.items():
        if direction not in ("ASC", "DESC"):
            raise ApiError(f"Invalid sort direction. Cannot order by {field} {direction}")
        found = resolve(db, entity, field)
        if found is None:
            raise ApiError(f"Invalid field '{field}'")
        keys.append((found[0], direction == "DESC"))
    for get, desc in reversed(keys):
        rows.sort(key=_sort_by(get), reverse=desc)
    return rows


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, 0)
    if isinstance(value, list):
        return (1, "\x01".join(map(str, value)).casefold())
    if isinstance(value, str):
        return (2, value.casefold())
    return (1, value)
