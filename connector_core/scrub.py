"""The one scrubber: every string that leaves the process or reaches storage passes :func:`scrub`.

It knows every secret value this process has handed out (:func:`remember`) and the forms a
value takes once something has written it down: Python's repr and ascii, JSON escapes,
URL encoding (``quote``, ``quote_plus``), HTML escapes, UTF-8 read back as Latin-1, hex of
its bytes, JSON's ``\\uXXXX`` for every character — all matched in any letter case, as a
server may echo a header upper-cased — and Base64, of the value alone and of anything
containing it (the ``user:password`` of an HTTP Basic header), also wrapped in lines as MIME
writes it (whitespace or escaped line breaks between its characters). Any run of
:data:`MIN_RUN` consecutive characters of a secret (any case) is scrubbed too: a server that
echoes a shortened key ("token prefix: …") still gives away most of it. A run begins only
where its first MIN_RUN characters are not all lower-case letters, so a word of a secret
("password" of ``wrong-password``) is not scrubbed from every message.
Scrubbing happens when a string leaves (the CLI's
stdout and stderr, log records, stored run messages), so a secret handed out after a message
was built is still caught.

The doors it guards, each routed here once:

- the CLI's stdout and stderr (:func:`scrubbed_streams`, installed by the ``connector`` group:
  every ``click.echo``, ``--json`` document, log handler and plugin ``print``);
- log records, whichever logger or handler they go to (:func:`install_log_scrubber`);
- exception messages and hints of :class:`~connector_core.errors.ConnectorError`;
- what the state store writes of messages (the runs table, outstanding changes);
- uncaught tracebacks of the console script (:func:`scrub_excepthook`).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import html
import io
import json
import logging
import re
import sys
import threading
import traceback
from collections.abc import Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, TextIO
from urllib.parse import quote, quote_plus

__all__ = [
    "MIN_SECRET_LENGTH",
    "REDACTED",
    "forget_all",
    "forms",
    "install_log_scrubber",
    "remember",
    "scrub",
    "scrub_data",
    "scrub_excepthook",
    "scrub_values",
    "scrubbed_streams",
]

REDACTED = "***"
#: Shorter values would scrub ordinary words from every message; secrets are longer.
MIN_SECRET_LENGTH = 4
#: Any run of this many consecutive characters of a secret is scrubbed (a shortened echo).
MIN_RUN = 8
#: Shorter Base64 runs would match ordinary words.
_MIN_BASE64_CORE = 6
#: What may stand between two characters of wrapped Base64: whitespace, an escaped line break.
_B64_GAP = r"(?:\s|\\[rn])*"

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None
#: Every form but Base64: what a text that cannot hold a secret's Base64 is scrubbed with.
_plain_pattern: re.Pattern[str] | None = None
#: What is left of each Base64 core without the characters a gap between its characters may
#: hold (see :func:`_squeeze`); a text holding none of these cannot hold a core.
_base64_traces: frozenset[str] = frozenset()
#: Every MIN_RUN-character window of every secret (lower-cased), with where it starts in which.
_windows: dict[str, list[tuple[str, int]]] = {}
_window_pattern: re.Pattern[str] | None = None
#: True when a secret was remembered since the patterns were last compiled.
_stale = False


def remember(value: str) -> None:
    """Scrub `value` (and every form of it) from everything that leaves from now on."""
    global _stale
    if len(value) < MIN_SECRET_LENGTH or value in _secrets:
        return
    with _lock:
        _secrets.add(value)
        run = value.strip()
        for start in range(len(run) - MIN_RUN + 1):
            if not _is_word(run[start : start + MIN_RUN]):
                _windows.setdefault(run[start : start + MIN_RUN].lower(), []).append((run, start))
        _stale = True  # the patterns are compiled once, when something is scrubbed next
    install_log_scrubber()


def _patterns(text: str) -> tuple[re.Pattern[str] | None, re.Pattern[str] | None]:
    """The patterns for `text` of every form and of every window of the secrets remembered
    so far, compiled again only after :func:`remember` learnt one (a compile costs
    milliseconds).

    The pattern of every form is compiled only for a text that may hold a secret's Base64
    (its wrapped cores are most of the compile); any other text matches no core, so the
    pattern of the other forms finds exactly what the whole one would."""
    global _pattern, _plain_pattern, _base64_traces, _window_pattern, _stale
    if _stale:
        with _lock:
            if _stale:
                plain = {re.escape(f) for s in _secrets for f in forms(s)}
                cores = {core for s in _secrets for core in _base64_forms(s)}
                _plain_pattern = _alternation(plain)
                _base64_traces = frozenset(_squeeze(core) for core in cores)
                _pattern = None if cores else _plain_pattern
                windows = sorted(_windows, key=len, reverse=True)
                joined = "|".join(map(re.escape, windows))
                _window_pattern = re.compile(joined, re.IGNORECASE) if windows else None
                _stale = False
    if _pattern is None and _base64_traces:
        squeezed = _squeeze(text)
        if any(trace in squeezed for trace in _base64_traces):
            with _lock:
                if _pattern is None:
                    every = {re.escape(f) for s in _secrets for f in forms(s)}
                    every |= {_wrapped(core) for s in _secrets for core in _base64_forms(s)}
                    _pattern = _alternation(every)
            return _pattern, _window_pattern
        return _plain_pattern, _window_pattern
    return _pattern, _window_pattern


def _alternation(patterns: set[str]) -> re.Pattern[str] | None:
    """One pattern trying the longest of `patterns` first (letter case does not matter)."""
    alternatives = "|".join(sorted(patterns, key=len, reverse=True))
    return re.compile(alternatives, re.IGNORECASE) if patterns else None


#: What a gap of :data:`_B64_GAP` consists of (whitespace, ``\``, ``r`` and ``n``), and
#: ``r`` and ``n`` wherever they are: deleting these from a text deletes every gap, so a
#: core matched with gaps leaves its own squeezed form in the squeezed text.
_SQUEEZED = re.compile(r"[\s\\rn]+")


def _squeeze(text: str) -> str:
    """`text` without whitespace, backslashes, ``r`` and ``n`` (see :data:`_SQUEEZED`)."""
    return _SQUEEZED.sub("", text)


def _is_word(window: str) -> bool:
    """Whether a window of a secret is lower-case ASCII letters only: an ordinary word such as
    ``password`` (of a secret like ``wrong-password``) that messages hold on their own."""
    return window.isascii() and window.isalpha() and window.islower()


def _wrapped(core: str) -> str:
    """A pattern for the Base64 `core` as written, or wrapped in lines (MIME), in its case."""
    return "(?-i:" + _B64_GAP.join(map(re.escape, core)) + ")"


def _encodings(value: str) -> set[bytes]:
    """The bytes a secret is sent as: UTF-8, or Latin-1 (how HTTP headers carry text)."""
    found = {value.encode("utf-8", "surrogatepass")}
    with contextlib.suppress(UnicodeEncodeError):
        found.add(value.encode("latin-1"))
    return found


def forget_all() -> None:
    """Forget every remembered secret (for tests that need a clean slate)."""
    global _pattern, _plain_pattern, _base64_traces, _window_pattern, _stale
    with _lock:
        _secrets.clear()
        _windows.clear()
        _pattern = _plain_pattern = _window_pattern = None
        _base64_traces = frozenset()
        _stale = False


@functools.lru_cache(maxsize=256)
def forms(value: str) -> frozenset[str]:
    """`value` and the forms it takes when escaped or encoded (see the module docstring)."""
    found = {value}
    stripped = value.strip()
    if stripped != value and len(stripped) >= MIN_SECRET_LENGTH:
        found.add(stripped)  # what a server or a header parser echoes of it
    raw = value.encode("utf-8", "surrogatepass")
    latin = raw.decode("latin-1")  # UTF-8 read back as Latin-1 (text without a charset)
    for text in {value, latin}:
        found |= _escapes(text)
        found |= {ascii(text + "'\"")[1:-4], html.escape(text, quote=False), text}
    found |= _url_forms(value)
    # hex of its bytes, and JSON escaping every character (UTF-16 units, as JSON does)
    units = value.encode("utf-16-be", "surrogatepass")
    found.add("".join(f"\\u{units[i : i + 2].hex()}" for i in range(0, len(units), 2)))
    found |= {sent.hex() for sent in _encodings(value)}
    return frozenset(f for f in found if len(f) >= MIN_SECRET_LENGTH)


def _url_forms(text: str) -> set[str]:
    """`text` percent-encoded as URLs and forms carry it. A lone surrogate (undecodable
    bytes kept by ``surrogateescape``, or one a server's JSON held) is encoded as the byte
    it stands for and, failing that, as its UTF-8 form: either way, never an error."""
    found: set[str] = set()
    for errors in ("surrogateescape", "surrogatepass"):
        with contextlib.suppress(UnicodeEncodeError):
            found |= {
                quote(text, safe="", errors=errors),
                quote(text, errors=errors),
                quote_plus(text, errors=errors),
            }
    return found


def _escapes(text: str) -> set[str]:
    """`text` as repr, ascii, JSON and HTML write it: the forms secrets and record values
    share (each adds its own: see :func:`forms` and :func:`_value_forms`)."""
    return {
        repr(text)[1:-1],
        # inside a longer repr holding both quote kinds, ' is escaped as \'
        repr(text + "'\"")[1:-4],
        ascii(text)[1:-1],
        json.dumps(text)[1:-1],
        json.dumps(text, ensure_ascii=False)[1:-1],
        html.escape(text),
    }


@functools.lru_cache(maxsize=256)
def _base64_forms(value: str) -> frozenset[str]:
    """What Base64 of any text holding `value` contains (see :func:`_base64_cores`)."""
    found: set[str] = set()
    for sent in _encodings(value):
        found |= _base64_cores(sent)
    return frozenset(found)


def scrub(text: str) -> str:
    """`text` with every remembered secret, in any of its forms, and every run of
    :data:`MIN_RUN` of its characters, replaced by ``***`` (letter case does not matter)."""
    if not text:
        return text
    pattern, windows = _patterns(text)
    if pattern is None:
        return text
    return _scrub_runs(pattern.sub(REDACTED, text), windows)


def _scrub_runs(text: str, pattern: re.Pattern[str] | None) -> str:
    """`text` with every run of at least MIN_RUN consecutive characters of a secret replaced.

    A window of MIN_RUN characters is found by one regular expression; the run is then
    extended as far as the text keeps following the secret it came from.
    """
    if pattern is None:
        return text
    parts: list[str] = []
    done = 0
    match = pattern.search(text)
    while match is not None:
        start, end = match.span()
        for secret, offset in _windows.get(match.group().lower(), ()):
            length = end - start
            while (
                start + length < len(text)
                and offset + length < len(secret)
                and text[start + length].lower() == secret[offset + length].lower()
            ):
                length += 1
            end = max(end, start + length)
        parts += [text[done:start], REDACTED]
        done = end
        match = pattern.search(text, end)
    return "".join(parts) + text[done:]


def _base64_cores(raw: bytes) -> set[str]:
    """What Base64 of any text holding `raw` must contain, whatever the alignment.

    Encoded after k = 0, 1 or 2 other bytes, `raw` gives characters that depend on its bits
    alone, except at most two at each end, which depend on the neighbours; those inner runs
    are what is looked for (long enough not to match ordinary words). This finds a secret in
    a Basic ``user:password`` header or in a Base64-encoded page, with one regular expression.
    """
    cores = set()
    for k in range(3):
        total = k + len(raw)
        start = -(-8 * k // 6)  # the first character made of the secret's bits only
        end = 4 * (total // 3) + (8 * (total % 3)) // 6
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            core = encode(b"\0" * k + raw + b"\0\0").decode("ascii")[start:end]
            if len(core) >= _MIN_BASE64_CORE:
                cores.add(core)
    return cores


#: Record values shorter than this are not looked for in error texts (a region "N" would
#: scrub ordinary letters from every message).
MIN_VALUE_LENGTH = 3


def _value_texts(value: Any) -> Iterator[str]:
    """Every string in `value` (nested in lists, tuples and mappings), numbers as text."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int | float):
        yield str(value)
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _value_texts(item)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _value_texts(item)


def _value_forms(text: str) -> set[str]:
    found = {text, text.strip()}
    for t in (text, text.strip()):
        found |= _escapes(t) | _url_forms(t)
    return {f for f in found if len(f) >= MIN_VALUE_LENGTH}


def scrub_values(text: str, values: Iterable[Any], keep: Iterable[str] = ()) -> str:
    """`text` with every value of a record (strings of :data:`MIN_VALUE_LENGTH` or more
    characters, numbers, and their repr, JSON, HTML and URL forms) replaced by ``***``,
    case-insensitively.

    The sync engine passes every error it reports about a record (the ``failed:`` lines,
    ``run --json`` failures, the state's outstanding changes) through this with the values
    of that record's projection and source record: whatever an adapter or a server put in
    the error, no value of the record leaves in it. Occurrences of the words in `keep` (the
    job's and connections' names, field names: text of our own, not the server's) are left
    whole, so a region ``North`` does not turn connection ``organizers-north`` into
    ``organizers-***``."""
    forms_found: set[str] = set()
    for value in values:
        for piece in _value_texts(value):
            if len(piece) >= MIN_VALUE_LENGTH:
                forms_found |= _value_forms(piece)
    if not forms_found or not text:
        return text
    every = sorted(forms_found, key=len, reverse=True)
    pattern = re.compile("|".join(map(re.escape, every)), re.IGNORECASE)
    kept = sorted({k for k in keep if k}, key=len, reverse=True)
    if not kept:
        return pattern.sub(REDACTED, text)
    ours = [m.span() for m in re.finditer("|".join(map(re.escape, kept)), text)]

    def redact(match: re.Match[str]) -> str:
        # A value is left only where it lies wholly inside one of our words; a word of ours
        # inside a value ("id" in a first name "Davida") does not save the value.
        start, end = match.span()
        inside = any(s <= start and end <= e for s, e in ours)
        return match.group(0) if inside else REDACTED

    return pattern.sub(redact, text)


def scrub_data(data: Any) -> Any:
    """A copy of a JSON-like structure (dicts, lists, strings) with every string scrubbed."""
    if isinstance(data, str):
        return scrub(data)
    if isinstance(data, dict):
        return {scrub_data(k): scrub_data(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [scrub_data(v) for v in data]
    return data


# -- the process's output streams ---------------------------------------------------------


class _ScrubbingWriter(io.TextIOBase):
    """A text stream that scrubs what is written, then passes it to the stream it wraps.

    It has no ``buffer``: whoever writes (click, logging, a plugin's print) goes through it.
    """

    def __init__(self, stream: TextIO) -> None:
        self.wrapped = stream

    def write(self, text: str) -> int:
        """Write `text`, scrubbed."""
        self.wrapped.write(scrub(text))
        return len(text)

    def flush(self) -> None:
        """Flush the wrapped stream."""
        self.wrapped.flush()

    def writable(self) -> bool:
        """A writer is writable."""
        return True

    def isatty(self) -> bool:
        """As the wrapped stream (progress lines and colours depend on it)."""
        return self.wrapped.isatty()

    def fileno(self) -> int:
        """The wrapped stream's descriptor."""
        return self.wrapped.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        """The wrapped stream's encoding."""
        return getattr(self.wrapped, "encoding", None) or "utf-8"

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        """The wrapped stream's error handler."""
        return getattr(self.wrapped, "errors", None)


@contextlib.contextmanager
def scrubbed_streams() -> Iterator[None]:
    """Scrub everything written to ``sys.stdout`` and ``sys.stderr`` inside the block."""
    previous = sys.stdout, sys.stderr
    sys.stdout = _ScrubbingWriter(sys.stdout)
    sys.stderr = _ScrubbingWriter(sys.stderr)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = previous


def scrub_excepthook(
    kind: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    """``sys.excepthook`` for the console script: an internal error's traceback, scrubbed."""
    sys.stderr.write(scrub("".join(traceback.format_exception(kind, exc, tb))))


# -- log records ------------------------------------------------------------------------------


def install_log_scrubber() -> None:
    """Scrub every log record as it is created, whichever logger or handler it goes to: a
    plugin's careless debug line must not leak either."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_connector_scrubber", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.msg = scrub(record.getMessage())
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
        return record

    factory._connector_scrubber = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
