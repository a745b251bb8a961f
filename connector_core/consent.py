"""The one consent parser: what counts as yes, as no, and as no evidence, for every door.

Sync (the CSV, vCard and CiviCRM adapters), ``policy preview`` of any input, policy test
fixtures and ``policy explain`` all read consent through :func:`consent_value` and
:func:`consent_block`, so one value means the same everywhere:

- an explicit yes (``True``, ``1``, or text such as ``yes``, ``true``, ``1``, ``granted``)
  is consent; an explicit no (``False``, ``0``, ``no``, ``false``, ``withdrawn``…) is a
  stated refusal, which takes back what was shared;
- nothing (``None``, empty text) is no evidence, and no evidence means no consent;
- anything else is ambiguous: :class:`AmbiguousConsent`, whose message names the purpose and
  what is expected but never the value. The record is reported and not shared.

Several pieces of evidence for one person and purpose (duplicate rows, a vCard category and
property) combine with :func:`combine`: yes only if every piece says yes, no if any says no.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from connector_core.records import Expected, Record, ValueInvalid

YES = frozenset({"yes", "y", "true", "t", "1", "on", "x", "granted"})
NO = frozenset({"no", "n", "false", "f", "0", "off", "withdrawn", "denied", "refused", "revoked"})
_EMPTY = frozenset({"", "null", "none"})
EXPECTED = Expected.CONSENT.value

ConsentState = dict[str, Any]  # {"granted": bool, "source": str, "at": str | None}
#: The keys a consent state mapping may hold; any other key makes it ambiguous.
STATE_KEYS = frozenset({"granted", "source", "at"})


class AmbiguousConsent(ValueInvalid):
    """A consent value that is neither an explicit yes, an explicit no, nor empty: a
    :class:`~connector_core.records.ValueInvalid` of :attr:`Expected.CONSENT`, so every
    door reports it the way it reports any bad value (never with the value)."""

    def __init__(self, purpose: str | None = None) -> None:
        super().__init__(Expected.CONSENT, f"consent.{purpose}" if purpose else "consent")
        self.purpose = purpose


def consent_value(value: object, purpose: str | None = None) -> bool | None:
    """True for an explicit yes, False for an explicit no, None for no evidence.

    Raises:
        AmbiguousConsent: for any other value (its message never holds the value).
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in YES:
            return True
        if text in NO:
            return False
        if text in _EMPTY:
            return None
    raise AmbiguousConsent(purpose)


def state(granted: bool, source: str, at: str | None = None) -> ConsentState:
    """A canonical consent state."""
    return {"granted": granted, "source": source, "at": at}


def consent_block(raw: object, source: str) -> dict[str, ConsentState] | None:
    """A record's canonical ``consent`` from what a person or a file wrote.

    Each purpose maps to a value (``{local_organizing: yes}``, the shorthand) or to a state
    mapping whose ``granted`` is such a value; both go through :func:`consent_value`.
    Purposes with no evidence are left out. A state mapping holds only ``granted``,
    ``source`` and ``at``: another key (``withdrawn: true`` beside ``granted: yes``) may
    say the opposite, so the state is ambiguous.

    Raises:
        AmbiguousConsent: a value that is neither yes, no nor empty, a state mapping with
            a key other than ``granted``, ``source`` and ``at``, or a consent that is not
            a mapping of purposes.
    """
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise AmbiguousConsent()
    block: dict[str, ConsentState] = {}
    for purpose, value in raw.items():
        name = str(purpose)
        if isinstance(value, Mapping):
            if not set(map(str, value)) <= STATE_KEYS:
                raise AmbiguousConsent(name)
            granted = consent_value(value.get("granted"), name)
            at = value.get("at")
            origin = str(value.get("source") or source)
        else:
            granted, at, origin = consent_value(value, name), None, source
        if granted is not None:
            block[name] = state(granted, origin, at if isinstance(at, str) else None)
    return block


def combine(states: Iterable[ConsentState | None]) -> ConsentState | None:
    """One purpose's evidence from several pieces: no if any says no, yes if all say yes.

    A missing piece (None) among yeses leaves no evidence: consent needs every piece."""
    pieces = list(states)
    refusals = [s for s in pieces if s is not None and s.get("granted") is False]
    if refusals:
        return refusals[0]
    if pieces and all(s is not None and s.get("granted") is True for s in pieces):
        return pieces[0]
    return None


def combine_blocks(blocks: Iterable[Mapping[str, ConsentState] | None]) -> dict[str, Any]:
    """Consent blocks of several pieces of evidence for one person, purpose by purpose."""
    listed = [b or {} for b in blocks]
    purposes = sorted({p for b in listed for p in b})
    combined = {p: combine(b.get(p) for b in listed) for p in purposes}
    return {p: s for p, s in combined.items() if s is not None}


def with_consent(record: Mapping[str, Any], source: str) -> Record:
    """`record` with its ``consent`` read through :func:`consent_block`.

    Raises:
        AmbiguousConsent: as :func:`consent_block`.
    """
    copy = dict(record)
    if "consent" in copy:
        copy["consent"] = consent_block(copy["consent"], source)
    return copy


def merge_evidence(rows: Iterable[Record], *, complete: bool = True) -> Record | None:
    """One person from several rows with the same id (a duplicate in one source).

    Rows that agree on every field but consent make one record whose consent is combined
    purpose by purpose (:func:`combine_blocks`). Rows that disagree on another field (or,
    with ``complete`` False, rows some of which could not be read) give None: the person is
    held, neither shared anew nor taken back, except for a purpose some row refuses (the
    engine takes that back; see :class:`connector_core.adapters.ReadProblem`).
    """
    listed = list(rows)
    others = [{k: v for k, v in r.items() if k != "consent"} for r in listed]
    if not listed or not complete or any(o != others[0] for o in others):
        return None
    return {**others[0], "consent": combine_blocks(r.get("consent") for r in listed)}
