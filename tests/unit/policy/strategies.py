"""Policies built in code, and hypothesis strategies for random policies and records."""

from __future__ import annotations

import datetime as dt
import functools
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from connector_core.masks import MaskContext
from connector_core.policy.models import FieldOutcome, Policy, RelativeTime, Rule
from connector_core.query import All, AnyOf, Compare, Condition, Not

KEY = MaskContext.with_key(b"network-secret")
NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
PURPOSES = ("contact_me", "local_organizing")
EXTRA = "extra.civicrm.skill"


def make_policy(
    name: str = "p",
    *,
    consent: tuple[str, ...] = (),
    rules: tuple[Rule, ...] = (),
    fields: dict[str, FieldOutcome] | None = None,
    classes: dict[str, FieldOutcome] | None = None,
    narrows: Policy | None = None,
) -> Policy:
    """A checked policy as the loader would return it, written in code."""
    return Policy(
        name=name,
        path=Path(f"/policies/{name}.yaml"),
        description="",
        require_consent=consent,
        rules=rules,
        fields=fields or {},
        classes=classes or {},
        approval=None,
        content_hash=f"hash-of-{name}",
        narrows=narrows,
    )


def allow(name: str, condition: Condition | None = None, line: int | None = None) -> Rule:
    """An allow rule."""
    return Rule("allow", name, condition, line)


def forbid(name: str, condition: Condition | None = None, line: int | None = None) -> Rule:
    """A forbid rule."""
    return Rule("forbid", name, condition, line)


def show(line: int | None = None) -> FieldOutcome:
    """A ``show`` outcome."""
    return FieldOutcome("show", line=line)


def mask(name: str, param: Any = None, line: int | None = None) -> FieldOutcome:
    """A mask outcome."""
    return FieldOutcome("mask", name, param, line)


def consent(*granted: str, refused: tuple[str, ...] = ()) -> dict[str, Any]:
    """A record's consent block: the purposes granted, and those refused."""
    block = {p: {"granted": True, "source": "civicrm", "at": None} for p in granted}
    block.update({p: {"granted": False, "source": "civicrm", "at": None} for p in refused})
    return block


# --- random records ----------------------------------------------------------------------

REGIONS = ("North", "South", "East")
GROUPS = ("climate", "housing", "choir")
STRINGS = st.sampled_from(["Ana", "ana", "Ló", "", " x ", "Alexandra", "North", "climate"])
WILD = st.one_of(  # values of the wrong type for any field
    st.integers(-3, 3),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.booleans(),
    st.lists(st.integers(0, 2), max_size=2),
    st.dictionaries(st.sampled_from(["a", "b"]), st.integers(0, 1), max_size=1),
    st.lists(st.lists(st.integers(0, 1), max_size=1), min_size=1, max_size=2),
)
GRANTED = st.sampled_from([True, False, None, "yes"])


def _state(wild: bool) -> st.SearchStrategy[Any]:
    states = st.fixed_dictionaries(
        {"granted": GRANTED}, optional={"source": st.just("civicrm"), "at": st.none()}
    )
    return st.one_of(states, st.none(), WILD) if wild else st.one_of(states, st.none())


def _consent(wild: bool) -> st.SearchStrategy[Any]:
    everything = st.just(consent(*PURPOSES))  # often: so that many records are shared
    block = st.dictionaries(st.sampled_from(PURPOSES), _state(wild), max_size=2)
    if wild:
        return st.one_of(everything, everything, block, st.none(), WILD)
    return st.one_of(everything, everything, block, st.none())


@functools.cache
def records(*, wild: bool = False) -> st.SearchStrategy[dict[str, Any]]:
    """Contact records; ``wild`` adds values of the wrong type anywhere.

    Without ``wild``, values are of a type :func:`connector_core.query.matches` compares
    without raising, so results can be checked against it."""
    scalar = st.one_of(STRINGS, st.sampled_from(REGIONS), st.none())
    groups = st.one_of(st.lists(st.sampled_from(GROUPS), max_size=3), st.none(), STRINGS)
    number = st.one_of(st.floats(-90, 90, allow_nan=False), st.integers(-5, 5), st.none())
    if wild:
        scalar, groups, number = (st.one_of(s, WILD) for s in (scalar, groups, number))
    values = {
        "id": st.sampled_from(["1", "2", 3]),
        "first_name": scalar,
        "last_name": scalar,
        "email": st.sampled_from(["Ana@Example.org", " ana@example.org", "b@c.d"]),
        "phone": st.sampled_from(["+44 113 496 0123", "0123", "5551234", 12345678]),
        "city": scalar,
        "region": scalar,
        "latitude": number,
        "birth_date": st.sampled_from(["1990-05-17", "2001-01-01T10:00:00", "soon"]),
        "groups": groups,
        "tags": groups,
        "is_deceased": st.one_of(st.booleans(), st.none()),
        "modified_at": st.sampled_from(["2025-05-30T00:00:00+00:00", "2024-01-01T00:00:00"]),
        EXTRA: st.one_of(scalar, number),
    }
    return st.fixed_dictionaries({"consent": _consent(wild)}, optional=values)


