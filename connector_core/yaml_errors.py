"""YAML loading that keeps a line and column for every value, and readable validation errors.

:func:`load_yaml` composes the node tree and builds plain data itself, so that it can remember
where each value (and each mapping key) was written and report what PyYAML silently accepts,
such as duplicate keys. :func:`validate` turns pydantic errors into ``path:line:col: message``
problems an admin can act on. Messages never echo the value of a secret-like field.

Every YAML input goes through :func:`load_yaml`, so every command applies the same limits:
a size (:data:`POLICY_MAX_BYTES`, :data:`CONFIG_MAX_BYTES`, or ``CONNECTOR_MAX_YAML_BYTES``),
a nesting depth (:data:`MAX_DEPTH`) and a number of values after aliases are expanded
(:data:`MAX_NODES`). They are checked on the parser's event stream before any tree is
built, so a hostile file costs at most one pass over its bytes.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import functools
import os
import re
import types
import typing
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, SecretBytes, SecretStr, ValidationError
from pydantic_core import ErrorDetails

from connector_core.credentials import SecretRef
from connector_core.errors import ConfigError, ConfigValidationError, Problem

Loc = tuple[str | int, ...]
Mark = tuple[int, int]
ModelT = TypeVar("ModelT", bound=BaseModel)

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STANDARD_TAG = "tag:yaml.org,2002:"
_MERGE_TAG = "tag:yaml.org,2002:merge"
MiB = 1024 * 1024
#: Policies, policy tests and record files: the largest realistic policy (a rule listing
#: 60,000 postcodes) is 1.5 MB and takes 4 s to check; ordinary ones are a few kB.
POLICY_MAX_BYTES = 1 * MiB
#: connector.yaml: a network of 15,000 partners, a connection and a job each, needs ~5 MB.
CONFIG_MAX_BYTES = 8 * MiB
#: Overrides both size limits, for every command alike (what `policy check` accepts, `run` loads).
MAX_BYTES_ENV = "CONNECTOR_MAX_YAML_BYTES"
#: Nested lists and mappings; the deepest real input (combined conditions) needs about 20.
MAX_DEPTH = 64
#: Values after aliases are expanded: refuses "billion laughs" files before building them.
MAX_NODES = 1_000_000
# Field names that hold secrets: api_key and private_key are secret, key_column is not.
_SECRET_NAME = re.compile(r"password|passwd|secret|token|credential|key$", re.IGNORECASE)
_MAX_ECHO = 40
_SYNTAX_HINT = (
    "Check the indentation, and put quotes around values that contain ': ' or ' #' "
    "or start with '[', '{', '*', '&', '!', '%' or '@'."
)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ``"; did you mean 'x'?"`` for the closest choice, or ``""`` if none is close."""
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {matches[0]!r}?" if matches else ""


def dotted(loc: Loc) -> str:
    """Render a location as ``jobs.nightly.mode`` (list items as ``[0]``)."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".") or "the top level"


def where(loc: Loc) -> str:
    """``in jobs.nightly``, or ``at the top level`` for the empty location."""
    return f"in {dotted(loc)}" if loc else "at the top level"


@dataclasses.dataclass
class LocatedDocument:
    """A YAML file's data with the 1-based ``(line, col)`` of every value and mapping key."""

    path: Path
    data: Any
    marks: dict[Loc, Mark] = dataclasses.field(default_factory=dict)
    key_marks: dict[Loc, Mark] = dataclasses.field(default_factory=dict)

    def locate(self, loc: Loc, *, key: bool = False) -> Mark | None:
        """The mark of the deepest existing prefix of `loc`; with `key`, prefer key marks."""
        for end in range(len(loc), -1, -1):
            prefix = loc[:end]
            if key and prefix in self.key_marks:
                return self.key_marks[prefix]
            if prefix in self.marks:
                return self.marks[prefix]
        return None

    def get(self, loc: Loc, default: Any = None) -> Any:
        """The value at `loc`, or `default` when some part of it is absent."""
        value = self.data
        for part in loc:
            if not _has(value, part):
                return default
            value = value[part]
        return value

    def problem(self, loc: Loc, message: str, *, key: bool = False) -> Problem:
        """A :class:`Problem` at `loc` (its key with `key`) in this file."""
        line, col = self.locate(loc, key=key) or (None, None)
        return Problem(str(self.path), line, col, message)


