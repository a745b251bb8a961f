"""The adapter's view of the site for the schema check (issue #10, 1), and its record count."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from connector_civicrm import CivicrmAdapter
from connector_civicrm.testing import FakeCiviCRM
from connector_civicrm.testing.store import ALL_PERMISSIONS

from connector_core.credentials import StaticSecrets

MakeAdapter = Callable[..., CivicrmAdapter]


def missing(adapter: Any) -> dict[str, tuple[str, tuple[str, ...]]]:
    return {m.canonical: (m.native, m.setting) for m in adapter.available_fields().missing}


def test_the_default_mapping_is_all_there(
    fake_civicrm: FakeCiviCRM, make_adapter: MakeAdapter
) -> None:
    fake_civicrm.clear_requests()
    found = make_adapter().available_fields()
    assert found.missing == ()
    assert {"id", "email", "phone", "region", "groups", "tags"} <= found.provided
    assert "consent" not in found.provided
    assert len(fake_civicrm.requests) == 2  # Contact fields; then Email, Phone, Address...


def test_a_mapped_path_the_site_lacks(fake_civicrm: FakeCiviCRM, make_adapter: MakeAdapter) -> None:
    adapter = make_adapter(mapping={"phone": "phone_primary.phon", "city": "town"})
    assert missing(adapter) == {
        "phone": ("phone_primary.phon", ("mapping", "phone")),
        "city": ("town", ("mapping", "city")),
    }
    found = adapter.available_fields()
    assert "phone" not in found.provided
    assert "phone_primary.phone" in found.native  # for "did you mean"


def test_consent_evidence_from_a_group_the_site_renamed(
    fake_civicrm: FakeCiviCRM, make_adapter: MakeAdapter
) -> None:
    fake_civicrm.add_group("local", title="Local Organizing")
    rules = {
        "local_organizing": {"group": "Local organizing"},
        "contact_me": {"field": "is_opt_out"},
    }
    adapter = make_adapter(consent=rules)
    found = adapter.available_fields()
    (lost,) = found.missing
    assert (lost.canonical, lost.setting) == (
        "consent.local_organizing",
        ("settings", "consent", "local_organizing", "group"),
    )
    assert "consent.contact_me" in found.provided
    assert "Local Organizing" in found.native


def test_custom_fields_hidden_from_the_api_user(make_adapter: MakeAdapter) -> None:
    custom = {"Member.level": "String", "Consent.local": "Boolean"}
    with FakeCiviCRM(api_key="k", custom_fields=custom) as fake:
        fake.add_api_key("weak", permissions=ALL_PERMISSIONS - {"access all custom data"})
        settings: dict[str, Any] = {
            "url": fake.base_url,
            "custom_fields": {"level": "Member.level"},
            "consent": {"local_organizing": {"field": "Consent.local"}},
        }
        strong = make_adapter(**settings)
        strong.secrets = StaticSecrets({"api_key": "k", "site_key": "s"})
        assert strong.available_fields().missing == ()
        weak = make_adapter(**settings)
        weak.secrets = StaticSecrets({"api_key": "weak", "site_key": "s"})
        lost = weak.available_fields().missing
    assert [m.canonical for m in lost] == ["extra.civicrm.level", "consent.local_organizing"]
    # As 6.17.2: CustomField.get shows such a user nothing, so both causes are named.
    assert all("the API user cannot see it: without 'access all custom data'" in m.note
               for m in lost)  # fmt: skip


def test_a_custom_field_the_site_no_longer_has(make_adapter: MakeAdapter) -> None:
    with FakeCiviCRM(api_key="k", custom_fields={"Member.level": "String"}) as fake:
        adapter = make_adapter(url=fake.base_url, custom_fields={"level": "Member.grade"})
        adapter.secrets = StaticSecrets({"api_key": "k", "site_key": "s"})
        (lost,) = adapter.available_fields().missing
    assert (lost.canonical, lost.native) == ("extra.civicrm.level", "Member.grade")
    assert "the site has no such custom field" in lost.note


def test_count_is_one_row_count_query(fake_civicrm: FakeCiviCRM, make_adapter: MakeAdapter) -> None:
    for name in ("A", "B", "C"):
        fake_civicrm.add_contact(contact_type="Individual", first_name=name)
    fake_civicrm.add_contact(contact_type="Organization", organization_name="Org")
    fake_civicrm.trash(fake_civicrm.add_contact(contact_type="Individual", first_name="D"))
    fake_civicrm.clear_requests()
    assert make_adapter().count() == 3
    (request,) = fake_civicrm.requests
    assert request["params"]["select"] == ["row_count"]
