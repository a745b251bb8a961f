"""The policy compiler: decisions, field outcomes, chains, pushdown and generated code."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector_core.errors import PolicyError, RecordRejected
from connector_core.masks import BUILTIN_MASKS
from connector_core.policy.compiler import Decision, compile_policy, resolve
from connector_core.policy.explain import holds
from connector_core.policy.models import FieldOutcome, RelativeTime
from connector_core.query import All, AnyOf, Compare, Not, matches
from connector_core.records import FIELDS, coerce
from tests.unit.policy.strategies import (
    EXTRA,
    KEY,
    NOW,
    allow,
    conditions,
    consent,
    forbid,
    make_policy,
    mask,
    policies,
    records,
    show,
)

NORTH = Compare("region", "eq", "North")
DECEASED = Compare("is_deceased", "eq", True)


def organizers(**kwargs: Any) -> Any:
    """The brief's example policy: consent, one allow, one forbid, four fields."""
    return make_policy(
        "organizers-north",
        consent=("local_organizing",),
        rules=(allow("north", NORTH, 5), forbid("deceased", DECEASED, 7)),
        fields={"first_name": show(), "last_name": show(), "city": show(), "phone": mask("last4")},
        **kwargs,
    )


def person(**changes: Any) -> dict[str, Any]:
    record = {
        "id": "42",
        "first_name": "Ana",
        "last_name": "Lopez",
        "city": "Leeds",
        "street_address": "1 Long Road",
        "region": "North",
        "phone": "+44 113 496 0123",
        "consent": consent("local_organizing"),
    }
    return {**record, **changes}


def test_a_matching_record_is_shared_with_its_projection() -> None:
    decision, projection = compile_policy(organizers()).evaluate(person())
    assert decision == Decision(True, "shared:north", "north")
    assert projection == {
        "first_name": "Ana",
        "last_name": "Lopez",
        "phone": "********0123",
        "city": "Leeds",
    }
    assert list(projection) == [f for f in FIELDS if f in projection]


@pytest.mark.parametrize(
    "state",
    [
        None,
        {},
        {"local_organizing": None},
        {"local_organizing": {"granted": False}},
        {"local_organizing": {"granted": "yes"}},
        {"local_organizing": {"granted": 1}},
        {"local_organizing": True},
        {"contact_me": {"granted": True}},
        "granted",
        ["x"],
    ],
    ids=[
        "none",
        "empty",
        "no-state",
        "refused",
        "text",
        "one",
        "not-a-mapping",
        "other-purpose",
        "text-block",
        "list-block",
    ],
)
def test_consent_needs_evidence_of_a_grant(state: Any) -> None:
    compiled = compile_policy(organizers())
    record = person(consent=state)
    assert compiled.decide(record) == Decision(False, "consent:local_organizing")
    assert compiled.evaluate(record) == (Decision(False, "consent:local_organizing"), None)


def test_consent_is_checked_before_rules_and_names_the_first_missing_purpose() -> None:
    floor = make_policy("floor", consent=("contact_me",), rules=(allow("all"),))
    compiled = compile_policy(organizers(narrows=floor))
    assert compiled.decide(person(is_deceased=True, region="South")).reason == (
        "consent:contact_me"
    )
    both = consent("local_organizing", "contact_me")
    assert compiled.decide(person(consent=both)).share
    missing_leaf = person(consent=consent("contact_me"), is_deceased=True)
    assert compiled.decide(missing_leaf).reason == "consent:local_organizing"


def test_forbid_beats_allow() -> None:
    compiled = compile_policy(organizers())
    assert compiled.decide(person(is_deceased=True)) == Decision(
        False, "forbid:organizers-north:deceased"
    )


def test_default_deny() -> None:
    assert compile_policy(organizers()).decide(person(region="South")).reason == (
        "no-allow:organizers-north"
    )
    nothing = make_policy("nothing", fields={"first_name": show()})
    assert compile_policy(nothing).evaluate(person()) == (Decision(False, "no-allow:nothing"), None)


def test_the_first_matching_allow_rule_is_named() -> None:
    policy = make_policy(
        rules=(allow("south", Compare("region", "eq", "South")), allow("any"), allow("north")),
    )
    assert compile_policy(policy).decide(person()) == Decision(True, "shared:any", "any")