def _has(data: Any, part: str | int) -> bool:
    if isinstance(data, list):
        return isinstance(part, int) and 0 <= part < len(data)
    return isinstance(data, dict) and part in data


def sorted_problems(problems: Iterable[Problem]) -> list[Problem]:
    """Problems without duplicates, in file order."""
    unique = {str(p): p for p in problems}
    return sorted(unique.values(), key=lambda p: (p.path, p.line or 0, p.col or 0, p.message))


# --- loading -----------------------------------------------------------------------------


def load_yaml(path: Path, *, max_bytes: int = POLICY_MAX_BYTES) -> LocatedDocument:
    """Read a YAML file whose top level is a mapping; raise ConfigValidationError if unusable.

    `max_bytes` is the file's size limit unless ``CONNECTOR_MAX_YAML_BYTES`` sets another.
    """
    text = _read_text(path, _size_limit(max_bytes))
    return _parsed(path, text) if len(text) <= _CACHED_TEXT else _parse(path, text)


#: Files up to this many characters are parsed once per distinct text (see :func:`_parsed`).
_CACHED_TEXT = 256 * 1024


def _parse(path: Path, text: str) -> LocatedDocument:
    node = _compose(path, text)
    if node is None or (isinstance(node, yaml.ScalarNode) and node.value == ""):
        raise _fail(path, None, "the file is empty", "Write the settings as `key: value` lines.")
    if not isinstance(node, yaml.MappingNode):
        line, col = _mark(node.start_mark)
        message = f"expected a mapping of `key: value` lines at the top level, got {_kind(node)}"
        raise _fail(path, (line, col), message, "Start the file with `key: value` lines.")
    builder = _Builder(path)
    data = builder.build(node, ())
    if builder.problems:
        raise ConfigValidationError(sorted_problems(builder.problems), hint=builder.hint)
    return LocatedDocument(path, data, builder.marks, builder.key_marks)


#: :func:`_parse` once per distinct text of a file: thousands of partner jobs load the same
#: policy and floor files. Callers share the document, so none changes it (they build a new
#: LocatedDocument instead, as the partner substitution does).
_parsed = functools.lru_cache(maxsize=64)(_parse)


def _fail(path: Path, mark: Mark | None, message: str, hint: str) -> ConfigValidationError:
    line, col = mark or (None, None)
    return ConfigValidationError([Problem(str(path), line, col, message)], hint=hint)


def _size_limit(default: int) -> tuple[int, str]:
    """The size limit in bytes, and where it comes from (for the message)."""
    setting = os.environ.get(MAX_BYTES_ENV)
    if setting is None:
        return default, "the limit"
    if not setting.strip().isdigit() or int(setting) < 1:
        raise ConfigError(
            f"{MAX_BYTES_ENV} must be a whole number of bytes, like {2 * default}",
            hint=f"Fix or unset {MAX_BYTES_ENV} in the environment.",
        )
    return int(setting), f"the limit set by {MAX_BYTES_ENV}"


def _size(count: int) -> str:
    if count % MiB == 0:
        return f"{count // MiB} MiB"
    return f"{count:,} bytes"


