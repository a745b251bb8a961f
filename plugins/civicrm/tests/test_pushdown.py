"""Reads with the policy's condition pushed down select, after local filtering, exactly the
records a full read does: the pushed-down `where` may be broader, never narrower."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from connector_civicrm import CivicrmAdapter, CivicrmSettings
from connector_civicrm.testing import FakeCiviCRM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector_core.credentials import StaticSecrets
from connector_core.query import All, AnyOf, Compare, Condition, Not, matches
from connector_core.records import Record

CITIES = ["London", "london", "Paris", "Berlin", "Toronto", "Madrid", "Nowhere"]
#: State/province labels, some shared by several rows (as 48 names are in CiviCRM's table).
REGIONS = ["Limburg", "limburg", "Amazonas", "Île-de-France", "Kent", "Atlantis"]


@pytest.fixture(scope="module")
def adapter() -> Iterator[CivicrmAdapter]:
    custom = {"Member.active": "Boolean", "Member.years": "Integer", "Member.level": "String"}
    with FakeCiviCRM(api_key="k", custom_fields=custom) as fake:
        fake.seed_contacts(80, random.Random(7))
        for n, row in enumerate(fake.store.tables["Contact"].values()):
            row["Member.active"] = [True, False, None][n % 3]
            row["Member.years"] = [None, 0, 3, 10][n % 4]
            row["Member.level"] = [None, "Gold", "gold", "1", ""][n % 5]
        news = next(g for g, r in fake.store.tables["Group"].items() if r["title"] == "Newsletter")
        members = [cid for (gid, cid) in fake.store.pairs if gid == news]
        assert members
        provinces = [*fake.store.tables["StateProvince"], None]
        for n, address in enumerate(fake.store.tables["Address"].values()):
            address["state_province_id"] = provinces[n % len(provinces)]
        s = CivicrmSettings.model_validate(
            {
                "url": fake.base_url,
                "api_key": {"secret": "api_key"},
                "page_size": 25,
                "contact_type": None,
                "custom_fields": {
                    "active": "Member.active",
                    "years": "Member.years",
                    "level": "Member.level",
                },
                "consent": {"contact_me": {"field": "is_opt_out"}, "news": {"group": "Newsletter"}},
            }
        )
        with CivicrmAdapter(s, StaticSecrets({"api_key": "k"}), connection="crm") as made:
            yield made


def leaves() -> st.SearchStrategy[Condition]:
    text = st.sampled_from(["city", "first_name", "last_name", "email", "postal_code", "country"])
    flag = st.sampled_from(["do_not_email", "do_not_phone", "do_not_sms", "is_deceased"])
    return st.one_of(
        st.builds(
            Compare, text, st.sampled_from(["eq", "ne", "gt", "lt"]), st.sampled_from(CITIES)
        ),
        st.builds(Compare, text, st.just("in"), st.lists(st.sampled_from(CITIES), max_size=3)),
        st.builds(
            Compare, text, st.just("starts_with"), st.sampled_from(["A", "a", "Lo", "%", ""])
        ),
        st.builds(Compare, text, st.just("exists"), st.booleans()),
        st.builds(
            Compare,
            st.just("region"),
            st.sampled_from(["eq", "ne", "exists", "starts_with"]),
            st.sampled_from(REGIONS),
        ),
        st.builds(Compare, st.just("region"), st.just("in"), st.lists(st.sampled_from(REGIONS))),
        st.builds(
            Compare,
            st.sampled_from(["extra.civicrm.active", "extra.civicrm.years", "extra.civicrm.level"]),
            st.sampled_from(["eq", "ne", "gt", "lte", "exists"]),
            st.sampled_from([True, False, 0, 3, 1, "Gold", "1"]),
        ),
        st.builds(  # `in` takes a list, as the policy schema requires
            Compare,
            st.sampled_from(["extra.civicrm.active", "extra.civicrm.years", "extra.civicrm.level"]),
            st.just("in"),
            st.sampled_from([[True, 3], ["gold"], [1, "1"], []]),
        ),
        st.builds(Compare, flag, st.sampled_from(["eq", "ne"]), st.booleans()),
        st.builds(
            Compare,
            st.just("latitude"),
            st.sampled_from(["gt", "lte", "ne", "exists"]),
            st.sampled_from([0.0, 45.0, 50.5]),
        ),
        st.builds(
            Compare,
            st.just("birth_date"),
            st.sampled_from(["gte", "lt", "eq"]),
            st.sampled_from(["1970-01-01", "1990-06-15"]),
        ),
        st.builds(
            Compare,
            st.sampled_from(["consent.contact_me.granted", "consent.news.granted"]),
            st.sampled_from(["eq", "ne"]),
            st.booleans(),
        ),
        st.builds(Compare, st.just("groups"), st.just("any_of"), st.just(["Volunteers"])),
        st.builds(
            Compare, st.just("id"), st.just("in"), st.lists(st.sampled_from(["1", "5", "9", "x"]))
        ),
    )


conditions = st.recursive(
    leaves(),
    lambda inner: st.one_of(
        st.builds(All, st.lists(inner, max_size=3)),
        st.builds(AnyOf, st.lists(inner, max_size=3)),
        st.builds(Not, inner),
    ),
    max_leaves=6,
)


@pytest.fixture(scope="module")
def everyone(adapter: CivicrmAdapter) -> dict[str, Record]:
    """Every contact, read once without a filter (the fake never changes meanwhile)."""
    return {r["id"]: r for p in adapter.read() for r in p.records}


def selected(adapter: CivicrmAdapter, where: Condition | None) -> set[str]:
    return {r["id"] for p in adapter.read(where=where) for r in p.records if matches(where, r)}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(condition=conditions)
def test_pushdown_changes_nothing(
    adapter: CivicrmAdapter, everyone: dict[str, Record], condition: Condition
) -> None:
    expected = {k for k, r in everyone.items() if matches(condition, r)}
    assert selected(adapter, condition) == expected


def test_pushdown_narrows_the_fetch(adapter: CivicrmAdapter) -> None:
    condition = All([Compare("do_not_phone", "eq", True), Compare("groups", "any_of", ["X"])])
    pushed = [r for p in adapter.read(where=condition) for r in p.records]
    everyone = [r for p in adapter.read() for r in p.records]
    assert 0 < len(pushed) < len(everyone)
    assert all(r["do_not_phone"] is True for r in pushed)


def test_a_label_shared_by_two_regions_fetches_both(
    fake_civicrm: FakeCiviCRM,
) -> None:
    """Seen on a real CiviCRM: `region: Limburg` pushed as a label matched the Dutch Limburg
    only (CiviCRM turns a label into one id); the Belgian one never arrived."""
    dutch = fake_civicrm.add_contact(
        contact_type="Individual", first_name="Nl", **{"address_primary.state_province_id": 5025}
    )
    belgian = fake_civicrm.add_contact(
        contact_type="Individual", first_name="Be", **{"address_primary.state_province_id": 1442}
    )
    fake_civicrm.add_contact(
        contact_type="Individual", first_name="Uk", **{"address_primary.state_province_id": 2600}
    )
    s = CivicrmSettings.model_validate(
        {"url": fake_civicrm.base_url, "api_key": {"secret": "api_key"}}
    )
    condition = Compare("region", "eq", "Limburg")
    secrets = StaticSecrets({"api_key": fake_civicrm.api_key})
    with CivicrmAdapter(s, secrets, connection="crm") as crm:
        got = [r for p in crm.read(where=condition) for r in p.records]
    assert sorted(r["id"] for r in got if matches(condition, r)) == [str(dutch), str(belgian)]
    [get] = [r for r in fake_civicrm.requests if r["action"] == "get" and r["entity"] == "Contact"]
    assert ["address_primary.state_province_id", "IN", [1442, 5025]] in get["params"]["where"]
