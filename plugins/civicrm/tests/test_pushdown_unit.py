"""The condition tree becomes an APIv4 `where` that is never narrower than the condition."""

from __future__ import annotations

from connector_civicrm import CivicrmSettings
from connector_civicrm.mapping import DEFAULT_MAPPING
from connector_civicrm.pushdown import escape_like, to_where

from connector_core.query import All, AnyOf, Compare, Not

FIELDS = {"id": "id", **DEFAULT_MAPPING, "extra.civicrm.member": "Membership.level"}
SETTINGS = CivicrmSettings.model_validate(
    {
        "url": "https://crm.example.org",
        "api_key": {"secret": "api_key"},
        "consent": {
            "contact_me": {"field": "is_opt_out"},
            "partners": {"field": "Consent.partners"},
            "local": {"group": "Local organizing"},
        },
    }
)


def where(condition: object) -> list[object]:
    return to_where(condition, FIELDS, SETTINGS.consent)  # type: ignore[arg-type]


def test_nothing_to_push() -> None:
    assert where(None) == []
    assert where(Compare("groups", "any_of", ["A"])) == []


def test_simple_comparisons() -> None:
    assert where(Compare("city", "eq", "Berlin")) == [["address_primary.city", "=", "Berlin"]]
    assert where(Compare("do_not_email", "eq", False)) == [["do_not_email", "=", False]]
    assert where(Compare("latitude", "gte", 50.0)) == [  # a top-level AND is flattened
        ["address_primary.geo_code_1", "IS NOT NULL"],
        ["address_primary.geo_code_1", ">=", 50.0],
    ]
    assert where(Compare("email", "exists", True)) == [["email_primary.email", "IS NOT NULL"]]
    assert where(Compare("email", "exists", False)) == [["email_primary.email", "IS EMPTY"]]
    assert where(Compare("country", "in", ["DE", "FR"])) == []  # no options: kept local
    options = {"address_primary.country_id:abbr": {"DE": [1082], "FR": [1076]}}
    assert to_where(Compare("country", "in", ["DE", "FR"]), FIELDS, None, options) == [
        ["address_primary.country_id", "IN", [1076, 1082]]
    ]


def test_ne_on_nullable_numbers_keeps_nulls() -> None:
    assert where(Compare("latitude", "ne", 1.5)) == [
        [
            "OR",
            [["address_primary.geo_code_1", "!=", 1.5], ["address_primary.geo_code_1", "IS NULL"]],
        ]
    ]


def test_text_ne_and_order_are_declined() -> None:
    assert where(Compare("city", "ne", "Berlin")) == []
    assert where(Compare("last_name", "gt", "M")) == []


def test_starts_with_escapes_wildcards() -> None:
    assert escape_like("50%_a\\b") == "50\\%\\_a\\\\b"
    assert where(Compare("postal_code", "starts_with", "10_")) == [
        ["address_primary.postal_code", "LIKE", "10\\_%"]
    ]


def test_ids_are_numbers() -> None:
    assert where(Compare("id", "in", ["3", "7"])) == [["id", "IN", [3, 7]]]
    assert where(Compare("id", "eq", "sample")) == [["id", "IN", []]]


def test_declined_parts_of_all_are_dropped() -> None:
    condition = All([Compare("city", "eq", "Berlin"), Compare("groups", "any_of", ["A"])])
    assert where(condition) == [["address_primary.city", "=", "Berlin"]]


def test_a_declined_part_declines_the_whole_any() -> None:
    condition = AnyOf([Compare("city", "eq", "Berlin"), Compare("groups", "any_of", ["A"])])
    assert where(condition) == []
    both = AnyOf([Compare("city", "eq", "Berlin"), Compare("do_not_sms", "eq", True)])
    assert where(both) == [
        ["OR", [["address_primary.city", "=", "Berlin"], ["do_not_sms", "=", True]]]
    ]
    assert where(AnyOf([])) == [["id", "IN", []]]


def test_not_only_around_exact_translations() -> None:
    assert where(Not(Compare("do_not_phone", "eq", True))) == [
        ["NOT", [["do_not_phone", "=", True]]]
    ]
    # MySQL's = on text ignores case: NOT of it would drop rows Python keeps.
    assert where(Not(Compare("city", "eq", "Berlin"))) == []


def test_consent_flags_and_custom_fields() -> None:
    assert where(Compare("consent.contact_me.granted", "eq", True)) == [["is_opt_out", "=", False]]
    assert where(Compare("consent.contact_me.granted", "eq", False)) == [["is_opt_out", "=", True]]
    assert where(Compare("consent.partners.granted", "eq", True)) == [
        ["Consent.partners", "=", True]
    ]
    assert where(Not(Compare("consent.partners.granted", "eq", True))) == []
    assert where(Compare("consent.local.granted", "eq", True)) == []  # group status: local


def test_a_label_becomes_every_id_that_carries_it() -> None:
    """CiviCRM turns a label in a where into one id; two Limburgs share the label."""
    options = {"address_primary.state_province_id:label": {"Limburg": [1442, 5025], "Kent": [2600]}}
    region = "address_primary.state_province_id"
    assert to_where(Compare("region", "eq", "Limburg"), FIELDS, None, options) == [
        [region, "IN", [1442, 5025]]
    ]
    assert to_where(Compare("region", "in", ["Kent", "Limburg"]), FIELDS, None, options) == [
        [region, "IN", [1442, 2600, 5025]]
    ]
    assert to_where(Compare("region", "eq", "Atlantis"), FIELDS, None, options) == []
    assert to_where(Compare("region", "eq", "Limburg"), FIELDS) == []  # no options: local
    assert to_where(Not(Compare("region", "eq", "Kent")), FIELDS, None, options) == []
    assert to_where(Compare("region", "exists", True), FIELDS, None, options) == [
        [region, "IS NOT NULL"]
    ]


def test_custom_fields_are_pushed_down_without_negation() -> None:
    """A custom field declared under mapping: was never pushed down."""
    member = Compare("extra.civicrm.member", "eq", True)
    assert where(member) == [["Membership.level", "=", True]]
    assert where(Compare("extra.civicrm.member", "in", [1, 2])) == [
        ["Membership.level", "IN", [1, 2]]
    ]
    assert where(Compare("extra.civicrm.member", "gt", 3)) == [["Membership.level", ">", 3]]
    assert where(Not(member)) == []  # '1' = 1 in MySQL, not in the engine: kept local
    assert where(Compare("extra.civicrm.member", "ne", True)) == []