# --- random policies ---------------------------------------------------------------------

_SCALAR_FIELDS = ("region", "first_name", "city", EXTRA)
_LIST_FIELDS = ("groups", "tags")


@functools.cache
def _compares() -> st.SearchStrategy[Compare]:
    scalar_value = st.one_of(st.sampled_from(REGIONS), STRINGS, st.integers(0, 2))
    some = st.lists(scalar_value, min_size=1, max_size=3).map(tuple)
    many = st.lists(
        st.sampled_from([f"v{i}" for i in range(12)] + list(REGIONS)), min_size=9, max_size=12
    ).map(tuple)
    scalar = st.sampled_from(_SCALAR_FIELDS)
    lists = st.sampled_from(_LIST_FIELDS)
    return st.one_of(
        st.builds(Compare, scalar, st.sampled_from(["eq", "ne"]), scalar_value),
        st.builds(Compare, scalar, st.sampled_from(["in", "not_in"]), st.one_of(some, many)),
        st.builds(
            Compare,
            lists,
            st.sampled_from(["any_of", "all_of"]),
            st.lists(st.sampled_from(GROUPS), max_size=2).map(tuple),
        ),
        st.builds(
            Compare,
            st.sampled_from([*_SCALAR_FIELDS, *_LIST_FIELDS]),
            st.just("exists"),
            st.booleans(),
        ),
        st.builds(
            Compare,
            st.just("latitude"),
            st.sampled_from(["gt", "gte", "lt", "lte"]),
            st.integers(-10, 10),
        ),
        st.builds(
            Compare,
            st.just("modified_at"),
            st.sampled_from(["gt", "lt"]),
            st.builds(RelativeTime, st.sampled_from([1.0, 30.0, 1000.0])),
        ),
        st.builds(
            Compare,
            st.sampled_from(["first_name", "region"]),
            st.just("starts_with"),
            st.sampled_from(["A", "N", "a"]),
        ),
        st.builds(
            Compare,
            st.sampled_from(["consent.contact_me.granted"]),
            st.sampled_from(["eq", "ne"]),
            st.just(True),
        ),
    )


@functools.cache
def conditions() -> st.SearchStrategy[Condition | None]:
    """Random condition trees (or None: no condition)."""
    tree = st.recursive(
        _compares(),
        lambda inner: st.one_of(
            st.lists(inner, max_size=3).map(lambda xs: All(tuple(xs))),
            st.lists(inner, max_size=3).map(lambda xs: AnyOf(tuple(xs))),
            inner.map(Not),
        ),
        max_leaves=4,
    )
    return st.one_of(st.none(), tree)


_OUTCOMES = st.sampled_from(
    [
        FieldOutcome("show", line=3),
        FieldOutcome("absent", line=4),
        FieldOutcome("forbid", line=5),
        FieldOutcome("mask", "last4", None, 6),
        FieldOutcome("mask", "hash", None, 7),
        FieldOutcome("mask", "initial", None, 8),
        FieldOutcome("mask", "truncate", 3, 9),
        FieldOutcome("mask", "year_only", None, 10),
        FieldOutcome("mask", "coarsen_location", 1, 11),
        FieldOutcome("mask", "city_only", None, 12),
        FieldOutcome("mask", "null", None, 13),
    ]
)
_FIELD_KEYS = (
    "id",
    "first_name",
    "email",
    "phone",
    "city",
    "region",
    "latitude",
    "birth_date",
    "groups",
    "consent",
    EXTRA,
)
_CLASS_KEYS = (
    "pii",
    "pii.name",
    "pii.contact",
    "pii.location",
    "pii.location.coarse",
    "affiliation",
    "consent",
)


_RULES = st.lists(
    st.builds(
        Rule, st.sampled_from(["allow", "allow", "forbid"]), st.sampled_from("abc"), conditions()
    ),
    max_size=4,
    unique_by=lambda r: (r.kind, r.name),
).map(tuple)
_CONSENT_GATES = st.lists(st.sampled_from(PURPOSES), max_size=2, unique=True).map(tuple)
_FIELD_MAPS = st.dictionaries(st.sampled_from(_FIELD_KEYS), _OUTCOMES, max_size=6)
_CLASS_MAPS = st.dictionaries(st.sampled_from(_CLASS_KEYS), _OUTCOMES, max_size=4)


@st.composite
def policies(draw: st.DrawFn, name: str = "leaf", depth: int = 3) -> Policy:
    """A random policy narrowing up to ``depth - 1`` random policies."""
    parent = None
    if depth > 1 and draw(st.booleans()):
        parent = draw(policies(f"{name}-up", depth - 1))
    return make_policy(
        name,
        consent=draw(_CONSENT_GATES),
        rules=draw(_RULES),
        fields=draw(_FIELD_MAPS),
        classes=draw(_CLASS_MAPS),
        narrows=parent,
    )
