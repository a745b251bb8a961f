"""Fault injection for the fake CiviCRM: random (seeded) and deterministic transport failures."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field

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
