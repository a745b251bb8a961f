"""Fault injection for the fake CiviCRM: random (seeded) and deterministic transport failures."""

from __future__ import annotations

import base64
import json
import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, quote_plus

#: Every kind of fault the fake can inject.
#:
#: - ``"429"``: 429 with ``Retry-After`` (seconds) and a JSON body; the call is not executed.
#: - ``"500"``: a non-JSON HTML 500 page, as a PHP fatal error gives; not executed.
#: - ``"502"``, ``"503"``, ``"504"``: a proxy's HTML error page; not executed.
#: - ``"timeout"``: sleep ``timeout_delay`` seconds, then close the connection without answering;
#:   not executed (set ``timeout_delay`` above the client's read timeout).
#: - ``"slow"``: execute, then sleep ``slow_delay`` seconds before answering normally (a client
#:   whose read timeout is shorter gives up on a call the server did carry out).
#: - ``"truncated"``: execute the call, then send only half the body before closing the connection
#:   (``Content-Length`` announces the whole body). A write **did** happen.
#: - ``"truncated_json"``: execute, then answer 200 with a body cut in half (valid framing,
#:   invalid JSON). A write **did** happen.
#: - ``"html"``: 200 with an HTML page instead of JSON (a CMS login or error page); not executed.
KINDS = (
    "429",
    "500",
    "502",
    "503",
    "504",
    "timeout",
    "slow",
    "truncated",
    "truncated_json",
    "html",
)
#: Kinds after which the call has been executed by the server.
EXECUTED = frozenset({"slow", "truncated", "truncated_json"})


@dataclass
class FaultRule:
    """A deterministic fault: on request number `nth` (1-based, counted by this `Faults`) and/or
    on calls to `entity`/`action`; `times` limits how often it fires (None: always)."""

    kind: str
    nth: int | None = None
    entity: str | None = None
    action: str | None = None
    times: int | None = None


@dataclass
class Faults:
    """What to inject. `rate` is the fraction of requests that fail with a kind drawn from `kinds`.

    Rules are checked first, in order; then the seeded random draw.
    """

    rate: float = 0.0
    kinds: tuple[str, ...] = ("429", "500", "502", "503", "504", "timeout", "truncated", "html")
    seed: int = 0
    retry_after: int = 1
    timeout_delay: float = 0.5
    slow_delay: float = 0.2
    rules: list[FaultRule] = field(default_factory=list)
    _rng: random.Random = field(init=False, repr=False)
    _lock: threading.Lock = field(init=False, repr=False, default_factory=threading.Lock)
    _seen: int = field(init=False, default=0)
    injected: list[tuple[int, str]] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        unknown = [k for k in (*self.kinds, *(r.kind for r in self.rules)) if k not in KINDS]
        if unknown:
            raise ValueError(f"unknown fault kinds {unknown}; choose from {KINDS}")
        self._rng = random.Random(self.seed)

    def draw(self, entity: str | None, action: str | None) -> str | None:
        """The fault for the next request, if any (thread-safe, deterministic for a given seed)."""
        with self._lock:
            self._seen += 1
            number = self._seen
            chosen: str | None = None
            for rule in self.rules:
                if rule.times is not None and rule.times <= 0:
                    continue
                if rule.nth is not None and rule.nth != number:
                    continue
                if rule.entity is not None and rule.entity != entity:
                    continue
                if rule.action is not None and rule.action != action:
                    continue
                if rule.times is not None:
                    rule.times -= 1
                chosen = rule.kind
                break
            roll = self._rng.random()  # always drawn, so rules do not shift the random sequence
            pick = self._rng.choice(self.kinds) if self.kinds else None
            if chosen is None and roll < self.rate:
                chosen = pick
            if chosen is not None:
                self.injected.append((number, chosen))
            return chosen


#: How an :class:`Echo` writes the request headers into its error body.
ECHO_ENCODINGS = (
    "raw",
    "json",
    "repr",
    "url",
    "url_plus",
    "base64",
    "html",
    "mime",
    "upper",
    "hex",
    "json_u",
    "shortened",
)


@dataclass
class Echo:
    """A misconfigured server that answers every API call with an error body echoing the
    request's headers (credentials included), as a PHP debug page or a proxy might.
    ``mime`` is Base64 wrapped in 76-character lines (the prefix encoded with it, so the key
    straddles a line break), ``upper`` upper-cases the lines, ``hex`` writes their bytes in
    hex, ``json_u`` escapes every character as ``\\uXXXX``, and ``shortened`` echoes only the
    first two thirds of each credential ("… prefix: …").

    ``status`` 500 answers a JSON error envelope whose ``error_message`` holds the echo;
    401 answers ``text/plain`` (``HTTP 401 ...``), as authx does. ``encoding`` says how the
    header lines are written: as they came, JSON-, repr-, URL- or HTML-escaped, or Base64.
    ``prefix`` pads the echo (to move it across a client's truncation point); ``entity`` and
    ``action`` limit it to those calls (e.g. ``Contact``/``get``: a read fails, not the
    multi-call that checks the schema).
    """

    status: int = 500
    encoding: str = "raw"
    prefix: str = ""
    entity: str | None = None
    action: str | None = None

    def __post_init__(self) -> None:
        if self.status not in (401, 500):
            raise ValueError("an echo answers 401 or 500")
        if self.encoding not in ECHO_ENCODINGS:
            raise ValueError(f"unknown echo encoding {self.encoding!r}: {ECHO_ENCODINGS}")

    def matches(self, entity: str | None, action: str | None) -> bool:
        """Whether a call of `entity`.`action` gets the echo."""
        return self.entity in (None, entity) and self.action in (None, action)

    def text(self, headers: Mapping[str, str]) -> str:
        """The echoed header lines (credentials first), encoded."""
        first = ("X-Civi-Auth", "Authorization", "X-Civi-Key")
        headers = dict(sorted(headers.items(), key=lambda kv: kv[0] not in first))
        lines = "\n".join(f"{k}: {v}" for k, v in headers.items())
        match self.encoding:
            case "json":
                lines = json.dumps(dict(headers))
            case "repr":
                lines = repr(dict(headers))
            case "url":
                lines = quote(lines, safe="")
            case "url_plus":
                lines = quote_plus(lines)
            case "base64":
                lines = base64.b64encode(lines.encode("utf-8", "surrogateescape")).decode()
            case "html":
                lines = "".join(f"&#{ord(c)};" if c in "<>&'\"" else c for c in lines)
            case "mime":
                return base64.encodebytes((self.prefix + lines).encode("utf-8")).decode()
            case "upper":
                lines = lines.upper()
            case "hex":
                lines = lines.encode("utf-8").hex()
            case "json_u":
                lines = "".join(f"\\u{ord(c):04x}" for c in lines)
            case "shortened":
                cut = [v.split(" ", 1)[-1] for k, v in headers.items() if k in first]
                lines = "\n".join(f"token prefix: {v[: len(v) * 2 // 3]}" for v in cut)
        return self.prefix + lines
