"""Partners as data: a partner registry (a CSV or YAML file) read into located rows.

A job template in connector.yaml (``partners:``) plus its registry expands to one job per
partner (:mod:`connector_core.config`). Each row's values keep the file, line and column they
came from, so that a bad value is reported where the admin wrote it. Values reach a policy only
as typed operands (:func:`substitute`), never as text spliced into YAML, so no partner value
can add, remove or change a condition.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from connector_core.errors import ConfigValidationError, Problem
from connector_core.yaml_errors import CONFIG_MAX_BYTES, load_yaml, sorted_problems

#: A partner's name: it becomes part of a job name, a lock file name and a CLI argument.
PARTNER_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
#: Between a template's name and a partner's in a partner job's name. Hand-written job and
#: connection names cannot hold it, so a partner job never takes a hand-written one's name.
SEPARATOR = "."
#: ``{partner: COLUMN}`` in a policy's conditions or a target's settings: the row's value.
PARAM_KEY = "partner"
_TEMPLATE_RE = re.compile(r"\{partner\.([A-Za-z_][A-Za-z0-9_]*)\}")
_SCALARS = (str, int, float, bool)
REGISTRY_HINT = (
    "Fix the registry lines above: one partner per row, a unique lowercase `name` "
    "(letters, digits, '-', '_') and a value in every column the template uses."
)


@dataclasses.dataclass(frozen=True)
class Cell:
    """One value of a registry row and where it was written."""

    value: Any
    path: str
    line: int | None = None
    col: int | None = None

    def problem(self, message: str) -> Problem:
        """A problem located at this cell."""
        return Problem(self.path, self.line, self.col, message)


@dataclasses.dataclass(frozen=True)
class PartnerRow:
    """One partner of a registry: its name and its cells by column."""

    name: str
    cells: Mapping[str, Cell]
    path: str
    line: int | None = None

    def values(self) -> dict[str, Any]:
        """The row's plain values by column (what the state store remembers)."""
        return {column: cell.value for column, cell in self.cells.items()}

    @classmethod
    def remembered(cls, values: Mapping[str, Any], where: str) -> PartnerRow:
        """A row rebuilt from :meth:`values` kept elsewhere (`where` says where)."""
        cells = {k: Cell(v, where) for k, v in values.items()}
        return cls(str(values.get("name", "")), cells, where)


def partner_job_name(template: str, partner: str) -> str:
    """``<template>.<partner>``: the job (and target connection) name of a partner."""
    return f"{template}{SEPARATOR}{partner}"


def read_registry(path: Path) -> list[PartnerRow]:
    """The partners of a CSV or YAML registry, checked: names valid and unique, not empty.

    Raises:
        ConfigValidationError: every problem of the file, each at its line and column; an
            empty or unreadable registry is an error (never a reason to retire everyone).
    """
    if not path.is_file():
        raise ConfigValidationError(
            [Problem(str(path), None, None, "the partner registry does not exist")],
            hint="Check `registry:` in connector.yaml (relative to connector.yaml's folder).",
        )
    if path.suffix.lower() == ".csv":
        rows, problems = _read_csv(path)
    elif path.suffix.lower() in (".yaml", ".yml"):
        rows, problems = _read_yaml(path)
    else:
        raise ConfigValidationError(
            [Problem(str(path), None, None, "a partner registry is a .csv, .yaml or .yml file")],
            hint="Export the registry as CSV, or write it as YAML.",
        )
    problems += _check_rows(path, rows)
    if not rows and not problems:
        problems.append(Problem(str(path), 1, 1, "the partner registry lists no partner"))
    if problems:
        raise ConfigValidationError(sorted_problems(problems), hint=REGISTRY_HINT)
    return rows


