"""End-to-end checks against a real CiviCRM (marker ``live``: never in CI).

Point them at a server with environment variables, then run ``-m live``::

    export CONNECTOR_LIVE_CIVICRM_URL=http://127.0.0.1:8181      # url_style standalone
    export CONNECTOR_LIVE_CIVICRM_KEY=...                         # an API key (32 chars max)
    export CONNECTOR_LIVE_CIVICRM_SITE_KEY=...                    # optional
    export CONNECTOR_LIVE_CIVICRM_URL_STYLE=standalone            # optional
    uv run --no-sync pytest plugins/civicrm/tests/test_live.py -m live

The key's user needs the permissions of docs/adapters/civicrm.md (target included). The
checks read everything, and write, trash and then permanently delete contacts whose
``external_identifier`` starts with ``connector-live-`` (and one group, ``Connector live
checks``, created once and kept).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from connector_civicrm import CivicrmAdapter, CivicrmSettings

from connector_core.adapters import Change
from connector_core.credentials import StaticSecrets
from connector_core.query import Compare, matches

URL = os.environ.get("CONNECTOR_LIVE_CIVICRM_URL")
KEY = os.environ.get("CONNECTOR_LIVE_CIVICRM_KEY")
SITE_KEY = os.environ.get("CONNECTOR_LIVE_CIVICRM_SITE_KEY")
GROUP = "Connector live checks"

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(
        not (URL and KEY), reason="set CONNECTOR_LIVE_CIVICRM_URL and CONNECTOR_LIVE_CIVICRM_KEY"
    ),
]


def make(**settings: Any) -> CivicrmAdapter:
    values: dict[str, Any] = {
        "url": URL,
        "url_style": os.environ.get("CONNECTOR_LIVE_CIVICRM_URL_STYLE", "standalone"),
        "api_key": {"secret": "api_key"},
        "page_size": 200,
        "timeout": 30,
        **settings,
    }
    if SITE_KEY:
        values["site_key"] = {"secret": "site_key"}
    found = {"api_key": KEY or "", "site_key": SITE_KEY or ""}
    return CivicrmAdapter(
        CivicrmSettings.model_validate(values), StaticSecrets(found), connection="live"
    )


@pytest.fixture(scope="module")
def crm() -> Iterator[CivicrmAdapter]:
    with make() as adapter:
        yield adapter


@pytest.fixture(scope="module")
def everyone(crm: CivicrmAdapter) -> list[dict[str, Any]]:
    return [r for page in crm.read() for r in page.records]


def test_doctor_sees_contacts_and_may_write(crm: CivicrmAdapter) -> None:
    note = crm.check()
    assert note.endswith("contact(s) visible")
    assert int(note.split()[0]) > 0
    crm.check_writes()


def test_the_default_mapping_exists_at_the_site(crm: CivicrmAdapter) -> None:
    found = crm.available_fields()
    assert found.missing == ()


def test_a_custom_field_the_site_lacks_is_reported(crm: CivicrmAdapter) -> None:
    with make(custom_fields={"gone": "No_Such_Group.no_such_field"}) as adapter:
        [lost] = adapter.available_fields().missing
    assert lost.canonical == "extra.civicrm.gone"
    assert "the site has no such custom field" in lost.note


def test_region_pushdown_returns_everyone_the_policy_does(
    crm: CivicrmAdapter, everyone: list[dict[str, Any]]
) -> None:
    """Every region held by contacts of two countries (the two Limburgs), and a few more."""
    countries: dict[str, set[Any]] = {}
    for record in everyone:
        if record.get("region"):
            countries.setdefault(record["region"], set()).add(record.get("country"))
    shared = sorted(r for r, c in countries.items() if len(c) > 1)
    for region in [*shared, *sorted(countries)[:3]]:
        condition = Compare("region", "eq", region)
        expected = {r["id"] for r in everyone if matches(condition, r)}
        pushed = {r["id"] for p in crm.read(where=condition) for r in p.records}
        assert expected <= pushed, region


def test_the_count_matches_a_full_read(crm: CivicrmAdapter, everyone: list[Any]) -> None:
    assert crm.count() == len(everyone)


def test_write_into_existing_group_then_trash_then_delete() -> None:
    """Issue 12 item 1: a group it names already exists; item 6: nothing written twice."""
    key = f"connector-live-{secrets.token_hex(4)}"
    record = {"id": key, "first_name": "Live", "last_name": "Check", "email": f"{key}@example.org"}
    with make(group_for_writes=GROUP) as adapter:
        [made] = adapter.write([Change.upsert(key, record)])  # creates the group if missing
        assert made.action == "created", made.error
        [again] = adapter.write([Change.upsert(key + "-2", {**record, "id": key + "-2"})])
        assert again.action == "created", again.error  # the group exists now
        [same] = adapter.write([Change.upsert(key, record)])
        assert same.action == "unchanged", same.error
        [trashed] = adapter.write([Change.delete(key)])
        assert trashed.action == "deleted", trashed.error
    with make(delete_mode="permanent") as adapter:
        done = list(adapter.write([Change.delete(key), Change.delete(key + "-2")]))
        assert [r.action for r in done] == ["deleted", "deleted"], done