def test_a_forbid_without_condition_withholds_everything() -> None:
    policy = make_policy(rules=(allow("all"), forbid("pause")))
    compiled = compile_policy(policy)
    assert compiled.decide(person()).reason == "forbid:p:pause"
    assert compiled.pushdown.condition is not None
    assert not matches(compiled.pushdown.condition, person())


# --- chains ------------------------------------------------------------------------------


def floor_policy(**kwargs: Any) -> Any:
    defaults: dict[str, Any] = {
        "rules": (allow("contactable"), forbid("deleted", Compare("deleted", "eq", True), 9)),
        "classes": {
            "pii": show(3),
            "pii.location": FieldOutcome("absent", line=4),
            "pii.location.coarse": show(5),
        },
        "fields": {"street_address": FieldOutcome("forbid", line=9)},
    }
    return make_policy("floor", **{**defaults, **kwargs})


def test_the_floor_forbids_bind_the_narrower_policy() -> None:
    compiled = compile_policy(organizers(narrows=floor_policy()))
    assert compiled.decide(person(deleted=True)).reason == "forbid:floor:deleted"
    assert compiled.decide(person()).share


def test_every_policy_in_the_chain_must_allow() -> None:
    floor = floor_policy(rules=(allow("north only", NORTH),))
    leaf = make_policy(
        "leaf", rules=(allow("everyone"),), fields={"first_name": show()}, narrows=floor
    )
    compiled = compile_policy(leaf)
    assert compiled.decide(person(region="South")).reason == "no-allow:floor"
    assert compiled.decide(person()) == Decision(True, "shared:everyone", "everyone")


def test_the_strictest_field_outcome_wins() -> None:
    floor = floor_policy(
        fields={"street_address": FieldOutcome("forbid"), "phone": mask("truncate", 6)}
    )
    leaf = make_policy(
        "leaf",
        rules=(allow("all"),),
        fields={
            "first_name": show(),
            "street_address": show(),
            "email": show(),
            "phone": show(),
            "city": FieldOutcome("absent"),
        },
        narrows=floor,
    )
    compiled = compile_policy(leaf)
    projection = compiled.project(person(email="ana@example.org"))
    # street_address: forbidden by the floor; city: absent in the leaf; phone: floor masks
    assert projection == {"first_name": "Ana", "email": "ana@example.org", "phone": "+44 11"}
    assert compiled.outcomes["phone"].label() == "mask:truncate(6)"
    assert set(compiled.outcomes) == {"first_name", "email", "phone"}


def test_masks_compose_floor_first() -> None:
    floor = floor_policy(fields={"first_name": mask("truncate", 3)})
    leaf = make_policy(
        "leaf", rules=(allow("all"),), fields={"first_name": mask("hash", line=12)}, narrows=floor
    )
    compiled = compile_policy(leaf, context=KEY)
    expected = BUILTIN_MASKS["hash"](None, KEY)("Ale", {})
    assert compiled.project(person(first_name="Alexandra")) == {"first_name": expected}
    assert compiled.outcomes["first_name"].label() == "mask:truncate(3)+hash"
    assert compiled.outcomes["first_name"].line == 12


def test_classification_outcomes_and_specificity() -> None:
    policy = make_policy(
        rules=(allow("all"),),
        classes={
            "pii": show(),
            "pii.location": FieldOutcome("absent"),
            "pii.location.coarse": mask("null"),
        },
        fields={"last_name": FieldOutcome("absent"), "postal_code": show()},
    )
    outcomes = compile_policy(policy).outcomes
    assert outcomes["first_name"].kind == "show"  # pii
    assert "last_name" not in outcomes  # its own entry beats pii
    assert "street_address" not in outcomes  # pii.location beats pii
    assert outcomes["postal_code"].kind == "show"  # its own entry beats pii.location
    assert outcomes["city"].label() == "mask:null"  # the longest prefix
    assert "groups" not in outcomes  # not listed: absent
    assert "id" not in outcomes