def _read_text(path: Path, limit: tuple[int, str]) -> str:
    max_bytes, source = limit
    try:
        with path.open("rb") as file:
            raw = file.read(max_bytes + 1)  # never more than the limit in memory
    except FileNotFoundError:
        raise _fail(path, None, "file not found", "Check the file name and folder.") from None
    except IsADirectoryError:
        raise _fail(path, None, "this is a folder, not a file", "Give the file's path.") from None
    except OSError as exc:
        message = f"cannot read the file: {exc.strerror or type(exc).__name__}"
        raise _fail(path, None, message, "Check the file's permissions.") from None
    if len(raw) > max_bytes:
        message = (
            f"the file is larger than {source} of {_size(max_bytes)}; split it, "
            f"or set {MAX_BYTES_ENV} to a larger number of bytes"
        )
        hint = f"Set {MAX_BYTES_ENV} alike for every command that reads the file."
        raise _fail(path, None, message, hint)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        message = f"the file is not valid UTF-8 (byte 0x{raw[exc.start]:02x})"
        raise _fail(path, (line, col), message, "Save the file as UTF-8.") from None


def _compose(path: Path, text: str) -> yaml.Node | None:
    try:
        _check_shape(path, yaml.parse(text, Loader=_Loader))
        node: yaml.Node | None = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(path, text, exc) from None
    except yaml.reader.ReaderError as exc:
        before = text[: exc.position]
        mark = (before.count("\n") + 1, exc.position - (before.rfind("\n") + 1) + 1)
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        message = f"could not parse YAML: control character U+{code:04X} is not allowed"
        raise _fail(path, mark, message, "Remove the invisible control character.") from None
    except yaml.YAMLError as exc:
        raise _fail(path, None, f"could not parse YAML: {exc}", _SYNTAX_HINT) from None
    return node


_DEPTH_HINT = "Flatten the structure: no setting, rule or condition needs this many levels."
_NODES_HINT = "Write the values out, or use fewer aliases (*name) of aliases."


def _check_shape(path: Path, events: Iterator[yaml.Event]) -> None:
    """Refuse nesting deeper than MAX_DEPTH and more than MAX_NODES values, counting what
    each alias expands to, from the events alone (no tree, no recursion)."""
    open_: list[tuple[int, int, str | None]] = []  # per collection: values before, level, anchor
    deepest: list[int] = []  # per collection: the deepest level inside it
    anchors: dict[str, tuple[int, int]] = {}  # anchor -> (values, levels) it expands to
    nodes = 0
    for event in events:
        size, levels = 1, 0
        if isinstance(event, yaml.AliasEvent):
            size, levels = anchors.get(event.anchor or "", (1, 0))
        elif isinstance(event, yaml.CollectionStartEvent):
            open_.append((nodes, len(open_) + 1, event.anchor))
            deepest.append(len(open_))
        elif isinstance(event, yaml.CollectionEndEvent):
            before, level, anchor = open_.pop()
            inner = deepest.pop()
            if deepest:
                deepest[-1] = max(deepest[-1], inner)
            if anchor:
                anchors[anchor] = (nodes - before, inner - level + 1)
            continue
        elif not isinstance(event, yaml.ScalarEvent):
            continue
        elif event.anchor:
            anchors[event.anchor] = (1, 0)
        nodes += size
        depth = len(open_) + levels
        if deepest:
            deepest[-1] = max(deepest[-1], depth)
        if depth > MAX_DEPTH:
            message = f"the lists and mappings here nest more than {MAX_DEPTH} levels deep"
            raise _fail(path, _event_mark(event), message, _DEPTH_HINT)
        if nodes > MAX_NODES:
            message = f"the file expands to more than {MAX_NODES:,} values"
            raise _fail(path, _event_mark(event), message, _NODES_HINT)


def _event_mark(event: yaml.Event) -> Mark | None:
    mark = event.start_mark
    return None if mark is None else (mark.line + 1, mark.column + 1)


def _mark(mark: yaml.Mark) -> Mark:
    return mark.line + 1, mark.column + 1


