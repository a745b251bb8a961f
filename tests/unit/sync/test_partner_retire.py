"""Retiring partners on both state store backends: remembered rows, the limit, the take-back."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector_core.config import Config, load_config
from connector_core.masks import MaskContext
from connector_core.plugins import collect_adapters, make_plugin_manager
from connector_core.sync.job import load_job
from connector_core.sync.partners import (
    RETIRED,
    held_places,
    plan_partners,
    remember,
    remembered,
    retire,
)
from connector_core.sync.runner import run_job
from connector_core.sync.state import StateStore
from tests.integration.test_partners import PARTNER_POLICY, TEMPLATE, write_registry

CONTEXT = MaskContext(hash_key=b"demo-hash-key-for-tests")


@pytest.fixture
def folder(demo: Path) -> Path:
    (demo.parent.parent / "policies" / "partner-local.yaml").write_text(PARTNER_POLICY)
    config = demo / "connector.yaml"
    config.write_text(config.read_text(encoding="utf-8") + TEMPLATE, encoding="utf-8")
    (demo / "out" / "local").mkdir()
    return demo


def load(folder: Path, partners: int) -> Config:
    write_registry(folder / "partners.csv", partners)
    return load_config(folder / "connector.yaml", collect_adapters(make_plugin_manager()))


def test_a_partner_that_left_is_taken_back_and_remembered_as_retired(
    folder: Path, store: StateStore
) -> None:
    config = load(folder, 12)
    remember(config, store)
    job = load_job(config, "local.p011", context=CONTEXT)
    try:
        assert run_job(job, store).counts.created > 0
    finally:
        job.close()
    assert plan_partners(config, store).retire == {}

    smaller = load(folder, 11)
    plan = plan_partners(smaller, store)
    assert list(plan.retire) == ["local.p011"]
    result = retire(smaller, store, "local.p011", *plan.retire["local.p011"], context=CONTEXT)
    assert result.counts.deleted > 0
    assert store.mapped_count("local.p011") == 0
    assert remembered(store)["local.p011"]["status"] == "retired"
    reasons = {e.reason for e in store.ledger_entries() if e.job == "local.p011"}
    assert RETIRED in reasons
    assert plan_partners(load(folder, 11), store).retire == {}


def test_no_target_is_resolved_again_when_no_partner_left(
    folder: Path, store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every run asks which partners' targets a partner that left still holds: with none
    left (the usual run) no target is resolved again (15,000 partners: 0.6 s of an
    unchanged run); with one left, every partner's target is looked at."""
    from connector_core.adapters import AdapterSettings

    config = load(folder, 12)
    remember(config, store)
    resolved: list[str] = []
    real = AdapterSettings.target_identity

    def counted(self: AdapterSettings) -> frozenset[str]:
        resolved.append(str(self))
        return real(self)

    monkeypatch.setattr(AdapterSettings, "target_identity", counted)
    assert held_places(config, store) == {}
    assert resolved == []
    job = load_job(config, "local.p011", context=CONTEXT)
    try:
        assert run_job(job, store).counts.created > 0
    finally:
        job.close()
    smaller = load(folder, 11)  # p011 left, holding records: every target is looked at
    assert held_places(smaller, store) == {}  # (a test in test_partners gives its file away)
    assert resolved


def test_more_than_the_limit_at_once_is_held(folder: Path, store: StateStore) -> None:
    remember(load(folder, 60), store)
    plan = plan_partners(load(folder, 53), store)  # 7 of 60: more than 6 (10%)
    assert plan.retire == {}
    assert plan.held_count == 7
    assert len(plan_partners(load(folder, 53), store, accept=7).retire) == 7
    assert len(plan_partners(load(folder, 54), store).retire) == 6


def test_a_store_at_0010_migrates_and_keeps_its_jobs(state_url: str) -> None:
    import alembic.command
    import sqlalchemy as sa

    from connector_core.sync.migrations import alembic_config
    from connector_core.sync.tables import job_state

    engine = sa.create_engine(state_url, poolclass=sa.NullPool)
    with engine.begin() as conn:  # a store of the version before partner jobs
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        alembic.command.upgrade(cfg, "0010_approval_sets")
        conn.execute(job_state.insert().values(job="members", cursor="c1"))
    engine.dispose()
    with StateStore.open(state_url) as upgraded:
        assert upgraded.job_state("members").cursor == "c1"
        assert remembered(upgraded) == {}
