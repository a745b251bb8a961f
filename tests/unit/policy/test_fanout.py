"""Fan-out: one record against many recipients' policies, through the value index."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from connector_core.policy.compiler import CompiledPolicy, compile_policy
from connector_core.policy.fanout import PolicySet, index_terms
from connector_core.policy.models import Policy
from connector_core.query import All, AnyOf, Compare, Not
from tests.unit.policy.strategies import (
    GROUPS,
    KEY,
    NOW,
    PURPOSES,
    REGIONS,
    allow,
    conditions,
    consent,
    forbid,
    make_policy,
    records,
    show,
)

FLOOR = make_policy(
    "floor",
    consent=("contact_me",),
    rules=(allow("all"), forbid("deceased", Compare("is_deceased", "eq", True))),
    classes={"pii": show()},
)


def recipient(name: str, *rules: Any, narrows: Policy | None = FLOOR, **kwargs: Any) -> Policy:
    return make_policy(name, rules=rules, fields={"first_name": show()}, narrows=narrows, **kwargs)


def counted(policy: CompiledPolicy, calls: list[str]) -> CompiledPolicy:
    """Record in `calls` every time the policy is tried on a record (whole or in part)."""
    evaluate: Callable[..., Any] = policy.evaluate
    allow: Callable[..., Any] = policy.allow

    def counting_evaluate(record: Any) -> Any:
        calls.append(policy.name)
        return evaluate(record)

    def counting_allow(record: Any) -> Any:
        calls.append(policy.name)
        return allow(record)

    policy.evaluate = counting_evaluate
    policy.allow = counting_allow
    return policy


def test_only_candidate_policies_are_tried() -> None:
    regional = [
        compile_policy(recipient(f"region-{i}", allow("r", Compare("region", "eq", f"R{i}"))))
        for i in range(1000)
    ]
    policies = PolicySet(regional)
    person = {"region": "R7", "first_name": "Ana", "consent": consent("contact_me")}
    assert policies.candidates(person) == [7]
    assert [(p.name, projection) for p, projection in policies.shared(person)] == [
        ("region-7", {"first_name": "Ana"})
    ]
    assert policies.candidates({**person, "region": "elsewhere"}) == []
    assert policies.candidates({**person, "region": ["R7"]}) == []  # a list is not "R7"
    assert policies.candidates({"first_name": "Ana"}) == []


def test_candidates_allow_rules_run_only_for_candidates() -> None:
    calls: list[str] = []
    regional = [
        counted(
            compile_policy(
                recipient(
                    f"region-{i}",
                    allow(
                        "r",
                        All((Compare("region", "eq", f"R{i}"), Compare("city", "exists", True))),
                    ),
                )
            ),
            calls,
        )
        for i in range(1000)
    ]
    policies = PolicySet(regional)
    person = {"region": "R7", "city": "Leeds", "consent": consent("contact_me")}
    assert [p.name for p, _ in policies.shared(person)] == ["region-7"]
    assert [p.name for p, _ in policies.shared({**person, "city": None})] == []
    assert list(policies.shared({**person, "region": "R1000"})) == []
    assert calls == ["region-7", "region-7"]


def test_group_policies_are_indexed_by_list_items() -> None:
    calls: list[str] = []
    grouped = [
        counted(
            compile_policy(
                recipient(
                    f"group-{i}",
                    allow(
                        "g",
                        All(
                            (
                                Compare("groups", "any_of", (f"g{i}", f"h{i}")),
                                Compare("city", "exists", True),
                            )
                        ),
                    ),
                )
            ),
            calls,
        )
        for i in range(500)
    ]
    every = counted(
        compile_policy(recipient("all", allow("any", Compare("region", "ne", "X")))), calls
    )
    policies = PolicySet([*grouped, every])
    person = {
        "groups": ["g3", "h9", "zzz", "g3"],
        "city": "Leeds",
        "consent": consent("contact_me"),
    }
    shared = [p.name for p, _ in policies.shared(person)]
    assert shared == ["group-3", "group-9", "all"]
    assert calls == ["group-3", "group-9", "all"]


def test_a_group_listed_twice_shares_once() -> None:
    choir = compile_policy(recipient("choir", allow("c", Compare("groups", "any_of", ("choir",)))))
    x = compile_policy(recipient("x", allow("x", Compare("groups", "any_of", ("x",)))))
    policies = PolicySet([choir, x])
    person = {"groups": ["choir", "x", "choir"], "consent": consent("contact_me")}
    assert [p.name for p, _ in policies.shared(person)] == ["choir", "x"]


def test_one_field_indexed_by_whole_values_and_by_items() -> None:
    whole = compile_policy(recipient("whole", allow("w", Compare("groups", "eq", "climate"))))
    item = compile_policy(recipient("item", allow("i", Compare("groups", "any_of", ("climate",)))))
    policies = PolicySet([whole, item])
    granted = consent("contact_me")
    assert [p.name for p, _ in policies.shared({"groups": "climate", "consent": granted})] == [
        "whole"
    ]
    assert [p.name for p, _ in policies.shared({"groups": ["climate"], "consent": granted})] == [
        "item"
    ]


def test_evaluate_gives_every_policy_its_own_result_without_evaluating_it() -> None:
    calls: list[str] = []
    regional = [
        counted(
            compile_policy(
                recipient(f"region-{i}", allow("r", Compare("region", "in", (f"R{i}", "Z"))))
            ),
            calls,
        )
        for i in range(50)
    ]
    policies = PolicySet(regional)
    results = list(policies.evaluate({"region": "R1", "consent": consent("contact_me")}))
    assert calls == ["region-1"]
    assert [d.reason for _, d, _ in results[:3]] == [
        "no-allow:region-0",
        "shared:r",
        "no-allow:region-2",
    ]
    no_consent = list(policies.evaluate({"region": "R1"}))
    assert {d.reason for _, d, _ in no_consent} == {"consent:contact_me"}
    deceased = list(
        policies.evaluate({"region": "R1", "is_deceased": True, "consent": consent("contact_me")})
    )
    assert {d.reason for _, d, _ in deceased} == {"forbid:floor:deceased"}


def test_index_terms() -> None:
    def terms(*rules: Any) -> Any:
        return index_terms(compile_policy(recipient("p", *rules, narrows=None)))

    north = Compare("region", "eq", "North")
    assert terms(allow("a", north)) == ("region", {"North"}, set())
    assert terms(
        allow("a", All((Compare("city", "eq", "Leeds"), north))),
        allow("b", Compare("region", "in", ("East", "West"))),
    ) == ("region", {"North", "East", "West"}, set())
    assert terms(allow("a", Compare("groups", "any_of", ("x",)))) == ("groups", set(), {"x"})
    assert terms() == ("", set(), set())  # no allow rule: never shares
    assert terms(allow("a", north), allow("b")) is None  # b allows everyone
    assert terms(allow("a", north), allow("b", Compare("city", "eq", "Leeds"))) is None
    assert terms(allow("a", AnyOf((north,)))) is None
    assert terms(allow("a", Not(north))) is None
    assert terms(allow("a", Compare("region", "ne", "North"))) is None


# --- equivalence with evaluating every policy ---------------------------------------------

BY_REGION = st.one_of(
    st.builds(Compare, st.just("region"), st.just("eq"), st.sampled_from([*REGIONS, 1, None])),
    st.builds(
        Compare,
        st.just("region"),
        st.just("in"),
        st.lists(st.sampled_from([*REGIONS, 1, True]), max_size=3).map(tuple),
    ),
)
BY_GROUP = st.one_of(
    st.builds(
        Compare,
        st.just("groups"),
        st.just("any_of"),
        st.lists(st.sampled_from(GROUPS), min_size=1, max_size=2).map(tuple),
    ),
    st.builds(Compare, st.just("groups"), st.just("eq"), st.sampled_from(GROUPS)),
)
SELECTORS = st.sampled_from([BY_REGION, BY_GROUP, st.one_of(BY_REGION, BY_GROUP)])


def rule_conditions(selector: st.SearchStrategy[Compare]) -> st.SearchStrategy[Any]:
    """Mostly a selector (alone or AND-ed with more), sometimes any condition."""
    return st.one_of(
        selector,
        st.builds(lambda s, c: All((c, s) if c else (s,)), selector, conditions()),
        conditions(),
    )


LISTS = [
    ["climate"],
    ["housing", "choir"],
    [],
    None,
    "climate",
    [["x"]],
    5,
    ["x", 1],
    ["choir", "choir", "climate"],
]
TARGETED = st.fixed_dictionaries(  # records that the selectors above often pick
    {
        "consent": st.sampled_from([consent(*PURPOSES), consent("contact_me"), {}]),
        "region": st.sampled_from([*REGIONS, 1, True, None, ["North"], "Nowhere"]),
        "groups": st.sampled_from(LISTS),
        "tags": st.sampled_from(LISTS),
        "is_deceased": st.sampled_from([False, True, None]),
        "first_name": st.sampled_from(["Ana", None]),
    }
)


@st.composite
def recipients(draw: st.DrawFn, index: int) -> Policy:
    when = rule_conditions(draw(SELECTORS))
    rules = draw(
        st.lists(
            st.builds(allow, st.sampled_from("abc"), when),
            min_size=draw(st.sampled_from([0, 1, 1, 1])),
            max_size=3,
            unique_by=lambda r: r.name,
        )
    )
    if draw(st.booleans()):
        rules.append(forbid("f", draw(conditions())))
    gates = tuple(draw(st.lists(st.sampled_from(PURPOSES), max_size=1)))
    return recipient(
        f"p{index}", *rules, consent=gates, narrows=FLOOR if draw(st.booleans()) else None
    )


@st.composite
def policy_sets(draw: st.DrawFn) -> list[Policy]:
    return [draw(recipients(i)) for i in range(draw(st.integers(1, 8)))]


@settings(max_examples=300, deadline=None)
@given(
    policy_sets(),
    st.lists(st.one_of(TARGETED, records(), records(wild=True)), min_size=1, max_size=6),
)
def test_the_set_gives_what_each_policy_gives(policies: list[Policy], batch: list[Any]) -> None:
    compiled = [compile_policy(p, context=KEY, now=NOW) for p in policies]
    fanout = PolicySet(compiled)
    for record in batch:
        one_by_one = [(p, *p.evaluate(record)) for p in compiled]
        assert list(fanout.evaluate(record)) == one_by_one
        assert list(fanout.shared(record)) == [(p, pr) for p, d, pr in one_by_one if d.share]


@st.composite
def families(draw: st.DrawFn) -> list[Policy]:
    """Recipients that differ only in what their one allow rule selects: one group."""
    selector = draw(SELECTORS)
    gates = tuple(draw(st.lists(st.sampled_from(PURPOSES), max_size=1)))
    forbids = draw(st.lists(st.builds(forbid, st.just("f"), conditions()), max_size=1))
    floor = FLOOR if draw(st.booleans()) else None
    return [
        recipient(f"p{i}", allow("a", draw(selector)), *forbids, consent=gates, narrows=floor)
        for i in range(draw(st.integers(1, 6)))
    ]


@settings(max_examples=300, deadline=None)
@given(families(), st.lists(st.one_of(TARGETED, records(wild=True)), min_size=1, max_size=6))
def test_a_family_shares_its_checks_and_projection(
    policies: list[Policy], batch: list[Any]
) -> None:
    compiled = [compile_policy(p, context=KEY, now=NOW) for p in policies]
    fanout = PolicySet(compiled)
    assert len({p.share_key for p in compiled}) == 1
    for record in batch:
        expected = [(p, pr) for p in compiled if (pr := p.evaluate(record)[1]) is not None]
        shared = list(fanout.shared(record))
        assert shared == expected
        assert len({id(projection) for _, projection in shared}) == len(shared)  # copies
        assert list(fanout.evaluate(record)) == [(p, *p.evaluate(record)) for p in compiled]