# (pattern in PyYAML's or libyaml's problem text, our message, hint, report at context mark)
_SYNTAX_RULES: list[tuple[str, str, str, bool]] = [
    (
        "mapping values are not allowed",
        "mapping values are not allowed here",
        "Check the indentation of this line, or put the value in quotes if it contains ': '.",
        False,
    ),
    (
        "could not find expected ':'",
        "this key has no ':' after it",
        "Write `key: value`, or indent the line if it continues the value above.",
        True,
    ),
    (
        "found unexpected end of stream",
        "a quoted value is never closed",
        "Add the closing quote.",
        True,
    ),
    (
        r"expected <block end>|did not find expected key",
        "this line's indentation does not match the lines above",
        "Keys of one mapping must start in the same column.",
        False,
    ),
    (
        "another document",
        "the file holds more than one YAML document",
        "Remove the '---' line: one file holds one document.",
        False,
    ),
    (
        "undefined alias",
        "this alias has no matching anchor above it",
        "Define the anchor (&name) before using it (*name).",
        False,
    ),
]


def _syntax_error(path: Path, text: str, exc: yaml.MarkedYAMLError) -> ConfigValidationError:
    problem, context = exc.problem or "", exc.context or ""
    mark = exc.problem_mark or exc.context_mark
    line, col = _mark(mark) if mark else (1, 1)
    tab_col = _tab_in_indent(text, line)
    if tab_col is not None:
        message = "a tab character is used for indentation; YAML allows only spaces"
        return _fail(path, (line, tab_col), f"could not parse YAML: {message}", _TAB_HINT)
    for pattern, message, hint, at_context in _SYNTAX_RULES:
        if re.search(pattern, problem):
            if at_context and exc.context_mark is not None:
                line, col = _mark(exc.context_mark)
            return _fail(path, (line, col), f"could not parse YAML: {message}", hint)
    if bracket := re.search(r"expected ',' or '([\]}])'", problem):
        kind = "list" if bracket.group(1) == "]" else "mapping"
        opened = f" opened on line {_mark(exc.context_mark)[0]}" if exc.context_mark else ""
        message = f"expected ',' or '{bracket.group(1)}' to close the {kind}{opened}"
        return _fail(path, (line, col), f"could not parse YAML: {message}", _SYNTAX_HINT)
    detail = f"{problem} ({context})" if context else problem
    return _fail(path, (line, col), f"could not parse YAML: {detail}", _SYNTAX_HINT)


_TAB_HINT = "Replace the tabs at the start of this line with spaces."
_RECURSION_HINT = "An alias cannot refer to a node that encloses it."


def _tab_in_indent(text: str, line: int) -> int | None:
    lines = text.splitlines()
    if not 1 <= line <= len(lines):
        return None
    content = lines[line - 1]
    indent = content[: len(content) - len(content.lstrip(" \t"))]
    return indent.index("\t") + 1 if "\t" in indent else None


