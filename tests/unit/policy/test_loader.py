"""Policy files: every mistake is reported with its line, column and a fix; chains load."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from connector_core.errors import ConfigValidationError, ExitCode, PolicyError
from connector_core.hookspecs import MaskFactory
from connector_core.masks import BUILTIN_MASKS, MaskContext, MaskFunction
from connector_core.policy.loader import PolicyValidationError, load_policy
from connector_core.policy.models import FieldOutcome
from connector_core.policy.schema import known_classifications, policy_json_schema
from connector_core.query import Compare
from connector_core.records import FIELDS

PURPOSES = ["contact_me", "local_organizing", "public_map"]
EXTRAS = ["extra.civicrm.skill"]


def write(folder: Path, text: str, name: str = "policy.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def problems_of(path: Path, **kwargs: Any) -> list[str]:
    kwargs.setdefault("purposes", PURPOSES)
    kwargs.setdefault("extra_fields", EXTRAS)
    with pytest.raises(PolicyValidationError) as info:
        load_policy(path, **kwargs)
    return [str(p) for p in info.value.problems]


def warnings_of(path: Path, **kwargs: Any) -> list[str]:
    policy = load_policy(path, purposes=PURPOSES, **kwargs)
    assert all(w.severity == "warning" for w in policy.warnings)
    return [str(w) for w in policy.warnings]


# (id, policy file, expected "line:col: message" for each problem, in order)
CASES: list[tuple[str, str, list[str]]] = [
    (
        "unknown-field",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: everyone
            when: {regoin: North}
        """,
        ["5:12: unknown field 'regoin'; did you mean 'region'?"],
    ),
    (
        "unknown-field-deep-inside-combinators",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: everyone
            when:
              all:
                - region: North
                - any: [{city: Leeds}, {postcode: {starts_with: LS}}]
        """,
        ["8:33: unknown field 'postcode'; did you mean 'postal_code'?"],
    ),
    (
        "undeclared-purpose-in-require-consent",
        """\
        policy: p
        require_consent: [contact_me, local_organising]
        rules:
          - allow: everyone
        """,
        [
            "2:31: require_consent: consent purpose 'local_organising' is not declared in "
            "connector.yaml; did you mean 'local_organizing'?"
        ],
    ),
    (
        "malformed-purpose-name",
        """\
        policy: p
        require_consent: [Contact Me]
        rules:
          - allow: x
        """,
        [
            "2:19: require_consent: consent purpose 'Contact Me' is not a purpose name "
            "(lowercase letters, digits and '_')"
        ],
    ),
    (
        "undeclared-purpose-in-condition",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: map people
            when: {consent.public_mapp: true}
        """,
        [
            "5:12: consent purpose 'public_mapp' is not declared in connector.yaml; "
            "did you mean 'public_map'?"
        ],
    ),
    (
        "condition-on-consent-itself",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: x
            when: {consent: {exists: true}}
        """,
        ["5:12: a condition on consent names a purpose, e.g. `consent.contact_me: true`"],
    ),
    (
        "unknown-extra-field",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: skilled
            when: {extra.civicrm.skil: carpentry}
        """,
        ["5:12: unknown custom field 'extra.civicrm.skil'; did you mean 'extra.civicrm.skill'?"],
    ),
    (
        "unknown-operator",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: recent
            when:
              modified_at: {gtee: 2024-01-01}
        """,
        ["6:21: unknown operator 'gtee'; did you mean 'gte'?"],
    ),
    (
        "days-ago-written-as-an-operator",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: recent
            when:
              modified_at: {days_ago: 30}
        """,
        [
            "6:21: unknown operator 'days_ago'; days_ago is a value: "
            "write e.g. `gte: {days_ago: 30}`"
        ],
    ),
    (
        "order-on-a-list-field",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: many groups
            when: {groups: {gt: 3}}
        """,
        ["5:21: gt compares numbers, dates and times; groups is a list"],
    ),
    (
        "order-on-a-boolean-field",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: x
            when: {do_not_phone: {lt: true}}
        """,
        ["5:27: lt compares numbers, dates and times; do_not_phone is true or false"],
    ),
    (
        "any-of-on-a-single-value-field",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: northerners
            when: {region: {any_of: [North, Yorkshire]}}
        """,
        ["5:21: any_of works on list fields such as groups and tags; region is text, use in"],
    ),
    (
        "eq-on-a-list-field",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: x
            when: {tags: {eq: volunteer}}
        """,
        ["5:19: tags is a list; use any_of (at least one of them) or all_of (every one)"],
    ),
    (
        "starts-with-on-a-number",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: x
            when: {latitude: {starts_with: "53"}}
        """,
        ["5:23: starts_with works on text; latitude is a number"],
    ),
    (
        "in-with-a-single-value",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: x
            when: {region: {in: North}}
        """,
        ["5:25: in takes a list, e.g. `in: ['North']`, not 'North'"],
    ),
    (
        "exists-with-text",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: x
            when: {email: {exists: "yes"}}
        """,
        ["5:28: exists takes true or false, not 'yes'"],
    ),
    (
        "boolean-field-compared-with-text",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - forbid: deceased
            when: {is_deceased: "yes"}
        """,
        ["5:25: is_deceased is true or false, not 'yes'"],
    ),
    (
        "number-field-compared-with-text",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: x
            when: {latitude: {gte: "53.5"}}
        """,
        ["5:28: latitude is a number, not '53.5'; remove the quotes"],
    ),
    (
        "text-field-compared-with-a-number",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: x
            when: {postal_code: 12345}
        """,
        ["5:25: postal_code holds text; put 12345 in quotes"],
    ),
    (
        "list-operand-item-is-not-text",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: x
            when: {groups: {any_of: [climate, 2024]}}
        """,
        ["5:39: groups holds text; put 2024 in quotes"],
    ),
    (
        "null-in-a-list",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: x
            when: {region: {in: [North, null]}}
        """,
        [
            "5:33: region: null is not a value to compare with; test for an empty field with "
            "`exists: false`"
        ],
    ),
    (
        "date-not-iso",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: x
            when: {birth_date: {lt: 01/02/1990}}
        """,
        ["5:29: birth_date is a date; write YYYY-MM-DD, not '01/02/1990'"],
    ),
    (
        "days-ago-on-a-number-field",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: x
            when: {latitude: {gt: {days_ago: 3}}}
        """,
        ["5:27: days_ago works only on dates and times; latitude is a number"],
    ),
    (
        "days-ago-negative",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: x
            when: {modified_at: {gt: {days_ago: -3}}}
        """,
        ["5:41: days_ago takes a number of days from 0 to 36525 (100 years), not -3"],
    ),
    (
        "days-ago-beyond-any-date",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: x
            when: {modified_at: {gte: {days_ago: 800000}}}
        """,
        ["5:42: days_ago takes a number of days from 0 to 36525 (100 years), not 800000"],
    ),
    (
        "days-ago-with-eq",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: x
            when: {modified_at: {eq: {days_ago: 3}}}
        """,
        ["5:30: days_ago works only with gt, gte, lt and lte, not eq"],
    ),
    (
        "consent-with-an-order-operator",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: x
            when: {consent.contact_me: {gt: false}}
        """,
        ["5:33: consent.contact_me is true or false; use eq, ne or exists, not gt"],
    ),
    (
        "bare-list",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: x
            when: {region: [North, Yorkshire]}
        """,
        [
            "5:20: region: a bare list is not a value to compare with; "
            "use in: [...] to match any of them"
        ],
    ),
    (
        "bare-list-on-a-list-field",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: x
            when: {groups: [a, b]}
        """,
        [
            "5:20: groups: a bare list is not a value to compare with; use any_of: [...] "
            "(at least one of them) or all_of: [...] (every one)"
        ],
    ),
    (
        "empty-all",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: x
            when: {all: []}
        """,
        ["5:12: `all: []` is empty; give it at least one condition"],
    ),
    (
        "empty-any",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: x
            when:
              any: []
        """,
        ["6:7: `any: []` is empty; give it at least one condition"],
    ),
    (
        "not-a-condition",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: x
            when:
              not: region
        """,
        ["6:12: a condition is a mapping such as `region: North`, not 'region'"],
    ),
    (
        "operator-mapping-empty",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: x
            when: {region: {}}
        """,
        ["5:20: `region: {}` has no operator; write e.g. `region: {eq: VALUE}`"],
    ),
    (
        "duplicate-rule-name",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: northerners
            when: {region: North}
          - forbid: northerners
            when: {region: Yorkshire}
        """,
        [
            "6:13: duplicate rule name 'northerners' (first used on line 4); explain and "
            "reports tell rules apart by name"
        ],
    ),
    (
        "empty-rule-name",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: ""
        """,
        ["4:12: a rule needs a name that says why it exists, e.g. `allow: members in the North`"],
    ),
    (
        "rule-both-allow-and-forbid",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: x
            forbid: y
        """,
        ["4:5: rules[0]: a rule has exactly one of `allow: NAME` or `forbid: NAME`"],
    ),
    (
        "misspelled-rule-key",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: x
            wen: {region: North}
        """,
        ["5:5: unknown key 'wen' in rules[0]; did you mean 'when'?"],
    ),
    (
        "unknown-mask",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: everyone
        fields:
          phone: last5
        """,
        ["6:10: fields.phone: unknown mask 'last5'; did you mean 'last4'?"],
    ),
    (
        "unknown-mask-with-a-parameter",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: everyone
        fields:
          postal_code: {truncat: 3}
        """,
        ["6:17: fields.postal_code: unknown mask 'truncat'; did you mean 'truncate'?"],
    ),
    (
        "bad-mask-parameter",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: everyone
        fields:
          postal_code: {truncate: three}
        """,
        ["6:27: fields.postal_code: the truncate mask takes a whole number 1 or more, not 'three'"],
    ),
    (
        "mask-missing-its-parameter",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: everyone
        fields:
          postal_code: truncate
        """,
        [
            "6:16: fields.postal_code: the truncate mask needs a parameter; write "
            "`postal_code: {truncate: PARAMETER}` (the truncate mask takes a whole number "
            "1 or more, not None)"
        ],
    ),
    (
        "outcome-with-a-parameter",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: everyone
        fields:
          city: {show: true}
        """,
        ["6:10: fields.city: show takes no parameter; write `city: show`"],
    ),
    (
        "misspelled-field-outcome",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: x
        fields:
          frist_name: show
        """,
        ["6:3: fields: unknown field or classification 'frist_name'; did you mean 'first_name'?"],
    ),
    (
        "classification-matching-no-field",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: x
        fields:
          pii.finance: absent
        """,
        [
            "6:3: fields: classification 'pii.finance' matches no canonical field; "
            "did you mean 'pii.name'?"
        ],
    ),
    (
        "shown-inside-a-forbidden-classification",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: x
        fields:
          pii.location: forbid
          city: show
          pii.location.coarse: {truncate: 3}
        """,
        [
            "7:3: fields: city is shown here, but pii.location (line 6) forbids it, and forbid "
            "binds every field of the classification; use `pii.location: absent` to allow "
            "exceptions",
            "8:3: fields: pii.location.coarse is masked here, but pii.location (line 6) forbids "
            "it, and forbid binds every field of the classification; use `pii.location: absent` "
            "to allow exceptions",
        ],
    ),
    (
        "policy-name-with-spaces",
        """\
        policy: North Organizers
        require_consent: [contact_me]
        rules:
          - allow: x
        """,
        [
            "1:9: policy: 'North Organizers' is not a policy name; use lowercase letters, "
            "digits, '-' and '_', e.g. north-organizers"
        ],
    ),
    (
        "approval-quorum-too-high",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: x
        approval:
          required_for: [first_share]
          approvers: [alice]
          quorum: 2
        """,
        ["6:3: approval: quorum 2 is more than the 1 approver(s) listed"],
    ),
    (
        "approval-of-deletes",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: x
        approval:
          required_for: [first_share, deletes]
          approvers: [alice]
        """,
        [
            "6:17: approval.required_for: `deletes` cannot need approval: take-backs "
            "(withdrawn consent, records that left the policy's scope) never wait for anyone; "
            "remove `deletes` (the job's max_delete option holds back unusually many deletes "
            "instead)"
        ],
    ),
    (
        "approval-bad-duration",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: x
        approval:
          required_for: [first_share]
          approvers: [alice]
          escalate_after: two days
          fallback_approvers: [bob]
        """,
        [
            "8:19: approval.escalate_after: 'two days' is not a duration; write a number and "
            "a unit, e.g. 48h or 2d"
        ],
    ),
    (
        "every-problem-at-once",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: x
            when: {regoin: North, groups: {any_of: climate}}
        fields:
          phone: last5
        """,
        [
            "5:12: unknown field 'regoin'; did you mean 'region'?",
            "5:44: any_of takes a list, e.g. `any_of: ['climate']`, not 'climate'",
            "7:10: fields.phone: unknown mask 'last5'; did you mean 'last4'?",
        ],
    ),
    (
        "duplicate-key",
        """\
        policy: p
        fields: {city: show}
        require_consent: [contact_me]
        fields: {city: absent}
        """,
        ["4:1: duplicate key 'fields' (first defined on line 2)"],
    ),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_policy_is_reported_at_its_line(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    path = write(tmp_path, text)
    assert problems_of(path) == [f"{path}:{line}" for line in expected]


def test_error_is_a_policy_and_config_error_with_exit_code_3(tmp_path: Path) -> None:
    path = write(tmp_path, "policy: p\nrules: [{allow: x, when: {regoin: North}}]\n")
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert isinstance(info.value, ConfigValidationError)
    assert info.value.exit_code == ExitCode.CONFIG
    assert "connector schema policy" in (info.value.hint or "")


def test_missing_file(tmp_path: Path) -> None:
    assert problems_of(tmp_path / "nope.yaml") == [f"{tmp_path / 'nope.yaml'}: file not found"]


# (id, policy file, expected warnings "line:col: message")
WARNINGS: list[tuple[str, str, list[str]]] = [
    (
        "equal-to-two-values",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: x
            when:
              all: [{region: North}, {region: South}]
        """,
        [
            "6:31: rule 'x' can never match: region cannot satisfy `eq: 'North'` and "
            "`eq: 'South'` at once"
        ],
    ),
    (
        "in-nothing",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: x
            when: {region: {in: []}}
        """,
        ["5:21: rule 'x' can never match: `in: []` matches nothing"],
    ),
    (
        "empty-range",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: x
            when: {latitude: {gt: 5, lt: 3}}
        """,
        ["5:30: rule 'x' can never match: latitude cannot satisfy `gt: 5` and `lt: 3` at once"],
    ),
    (
        "empty-relative-range",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: x
            when: {modified_at: {gte: {days_ago: 30}, lt: {days_ago: 60}}}
        """,
        [
            "5:47: rule 'x' can never match: modified_at cannot satisfy "
            "`gte: {days_ago: 30}` and `lt: {days_ago: 60}` at once"
        ],
    ),
    (
        "empty-and-a-value",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: x
            when: {email: null, all: [{email: {starts_with: a}}]}
        """,
        [
            "5:40: rule 'x' can never match: email cannot satisfy `exists: false` and "
            "`starts_with: 'a'` at once"
        ],
    ),
    (
        "consent-false-behind-a-consent-gate",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: x
            when: {consent.contact_me: false}
        """,
        [
            "5:12: rule 'x' can never match: consent.contact_me: false never holds, because "
            "require_consent already withholds everyone without contact_me"
        ],
    ),
    (
        "no-allow-rule-and-no-consent",
        """\
        policy: p
        rules:
          - forbid: x
        """,
        [
            "1:1: require_consent is empty: this policy shares without any consent check; "
            "is that intended?",
            "2:1: this policy shares nothing: it has no allow rule (default deny)",
        ],
    ),
    (
        "satisfiable-ranges-are-fine",
        """\
        policy: p
        require_consent: [contact_me]
        rules:
          - allow: x
            when:
              modified_at: {lte: {days_ago: 30}, gt: {days_ago: 60}}
              latitude: {gte: 5, lte: 5}
              region: {in: [North, East], not_in: [East]}
        """,
        [],
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in WARNINGS], ids=[c[0] for c in WARNINGS]
)
def test_suspicious_policy_loads_with_warnings(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    path = write(tmp_path, text)
    assert warnings_of(path) == [f"{path}:{line}" for line in expected]


def test_without_a_config_purposes_are_not_checked(tmp_path: Path) -> None:
    path = write(tmp_path, "policy: p\nrequire_consent: [anything]\nrules: [{allow: x}]\n")
    policy = load_policy(path, purposes=None, extra_fields=None)
    assert policy.require_consent == ("anything",)
    assert policy.warnings == ()


def test_any_well_formed_extra_field_without_a_list(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        policy: p
        require_consent: [contact_me]
        rules: [{allow: x, when: {extra.nextcloud.team: {in: [a, b]}}}]
        fields: {extra.nextcloud.team: show}
        """,
    )
    policy = load_policy(path)
    assert policy.rules[0].condition == Compare("extra.nextcloud.team", "in", ("a", "b"))
    assert policy.fields["extra.nextcloud.team"].kind == "show"


# --- fields ----------------------------------------------------------------------------


def test_fields_and_classifications_are_kept_apart(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        policy: p
        require_consent: [contact_me]
        rules: [{allow: x}]
        fields:
          first_name: show
          phone: last4
          postal_code: {truncate: 3}
          pii.location: absent
          pii.location.coarse: show
          street_address: forbid
          email: null
        """,
    )
    policy = load_policy(path)
    assert policy.fields == {
        "first_name": FieldOutcome("show", line=5),
        "phone": FieldOutcome("mask", "last4", None, line=6),
        "postal_code": FieldOutcome("mask", "truncate", 3, line=7),
        "street_address": FieldOutcome("forbid", line=10),
        "email": FieldOutcome("mask", "null", None, line=11),
    }
    assert policy.classes == {
        "pii.location": FieldOutcome("absent", line=8),
        "pii.location.coarse": FieldOutcome("show", line=9),
    }


def _strict_mask(param: Any, context: MaskContext) -> MaskFunction:
    if param not in ("low", "high"):
        raise ValueError(f"the fuzz mask takes low or high, not {param!r}")
    return lambda value, record: value


def test_plugin_masks_are_checked_with_their_factory(tmp_path: Path) -> None:
    masks: dict[str, MaskFactory] = {**BUILTIN_MASKS, "fuzz": _strict_mask}
    good = write(tmp_path, "policy: p\nrules: [{allow: x}]\nfields: {phone: {fuzz: low}}\n")
    assert load_policy(good, masks=masks).fields["phone"] == FieldOutcome("mask", "fuzz", "low", 3)
    bad = write(tmp_path, "policy: p\nrules: [{allow: x}]\nfields: {phone: {fuzz: mid}}\n")
    assert problems_of(bad, masks=masks) == [
        f"{bad}:3:24: fields.phone: the fuzz mask takes low or high, not 'mid'"
    ]
    assert problems_of(good) == [
        f"{good}:3:18: fields.phone: unknown mask 'fuzz'; write one of show, absent, forbid, "
        + ", ".join(BUILTIN_MASKS)
    ]


# --- narrows chains and the network floor ------------------------------------------------

FLOOR = """\
    policy: floor
    require_consent: [contact_me]
    rules:
      - allow: anyone
    fields:
      pii.name: show
      phone: last4
      street_address: forbid
      pii.sensitive: forbid
      city: absent
    """


def test_floor_is_the_root_of_every_chain(tmp_path: Path) -> None:
    floor = write(tmp_path, FLOOR, "floor.yaml")
    chapter = write(tmp_path, "policy: chapter\nrules: [{allow: x}]\n", "chapter.yaml")
    child = write(tmp_path, "policy: child\nnarrows: chapter.yaml\nrules: [{allow: y}]\n")
    policy = load_policy(child, floor=floor)
    assert [p.name for p in policy.chain()] == ["child", "chapter", "floor"]
    assert [p.path for p in policy.chain()] == [child, chapter, floor]
    assert load_policy(floor, floor=floor).narrows is None
    assert load_policy(child).chain()[-1].name == "chapter"


def test_narrows_is_relative_to_the_policy_file(tmp_path: Path) -> None:
    (tmp_path / "shared").mkdir()
    write(tmp_path, FLOOR, "shared/floor.yaml")
    (tmp_path / "team").mkdir()
    child = write(tmp_path, "policy: c\nnarrows: ../shared/floor.yaml\nrules: [{allow: y}]\n",
                  "team/c.yaml")  # fmt: skip
    parent = load_policy(child).narrows
    assert parent is not None
    assert parent.path == tmp_path / "shared" / "floor.yaml"


def test_narrows_cycle_names_the_files(tmp_path: Path) -> None:
    a = write(tmp_path, "policy: a\nnarrows: b.yaml\nrules: [{allow: x}]\n", "a.yaml")
    b = write(tmp_path, "policy: b\nnarrows: a.yaml\nrules: [{allow: x}]\n", "b.yaml")
    assert problems_of(a) == [
        f"{b}:2:10: narrows: the policies form a cycle (a.yaml -> b.yaml -> a.yaml); "
        "a policy cannot narrow itself"
    ]
    me = write(tmp_path, "policy: me\nnarrows: me.yaml\nrules: [{allow: x}]\n", "me.yaml")
    assert problems_of(me) == [
        f"{me}:2:10: narrows: the policies form a cycle (me.yaml -> me.yaml); "
        "a policy cannot narrow itself"
    ]


def test_problems_of_the_parent_are_reported_with_the_childs(tmp_path: Path) -> None:
    floor = write(tmp_path, "policy: floor\nrules: [{allow: x, when: {cty: Leeds}}]\n", "f.yaml")
    child = write(tmp_path, "policy: c\nrules: [{allow: x}]\nfields: {phnoe: show}\n")
    assert problems_of(child, floor=floor) == [
        f"{floor}:2:27: unknown field 'cty'; did you mean 'city'?",
        f"{child}:3:10: fields: unknown field or classification 'phnoe'; did you mean 'phone'?",
    ]


def test_showing_what_the_floor_forbids_is_an_error_naming_it(tmp_path: Path) -> None:
    floor = write(tmp_path, FLOOR, "floor.yaml")
    child = write(
        tmp_path,
        """\
        policy: c
        rules: [{allow: x}]
        fields:
          street_address: show
          pii.sensitive: show
          birth_date: year_only
          pii.location: show
        """,
    )
    assert problems_of(child, floor=floor) == [
        f"{child}:4:3: fields: street_address cannot be shown or masked: {floor}:8 forbids it "
        "(street_address: forbid), and this policy narrows it",
        f"{child}:5:3: fields: pii.sensitive cannot be shown or masked: {floor}:9 forbids all "
        "its fields (pii.sensitive: forbid), and this policy narrows it",
        f"{child}:6:3: fields: birth_date cannot be shown or masked: {floor}:9 forbids it "
        "(pii.sensitive: forbid), and this policy narrows it",
    ]


def test_fields_the_parent_withholds_stay_withheld(tmp_path: Path) -> None:
    floor = write(tmp_path, FLOOR, "floor.yaml")
    child = write(
        tmp_path,
        """\
        policy: c
        rules: [{allow: x}]
        fields:
          first_name: show
          phone: show
          city: show
          email: show
          pii.location: show
        """,
    )
    assert warnings_of(child, floor=floor) == [
        f"{child}:5:3: fields: phone stays masked: {floor} masks it (line 7: last4), and this "
        "policy narrows it",
        f"{child}:6:3: fields: city stays absent: {floor} makes it absent (line 10), and this "
        "policy narrows it",
        f"{child}:7:3: fields: email stays absent: {floor} does not list it, and this policy "
        "narrows it",
        f"{child}:8:3: fields: pii.location stays absent: {floor} shares none of its fields, "
        "and this policy narrows it",
    ]


def test_content_hash_follows_the_whole_chain(tmp_path: Path) -> None:
    floor = write(tmp_path, FLOOR, "floor.yaml")
    child = write(tmp_path, "policy: c\nrules: [{allow: x}]\nfields: {first_name: show}\n")
    first = load_policy(child, floor=floor).content_hash
    assert load_policy(child, floor=floor).content_hash == first
    assert load_policy(child).content_hash != first
    floor.write_text(floor.read_text() + "# a comment is an edit too\n")
    assert load_policy(child, floor=floor).content_hash != first
    assert re.fullmatch(r"[0-9a-f]{64}", first)


# --- the JSON schema ---------------------------------------------------------------------


def test_known_classifications_include_every_prefix() -> None:
    classes = known_classifications()
    assert {"pii", "pii.location", "pii.location.coarse", "pii.name", "consent"} <= set(classes)
    assert classes == sorted(set(classes))
    assert {f.classification for f in FIELDS.values()} <= set(classes)


def test_schema_is_draft_2020_12_with_descriptions() -> None:
    schema = policy_json_schema(BUILTIN_MASKS)
    assert json.loads(json.dumps(schema)) == schema
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["required"] == ["policy"]
    assert schema["additionalProperties"] is False
    for name, sub in schema["properties"].items():
        assert sub.get("description"), name
    for name, sub in schema["$defs"].items():
        assert sub.get("description"), name


def test_schema_refs_resolve() -> None:
    schema = policy_json_schema(BUILTIN_MASKS)
    refs = re.findall(r'"\$ref": "#/\$defs/([^"]+)"', json.dumps(schema))
    assert refs
    assert set(refs) <= set(schema["$defs"])


def test_schema_offers_every_field_operator_and_mask_for_autocomplete() -> None:
    schema = policy_json_schema([*BUILTIN_MASKS, "fuzz"])
    defs = schema["$defs"]
    condition = defs["Condition"]["properties"]
    assert {"all", "any", "not", "region", "groups", "modified_at"} <= set(condition)
    assert "consent" not in condition
    assert condition["region"]["$ref"] == "#/$defs/TextTest"
    operators = defs["TextTest"]["anyOf"][2]["properties"]
    assert {"eq", "ne", "in", "not_in", "exists", "starts_with"} == set(operators)
    assert "gte" in defs["DateTest"]["anyOf"][2]["properties"]
    assert set(defs["Fields"]["properties"]) == set(FIELDS) | set(known_classifications())
    outcomes = [c.get("const") for c in defs["Outcome"]["anyOf"]]
    assert {"show", "absent", "forbid", "last4", "fuzz"} <= set(outcomes)
    with_param = defs["Outcome"]["anyOf"][-1]
    assert "truncate" in with_param["propertyNames"]["enum"]


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = root["$defs"][schema["$ref"].removeprefix("#/$defs/")]
    return schema


def _matches(value: Any, schema: dict[str, Any], root: dict[str, Any]) -> bool:
    """A small JSON Schema check for the keywords this schema uses (jsonschema is absent)."""
    schema = _resolve(schema, root)
    if "const" in schema and value != schema["const"]:
        return False
    if isinstance(value, dict) and not set(schema.get("required", [])) <= set(value):
        return False
    if "anyOf" in schema and not any(_matches(value, s, root) for s in schema["anyOf"]):
        return False
    if "oneOf" in schema and sum(_matches(value, s, root) for s in schema["oneOf"]) != 1:
        return False
    kind = schema.get("type")
    if kind == "object":
        return isinstance(value, dict) and _object_matches(value, schema, root)
    if kind == "array":
        return isinstance(value, list) and all(_matches(v, schema["items"], root) for v in value)
    types = {"string": str, "boolean": bool, "null": type(None)}
    return kind not in types or isinstance(value, types[kind])


def _object_matches(value: dict[str, Any], schema: dict[str, Any], root: dict[str, Any]) -> bool:
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        sub = schema.get("properties", {}).get(key)
        for pattern, candidate in schema.get("patternProperties", {}).items():
            sub = sub or (candidate if re.search(pattern, key) else None)
        sub = extra if sub is None else sub
        if sub is False or (isinstance(sub, dict) and not _matches(item, sub, root)):
            return False
    return True


def test_a_valid_policy_matches_the_schema(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        policy: organizers-north
        require_consent: [local_organizing]
        rules:
          - allow: northern supporters
            when: {region: North}
          - allow: partner campaign members
            when:
              all:
                - groups: {any_of: [climate-campaign]}
                - any: [{city: Leeds}, {postal_code: {starts_with: "LS"}}]
                - not: {do_not_phone: true}
                - modified_at: {gte: {days_ago: 365}}
                - consent.public_map: true
                - extra.civicrm.skill: carpentry
        fields:
          first_name: show
          phone: last4
          postal_code: {truncate: 3}
          pii.location: absent
          street_address: forbid
          extra.civicrm.skill: show
        approval:
          required_for: [first_share]
          approvers: [alice, bob]
          escalate_after: 48h
          fallback_approvers: [data-team]
        """,
    )
    load_policy(path, purposes=PURPOSES, extra_fields=EXTRAS)
    schema = policy_json_schema(BUILTIN_MASKS)
    data = yaml.safe_load(path.read_text())
    assert _matches(data, schema, schema)
    assert not _matches({**data, "rulez": []}, schema, schema)
    assert not _matches({**data, "fields": {"phone": "last5"}}, schema, schema)
    assert not _matches(
        {**data, "rules": [{"allow": "x", "when": {"regoin": "N"}}]}, schema, schema
    )