def test_a_forbidden_classification_binds_fields_listed_in_the_same_policy() -> None:
    policy = make_policy(
        rules=(allow("all"),),
        classes={"pii.location": FieldOutcome("forbid")},
        fields={"street_address": show(), "latitude": mask("coarsen_location", 1)},
    )
    assert compile_policy(policy).outcomes == {}


def test_consent_is_projected_only_when_listed_by_name() -> None:
    by_class = make_policy(rules=(allow("all"),), classes={"consent": show(), "pii": show()})
    assert "consent" not in compile_policy(by_class).project(person())
    by_name = make_policy(rules=(allow("all"),), fields={"consent": show()})
    assert compile_policy(by_name).project(person()) == {"consent": person()["consent"]}


def test_extra_fields_and_id_are_shown_only_when_listed() -> None:
    policy = make_policy(
        rules=(allow("all"),),
        fields={EXTRA: show(), "id": show()},
        classes={"pii": show(), "identifier": FieldOutcome("absent")},
    )
    projection = compile_policy(policy).project(person(**{EXTRA: "first aid"}))
    assert next(iter(projection)) == "id"
    assert list(projection)[-1] == EXTRA
    assert projection[EXTRA] == "first aid"
    floor = floor_policy()
    narrowed = make_policy("leaf", rules=(allow("all"),), fields={EXTRA: show()}, narrows=floor)
    assert EXTRA not in compile_policy(narrowed).project(person(**{EXTRA: "x"}))


def test_evaluate_projects_only_shared_records_and_apply_streams() -> None:
    compiled = compile_policy(organizers())
    assert compiled.evaluate(person(region="East"))[1] is None
    stream = compiled.apply(itertools.repeat(person()))  # endless: apply must be lazy
    first = list(itertools.islice(stream, 3))
    assert [d.share for _, d, _ in first] == [True, True, True]
    assert first[0][2] == compiled.project(person())


# --- pushdown ----------------------------------------------------------------------------


def test_pushdown_names_what_the_decision_and_the_projection_read() -> None:
    policy = organizers(narrows=floor_policy())
    policy.fields["latitude"] = mask("city_only")  # the floor makes it absent: nothing read
    pushdown = compile_policy(policy).pushdown
    assert pushdown.decision_fields == {"id", "consent", "region", "is_deceased", "deleted"}
    assert pushdown.shared_fields == {"first_name", "last_name", "city", "phone"}
    partner = make_policy(
        rules=(allow("all", Compare("consent.contact_me.granted", "eq", True)),),
        fields={"region": mask("city_only")},
    )
    pushdown = compile_policy(partner).pushdown
    assert pushdown.decision_fields == {"id", "consent"}
    assert pushdown.shared_fields == {"region", "city"}


def test_pushdown_of_the_example_policy() -> None:
    condition = compile_policy(organizers()).pushdown.condition
    assert condition == All(
        (
            Compare("consent.local_organizing.granted", "eq", True),
            NORTH,
            Not(DECEASED),
        )
    )


@settings(max_examples=300, deadline=None)
@given(policies(), st.lists(records(), min_size=1, max_size=8))
def test_pushdown_matches_exactly_the_shared_records(policy: Any, batch: list[Any]) -> None:
    compiled = compile_policy(policy, context=KEY, now=NOW)
    fields = compiled.read_fields  # asked first, as a many jobs' read does: the same fields
    for record in batch:
        assert matches(compiled.pushdown.condition, record) == compiled.decide(record).share
    assert fields == (compiled.pushdown.decision_fields, compiled.pushdown.shared_fields)


def test_the_pushdown_condition_is_made_when_first_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """A read of many partners' jobs asks their policies for the fields they read, never
    for their filter (it reads the source unfiltered): the condition is made on first use,
    once; the fields are the pushdown's."""
    from connector_core.policy import compiler

    made: list[str] = []
    real = compiler._pushdown

    def counted(links: Any, fields: Any) -> Any:
        made.append(links[0].policy.name)
        return real(links, fields)

    monkeypatch.setattr(compiler, "_pushdown", counted)
    policy = compile_policy(organizers(narrows=floor_policy()))
    decision, shared = policy.read_fields
    assert made == []
    assert policy.pushdown.decision_fields == decision
    assert policy.pushdown.shared_fields == shared
    assert policy.pushdown.condition is not None
    assert made == ["organizers-north"]