def _read_csv(path: Path) -> tuple[list[PartnerRow], list[Problem]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        reason = "is not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else "cannot be read"
        return [], [Problem(str(path), None, None, f"the partner registry {reason}")]
    if len(text.encode()) > CONFIG_MAX_BYTES * 16:
        return [], [Problem(str(path), None, None, "the partner registry is too large")]
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
    except csv.Error as exc:
        return [], [_not_csv(path, reader, exc)]
    if not header:
        return [], [Problem(str(path), 1, 1, "the partner registry is empty (no header line)")]
    header = [h.strip() for h in header]
    problems = _check_header(path, header)
    rows: list[PartnerRow] = []
    try:
        _rows(path, header, reader, rows, problems)
    except _NotCsv as exc:
        problems.append(_not_csv(path, reader, exc, exc.line))
    return rows, problems


def _rows(
    path: Path, header: list[str], reader: Any, rows: list[PartnerRow], problems: list[Problem]
) -> None:
    for line, values in _numbered(reader):
        if not any(v.strip() for v in values):
            continue  # a blank line
        if len(values) != len(header):
            message = f"{len(values)} value(s) where the header has {len(header)} column(s)"
            problems.append(Problem(str(path), line, 1, message + "; quote values with commas"))
            continue
        cells = {
            column: Cell(value.strip(), str(path), line, i + 1)
            for i, (column, value) in enumerate(zip(header, values, strict=True))
        }
        rows.append(
            PartnerRow(cells["name"].value if "name" in cells else "", cells, str(path), line)
        )


def _numbered(reader: Any) -> Iterator[tuple[int, list[str]]]:
    """Each row with the line it starts on; a row that is not CSV ends the rows, as a
    _NotCsv naming that line."""
    while True:
        start = reader.line_num + 1
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise _NotCsv(start, str(exc)) from None
        yield start, values


class _NotCsv(Exception):
    def __init__(self, line: int, reason: str) -> None:
        super().__init__(reason)
        self.line = line


def _not_csv(path: Path, reader: Any, exc: Exception, line: int | None = None) -> Problem:
    message = f"the partner registry is not valid CSV here ({exc}): look for a stray quote"
    return Problem(str(path), line or max(reader.line_num, 1), 1, message)


def _check_header(path: Path, header: list[str]) -> list[Problem]:
    problems = []
    if "name" not in header:
        problems.append(Problem(str(path), 1, 1, "the header has no `name` column"))
    seen: set[str] = set()
    for i, column in enumerate(header):
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", column):
            message = f"column {column!r}: use letters, digits and '_' (e.g. region)"
            problems.append(Problem(str(path), 1, i + 1, message))
        elif column in seen:
            problems.append(Problem(str(path), 1, i + 1, f"column {column!r} appears twice"))
        seen.add(column)
    return problems


def _read_yaml(path: Path) -> tuple[list[PartnerRow], list[Problem]]:
    doc = load_yaml(path, max_bytes=CONFIG_MAX_BYTES * 16)
    items = doc.get(("partners",))
    if not isinstance(items, list):
        problem = doc.problem(("partners",), "write `partners:` followed by a list of partners")
        return [], [problem]
    rows, problems = [], []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            problems.append(doc.problem(("partners", i), "each partner is a mapping (name: ...)"))
            continue
        cells = {}
        for column, value in item.items():
            line, col = doc.locate(("partners", i, column)) or (None, None)
            cells[str(column)] = Cell(value, str(path), line, col)
        line = (doc.locate(("partners", i)) or (None, None))[0]
        name = item.get("name")
        rows.append(PartnerRow(name if isinstance(name, str) else "", cells, str(path), line))
    return rows, problems


def _check_rows(path: Path, rows: list[PartnerRow]) -> list[Problem]:
    problems = []
    first: dict[str, PartnerRow] = {}
    for row in rows:
        cell = row.cells.get("name")
        if cell is None:
            problems.append(Problem(str(path), row.line, 1, "this partner has no `name`"))
            continue
        if not isinstance(cell.value, str) or not PARTNER_NAME_RE.match(cell.value):
            slug = re.sub(r"[^a-z0-9_-]+", "-", str(cell.value).lower()).strip("-_")[:63]
            problems.append(
                cell.problem(
                    f"name {cell.value!r} is not a partner name: use lowercase letters, digits, "
                    f"'-' and '_', starting with a letter or digit (e.g. {slug or 'leeds-north'!r})"
                )
            )
        elif row.name in first:
            earlier = first[row.name]
            problems.append(
                cell.problem(
                    f"partner {row.name!r} is listed twice (first on line {earlier.line}); "
                    "each partner has one row: merge them or rename one"
                )
            )
        else:
            first[row.name] = row
        for column, value in row.cells.items():
            if not _plain(value.value):
                problems.append(
                    value.problem(
                        f"column {column!r}: a partner's value is text, a number, true/false or "
                        "a list of them"
                    )
                )
    return problems


def _plain(value: Any) -> bool:
    if isinstance(value, list):
        return all(isinstance(v, _SCALARS) for v in value)
    return value is None or isinstance(value, _SCALARS)


# --- parameters -----------------------------------------------------------------------


def param_column(node: Any) -> str | None:
    """The column a ``{partner: COLUMN}`` mapping names; None for any other value."""
    if isinstance(node, dict) and len(node) == 1 and PARAM_KEY in node:
        column = node[PARAM_KEY]
        return column if isinstance(column, str) else ""
    return None


def param_value(row: PartnerRow, column: str, used_at: str) -> tuple[Any, Problem | None]:
    """The typed value of `column` for a parameter, or a problem located in the registry
    (or, for a missing column, at `used_at`)."""
    cell = row.cells.get(column)
    if cell is None:
        return None, Problem(
            row.path,
            row.line,
            None,
            f"partner {row.name!r} has no column {column!r}, which {used_at} uses; add the "
            "column to the registry",
        )
    value = cell.value
    empty = value is None or value == "" or value == []
    if empty or not _plain(value):
        return None, cell.problem(
            f"partner {row.name!r}, column {column!r}: "
            + ("a value is needed" if empty else "not a valid value")
            + f" (used by {used_at})"
        )
    return (tuple(value) if isinstance(value, list) else value), None


def substitute(
    node: Any, row: PartnerRow, used_at: str, problems: list[Problem], found: dict[str, Any]
) -> Any:
    """`node` (parsed YAML) with each ``{partner: COLUMN}`` replaced by the row's typed value.

    Only whole values are replaced: never a key, never inside a string, so a value cannot
    become a condition. `found` collects the columns used, with their values."""
    column = param_column(node)
    if column is not None:
        value, problem = param_value(row, column, used_at)
        if problem is not None:
            problems.append(problem)
            return None
        found[column] = value
        return list(value) if isinstance(value, tuple) else value
    if isinstance(node, dict):
        return {k: substitute(v, row, used_at, problems, found) for k, v in node.items()}
    if isinstance(node, list):
        return [substitute(v, row, used_at, problems, found) for v in node]
    return node


def render_settings(node: Any, row: PartnerRow, used_at: str, problems: list[Problem]) -> Any:
    """A target's settings for one partner: ``{partner: COLUMN}`` values replaced, and
    ``{partner.COLUMN}`` in a string replaced by the value's text (``out/{partner.name}.csv``)."""
    if isinstance(node, str):
        return _TEMPLATE_RE.sub(lambda m: _text(row, m.group(1), used_at, problems), node)
    if param_column(node) is not None:
        return substitute(node, row, used_at, problems, {})
    if isinstance(node, dict):
        return {k: render_settings(v, row, used_at, problems) for k, v in node.items()}
    if isinstance(node, list):
        return [render_settings(v, row, used_at, problems) for v in node]
    return node


def _text(row: PartnerRow, column: str, used_at: str, problems: list[Problem]) -> str:
    value, problem = param_value(row, column, used_at)
    if problem is not None:
        problems.append(problem)
        return ""
    if not isinstance(value, _SCALARS) or isinstance(value, bool):
        problems.append(row.cells[column].problem(f"column {column!r}: text is needed here"))
        return ""
    text = str(value)
    if "/" in text or "\\" in text or ".." in text or not text.isprintable():
        # inside a path, such a value would leave the folder the template chose
        problems.append(
            row.cells[column].problem(
                f"partner {row.name!r}, column {column!r}: a value put inside a text of "
                f"{used_at} cannot hold '/', '\\', '..' or control characters; write "
                f"{{partner: {column}}} as the whole value for a path or URL"
            )
        )
        return ""
    return text
