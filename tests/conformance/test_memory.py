"""The memory adapter passes the conformance suite, and keeps its own promises."""

from __future__ import annotations

import pytest

from connector_core.adapters import Change
from connector_core.credentials import SecretRef
from connector_core.errors import AdapterError
from connector_core.plugins import collect_adapters, make_plugin_manager, register_builtin
from connector_core.testing import (
    CANARY_SECRET,
    AdapterConformance,
    CanarySecrets,
    MemoryAdapter,
    MemorySettings,
    reset_memory_stores,
    sample_records,
)
from connector_core.testing import memory as memory_plugin


class TestMemoryAdapter(AdapterConformance):
    @pytest.fixture
    def adapter(self, memory_adapter: MemoryAdapter) -> MemoryAdapter:
        return memory_adapter


def _upsert_all(adapter: MemoryAdapter, records: list[dict]) -> None:
    list(adapter.write([Change.upsert(r["id"], r) for r in records]))


def _ids(adapter: MemoryAdapter, cursor: str | None = None) -> list[str]:
    return [r["id"] for page in adapter.read(cursor=cursor) for r in page.records]


def test_adapters_with_one_store_share_records(memory_adapter: MemoryAdapter) -> None:
    _upsert_all(memory_adapter, sample_records(2))
    twin = MemoryAdapter(memory_adapter.settings)
    assert _ids(twin) == ["sample-0000", "sample-0001"]


def test_reset_forgets_the_named_store_only() -> None:
    one, two = (MemoryAdapter(MemorySettings(store=name)) for name in ("one", "two"))
    _upsert_all(one, sample_records(1))
    _upsert_all(two, sample_records(1))
    reset_memory_stores("one")
    assert (_ids(one), _ids(two)) == ([], ["sample-0000"])
    reset_memory_stores()
    assert _ids(two) == []


def test_only_full_reads_are_snapshots(memory_adapter: MemoryAdapter) -> None:
    _upsert_all(memory_adapter, sample_records(3))
    full = list(memory_adapter.read())
    assert all(page.snapshot for page in full)
    assert not any(page.snapshot for page in memory_adapter.read(cursor=full[-1].cursor))


def test_incremental_read_resumes_from_a_middle_page(memory_adapter: MemoryAdapter) -> None:
    _upsert_all(memory_adapter, sample_records(25))
    first = next(iter(memory_adapter.read()))
    assert len(_ids(memory_adapter, first.cursor)) == 15


def test_a_foreign_cursor_is_an_adapter_error(memory_adapter: MemoryAdapter) -> None:
    with pytest.raises(AdapterError, match="not a cursor"):
        memory_adapter.read(cursor="2024-01-01")


def test_records_read_are_copies(memory_adapter: MemoryAdapter) -> None:
    _upsert_all(memory_adapter, sample_records(1))
    [page] = memory_adapter.read()
    page.records[0]["groups"].append("Mutated")
    [again] = memory_adapter.read()
    assert "Mutated" not in again.records[0]["groups"]


def test_registers_through_the_plugin_manager() -> None:
    pm = make_plugin_manager(entry_points=False)
    register_builtin(pm, memory_plugin, "memory")
    assert collect_adapters(pm)["memory"] is MemoryAdapter


def test_canary_secrets_answer_any_key() -> None:
    ref = SecretRef(secret="anything")
    assert CanarySecrets().resolve(ref).get_secret_value() == CANARY_SECRET