@settings(max_examples=500, deadline=None)
@given(conditions(), st.lists(st.one_of(records(), records(wild=True)), min_size=1, max_size=8))
def test_every_condition_decides_as_the_query_semantics(condition: Any, batch: list[Any]) -> None:
    for negate in (False, True):
        rule = allow("r", Not(condition) if negate and condition else condition)
        compiled = compile_policy(make_policy(rules=(rule,)), now=NOW)
        for record in batch:
            assert compiled.decide(record).share == holds(resolve(rule.condition, NOW), record)[0]


VALUES = [
    None,
    "",
    [],
    "North",
    "N",
    "north",
    0,
    1,
    -1,
    0.5,
    True,
    False,
    ["climate"],
    ["climate", "choir"],
    "climate",
    [["x"]],
    {"a": 1},
    ("North",),
    "2025-01-01",
]
HASHABLE = [v for v in VALUES if not isinstance(v, list | dict)]
OPERANDS = {
    "eq": st.sampled_from(VALUES),
    "ne": st.sampled_from(VALUES),
    "in": st.lists(st.sampled_from(HASHABLE), max_size=12).map(tuple),
    "not_in": st.lists(st.sampled_from(VALUES), max_size=12).map(tuple),
    "any_of": st.lists(st.sampled_from(["climate", "choir", "N", 1]), max_size=3).map(tuple),
    "all_of": st.lists(st.sampled_from(["climate", "choir", "N", 1]), max_size=3).map(tuple),
    "exists": st.booleans(),
    "gt": st.sampled_from([0, 1, 0.5, "N", "2024-12-31"]),
    "gte": st.sampled_from([0, 1, 0.5, "N", "2025-01-01"]),
    "lt": st.sampled_from([0, 1, 0.5, "N", "2025-01-02"]),
    "lte": st.sampled_from([0, 1, 0.5, "N", "2025-01-01"]),
    "starts_with": st.sampled_from(["N", "n", "", "No"]),
}
COMPARES = st.sampled_from(sorted(OPERANDS)).flatmap(
    lambda op: st.builds(
        Compare, st.sampled_from(["region", EXTRA, "consent.x.granted"]), st.just(op), OPERANDS[op]
    )
)


@settings(max_examples=1000, deadline=None)
@given(COMPARES, st.sampled_from(VALUES))
def test_every_operator_on_every_kind_of_value(compare: Compare, value: Any) -> None:
    record = {"region": value, EXTRA: value, "consent": {"x": {"granted": value}}}
    expected = holds(compare, record)[0]
    compiled = compile_policy(make_policy(rules=(allow("r", compare),)))
    assert compiled.decide(record).share is expected
    negated = compile_policy(make_policy(rules=(allow("r", Not(compare)),)))
    assert negated.decide(record).share is not expected


# --- robustness and safety ---------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(policies(), st.lists(records(wild=True), min_size=1, max_size=8))
def test_values_of_the_wrong_type_never_raise(policy: Any, batch: list[Any]) -> None:
    compiled = compile_policy(policy, context=KEY, now=NOW)
    for record in batch:
        decision, projection = compiled.evaluate(record)
        assert compiled.decide(record) == decision
        assert (projection is not None) == decision.share
        gate = compiled.gate(record)
        assert gate is None or gate == decision


@pytest.mark.parametrize(
    ("condition", "record"),
    [
        (Compare("latitude", "gt", 50), {"latitude": "north"}),
        (Compare("groups", "any_of", ("a",)), {"groups": 5}),
        (Compare("groups", "all_of", ("a",)), {"groups": [["a"]]}),
        (Compare("region", "in", ("North",) * 10 + ("x", "y")), {"region": ["North"]}),
        (Compare("region", "starts_with", "N"), {"region": 7}),
        (Compare("region", "eq", "North"), {"region": {"a": 1}}),
    ],
    ids=[
        "text-vs-number",
        "number-vs-list",
        "nested-list",
        "list-vs-set",
        "number-text",
        "mapping",
    ],
)
def test_a_type_mismatch_is_simply_false(condition: Any, record: dict[str, Any]) -> None:
    for negate in (False, True):
        rule = allow("r", Not(condition) if negate else condition)
        decision = compile_policy(make_policy(rules=(rule,))).decide(record)
        assert decision.share is negate


