"""`when:` conditions: every operator and shorthand parses into the neutral query tree."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from connector_core.policy.loader import load_policy
from connector_core.policy.models import RelativeTime
from connector_core.query import All, AnyOf, Compare, Condition, Not, matches

PURPOSES = ["contact_me", "local_organizing", "public_map"]


def condition_of(folder: Path, when: str) -> Condition | None:
    """Load a one-rule policy whose condition is the YAML flow mapping `when`."""
    path = folder / "policy.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        policy: test
        require_consent: [contact_me]
        rules:
          - allow: the rule
            when: {when}
        """)
    )
    policy = load_policy(path, purposes=PURPOSES)
    return policy.rules[0].condition


# (id, the `when:` value, the query tree it parses into)
CASES: list[tuple[str, str, Condition]] = [
    ("eq-shorthand", "{region: North}", Compare("region", "eq", "North")),
    ("eq", "{region: {eq: North}}", Compare("region", "eq", "North")),
    ("ne", "{region: {ne: North}}", Compare("region", "ne", "North")),
    ("null-shorthand", "{city: null}", Compare("city", "exists", False)),
    ("eq-null", "{city: {eq: null}}", Compare("city", "exists", False)),
    ("ne-null", "{city: {ne: null}}", Compare("city", "exists", True)),
    ("in", "{region: {in: [North, East]}}", Compare("region", "in", ("North", "East"))),
    ("not-in", "{region: {not_in: [South]}}", Compare("region", "not_in", ("South",))),
    ("any-of", "{groups: {any_of: [a, b]}}", Compare("groups", "any_of", ("a", "b"))),
    ("all-of", "{tags: {all_of: [a, b]}}", Compare("tags", "all_of", ("a", "b"))),
    (
        "list-shorthand-means-contains",
        "{tags: volunteer}",
        Compare("tags", "any_of", ("volunteer",)),
    ),
    ("exists", "{email: {exists: true}}", Compare("email", "exists", True)),
    ("gt", "{latitude: {gt: 53}}", Compare("latitude", "gt", 53)),
    ("gte", "{latitude: {gte: 53.5}}", Compare("latitude", "gte", 53.5)),
    ("lt", "{birth_date: {lt: 1990-01-31}}", Compare("birth_date", "lt", "1990-01-31")),
    (
        "lte-quoted-date",
        "{birth_date: {lte: '1990-01-31'}}",
        Compare("birth_date", "lte", "1990-01-31"),
    ),
    (
        "datetime",
        "{modified_at: {gte: '2024-05-01T10:00:00+00:00'}}",
        Compare("modified_at", "gte", "2024-05-01T10:00:00+00:00"),
    ),
    (
        "starts-with",
        "{postal_code: {starts_with: LS}}",
        Compare("postal_code", "starts_with", "LS"),
    ),
    (
        "days-ago",
        "{modified_at: {gte: {days_ago: 365}}}",
        Compare("modified_at", "gte", RelativeTime(365.0)),
    ),
    (
        "days-ago-fraction",
        "{birth_date: {lt: {days_ago: 0.5}}}",
        Compare("birth_date", "lt", RelativeTime(0.5)),
    ),
    ("boolean", "{do_not_phone: false}", Compare("do_not_phone", "eq", False)),
    (
        "consent-true",
        "{consent.public_map: true}",
        Compare("consent.public_map.granted", "eq", True),
    ),
    (
        "consent-false-matches-no-evidence",
        "{consent.public_map: false}",
        Compare("consent.public_map.granted", "ne", True),
    ),
    (
        "consent-ne-false",
        "{consent.public_map: {ne: false}}",
        Compare("consent.public_map.granted", "eq", True),
    ),
    (
        "consent-exists",
        "{consent.public_map: {exists: true}}",
        Compare("consent.public_map.granted", "exists", True),
    ),
    (
        "extra",
        "{extra.civicrm.skill: carpentry}",
        Compare("extra.civicrm.skill", "eq", "carpentry"),
    ),
    (
        "mapping-entries-are-anded",
        "{region: North, do_not_phone: false}",
        All((Compare("region", "eq", "North"), Compare("do_not_phone", "eq", False))),
    ),
    (
        "operators-are-anded",
        "{latitude: {gt: 53, lt: 55}}",
        All((Compare("latitude", "gt", 53), Compare("latitude", "lt", 55))),
    ),
    (
        "all-is-flattened",
        "{all: [{region: North}, {latitude: {gt: 53, lt: 55}}], city: Leeds}",
        All(
            (
                Compare("region", "eq", "North"),
                Compare("latitude", "gt", 53),
                Compare("latitude", "lt", 55),
                Compare("city", "eq", "Leeds"),
            )
        ),
    ),
    (
        "any",
        "{any: [{city: Leeds}, {postal_code: {starts_with: LS}}]}",
        AnyOf((Compare("city", "eq", "Leeds"), Compare("postal_code", "starts_with", "LS"))),
    ),
    ("any-of-one", "{any: [{city: Leeds}]}", Compare("city", "eq", "Leeds")),
    ("not", "{not: {do_not_phone: true}}", Not(Compare("do_not_phone", "eq", True))),
    (
        "nested",
        "{all: [{groups: {any_of: [climate]}}, {any: [{city: Leeds}, {not: {city: null}}]}]}",
        All(
            (
                Compare("groups", "any_of", ("climate",)),
                AnyOf((Compare("city", "eq", "Leeds"), Not(Compare("city", "exists", False)))),
            )
        ),
    ),
]


@pytest.mark.parametrize(("when", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_condition_parses_into_the_query_tree(tmp_path: Path, when: str, expected: Any) -> None:
    assert condition_of(tmp_path, when) == expected


def test_every_operator_is_covered() -> None:
    used = {c[2].op for c in CASES if isinstance(c[2], Compare)}
    assert used == {
        "eq", "ne", "in", "not_in", "any_of", "all_of", "exists",
        "gt", "gte", "lt", "lte", "starts_with",
    }  # fmt: skip


def test_rule_without_when_matches_everyone(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("policy: test\nrequire_consent: [contact_me]\nrules:\n  - allow: all\n")
    assert load_policy(path).rules[0].condition is None


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"consent": {"public_map": {"granted": True}}}, False),
        ({"consent": {"public_map": {"granted": False}}}, True),
        ({"consent": {}}, True),
        ({}, True),
    ],
    ids=["granted", "refused", "no-evidence", "no-consent-at-all"],
)
def test_consent_false_means_not_granted(
    tmp_path: Path, record: dict[str, Any], expected: bool
) -> None:
    condition = condition_of(tmp_path, "{consent.public_map: false}")
    assert matches(condition, record) is expected


def test_list_shorthand_matches_membership(tmp_path: Path) -> None:
    condition = condition_of(tmp_path, "{tags: volunteer}")
    assert matches(condition, {"tags": ["donor", "volunteer"]})
    assert not matches(condition, {"tags": ["donor"]})


def test_parsed_conditions_are_hashable(tmp_path: Path) -> None:
    condition = condition_of(tmp_path, "{region: {in: [North, East]}, groups: {any_of: [a]}}")
    assert hash(condition) == hash(
        condition_of(tmp_path, "{region: {in: [North, East]}, groups: {any_of: [a]}}")
    )
