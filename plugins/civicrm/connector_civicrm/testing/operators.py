"""Value coercion and operator predicates of the fake's `where` (reference §3.2, §3.6).

MySQL semantics: a NULL operand makes a comparison unknown (None, three-valued logic), and
string comparisons, `LIKE` and `REGEXP` are case-insensitive (`utf8mb4_unicode_ci`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from .schema import BOOL, DATE, FLOAT, INT, SER, TS, FieldSpec

Row = dict[str, Any]
Getter = Callable[[Row], Any]
Pred = Callable[[Row], "bool | None"]

OPERATORS = (
    "=",
    "<=",
    ">=",
    ">",
    "<",
    "LIKE",
    "<>",
    "!=",
    "NOT LIKE",
    "IN",
    "NOT IN",
    "BETWEEN",
    "NOT BETWEEN",
    "IS NOT NULL",
    "IS NULL",
    "CONTAINS",
    "NOT CONTAINS",
    "CONTAINS ONE OF",
    "NOT CONTAINS ONE OF",
    "IS EMPTY",
    "IS NOT EMPTY",
    "REGEXP",
    "NOT REGEXP",
    "REGEXP BINARY",
    "NOT REGEXP BINARY",
)
UNARY = ("IS NULL", "IS NOT NULL", "IS EMPTY", "IS NOT EMPTY")
NEGATED = {
    "!=": "=",
    "<>": "=",
    "NOT LIKE": "LIKE",
    "NOT IN": "IN",
    "NOT BETWEEN": "BETWEEN",
    "NOT REGEXP": "REGEXP",
    "NOT REGEXP BINARY": "REGEXP BINARY",
}


class ApiError(Exception):
    """An APIv4 exception: 500 unless `status` says otherwise (403 for UnauthorizedException)."""

    def __init__(self, message: str, status: int = 500) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


# ---- values -------------------------------------------------------------------------------


def to_timestamp(value: Any, tz: ZoneInfo) -> str:
    """strtotime-ish parsing of a where value into site-local `YYYY-MM-DD HH:MM:SS`."""
    text = str(value).strip()
    if re.fullmatch(r"\d{14}", text):
        text = f"{text[:4]}-{text[4:6]}-{text[6:8]} {text[8:10]}:{text[10:12]}:{text[12:]}"
    if text.lower() == "now":
        return datetime.now(tz).strftime("%Y-%m-%d %H:%M:%S")
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ApiError(f"Invalid date value '{text}'") from exc
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(tz).replace(tzinfo=None)
    return parsed.strftime("%Y-%m-%d %H:%M:%S")


def coerce(fs: FieldSpec, value: Any, tz: ZoneInfo, suffix: bool) -> Any:
    """A where value converted to the stored representation of the field."""
    if value is None or suffix:
        return value
    if fs.type == BOOL:
        if isinstance(value, str):
            return value.strip().lower() not in ("", "0", "false")
        return bool(value)
    if fs.type == INT:
        try:
            return int(value)
        except (TypeError, ValueError):
            return (
                0 if not isinstance(value, str) else value
            )  # MySQL would cast; keep it comparable
    if fs.type == FLOAT:
        try:
            return float(value)
        except (TypeError, ValueError):
            return 0.0
    if fs.type == TS:
        return to_timestamp(value, tz)
    if fs.type == DATE:
        return to_timestamp(value, tz)[:10]
    return value if isinstance(value, str) else str(value)


def _norm(value: Any) -> Any:
    """Comparable form: case-insensitive strings, booleans as ints (MySQL collation)."""
    if isinstance(value, str):
        return value.casefold()
    if isinstance(value, bool):
        return int(value)
    return value


def _like(pattern: str) -> re.Pattern[str]:
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    return re.compile("".join(out), re.IGNORECASE | re.DOTALL)


def compare(op: str, a: Any, b: Any) -> bool | None:
    if a is None or b is None:
        return None
    a, b = _norm(a), _norm(b)
    try:
        if op == "=":
            return bool(a == b)
        if op == ">":
            return bool(a > b)
        if op == ">=":
            return bool(a >= b)
        if op == "<":
            return bool(a < b)
        return bool(a <= b)
    except TypeError:
        return (
            bool(str(a) < str(b))
            if op in ("<", "<=")
            else bool(str(a) > str(b))
            if op != "="
            else False
        )


def positive(op: str, fs: FieldSpec, get: Getter, value: Any, conv: Callable[[Any], Any]) -> Pred:
    """A predicate for a non-negated operator; three-valued (None = SQL NULL)."""
    serialized = fs.type == SER
    if op in ("=", ">", ">=", "<", "<="):
        if (
            fs.type == TS
            and op == "="
            and isinstance(value, str)
            and re.fullmatch(r"\d{4}-\d\d-\d\d", value.strip())
        ):
            lo, hi = f"{value.strip()} 00:00:00", f"{value.strip()} 23:59:59"
            return lambda row: None if (v := get(row)) is None else lo <= v <= hi
        target = conv(value)
        if serialized:
            return lambda row: (
                None if (v := get(row)) is None else compare(op, "\x01".join(map(str, v)), target)
            )
        return lambda row: compare(op, get(row), target)
    if op == "IN":
        items = value if isinstance(value, list) else [value]
        wanted = {_norm(conv(v)) for v in items} if items else {0}
        return lambda row: None if (v := get(row)) is None else _norm(v) in wanted
    if op == "BETWEEN":
        if not isinstance(value, list) or len(value) != 2:
            raise ApiError("BETWEEN requires an array of 2 values")
        lo, hi = conv(value[0]), conv(value[1])
        return lambda row: (
            None if (v := get(row)) is None else bool(compare(">=", v, lo) and compare("<=", v, hi))
        )
    if op == "LIKE":
        rx = _like(str(value))
        return lambda row: None if (v := get(row)) is None else bool(rx.fullmatch(str(v)))
    if op in ("REGEXP", "REGEXP BINARY"):
        rx2 = re.compile(str(value), 0 if op.endswith("BINARY") else re.IGNORECASE)
        return lambda row: None if (v := get(row)) is None else bool(rx2.search(str(v)))
    if op in ("CONTAINS", "CONTAINS ONE OF"):
        items = value if isinstance(value, list) else [value]
        if serialized:
            wanted = {str(conv(v) if not isinstance(v, str) else v).casefold() for v in items}
            return lambda row: (
                None if (v := get(row)) is None else any(str(x).casefold() in wanted for x in v)
            )
        needles = [str(v).casefold() for v in items]
        return lambda row: (
            None if (v := get(row)) is None else any(n in str(v).casefold() for n in needles)
        )
    raise ApiError("Illegal operator")


def and3(values: Any) -> bool | None:
    unknown = False
    for v in values:
        if v is False:
            return False
        if v is None:
            unknown = True
    return None if unknown else True


def or3(values: Any) -> bool | None:
    unknown = False
    for v in values:
        if v is True:
            return True
        if v is None:
            unknown = True
    return None if unknown else False
