"""Request budgets of issue 5, counted on the fake (not timed)."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from connector_civicrm import CivicrmAdapter
from connector_civicrm.testing import FakeCiviCRM

from connector_core.adapters import Change

MakeAdapter = Callable[..., CivicrmAdapter]
SIZES = [
    pytest.param(1_000, 100, id="1k"),
    pytest.param(10_000, 500, id="10k", marks=pytest.mark.slow),
]
CONSENT = {"contact_me": {"field": "is_opt_out"}, "news": {"group": "Newsletter"}}


@pytest.mark.parametrize(("n", "page_size"), SIZES)
def test_initial_and_incremental_reads(
    fake_civicrm: FakeCiviCRM, make_adapter: MakeAdapter, n: int, page_size: int
) -> None:
    ids = fake_civicrm.seed_contacts(n)  # modified over 2025
    fake_civicrm.freeze_time("2026-06-01 09:00:00")
    adapter = make_adapter(page_size=page_size, contact_type=None, consent=CONSENT)
    fake_civicrm.clear_requests()
    pages = list(adapter.read())
    assert sum(len(p.records) for p in pages) == n
    assert fake_civicrm.count_requests() <= math.ceil(n / page_size) + 5
    fake_civicrm.advance(60)
    for cid in ids[:: n // 100][:100]:
        fake_civicrm.update_contact(cid, source=f"changed {cid}")
    fake_civicrm.clear_requests()
    changed = [r for p in adapter.read(cursor=pages[-1].cursor) for r in p.records]
    assert 100 <= len(changed) <= 200
    assert fake_civicrm.count_requests() <= 5


@pytest.mark.parametrize(("n", "page_size"), [pytest.param(200, 100, id="200"),
                                              pytest.param(1_000, 500, id="1k")])  # fmt: skip
def test_writing(
    fake_civicrm: FakeCiviCRM, make_adapter: MakeAdapter, n: int, page_size: int
) -> None:
    adapter = make_adapter(page_size=page_size, consent=CONSENT)
    records = [
        {"id": f"k{i}", "first_name": f"F{i}", "last_name": "L", "email": f"p{i}@example.org",
         "phone": f"+1 555 {i:04d}", "city": "Berlin", "postal_code": "10115",
         "groups": ["Volunteers", "Members"][: i % 3], "tags": ["donor"] if i % 2 else [],
         "consent": {"contact_me": {"granted": True}, "news": {"granted": i % 2 == 0}}}
        for i in range(n)
    ]  # fmt: skip
    fake_civicrm.clear_requests()
    results = list(adapter.write([Change.upsert(str(r["id"]), r) for r in records]))
    assert {r.action for r in results} == {"created"}
    assert fake_civicrm.count_requests() <= math.ceil(n / page_size) + 5
    fake_civicrm.clear_requests()
    again = list(adapter.write([Change.upsert(str(r["id"]), r) for r in records]))
    assert {r.action for r in again} == {"unchanged"}
    assert fake_civicrm.count_requests() == math.ceil(n / page_size)  # lookups only
