"""Reading contacts from the fake CiviCRM: joins, paging, incremental cursors, consent."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from connector_civicrm import CivicrmAdapter
from connector_civicrm.testing import FakeCiviCRM

from connector_core.records import Expected, Record

MakeAdapter = Callable[..., CivicrmAdapter]  # as in conftest.py (test modules import no conftest)


def read_all(adapter: CivicrmAdapter, **kwargs: Any) -> tuple[list[Record], str | None]:
    pages = list(adapter.read(**kwargs))
    return [r for p in pages for r in p.records], pages[-1].cursor


def test_one_request_per_page_with_joined_location_fields(
    fake_civicrm: FakeCiviCRM, make_adapter: MakeAdapter
) -> None:
    cid = fake_civicrm.add_contact(
        contact_type="Individual",
        first_name="Ada",
        last_name="Lovelace",
        email="ada@example.org",
        phone="+44 20 1234",
        **{
            "address_primary.city": "London",
            "address_primary.country_id:abbr": "GB",
            "address_primary.geo_code_1": 51.5,
        },
    )
    for i in range(24):
        fake_civicrm.add_contact(contact_type="Individual", first_name=f"P{i}", last_name="X")
    fake_civicrm.clear_requests()
    records, _ = read_all(make_adapter())
    assert len(records) == 25
    ada = next(r for r in records if r["id"] == str(cid))
    assert ada["email"] == "ada@example.org"
    assert ada["phone"] == "+44 20 1234"
    assert (ada["city"], ada["country"], ada["latitude"]) == ("London", "GB", 51.5)
    assert ada["deleted"] is False
    # 1 watermark query + 3 pages of 10; every call a POST with the params form field
    assert fake_civicrm.count_requests() == 4
    assert all(r["method"] == "POST" for r in fake_civicrm.requests)
    pages = [
        r for r in fake_civicrm.requests if (r["params"] or {}).get("orderBy") == {"id": "ASC"}
    ]
    assert pages[0]["params"]["where"][-1] == ["id", ">", 0]


def test_only_the_configured_contact_type_is_read(
    fake_civicrm: FakeCiviCRM, make_adapter: MakeAdapter
) -> None:
    fake_civicrm.add_contact(contact_type="Individual", first_name="A")
    fake_civicrm.add_contact(contact_type="Organization", organization_name="Org")
    assert len(read_all(make_adapter())[0]) == 1
    assert len(read_all(make_adapter(contact_type=None))[0]) == 2


def test_groups_tags_and_consent(fake_civicrm: FakeCiviCRM, make_adapter: MakeAdapter) -> None:
    a = fake_civicrm.add_contact(contact_type="Individual", first_name="A", is_opt_out=False)
    b = fake_civicrm.add_contact(contact_type="Individual", first_name="B", is_opt_out=True)
    c = fake_civicrm.add_contact(contact_type="Individual", first_name="C")
    local = fake_civicrm.add_group("local", "Local organizing")
    news = fake_civicrm.add_group("news", "Newsletter")
    fake_civicrm.set_membership(a, local, "Added")
    fake_civicrm.set_membership(b, local, "Removed")
    fake_civicrm.set_membership(c, local, "Pending")
    fake_civicrm.set_membership(a, news, "Added")
    fake_civicrm.set_membership(b, news, "Removed")
    fake_civicrm.tag(a, fake_civicrm.add_tag("donor"))
    adapter = make_adapter(
        consent={
            "contact_me": {"field": "is_opt_out"},
            "local_organizing": {"group": "Local organizing"},
        }
    )
    got = {r["first_name"]: r for r in read_all(adapter)[0]}
    assert got["A"]["groups"] == ["Newsletter"]  # the consent group shows under consent only
    assert got["B"]["groups"] == []
    assert got["A"]["tags"] == ["donor"]
    consent = {name: {p: s["granted"] for p, s in r["consent"].items()} for name, r in got.items()}
    assert consent == {
        "A": {"contact_me": True, "local_organizing": True},
        "B": {"contact_me": False, "local_organizing": False},
        "C": {"contact_me": True},  # Pending is no evidence: no consent
    }
    state = got["A"]["consent"]["contact_me"]
    assert state["source"] == "civicrm:crm"
    assert state["at"] == got["A"]["modified_at"]


def test_custom_fields_go_to_extra(make_adapter: MakeAdapter) -> None:
    with FakeCiviCRM(api_key="k", custom_fields={"Member.level": "String"}) as fake:
        fake.add_contact(contact_type="Individual", first_name="A", **{"Member.level": "gold"})
        adapter = make_adapter(url=fake.base_url, custom_fields={"level": "Member.level"})
        adapter.secrets = _Key("k")
        [record] = read_all(adapter)[0]
        adapter.close()
    assert record["extra.civicrm.level"] == "gold"


class _Key:
    def __init__(self, value: str) -> None:
        self.value = value

    def resolve(self, ref: object) -> Any:
        from pydantic import SecretStr

        return SecretStr(self.value)


def test_fields_limit_the_select(fake_civicrm: FakeCiviCRM, make_adapter: MakeAdapter) -> None:
    fake_civicrm.add_contact(contact_type="Individual", first_name="A", email="a@example.org")
    fake_civicrm.clear_requests()
    [record] = read_all(make_adapter(), fields=frozenset({"email"}))[0]
    assert record["email"] == "a@example.org"
    assert "first_name" not in record
    page = fake_civicrm.requests[-1]["params"]
    assert "first_name" not in page["select"]
    assert "chain" not in page  # no groups, tags or consent asked for


def test_incremental_reads_changes_and_trash(
    fake_civicrm: FakeCiviCRM, make_adapter: MakeAdapter
) -> None:
    fake_civicrm.freeze_time("2025-03-01 10:00:00")
    ids = [
        fake_civicrm.add_contact(contact_type="Individual", first_name=f"P{i}") for i in range(5)
    ]
    adapter = make_adapter()
    full = list(adapter.read())
    assert all(p.snapshot for p in full)
    cursor = full[-1].cursor
    assert read_all(adapter, cursor=cursor)[0] == []
    # a change within the same second as the watermark is still seen
    fake_civicrm.update_contact(ids[1], first_name="Changed")
    records, cursor = read_all(adapter, cursor=cursor)
    assert [r["first_name"] for r in records] == ["Changed"]
    fake_civicrm.advance(5)
    fake_civicrm.trash(ids[2])
    records, cursor = read_all(adapter, cursor=cursor)
    assert [(r["id"], r["deleted"]) for r in records] == [(str(ids[2]), True)]
    pages = list(adapter.read(cursor=cursor))
    assert [p.records for p in pages] == [[]]
    assert not pages[0].snapshot
    assert json.loads(pages[0].cursor or "")["since"] == "2025-03-01 10:00:05"
    # incremental reads ask for trash explicitly and in modified_date order
    [*_, params] = [r["params"] for r in fake_civicrm.requests if r["entity"] == "Contact"]
    assert ["is_deleted", "IN", [0, 1]] in params["where"]
    assert params["orderBy"] == {"modified_date": "ASC", "id": "ASC"}


def test_incremental_paging_through_one_busy_second(
    fake_civicrm: FakeCiviCRM, make_adapter: MakeAdapter
) -> None:
    fake_civicrm.freeze_time("2025-03-01 10:00:00")
    fake_civicrm.add_contact(contact_type="Individual", first_name="first")
    adapter = make_adapter()
    cursor = list(adapter.read())[-1].cursor
    fake_civicrm.advance(1)
    for i in range(25):
        fake_civicrm.add_contact(contact_type="Individual", first_name=f"P{i}")
    records, cursor = read_all(adapter, cursor=cursor)
    assert len(records) == 25
    assert len({r["id"] for r in records}) == 25
    assert read_all(adapter, cursor=cursor)[0] == []


def test_an_interrupted_full_read_resumes(
    fake_civicrm: FakeCiviCRM, make_adapter: MakeAdapter
) -> None:
    for i in range(25):
        fake_civicrm.add_contact(contact_type="Individual", first_name=f"P{i}")
    adapter = make_adapter()
    first = next(iter(adapter.read()))
    rest, cursor = read_all(adapter, cursor=first.cursor)
    assert len(first.records) + len(rest) == 25
    assert read_all(adapter, cursor=cursor)[0] == []


def test_merged_contacts_show_as_trashed(
    fake_civicrm: FakeCiviCRM, make_adapter: MakeAdapter
) -> None:
    fake_civicrm.freeze_time("2025-03-01 10:00:00")
    loser = fake_civicrm.add_contact(contact_type="Individual", first_name="L")
    survivor = fake_civicrm.add_contact(contact_type="Individual", first_name="S")
    adapter = make_adapter()
    cursor = list(adapter.read())[-1].cursor
    fake_civicrm.advance(2)
    fake_civicrm.merge(loser, survivor)
    records = {r["id"]: r for r in read_all(adapter, cursor=cursor)[0]}
    assert records[str(loser)]["deleted"] is True
    assert records[str(loser)]["extra.civicrm.merged_to"] == str(survivor)
    assert str(survivor) not in records  # unchanged: CiviCRM 6.17.2 does not touch it
    assert records[str(loser)]["merged_into"] == str(survivor)


def test_group_changes_are_read_incrementally(
    fake_civicrm: FakeCiviCRM, make_adapter: MakeAdapter
) -> None:
    fake_civicrm.freeze_time("2025-03-01 10:00:00")
    a = fake_civicrm.add_contact(contact_type="Individual", first_name="A")
    fake_civicrm.add_contact(contact_type="Individual", first_name="B")
    news = fake_civicrm.add_group("news", "Newsletter")
    adapter = make_adapter(consent={"news": {"group": "Newsletter"}})
    cursor = list(adapter.read())[-1].cursor
    fake_civicrm.advance(10)
    fake_civicrm.set_membership(a, news, "Added")  # does not bump modified_date
    fake_civicrm.clear_requests()
    records, cursor = read_all(adapter, cursor=cursor)
    assert [(r["first_name"], r["consent"]["news"]["granted"]) for r in records] == [("A", True)]
    assert fake_civicrm.count_requests() <= 3
    assert read_all(adapter, cursor=cursor)[0] == []


def test_a_group_withdrawal_made_while_a_run_reads_is_delivered_by_the_next(
    fake_civicrm: FakeCiviCRM, make_adapter: MakeAdapter
) -> None:
    """A contact read early in an incremental run, then removed from its consent group
    before the run reads the group history: a group change does not bump modified_date, so
    only the history shows it. The run must not count it as read after that change."""
    fake_civicrm.freeze_time("2025-03-01 10:00:00")
    a = fake_civicrm.add_contact(contact_type="Individual", first_name="A")
    news = fake_civicrm.add_group("news", "Newsletter")
    fake_civicrm.set_membership(a, news, "Added")
    adapter = make_adapter(consent={"news": {"group": "Newsletter"}})
    cursor = list(adapter.read())[-1].cursor
    fake_civicrm.advance(10)
    fake_civicrm.update_contact(a, first_name="A2")
    fake_civicrm.advance(1)
    fake_civicrm.add_contact(contact_type="Individual", first_name="B")  # a later change
    pages = adapter.read(cursor=cursor)
    first = next(pages)
    assert [r["consent"]["news"]["granted"] for r in first.records if r["id"] == str(a)] == [True]
    fake_civicrm.advance(1)
    fake_civicrm.set_membership(a, news, "Removed")  # while the run goes on
    rest = list(pages)
    cursor = next((p.cursor for p in reversed(rest) if p.cursor), first.cursor)
    later, _ = read_all(adapter, cursor=cursor)
    seen = [r for r in [*(x for p in rest for x in p.records), *later] if r["id"] == str(a)]
    assert seen
    assert not seen[-1]["consent"].get("news", {}).get("granted")


def test_a_value_that_does_not_fit_its_field_is_a_problem_without_the_value(
    fake_civicrm: FakeCiviCRM, make_adapter: MakeAdapter
) -> None:
    good = fake_civicrm.add_contact(contact_type="Individual", first_name="A")
    bad = fake_civicrm.add_contact(contact_type="Individual", first_name="B")
    with fake_civicrm.store.lock:  # a damaged row, as a broken import can leave in MySQL
        fake_civicrm.store.tables["Contact"][bad]["modified_date"] = "Zq-hidden"
    pages = list(make_adapter().read(cursor=None, fields=frozenset({"modified_at"})))
    assert [r["id"] for p in pages for r in p.records] == [str(good)]
    [problem] = [q for p in pages for q in p.problems]
    assert (problem.key, problem.field, problem.expected) == (
        str(bad),
        "modified_date",
        Expected.DATETIME,
    )
    assert "Zq-hidden" not in str(problem)
