"""Field masks: the built-in ones, registered through the same hook as a plugin's.

A mask factory is called once per policy field when a policy compiles, with the parameter
written in the policy (``truncate: 3`` gives ``3``; a bare ``last4`` gives None) and a
:class:`MaskContext`; it returns the function applied to each value, which also receives
the whole record (``city_only`` needs it). A factory raises ValueError for a bad parameter.

A mask function that reads other fields of the record declares them in a ``reads``
attribute (a frozenset of canonical field names): the engine fetches them, gives the mask a
record holding only those (:func:`mask_view`; an undeclared read finds nothing), and lets a
policy narrowing the network floor use the mask only where the floor shows them (see
:mod:`connector_core.policy.reads`).

Every built-in mask returns None for None, and None for a value it cannot mask (a number
given to ``initial``, a date it cannot read). The compiler adds one more guarantee on top of
any mask, built-in or plugin: a masked field never carries its original value (see
:mod:`connector_core.policy.compiler`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import math
import re
import unicodedata
from collections.abc import Callable
from typing import Any

from connector_core.errors import PolicyError
from connector_core.hookspecs import MaskFactory, hookimpl
from connector_core.records import Record

MaskFunction = Callable[[Any, Record], Any]

HASH_KEY_MISSING = "the hash mask needs the network's hash key"
HASH_KEY_HINT = (
    "Store one with `connector credentials set network hash_key`, and point to it with "
    "`network.hash_key: {secret: hash_key}` in connector.yaml; every connector of the "
    "network must use the same key for hashes to match."
)


@dataclasses.dataclass(frozen=True)
class MaskContext:
    """What masks may need from the network: the keyed-hash secret, fetched lazily."""

    hash_key: Callable[[], bytes]

    @classmethod
    def for_validation(cls) -> MaskContext:
        """A context for checking parameters at load time; never used on real data."""
        return cls(hash_key=lambda: b"validation-only")

    @classmethod
    def without_key(cls) -> MaskContext:
        """A context with no hash key: a policy using ``hash`` fails to compile, with a hint."""
        return cls(hash_key=_no_hash_key)

    @classmethod
    def with_key(cls, key: bytes) -> MaskContext:
        """A context holding a known key (tests, policy tests, embedding applications)."""
        return cls(hash_key=lambda: key)

    def __repr__(self) -> str:
        return "MaskContext(hash_key=<hidden>)"


def mask_view(mask: MaskFunction, record: Record) -> Record:
    """The record `mask` is given: only the fields its ``reads`` declares."""
    return {name: record.get(name) for name in getattr(mask, "reads", ())}


def _no_hash_key() -> bytes:
    raise PolicyError(HASH_KEY_MISSING, hint=HASH_KEY_HINT)


def _no_param(name: str, param: Any) -> None:
    if param is not None:
        raise ValueError(f"the {name} mask takes no parameter (write just `{name}`)")


def _int_param(name: str, param: Any, low: int, high: int | None) -> int:
    ok = isinstance(param, int) and not isinstance(param, bool) and param >= low
    if not ok or (high is not None and param > high):
        limit = f"between {low} and {high}" if high is not None else f"{low} or more"
        raise ValueError(f"the {name} mask takes a whole number {limit}, not {param!r}")
    return int(param)


def _text(value: Any) -> str | None:
    """A value as text for the text masks: strings and numbers only."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def same_text(masked: Any, original: Any) -> bool:
    """Whether a mask's output of another type than its input is the input all the same, as
    text (``"53.8"`` for 53.8, ``"123"`` for 123): a target writes both alike, so it would
    carry the original value. The guarantee's second half (the first: ``masked ==
    original``); compiled policies call it only when the two types differ."""
    text = _text(masked)
    return text is not None and text == _text(original)


def normalize_for_hash(value: Any) -> str:
    """What ``hash`` actually hashes: text is NFKC-normalised, stripped and case-folded
    (so ``" Ana@Example.org"`` and ``"ana@example.org"`` match); other values as JSON."""
    if isinstance(value, str):
        return unicodedata.normalize("NFKC", value).strip().casefold()
    return json.dumps(value, sort_keys=True, default=str)


def hash_mask(param: Any, context: MaskContext) -> MaskFunction:
    """``hash``: HMAC-SHA256 of the normalised value with the network key, as hex.

    The key is fetched here, when the policy compiles, so a missing key stops the run
    before any record is read. The same key always gives the same output, so partners of
    one network can match people without seeing the value."""
    _no_param("hash", param)
    key = context.hash_key()

    def mask(value: Any, record: Record) -> Any:
        if value is None:
            return None
        data = normalize_for_hash(value).encode()
        return hmac.new(key, data, hashlib.sha256).hexdigest()

    return mask


