"""The built-in masks: what each does, their parameters, None, and the never-the-original
guarantee the compiler adds on top of any mask."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from connector_core import hookimpl
from connector_core.errors import PluginError, PolicyError
from connector_core.masks import BUILTIN_MASKS, MaskContext, normalize_for_hash
from connector_core.plugins import collect_masks, make_plugin_manager, register_builtin
from connector_core.policy.compiler import compile_policy
from connector_core.policy.explain import explain
from connector_core.query import Compare
from tests.unit.policy.strategies import KEY, allow, make_policy, mask

CTX = MaskContext.for_validation()


def apply(name: str, value: Any, param: Any = None, record: dict[str, Any] | None = None) -> Any:
    """Run one built-in mask on one value."""
    return BUILTIN_MASKS[name](param, KEY)(value, record or {})


@pytest.mark.parametrize(
    ("name", "param", "value", "expected"),
    [
        ("last4", None, "+44 113 496 0123", "********0123"),
        ("last4", None, "AB-12345", "***2345"),
        ("last4", None, 5551234567, "******4567"),
        ("last4", None, "0123", None),
        ("last4", None, "+1 23", None),
        ("last4", None, "tel:+44-113-496-5555", "********5555"),
        ("last4", None, "TEL:+1-201-555-0123;ext=1234", "*******0123"),
        ("last4", None, ["a"], None),
        ("initial", None, "ana", "A."),
        ("initial", None, "  Óscar ", "Ó."),
        ("initial", None, "", None),
        ("initial", None, 42, None),
        ("truncate", 3, "Alexandra", "Ale"),
        ("truncate", 1, "Ana", "A"),
        ("truncate", 2, 12345, "12"),
        ("year_only", None, "1990-05-17", "1990"),
        ("year_only", None, "1990-05-17T10:30:00+01:00", "1990"),
        ("year_only", None, dt.date(1990, 5, 17), "1990"),
        ("year_only", None, dt.datetime(1990, 5, 17, 10), "1990"),
        ("year_only", None, "17/05/1990", None),
        ("year_only", None, 1990, None),
        ("coarsen_location", None, 53.80075, 53.8),
        ("coarsen_location", None, -1.54912, -1.55),
        ("coarsen_location", 0, 53.80075, 54.0),
        ("coarsen_location", 4, 53.800751, 53.8008),
        ("coarsen_location", 2, "53.80075", 53.8),
        ("coarsen_location", 2, "north", None),
        ("coarsen_location", 2, float("nan"), None),
        ("coarsen_location", 2, True, None),
        ("null", None, "anything", None),
    ],
    ids=lambda v: repr(v)[:24],
)
def test_builtin_masks(name: str, param: Any, value: Any, expected: Any) -> None:
    assert apply(name, value, param) == expected


def test_city_only_reads_the_city_and_says_so() -> None:
    function = BUILTIN_MASKS["city_only"](None, CTX)
    assert function(53.80075, {"city": "Leeds", "latitude": 53.80075}) == "Leeds"
    assert function(53.8, {}) is None
    assert function.reads == frozenset({"city"})  # type: ignore[attr-defined]


def test_hash_is_keyed_stable_and_normalised() -> None:
    digest = apply("hash", "ana@example.org")
    assert len(digest) == 64
    assert int(digest, 16) >= 0
    assert apply("hash", " Ana@Example.ORG ") == digest
    assert apply("hash", "ana@example.org") == digest
    other_key = BUILTIN_MASKS["hash"](None, MaskContext.with_key(b"another network"))
    assert other_key("ana@example.org", {}) != digest
    assert apply("hash", "ana@example.net") != digest
    assert apply("hash", 12) == apply("hash", 12) != apply("hash", "13")


def test_hash_normalisation_is_documented_behaviour() -> None:
    assert normalize_for_hash(" Straße@Example.org\t") == "strasse@example.org"
    assert normalize_for_hash("\uff21\uff2e\uff21") == "ana"  # full-width letters (NFKC)
    assert normalize_for_hash(["b", 1]) == '["b", 1]'


def test_hash_without_a_key_fails_when_the_factory_runs() -> None:
    with pytest.raises(PolicyError, match="the hash mask needs the network's hash key") as info:
        BUILTIN_MASKS["hash"](None, MaskContext.without_key())
    assert "connector credentials set network hash_key" in (info.value.hint or "")
    assert "network.hash_key: {secret: hash_key}" in (info.value.hint or "")


def test_the_context_never_shows_its_key() -> None:
    assert "network-secret" not in repr(KEY)


@pytest.mark.parametrize("name", sorted(BUILTIN_MASKS))
def test_none_stays_none(name: str) -> None:
    param = {"truncate": 2, "coarsen_location": 2}.get(name)
    assert BUILTIN_MASKS[name](param, KEY)(None, {"city": "Leeds"}) is None


@pytest.mark.parametrize(
    ("name", "param", "message"),
    [
        ("truncate", None, "whole number 1 or more, not None"),
        ("truncate", 0, "whole number 1 or more, not 0"),
        ("truncate", -2, "not -2"),
        ("truncate", "3", "not '3'"),
        ("truncate", True, "not True"),
        ("truncate", 2.5, "not 2.5"),
        ("coarsen_location", 7, "between 0 and 6, not 7"),
        ("coarsen_location", -1, "between 0 and 6, not -1"),
        ("coarsen_location", "2", "not '2'"),
        ("last4", 4, "the last4 mask takes no parameter"),
        ("hash", "sha1", "the hash mask takes no parameter"),
        ("initial", 1, "takes no parameter"),
        ("year_only", "YYYY", "takes no parameter"),
        ("city_only", "town", "takes no parameter"),
        ("null", 0, "takes no parameter"),
    ],
)
def test_bad_parameters_are_refused_at_load_time(name: str, param: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BUILTIN_MASKS[name](param, CTX)


def test_builtin_masks_are_registered_like_a_plugin() -> None:
    pm = make_plugin_manager(entry_points=False)
    assert "connector_core.masks" in pm.infos
    assert set(BUILTIN_MASKS) <= set(collect_masks(pm))


def test_builtin_masks_cannot_be_disabled_by_accident() -> None:
    pm = make_plugin_manager(entry_points=False, blocked=["connector_core.masks"])
    assert "last4" in collect_masks(pm)


def test_a_plugin_mask_clashing_with_a_builtin_is_refused() -> None:
    class Clash:
        @hookimpl
        def register_masks(self) -> dict[str, Any]:
            return {"last4": lambda param, context: lambda value, record: value}

    pm = make_plugin_manager(entry_points=False)
    register_builtin(pm, Clash(), "clash")
    with pytest.raises(PluginError, match="two plugins provide a mask named 'last4'"):
        collect_masks(pm)


# --- the compiler's guarantee: a masked field never carries its original value -----------

MASKS = st.sampled_from(
    [
        ("last4", None),
        ("initial", None),
        ("truncate", 1),
        ("truncate", 4),
        ("truncate", 5),
        ("hash", None),
        ("year_only", None),
        ("coarsen_location", 0),
        ("coarsen_location", 3),
        ("city_only", None),
        ("null", None),
        ("identity", None),
    ]
)
VALUES = st.one_of(
    st.text(max_size=8),
    st.integers(),
    st.floats(allow_nan=False),
    st.sampled_from(["1990", "A.", "0123", "Leeds", 53.8, 54.0, "*******0123"]),
    st.lists(st.text(max_size=2), max_size=2),
)


def identity(param: Any, context: MaskContext) -> Any:
    """A (bad) plugin mask that hides nothing."""
    return lambda value, record: value


@given(MASKS, MASKS, VALUES, st.sampled_from(["Leeds", "0123", None]))
@example(("truncate", 5), ("truncate", 5), 53.8, None)  # "53.8" is 53.8 as a target writes it
@example(("truncate", 4), ("truncate", 4), 123, None)
def test_a_masked_field_never_carries_its_original_value(
    first: tuple[str, Any], second: tuple[str, Any], value: Any, city: str | None
) -> None:
    masks = {**BUILTIN_MASKS, "identity": identity}
    floor = make_policy("floor", rules=(allow("all"),), fields={"phone": mask(*first)})
    leaf = make_policy(
        "leaf", rules=(allow("all"),), fields={"phone": mask(*second)}, narrows=floor
    )
    for policy in (floor, leaf):
        compiled = compile_policy(policy, masks=masks, context=KEY)
        decision, projection = compiled.evaluate({"phone": value, "city": city})
        assert decision.share
        assert projection is not None
        assert set(projection) == {"phone"}
        sent = projection["phone"]
        assert sent is None or sent != value
        if _plain(sent) and _plain(value):  # what a target writes: the same text
            assert str(sent) != str(value), (sent, value)
        assert explain(compiled, {"phone": value, "city": city}).projection == projection


def _plain(value: Any) -> bool:
    return isinstance(value, str | int | float) and not isinstance(value, bool)


def test_masking_an_already_coarse_value_sends_none() -> None:
    policy = make_policy(
        rules=(allow("all", Compare("region", "exists", True)),),
        fields={"latitude": mask("coarsen_location", 2), "phone": mask("last4")},
    )
    compiled = compile_policy(policy)
    record = {"region": "North", "latitude": 53.8, "phone": "0123"}
    assert compiled.project(record) == {"phone": None, "latitude": None}
    assert compiled.project({**record, "latitude": 53.8123})["latitude"] == 53.81


def snoop(param: Any, context: MaskContext) -> Any:
    """A plugin mask that reads the street address without declaring it, and the city with."""

    def mask_(value: Any, record: dict[str, Any]) -> Any:
        return f"{record.get('street_address')}|{record.get('city')}"

    mask_.reads = frozenset({"city"})  # type: ignore[attr-defined]
    return mask_


def test_a_mask_sees_only_the_fields_it_declares_it_reads() -> None:
    policy = make_policy(rules=(allow("all"),), fields={"region": mask("snoop")})
    compiled = compile_policy(policy, masks={**BUILTIN_MASKS, "snoop": snoop})
    record = {"region": "North", "city": "Leeds", "street_address": "1 Mill Lane"}
    assert compiled.project(record) == {"region": "None|Leeds"}
    assert explain(compiled, record).projection == {"region": "None|Leeds"}


_SCHEMES = st.sampled_from(["", "tel:", "TEL:", "Tel:", "sip:", "callto:"])
_SEPARATORS = st.sampled_from([" ", "-", ".", "", "(", ")", "+", "/"])


@given(
    scheme=_SCHEMES,
    groups=st.lists(st.text("0123456789", min_size=1, max_size=4), min_size=1, max_size=5),
    separators=st.lists(_SEPARATORS, min_size=5, max_size=5),
    params=st.sampled_from(["", ";ext=77", ";phone-context=example.com", ";isub=1234"]),
)
def test_a_masked_phone_shows_at_most_its_last_four_digits(
    scheme: str, groups: list[str], separators: list[str], params: str
) -> None:
    """Whatever its form (a ``tel:`` URI, separators, URI parameters), a masked phone number
    shows its last four digits at most, one ``*`` per other digit: no letter counts or shows."""
    number = "".join(g + s for g, s in zip(groups, separators, strict=False))
    phone = scheme + number + (params if scheme else "")  # parameters belong to a URI
    digits = "".join(groups)
    masked = apply("last4", phone)
    if len(digits) <= 4:
        assert masked is None
    else:
        assert masked == "*" * (len(digits) - 4) + digits[-4:]