def _yaml_kind(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower().replace("none", "null")
    return "a number" if isinstance(value, int | float) else f"a {type(value).__name__}"


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    return "a single value"


_NUL_HINT = "Remove the \\0 from the quoted text."


class _Builder:
    """Builds plain data from composed nodes, recording marks and structural problems."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.marks: dict[Loc, Mark] = {}
        self.key_marks: dict[Loc, Mark] = {}
        self.problems: list[Problem] = []
        self.hint: str | None = None
        self._constructor = yaml.constructor.SafeConstructor()
        self._active: set[int] = set()

    def add(self, node: yaml.Node, message: str, hint: str | None = None) -> None:
        self.problems.append(Problem(self.path, *_mark(node.start_mark), message))
        self.hint = self.hint or hint

    def build(self, node: yaml.Node, loc: Loc) -> Any:
        self.marks[loc] = _mark(node.start_mark)
        if not node.tag.startswith(_STANDARD_TAG):
            self.add(node, f"unknown tag {node.tag}", "Remove the tag: plain YAML values only.")
            return None
        if isinstance(node, yaml.ScalarNode):
            value = self._scalar(node)
            if value is _INVALID:
                return None
            if isinstance(value, str) and "\x00" in value:  # a quoted "\0": no setting, path,
                # URL or name takes one (the file system and PostgreSQL refuse it)
                self.add(node, "a NUL character (\\0) is not allowed in a value", _NUL_HINT)
                return None
            return value
        if id(node) in self._active:
            self.add(node, "this alias contains itself", _RECURSION_HINT)
            return None
        self._active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.build(item, (*loc, i)) for i, item in enumerate(node.value)]
            assert isinstance(node, yaml.MappingNode)
            return self._mapping(node, loc)
        finally:
            self._active.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, loc: Loc) -> dict[str, Any]:
        result: dict[str, Any] = {}
        first_line: dict[str, int] = {}
        explicit = [pair for pair in node.value if pair[0].tag != _MERGE_TAG]
        for key_node, value_node in explicit:
            key = self._key(key_node)
            if key is None:
                continue
            if key in first_line:
                message = f"duplicate key {key!r} (first defined on line {first_line[key]})"
                self.add(key_node, message, "Keep one of them: YAML keeps only the last.")
                continue
            first_line[key] = _mark(key_node.start_mark)[0]
            self._entry(result, loc, key, key_node, value_node)
        for key_node, value_node in self._merged(node):
            key = self._key(key_node)
            if key is not None and key not in result:
                self._entry(result, loc, key, key_node, value_node)
        return result

    def _entry(
        self, result: dict[str, Any], loc: Loc, key: str, key_node: yaml.Node, value: yaml.Node
    ) -> None:
        self.key_marks[(*loc, key)] = _mark(key_node.start_mark)
        result[key] = self.build(value, (*loc, key))

    def _merged(
        self, node: yaml.MappingNode, seen: frozenset[int] = frozenset()
    ) -> Iterator[tuple[yaml.Node, yaml.Node]]:
        """The entries `<<: *anchor` brings in; earlier sources win, as in YAML 1.1."""
        seen = seen | {id(node)}
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                continue
            sources = (
                value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            )
            for source in sources:
                if not isinstance(source, yaml.MappingNode):
                    message = "'<<' merges only a mapping or a list of mappings"
                    self.add(source, message, "Write `<<: *name` where &name anchors a mapping.")
                elif id(source) in seen or id(source) in self._active:
                    self.add(source, "this alias contains itself", _RECURSION_HINT)
                else:
                    yield from (pair for pair in source.value if pair[0].tag != _MERGE_TAG)
                    yield from self._merged(source, seen)

    def _scalar(self, node: yaml.ScalarNode) -> Any:
        """The value of a scalar; a date that is no date (``2024-02-30``) or a ``!!int`` that is
        no number is a problem at its place (None), never a traceback."""
        try:
            return self._constructor.construct_object(node)
        except (ValueError, OverflowError) as exc:
            kind = "date" if node.tag.endswith(":timestamp") else "number"
            hint = (
                "Write a real date (YYYY-MM-DD), or put the value in quotes to keep it as text."
                if kind == "date"
                else "Write a number, or remove the tag."
            )
            self.add(node, f"{node.value} is not a {kind} ({exc})", hint)
            return _INVALID

    def _key(self, node: yaml.Node) -> str | None:
        if not isinstance(node, yaml.ScalarNode):
            self.add(node, f"a key must be plain text, not {_kind(node)}", "Write `key: value`.")
            return None
        value = self._scalar(node)
        if isinstance(value, str):
            return value
        if value is _INVALID:
            return None
        message = f"key {node.value} is read as {_yaml_kind(value)}, not as text; put it in quotes"
        self.add(node, message, f'Write "{node.value}": so YAML reads the key as text.')
        return None


#: what :meth:`_Builder._scalar` gives for a scalar it could not read (its problem noted)
_INVALID: Any = object()


# --- validation --------------------------------------------------------------------------


def validate(
    doc: LocatedDocument,
    model: type[ModelT],
    *,
    context: dict[str, Any] | None = None,
    prefix: Loc = (),
) -> ModelT:
    """Validate the data at `prefix` (an absent sub-document counts as empty) with `model`.

    Raises:
        ConfigValidationError: every problem, located and sorted by line.
    """
    data = doc.get(prefix, {})
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        problems = validation_problems(doc, exc, model, prefix=prefix)
        raise ConfigValidationError(problems, hint="Fix the lines above.") from None


def validation_problems(
    doc: LocatedDocument, exc: ValidationError, model: type[BaseModel], *, prefix: Loc = ()
) -> list[Problem]:
    """Turn a pydantic error about the data at `prefix` into located, readable problems."""
    problems: list[Problem] = []
    union_locs: set[Loc] = set()
    data = doc.get(prefix, {})
    for error in exc.errors(include_url=False):
        loc, tagged = _data_loc(data, error["loc"], missing=error["type"] == "missing")
        if tagged:
            if loc in union_locs:
                continue  # one message per value is enough when a union tried several types
            union_locs.add(loc)
        problems.append(_convert(doc, model, prefix, loc, error))
    return sorted_problems(problems)


def _data_loc(data: Any, loc: tuple[str | int, ...], *, missing: bool) -> tuple[Loc, bool]:
    """Drop the parts of a pydantic loc that name union members or validators, not data."""
    out: list[str | int] = []
    tagged = False
    for i, part in enumerate(loc):
        if _has(data, part):
            data = data[part]
        elif not (missing and i == len(loc) - 1):
            tagged = tagged or part != "[key]"
            continue
        out.append(part)
    return tuple(out), tagged


def _convert(
    doc: LocatedDocument, model: type[BaseModel], prefix: Loc, loc: Loc, error: ErrorDetails
) -> Problem:
    full = (*prefix, *loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        return doc.problem(full, _unknown_key(model, prefix, loc), key=True)
    if kind == "missing":
        message = f"missing required key {loc[-1]!r} {where(full[:-1])}"
        return doc.problem(full[:-1], message, key=True)
    value = error.get("input")
    secret = _is_secret(model, loc)
    message = f"{dotted(full)}: {_describe_error(error, value, secret)}"
    on_key = "[key]" in error["loc"] or value is None
    return doc.problem(full, message, key=on_key)


def _unknown_key(model: type[BaseModel], prefix: Loc, loc: Loc) -> str:
    allowed = _allowed_keys(model, loc[:-1])
    message = f"unknown key {loc[-1]!r} {where((*prefix, *loc[:-1]))}"
    suggestion = did_you_mean(str(loc[-1]), allowed)
    if suggestion:
        return message + suggestion
    return message + (f"; allowed keys: {', '.join(allowed)}" if allowed else "")


_MAPPING = "a mapping (indented `key: value` lines)"
_EXPECTED = {
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "string_type": "text",
    "dict_type": _MAPPING,
    "model_type": _MAPPING,
    "model_attributes_type": _MAPPING,
    "list_type": "a list (lines starting with '- ')",
    "path_type": "a file path",
}


def _describe_error(error: ErrorDetails, value: Any, secret: bool) -> str:
    kind = error["type"]
    if kind in ("literal_error", "enum"):
        return _not_one_of(error, value, secret)
    if kind in _EXPECTED:
        text = f"expected {_EXPECTED[kind]}, got {_describe(value, secret)}"
        if kind == "string_type" and isinstance(value, bool | int | float) and not secret:
            text += "; put it in quotes if you meant text"
        return text
    text = validator_message(error["msg"])
    if text.startswith("Input should be "):
        text = f"should be {text.removeprefix('Input should be ')}, got {_describe(value, secret)}"
    if secret and isinstance(value, str) and len(value) >= 4:
        text = text.replace(value, "***")
    return without_credentials(text)


def validator_message(text: str) -> str:
    """A pydantic error's message without the prefix a validator's own error gets."""
    return text.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def first_error(exc: ValidationError) -> str:
    """``where: message`` of a validation's first error (``where`` dotted: ``settings.path``),
    for a mapping validated outside a YAML file's lines."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {validator_message(first['msg'])}"


def _not_one_of(error: ErrorDetails, value: Any, secret: bool) -> str:
    expected = str((error.get("ctx") or {}).get("expected", ""))
    options = [o.strip("'\"") for o in re.split(r", | or ", expected) if o]
    shown = "the value" if secret else _describe(value, secret)
    suggestion = did_you_mean(str(value), options) if isinstance(value, str) and not secret else ""
    return f"{shown} is not one of {expected}{suggestion}"


#: The user (and password) of a URL, with or without its scheme ("//alice:pw@host").
_USERINFO = re.compile(r"((?:^|[\s'\"(])(?:[A-Za-z][A-Za-z0-9+.-]*:)?//)[^/?#\s'\"]*@")
#: A query parameter whose name says it holds a credential (password, token, api_key, ...).
_CREDENTIAL_PARAMETER = re.compile(
    r"([?&;][^=&#\s'\"]*(?:pass|pwd|token|secret|key|auth|sig|credential)[^=&#\s'\"]*=)"
    r"[^&#\s'\"]*",
    re.IGNORECASE,
)


def without_credentials(text: str) -> str:
    """`text` with the user information of any URL in it and the values of credential-like
    query parameters replaced by ``***``: what an error message may echo of an input."""
    text = _USERINFO.sub(r"\1***@", text)
    return _CREDENTIAL_PARAMETER.sub(r"\1***", text)


def _describe(value: Any, secret: bool) -> str:
    """How a message may refer to an input value: short scalars only, never secrets (nor
    the credentials of a URL)."""
    if value is None:
        return "an empty value"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if secret:
        return "a hidden value"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        short = len(value) <= _MAX_ECHO and "\n" not in value
        return repr(without_credentials(value)) if short else f"a {len(value)}-character text"
    if isinstance(value, int | float):
        return str(value)
    return f"a {type(value).__name__}"


def _is_secret(model: type[BaseModel], loc: Loc) -> bool:
    """Secret-like by name (password, token, ...) or by type (SecretRef, SecretStr)."""
    if any(isinstance(part, str) and _SECRET_NAME.search(part) for part in loc):
        return True
    secret_types = (SecretRef, SecretStr, SecretBytes)
    return any(
        isinstance(member, type) and issubclass(member, secret_types)
        for annotation in _annotations_at(model, loc)
        for member in _members(annotation)
    )


def _allowed_keys(model: type[BaseModel], loc: Loc) -> list[str]:
    """The keys the model accepts in the mapping at `loc` (field aliases, else names)."""
    names: list[str] = []
    for annotation in _annotations_at(model, loc):
        for member in _members(annotation):
            if isinstance(member, type) and issubclass(member, BaseModel):
                for name, field in member.model_fields.items():
                    if (field.alias or name) not in names:
                        names.append(field.alias or name)
    return names


def _annotations_at(model: type[BaseModel], loc: Loc) -> list[Any]:
    """Walk the model's type annotations along `loc` (models, dicts, lists, unions)."""
    annotations: list[Any] = [model]
    for part in loc:
        annotations = [child for ann in annotations for child in _children(ann, part)]
    return annotations


def _children(annotation: Any, part: str | int) -> Iterator[Any]:
    for member in _members(annotation):
        origin = typing.get_origin(member)
        args = typing.get_args(member)
        if isinstance(member, type) and issubclass(member, BaseModel):
            for name, field in member.model_fields.items():
                if part in (name, field.alias):
                    yield field.annotation
        elif origin in (dict, collections.abc.Mapping) and len(args) == 2:
            yield args[1]
        elif origin in (list, tuple, set, frozenset, collections.abc.Sequence) and args:
            yield args[0]


def _members(annotation: Any) -> list[Any]:
    """The alternatives of a union (None left out), with Annotated wrappers removed."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _members(arg)]
    return [] if annotation is type(None) else [annotation]
