"""The kit's pytest plugin, loaded through the ``pytest11`` entry point ``connector_conformance``.

It provides ``connector_secrets`` (every secret resolves to the canary value) and
``memory_adapter`` (a memory adapter over a store of its own), and registers the ``live``
marker so suites that use it run under ``--strict-markers``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from connector_core.testing.memory import MemoryAdapter, MemorySettings, reset_memory_stores
from connector_core.testing.samples import CanarySecrets

_LIVE = "live: needs a real remote server (CiviCRM, Nextcloud); deselect with -m 'not live'"


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``live`` marker unless the project already did."""
    if not any(line.split(":")[0].strip() == "live" for line in config.getini("markers")):
        config.addinivalue_line("markers", _LIVE)


@pytest.fixture
def connector_secrets() -> CanarySecrets:
    """A secret lookup answering the kit's canary value for any key."""
    return CanarySecrets()


@pytest.fixture
def memory_adapter() -> Iterator[MemoryAdapter]:
    """An empty memory adapter (page_size 10) over a store no other test uses."""
    store = f"test-{uuid.uuid4().hex}"
    adapter = MemoryAdapter(MemorySettings(store=store, page_size=10))
    try:
        yield adapter
    finally:
        adapter.close()
        reset_memory_stores(store)
