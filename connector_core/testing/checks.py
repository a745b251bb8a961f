"""Helpers of the conformance suite: draining reads, comparing values, finding leaks."""

from __future__ import annotations

import datetime as dt
import logging
import traceback
import types
import typing
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from pydantic import BaseModel

from connector_core.adapters import Adapter, Page
from connector_core.credentials import SecretRef
from connector_core.errors import ConnectorError
from connector_core.query import Condition
from connector_core.records import Field, FieldType, Record

#: A read yielding more pages than this is taken to be endless.
MAX_PAGES = 10_000
#: Setting names that suggest a secret (they must be typed SecretRef).
SECRET_WORDS = ("password", "passwd", "secret", "token", "api_key", "apikey")
_HARMLESS_TYPES = frozenset({bool, int, float, type(None)})


def read_pages(
    adapter: Adapter,
    *,
    cursor: str | None = None,
    fields: frozenset[str] | None = None,
    where: Condition | None = None,
) -> list[Page]:
    """Drain one read into a list of pages, failing on an endless read."""
    pages: list[Page] = []
    for page in adapter.read(cursor=cursor, fields=fields, where=where):
        pages.append(page)
        assert len(pages) <= MAX_PAGES, (
            f"read() yielded more than {MAX_PAGES} pages; is it endless?"
        )
    return pages


def read_records(adapter: Adapter, *, cursor: str | None = None) -> list[Record]:
    """Every record of one read, in order."""
    return [record for page in read_pages(adapter, cursor=cursor) for record in page.records]


def raised(action: Callable[[], object]) -> Exception | None:
    """Run `action`; return the exception it raised, or None."""
    try:
        action()
    except Exception as exc:
        return exc
    return None


def canonical(name: str, value: Any) -> Any:
    """A comparable form of a field value: empty is None, lists sorted, consent as flags."""
    if value is None or value == "" or value == [] or value == {}:
        return None
    if isinstance(value, list | tuple | set | frozenset):
        return sorted(str(v) for v in value)
    if name == "consent" and isinstance(value, dict):
        return {k: v.get("granted") if isinstance(v, dict) else v for k, v in value.items()}
    if isinstance(value, float):
        return round(value, 6)
    return value


def type_problem(field: Field, value: Any) -> str | None:
    """Why `value` cannot be a value of `field`, or None when it can."""
    if value is None:
        return None
    expected: dict[FieldType, Callable[[Any], bool]] = {
        FieldType.STRING: lambda v: isinstance(v, str),
        FieldType.INTEGER: lambda v: isinstance(v, int) and not isinstance(v, bool),
        FieldType.NUMBER: lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        FieldType.BOOLEAN: lambda v: isinstance(v, bool),
        FieldType.DATE: lambda v: _parses(dt.date.fromisoformat, v),
        FieldType.DATETIME: lambda v: _parses(dt.datetime.fromisoformat, v),
        FieldType.LIST: lambda v: isinstance(v, list) and all(isinstance(i, str) for i in v),
        FieldType.MAPPING: lambda v: isinstance(v, dict),
    }
    if expected[field.type](value):
        return None
    return f"{field.name} must be a {field.type.value} (or None), not {value!r}"


def _parses(parse: Callable[[str], object], value: Any) -> bool:
    return isinstance(value, str) and raised(lambda: parse(value)) is None


def exception_texts(exc: BaseException) -> Iterator[str]:
    """Every text an exception chain can show: messages, reprs, hints, arguments."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield str(current)
        yield repr(current)
        yield "".join(traceback.format_exception_only(current))
        yield from (repr(arg) for arg in current.args)
        if isinstance(current, ConnectorError) and current.hint:
            yield current.hint
        current = current.__cause__ or current.__context__


#: LogRecord attributes logging fills from the clock and the process, never from data: a
#: leak test that searched them would find a short value ("0123") in a timestamp by chance.
CLOCK_AND_PROCESS = frozenset(
    {"created", "msecs", "relativeCreated", "thread", "threadName", "process", "processName"}
)
#: LogRecord attributes logging fills from the code that logged (the level, the logger, the
#: place of the call), never from data: a value "WARNIN" is in "WARNING" by chance.
CODE_PLACE = frozenset(
    {
        "levelname",
        "levelno",
        "name",
        "pathname",
        "filename",
        "module",
        "funcName",
        "lineno",
        "taskName",
    }
)
_NOT_DATA = CLOCK_AND_PROCESS | CODE_PLACE


def log_text(records: Iterable[logging.LogRecord]) -> str:
    """What log records could carry of a record's data, for leak tests: each formatted
    message and every attribute (arguments and ``extra`` fields included) but those
    logging fills from the clock, the process and the place of the call."""
    return "\n".join(
        f"{r.getMessage()} { {k: v for k, v in r.__dict__.items() if k not in _NOT_DATA} }"
        for r in records
    )


def secret_refs(settings: BaseModel) -> Iterator[SecretRef]:
    """Every SecretRef value in a settings model, nested models included."""
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretRef):
            yield value
        elif isinstance(value, BaseModel):
            yield from secret_refs(value)


def secret_like_fields(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    """Names of settings that look like secrets but are not typed SecretRef."""
    for name, info in model.model_fields.items():
        types_ = set(_flatten(info.annotation))
        nested = [t for t in types_ if isinstance(t, type) and issubclass(t, BaseModel)]
        for sub in nested:
            if sub is not SecretRef:
                yield from secret_like_fields(sub, f"{prefix}{name}.")
        if not any(word in name.lower() for word in SECRET_WORDS):
            continue
        if SecretRef not in types_ and not types_ <= _HARMLESS_TYPES:
            yield prefix + name


def _flatten(annotation: Any) -> Iterator[Any]:
    """The plain types inside an annotation (unions, Optional, Annotated, generics)."""
    origin = typing.get_origin(annotation)
    if origin is None:
        yield annotation
        return
    if origin not in (typing.Union, types.UnionType, typing.Annotated):
        yield origin
    args = typing.get_args(annotation)
    for arg in args[:1] if origin is typing.Annotated else args:
        yield from _flatten(arg)