_ASCII_NOT_ALNUM = bytes(c for c in range(128) if not chr(c).isalnum())


#: A URI's scheme (``tel:``, ``sip:``) and, after it, its parameters (``;ext=12``): neither is
#: part of the number, so neither is counted or kept.
_URI = re.compile(r"^\s*[A-Za-z][A-Za-z0-9+.-]*:([^;]*)")


def last4_mask(param: Any, context: MaskContext) -> MaskFunction:
    """``last4``: keep the last four letters or digits, one ``*`` for each one hidden.

    Spaces and punctuation are dropped: ``"+44 113 496 0123"`` gives ``"********0123"``; so
    are a URI's scheme and parameters: ``"tel:+44-113-496-0123;ext=7"`` gives the same.
    A value with four or fewer letters and digits has nothing left to hide: None."""
    _no_param("last4", param)

    def mask(value: Any, record: Record) -> Any:
        text = _text(value)
        if text is None:
            return None
        if (uri := _URI.match(text)) is not None:
            text = uri.group(1)
        if text.isascii():  # the common case, done in C
            kept = text.encode("ascii").translate(None, _ASCII_NOT_ALNUM).decode("ascii")
        else:
            kept = "".join(filter(str.isalnum, text))
        if len(kept) <= 4:
            return None
        return "*" * (len(kept) - 4) + kept[-4:]

    return mask


def initial_mask(param: Any, context: MaskContext) -> MaskFunction:
    """``initial``: the first letter and a full stop, ``"ana"`` gives ``"A."``."""
    _no_param("initial", param)

    def mask(value: Any, record: Record) -> Any:
        text = value.strip() if isinstance(value, str) else ""
        return text[0].upper() + "." if text else None

    return mask


def truncate_mask(param: Any, context: MaskContext) -> MaskFunction:
    """``truncate: N``: the first N characters (N a whole number, 1 or more)."""
    size = _int_param("truncate", param, 1, None)

    def mask(value: Any, record: Record) -> Any:
        text = _text(value)
        return None if text is None else text[:size]

    return mask


_YEAR_RE = re.compile(r"^\s*(\d{4})-\d{2}(-\d{2})?")


def year_only_mask(param: Any, context: MaskContext) -> MaskFunction:
    """``year_only``: an ISO date or datetime (text or object) becomes ``"YYYY"``."""
    _no_param("year_only", param)

    def mask(value: Any, record: Record) -> Any:
        if isinstance(value, dt.date):
            return f"{value.year:04d}"
        found = _YEAR_RE.match(value) if isinstance(value, str) else None
        return found.group(1) if found else None

    return mask


def coarsen_location_mask(param: Any, context: MaskContext) -> MaskFunction:
    """``coarsen_location: D``: round a coordinate to D decimals (0-6; default 2, ~1.1 km)."""
    decimals = 2 if param is None else _int_param("coarsen_location", param, 0, 6)

    def mask(value: Any, record: Record) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            return None
        try:
            number = float(value)
        except ValueError:
            return None
        return round(number, decimals) if math.isfinite(number) else None

    return mask


def city_only_mask(param: Any, context: MaskContext) -> MaskFunction:
    """``city_only``: replace a location field with the record's city."""
    _no_param("city_only", param)

    def mask(value: Any, record: Record) -> Any:
        return None if value is None else record.get("city")

    mask.reads = frozenset({"city"})  # type: ignore[attr-defined]  # see the module docstring
    return mask


def null_mask(param: Any, context: MaskContext) -> MaskFunction:
    """``null``: the field is sent, always empty (the target clears what it held)."""
    _no_param("null", param)

    def mask(value: Any, record: Record) -> Any:
        return None

    return mask


BUILTIN_MASKS: dict[str, MaskFactory] = {
    "city_only": city_only_mask,
    "coarsen_location": coarsen_location_mask,
    "hash": hash_mask,
    "initial": initial_mask,
    "last4": last4_mask,
    "null": null_mask,
    "truncate": truncate_mask,
    "year_only": year_only_mask,
}


#: Factories whose functions do not depend on the context: policies using them with
#: different contexts still mask identically (the fan-out shares their projections).
CONTEXT_FREE: frozenset[MaskFactory] = frozenset(
    factory for name, factory in BUILTIN_MASKS.items() if name != "hash"
)


@hookimpl
def register_masks() -> dict[str, MaskFactory]:
    """The built-in masks, registered like a plugin's."""
    return dict(BUILTIN_MASKS)
