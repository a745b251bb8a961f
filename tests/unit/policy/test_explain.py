"""Explain: why a record is shared or withheld, and why each field is shown, masked or absent."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector_core.policy.compiler import Decision, compile_policy
from connector_core.policy.explain import explain, holds
from connector_core.policy.loader import load_policy
from connector_core.query import All, AnyOf, Compare, Not
from tests.unit.policy.strategies import KEY, NOW, consent, policies, records

FLOOR = """\
    policy: network-floor
    require_consent: [contact_me]
    rules:
      - allow: anyone contactable
      - forbid: deceased
        when: {is_deceased: true}
    fields:
      id: show
      pii.name: show
      pii.contact: show
      pii.location.coarse: show
      street_address: forbid
      affiliation: show
"""

NORTH = """\
    policy: organizers-north
    narrows: network-floor.yaml
    require_consent: [local_organizing]
    rules:
      - allow: supporters in the North
        when: {region: North}
      - allow: climate campaigners
        when: {groups: {any_of: [climate-campaign]}}
    fields:
      first_name: show
      last_name: show
      city: show
      phone: last4
"""


@pytest.fixture
def organizers(tmp_path: Path) -> Any:
    (tmp_path / "network-floor.yaml").write_text(textwrap.dedent(FLOOR))
    (tmp_path / "organizers-north.yaml").write_text(textwrap.dedent(NORTH))
    return compile_policy(load_policy(tmp_path / "organizers-north.yaml"))


def person(**changes: Any) -> dict[str, Any]:
    record = {
        "id": "7",
        "first_name": "Jane",
        "last_name": "Doe",
        "city": "Leeds",
        "region": "South",
        "groups": ["choir"],
        "phone": "+44 113 496 0123",
        "street_address": "1 Long Road",
        "consent": consent("contact_me", "local_organizing"),
    }
    return {**record, **changes}


def test_a_withheld_record_says_which_rules_failed_and_why(organizers: Any) -> None:
    text = explain(organizers, person()).render()
    assert text.splitlines()[0] == "Decision: withheld (no-allow:organizers-north)"
    assert "[x] contact_me (required by network-floor): granted (source civicrm)" in text
    assert "[x] local_organizing (required by organizers-north): granted" in text
    assert (
        "[ ] allow supporters in the North: did not match (organizers-north.yaml:5): "
        "region is 'South', not 'North'"
    ) in text
    assert "groups has none of ['climate-campaign']" in text
    assert "[x] allow anyone contactable: matched (network-floor.yaml:4)" in text


def test_a_shared_record_explains_every_field(organizers: Any) -> None:
    explanation = explain(organizers, person(region="North"))
    assert explanation.decision == Decision(
        True, "shared:supporters in the North", "supporters in the North"
    )
    fields = {s.subject: s.detail for s in explanation.steps if s.kind == "field"}
    assert fields["first_name"] == "shown by fields.first_name (organizers-north.yaml:10)"
    assert fields["phone"] == "masked with last4 by fields.phone (organizers-north.yaml:13)"
    assert fields["street_address"] == "forbidden by fields.street_address (network-floor.yaml:12)"
    assert fields["email"] == "absent: not listed in organizers-north"
    assert fields["consent"] == (
        "absent: consent is shared only when listed by name in organizers-north"
    )
    assert fields["region"] == "absent: not listed in organizers-north"
    assert explanation.projection == organizers.evaluate(person(region="North"))[1]
    assert "street_address" not in (explanation.projection or {})


def test_consent_and_forbid_steps(organizers: Any) -> None:
    no_consent = explain(organizers, person(consent={"contact_me": {"granted": False}}))
    assert no_consent.decision.reason == "consent:local_organizing"  # the leaf's gate first
    consent_steps = [s for s in no_consent.steps if s.kind == "consent"]
    assert [(s.subject, s.ok, s.detail) for s in consent_steps] == [
        ("local_organizing", False, "no evidence, so no consent"),
        ("contact_me", False, "not granted"),
    ]
    deceased = explain(organizers, person(region="North", is_deceased=True))
    assert deceased.decision.reason == "forbid:network-floor:deceased"
    assert deceased.projection is None
    assert "[x] forbid deceased: matched (network-floor.yaml:5): is_deceased is true" in (
        deceased.render()
    )


@pytest.mark.parametrize(
    ("condition", "record", "expected"),
    [
        (Compare("region", "eq", "North"), {}, (False, "region is missing, not 'North'")),
        (Compare("region", "ne", "North"), {"region": "North"}, (False, "region is 'North'")),
        (
            Compare("region", "in", ("North", "East")),
            {"region": "East"},
            (True, "region is 'East', one of ['North', 'East']"),
        ),
        (
            Compare("tags", "all_of", ("a", "b")),
            {"tags": ["a"]},
            (False, "tags does not have all of ['a', 'b']"),
        ),
        (Compare("email", "exists", True), {"email": ""}, (False, "email is missing or empty")),
        (
            Compare("latitude", "gt", 50),
            {"latitude": "north"},
            (False, "latitude is 'north', not after 50"),
        ),
        (
            All((Compare("region", "eq", "North"), Compare("city", "eq", "Leeds"))),
            {"region": "North", "city": "York"},
            (False, "city is 'York', not 'Leeds'"),
        ),
        (
            AnyOf((Compare("region", "eq", "North"), Compare("city", "eq", "Leeds"))),
            {"region": "North"},
            (True, "region is 'North'"),
        ),
        (
            Not(Compare("region", "eq", "North")),
            {"region": "North"},
            (False, "not (region is 'North')"),
        ),
        (None, {}, (True, "no condition, so every record")),
    ],
    ids=["missing", "ne", "in", "all_of", "exists", "type-mismatch", "all", "any", "not", "none"],
)
def test_why_a_condition_holds_or_not(condition: Any, record: Any, expected: Any) -> None:
    assert holds(condition, record) == expected


def test_long_values_are_shortened() -> None:
    _, why = holds(Compare("city", "eq", "x"), {"city": "y" * 500})
    assert len(why) < 100


@settings(max_examples=200, deadline=None)
@given(policies(), st.lists(st.one_of(records(), records(wild=True)), min_size=1, max_size=6))
def test_explain_agrees_with_the_compiled_policy(policy: Any, batch: list[Any]) -> None:
    compiled = compile_policy(policy, context=KEY, now=NOW)
    for record in batch:
        explanation = explain(compiled, record)
        assert (explanation.decision, explanation.projection) == compiled.evaluate(record)
        assert explanation.steps[-1].kind == "decision"
        assert explanation.render()
