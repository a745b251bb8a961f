"""Writing to the fake CiviCRM: explicit lookup, no duplicates, unchanged records not sent."""

from __future__ import annotations

from collections.abc import Callable

from connector_civicrm import CivicrmAdapter
from connector_civicrm.testing import FakeCiviCRM

from connector_core.adapters import Change

MakeAdapter = Callable[..., CivicrmAdapter]


def person(i: int, **extra: object) -> dict[str, object]:
    return {"id": f"k{i}", "first_name": f"F{i}", "last_name": "L", "email": f"p{i}@example.org",
            "city": "Berlin", "groups": ["Volunteers"], **extra}  # fmt: skip


def test_create_then_update_then_unchanged(
    fake_civicrm: FakeCiviCRM, make_adapter: MakeAdapter
) -> None:
    adapter = make_adapter()
    results = list(adapter.write([Change.upsert("k1", person(1))]))
    assert [r.action for r in results] == ["created"]
    [row] = list(fake_civicrm.store.tables["Contact"].values())
    assert row["external_identifier"] == "k1"
    fake_civicrm.clear_requests()
    again = list(adapter.write([Change.upsert("k1", person(1))]))
    assert [r.action for r in again] == ["unchanged"]
    assert fake_civicrm.count_requests("Contact", "save") == 0
    changed = list(adapter.write([Change.upsert("k1", person(1, city="Hamburg"))]))
    assert [r.action for r in changed] == ["updated"]
    saves = [r for r in fake_civicrm.requests if r["action"] == "save" and r["entity"] == "Contact"]
    assert saves[-1]["params"]["records"] == [{"id": row["id"], "address_primary.city": "Hamburg"}]
    assert "match" not in saves[-1]["params"]


def test_existing_external_identifier_is_updated_not_duplicated(
    fake_civicrm: FakeCiviCRM, make_adapter: MakeAdapter
) -> None:
    cid = fake_civicrm.add_contact(contact_type="Individual", first_name="Old",
                                   external_identifier="k1")  # fmt: skip
    fake_civicrm.trash(cid)
    [result] = make_adapter().write([Change.upsert("k1", person(1))])
    assert result.action == "updated"
    assert len(fake_civicrm.store.tables["Contact"]) == 1
    stored = fake_civicrm.contact(cid) or {}
    assert (stored["first_name"], stored["is_deleted"]) == ("F1", False)  # restored


def test_delete_moves_to_trash_by_default(
    fake_civicrm: FakeCiviCRM, make_adapter: MakeAdapter
) -> None:
    adapter = make_adapter()
    list(adapter.write([Change.upsert("k1", person(1)), Change.upsert("k2", person(2))]))
    results = list(adapter.write([Change.delete("k1"), Change.delete("nope")]))
    assert [r.action for r in results] == ["deleted", "unchanged"]
    rows = {r["external_identifier"]: r for r in fake_civicrm.store.tables["Contact"].values()}
    assert rows["k1"]["is_deleted"] is True
    assert [r.action for r in adapter.write([Change.delete("k1")])] == ["unchanged"]


def test_permanent_delete(fake_civicrm: FakeCiviCRM, make_adapter: MakeAdapter) -> None:
    adapter = make_adapter(delete_mode="permanent")
    list(adapter.write([Change.upsert("k1", person(1))]))
    assert [r.action for r in adapter.write([Change.delete("k1")])] == ["deleted"]
    assert fake_civicrm.store.tables["Contact"] == {}


def test_groups_tags_and_consent_are_written(
    fake_civicrm: FakeCiviCRM, make_adapter: MakeAdapter
) -> None:
    adapter = make_adapter(
        consent={"contact_me": {"field": "is_opt_out"}, "local": {"group": "Local"}},
        group_for_writes="From chapters",
    )
    consent = {"contact_me": {"granted": False}, "local": {"granted": True}}
    record = person(1, tags=["donor"], consent=consent)
    list(adapter.write([Change.upsert("k1", record)]))
    [got] = [r for p in adapter.read() for r in p.records]
    assert got["groups"] == ["From chapters", "Volunteers"]
    assert got["tags"] == ["donor"]
    assert {p: s["granted"] for p, s in got["consent"].items()} == {
        "contact_me": False,
        "local": True,
    }
    # leaving a group and withdrawing consent
    record = person(1, groups=[], tags=[], consent={"local": {"granted": False}})
    [result] = adapter.write([Change.upsert("k1", record)])
    assert result.action == "updated"
    [got] = [r for p in adapter.read() for r in p.records]
    assert got["groups"] == ["From chapters"]
    assert got["tags"] == []
    assert got["consent"]["local"]["granted"] is False


def test_groups_and_tags_that_already_exist_are_used_not_created(
    fake_civicrm: FakeCiviCRM, make_adapter: MakeAdapter
) -> None:
    """A real CiviCRM crashed every write (KeyError 'name') once a named group existed."""
    group = fake_civicrm.add_group("volunteers", "Volunteers")
    tag = fake_civicrm.add_tag("Donor")
    adapter = make_adapter(group_for_writes="Volunteers")
    [result] = adapter.write([Change.upsert("k1", person(1, tags=["Donor"]))])
    assert result.action == "created", result.error
    assert list(fake_civicrm.store.tables["Group"]) == [group]
    assert list(fake_civicrm.store.tables["Tag"]) == [tag]
    [member] = fake_civicrm.store.tables["GroupContact"].values()
    assert (member["group_id"], member["status"]) == (group, "Added")
    [tagged] = fake_civicrm.store.tables["EntityTag"].values()
    assert tagged["tag_id"] == tag
