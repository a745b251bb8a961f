"""Share requests in the state store (both backends) and the floor promise, with hypothesis."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import alembic.command
import pytest
import sqlalchemy as sa
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector_core.masks import MaskContext
from connector_core.policy.compiler import compile_policy
from connector_core.policy.loader import load_policy
from connector_core.policy.share_requests import load_request, policy_data, review_request
from connector_core.sync.migrations import alembic_config
from connector_core.sync.request_book import StoredRequest
from connector_core.sync.state import StateStore
from tests.postgres import REPO

FLOOR = REPO / "policies" / "network-floor.yaml"
PURPOSES = ["contact_me", "local_organizing", "share_with_partners", "public_map"]
# ahead of the real clock: CONNECTOR_NOW only moves time forward
T0 = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(hours=1)
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIInCxHinnCSdEKYi8QBMNbgPfATm9vdmhEI3GSiEyGUA ana"
RECORD: dict[str, Any] = {
    "id": "M1",
    "first_name": "Kofi",
    "last_name": "Evans",
    "display_name": "Kofi Evans",
    "email": "kofi@example.org",
    "phone": "+44 113 496 8779",
    "street_address": "25 Station Road",
    "city": "Bristol",
    "postal_code": "LS19 1AB",
    "region": "South West",
    "country": "GB",
    "organization": "Sunrise",
    "birth_date": "1990-04-01",
    "latitude": 51.454513,
    "longitude": -2.58791,
    "groups": ["climate-campaign"],
    "tags": ["march"],
    "consent": {p: {"granted": True, "source": "crm", "at": None} for p in PURPOSES},
}
ASKED = sorted(k for k in RECORD if k not in ("consent",))


def request_file(root: Path, fields: list[str]) -> Path:
    body = {
        "version": 1,
        "kind": "share-request",
        "id": "partner-ask",
        "network": "Demo Climate Network",
        "requester": {"name": "Ana", "contact": "ana@example.org", "public_key": KEY},
        "purpose": "share_with_partners",
        "fields": fields,
        "delivery": {"adapter": "csv", "settings": {"path": "out.csv"}},
        "duration": "30d",
        "why": "a march",
    }
    path = root / "request.yaml"
    path.write_text(yaml.safe_dump(body), encoding="utf-8")
    return path


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(fields=st.lists(st.sampled_from(ASKED), min_size=1, unique=True))
def test_nothing_beyond_the_floor_reaches_the_requester(tmp_path: Path, fields: list[str]) -> None:
    floor = load_policy(FLOOR, purposes=PURPOSES)
    request = load_request(request_file(tmp_path, fields), purposes=PURPOSES)
    review = review_request(request, floor)
    assert {"street_address", "postal_code", "birth_date"}.isdisjoint(review.allowed)
    path = tmp_path / "request-policy.yaml"
    path.write_text(yaml.safe_dump(policy_data(request, review)), encoding="utf-8")
    policy = load_policy(path, purposes=PURPOSES, floor=FLOOR)
    compiled = compile_policy(policy, context=MaskContext.for_validation())
    [(_record, _decision, projection)] = list(compiled.apply([dict(RECORD)]))
    assert projection is not None  # the record gave every consent: it is shared
    assert set(projection) <= set(review.allowed) | {"id"}
    assert set(projection) <= set(fields) | {"id"}
    for field in projection:
        if review.allowed.get(field, "show") != "show":
            assert projection[field] != RECORD[field]  # masked as the floor masks it
    assert "street_address" not in projection
    assert "postal_code" not in projection


def stored(request_id: str = "partner-ask") -> StoredRequest:
    return StoredRequest(
        id=request_id,
        request_hash="a" * 64,
        status="received",
        document={"id": request_id, "requester": {"name": "Ana"}},
        review={"allowed": {"email": "show"}, "cut": {}},
        set_id=None,
        received_at=T0,
        decided_at=None,
        expires_at=None,
        ended_at=None,
        note=None,
    )


def test_requests_are_kept_and_updated(store: StateStore) -> None:
    book = store.share_requests()
    book.add(stored())
    book.add(stored("other"))
    book.update("partner-ask", status="approved", expires_at=T0 + dt.timedelta(days=30))
    got = book.get("partner-ask")
    assert got is not None
    assert got.status == "approved"
    assert got.expires_at == T0 + dt.timedelta(days=30)
    assert [s.id for s in book.all(("received",))] == ["other"]
    assert book.get("nothing") is None


def test_request_events_chain_in_the_ledger(store: StateStore) -> None:
    row = {
        "at": T0, "job": "request-x", "target": "request-x", "record_key": "", "source_id": "",
        "action": "request-received", "fields": {}, "policy": "request-x", "policy_hash": "",
        "consent_basis": {}, "approvals": [], "reason": "share request x received",
    }  # fmt: skip
    store.record_events([row])
    assert [e.action for e in store.ledger_entries()] == ["request-received"]
    assert store.verify_ledger().ok


def test_a_store_at_0010_migrates_to_the_share_requests_table(state_url: str) -> None:
    engine = sa.create_engine(state_url, poolclass=sa.NullPool)
    with engine.begin() as conn:  # a store the previous version left
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        alembic.command.upgrade(cfg, "0010_approval_sets")
        assert not sa.inspect(conn).has_table("share_requests")
    engine.dispose()
    with StateStore.open(state_url) as upgraded:
        assert upgraded.share_requests().all() == []
    engine = sa.create_engine(state_url, poolclass=sa.NullPool)
    with engine.connect() as conn:
        assert sa.inspect(conn).has_table("share_requests")
    engine.dispose()


@pytest.mark.parametrize("field", ["street_address", "postal_code", "birth_date"])
def test_what_the_floor_forbids_is_cut_and_says_where(tmp_path: Path, field: str) -> None:
    floor = load_policy(FLOOR, purposes=PURPOSES)
    request = load_request(request_file(tmp_path, ["email", field]), purposes=PURPOSES)
    review = review_request(request, floor)
    assert field in review.cut
    assert "network-floor" in review.cut[field]