def test_relative_times_resolve_against_now() -> None:
    recent = Compare("modified_at", "gt", RelativeTime(30))
    policy = make_policy(rules=(allow("recent", recent),))
    compiled = compile_policy(policy, now=dt.datetime(2025, 6, 1, tzinfo=dt.UTC))
    assert compiled.decide({"modified_at": "2025-05-20T00:00:00+00:00"}).share
    assert not compiled.decide({"modified_at": "2025-04-20T00:00:00+00:00"}).share
    assert compiled.pushdown.condition == Compare("modified_at", "gt", "2025-05-02T00:00:00+00:00")


@given(
    moment=st.datetimes(
        min_value=dt.datetime(2025, 5, 28),
        max_value=dt.datetime(2025, 6, 3),
        timezones=st.just(dt.UTC),
    ),
    offset=st.integers(min_value=-12 * 60, max_value=14 * 60),
)
def test_a_time_written_with_any_offset_is_compared_as_the_instant_it_is(
    moment: dt.datetime, offset: int
) -> None:
    """A source's `2025-05-31T13:00:00+02:00` is 11:00 UTC: `days_ago` decides by the
    instant, whatever offset the source wrote it with (read as sync reads it, by coerce)."""
    now = dt.datetime(2025, 6, 1, 12, tzinfo=dt.UTC)
    policy = make_policy(rules=(allow("recent", Compare("modified_at", "gte", RelativeTime(1))),))
    compiled = compile_policy(policy, now=now)
    written = moment.astimezone(dt.timezone(dt.timedelta(minutes=offset))).isoformat()
    read = coerce(FIELDS["modified_at"], written)
    assert compiled.decide({"modified_at": read}).share == (moment >= now - dt.timedelta(days=1))


def test_a_condition_without_relative_times_resolves_to_itself() -> None:
    """compile_policy shares the links of such rules between compiles (a template's floor)."""
    now = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
    plain = All((Compare("region", "eq", "North"), Not(AnyOf((Compare("city", "eq", "X"),)))))
    assert resolve(plain, now) is plain
    nested = All(
        (Compare("region", "eq", "North"), Not(Compare("modified_at", "gt", RelativeTime(1))))
    )
    resolved = resolve(nested, now)
    assert resolved == All(
        (
            Compare("region", "eq", "North"),
            Not(Compare("modified_at", "gt", "2025-05-31T00:00:00+00:00")),
        )
    )
    memo: dict[Any, Any] = {}
    policy = make_policy(rules=(allow("a", plain),))
    first, again = (compile_policy(policy, memo=memo) for _ in range(2))
    assert first.links[0] is again.links[0]
    timed = make_policy(rules=(allow("a", nested),))
    assert (
        compile_policy(timed, memo=memo).links[0] is not compile_policy(timed, memo=memo).links[0]
    )


INJECTION = '"); import os; os.system("echo pwned"); ("'


def test_user_values_are_data_never_code() -> None:
    odd_field = 'region") or True or r.get("x'
    policy = make_policy(
        consent=("local_organizing",),
        rules=(
            allow(
                "a",
                AnyOf(
                    (
                        Compare("region", "eq", INJECTION),
                        Compare("region", "in", (INJECTION, "x")),
                        Compare(odd_field, "eq", INJECTION),
                    )
                ),
            ),
            forbid(INJECTION, Compare("city", "starts_with", INJECTION)),
        ),
        fields={"first_name": show()},
    )
    compiled = compile_policy(policy)
    assert INJECTION not in compiled.source
    assert "import" not in compiled.source
    assert "pwned" not in compiled.source
    assert odd_field not in compiled.source
    shared = person(region=INJECTION)
    assert compiled.decide(shared).share
    assert not compiled.decide(person()).share
    assert compiled.decide({**person(), odd_field: INJECTION}).share
    assert compiled.decide(person(region=INJECTION, city=INJECTION + "!")).reason == (
        f"forbid:p:{INJECTION}"
    )


def test_generated_code_is_shared_by_policies_that_differ_only_in_values() -> None:
    north, south = (
        compile_policy(make_policy(rules=(allow(r, Compare("region", "eq", r)),)))
        for r in ("North", "South")
    )
    assert north.source == south.source
    assert north.decide.__code__ is south.decide.__code__
    assert north.decide({"region": "North"}).share
    assert not south.decide({"region": "North"}).share


def test_code_is_generated_when_a_policy_is_first_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """A policy compiled but never asked to decide (an idle partner's, in an incremental
    run) generates no code; each function is generated when first asked for, once, and
    ``source`` generates the whole (keeping the functions made before)."""
    from connector_core.policy import codegen

    built: list[tuple[str, tuple[str, ...]]] = []
    real = codegen.build

    def counted(name: str, *args: Any) -> Any:
        built.append((name, tuple(args[2])))
        return real(name, *args)

    monkeypatch.setattr(codegen, "build", counted)
    policy = compile_policy(make_policy(rules=(allow("North", Compare("region", "eq", "N")),)))
    assert built == []
    assert policy.gate_checks == ()
    assert policy.share_key
    assert policy.evaluate({"region": "N"})[0].share
    assert built == [("p", ("evaluate",))]
    evaluate = policy.evaluate
    assert policy.evaluate({"region": "S"})[0].reason == "no-allow:p"
    assert policy.decide({"region": "S"}).reason == "no-allow:p"
    assert built == [("p", ("evaluate",)), ("p", ("decide",))]
    assert "def evaluate(r):" in policy.source
    assert "def project(r):" in policy.source
    assert built[-1] == ("p", codegen.FUNCTIONS)
    assert policy.evaluate is evaluate
    assert policy.project({"region": "N"}) == {}
    assert policy.gate({"region": "N"}) is None
    assert len(built) == 3
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        policy.nothing  # noqa: B018


# --- errors at compile time --------------------------------------------------------------


def test_the_hash_mask_needs_the_network_key_at_compile_time() -> None:
    policy = make_policy(rules=(allow("all"),), fields={"email": mask("hash")})
    with pytest.raises(PolicyError, match="the hash mask needs the network's hash key") as info:
        compile_policy(policy)
    assert "connector credentials set network hash_key" in (info.value.hint or "")
    assert compile_policy(policy, context=KEY).project({"email": "a@b"})["email"]


def test_an_unknown_mask_is_reported_with_file_and_line() -> None:
    policy = make_policy(rules=(allow("all"),), fields={"phone": mask("last5", line=15)})
    with pytest.raises(
        PolicyError,
        match=r"p\.yaml:15: unknown mask 'last5' for phone; "
        r"did you mean 'last4'\?",
    ):
        compile_policy(policy)


def test_a_bad_mask_parameter_is_reported_with_file_and_line() -> None:
    policy = make_policy(rules=(allow("all"),), fields={"phone": mask("truncate", 0, 8)})
    with pytest.raises(PolicyError, match=r"p\.yaml:8: phone: the truncate mask takes"):
        compile_policy(policy)


def test_a_failing_mask_rejects_the_record_without_quoting_its_value() -> None:
    def fragile(param: Any, context: Any) -> Any:
        def function(value: Any, record: Any) -> Any:
            raise ValueError(f"cannot mask {value}")

        return function

    policy = make_policy(rules=(allow("all"),), fields={"phone": mask("fragile")})
    compiled = compile_policy(policy, masks={"fragile": fragile})
    with pytest.raises(RecordRejected) as info:
        compiled.evaluate(person())
    assert "0123" not in str(info.value)
    assert "fragile mask failed on field phone" in str(info.value)
    assert info.value.__cause__ is None
    assert info.value.__context__ is None


def test_the_content_hash_covers_the_chain() -> None:
    alone = compile_policy(organizers())
    assert alone.content_hash == "hash-of-organizers-north"
    chained = compile_policy(organizers(narrows=floor_policy()))
    assert chained.content_hash not in ("hash-of-organizers-north", "hash-of-floor")
    assert len(chained.content_hash) == 64
