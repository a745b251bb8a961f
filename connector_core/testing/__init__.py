"""The conformance kit for adapter authors, and an in-memory reference adapter.

Run the shared suite against an adapter by subclassing :class:`AdapterConformance`; the
kit's fixtures (``connector_secrets``, ``memory_adapter``) come from its pytest plugin,
which pytest loads through the ``pytest11`` entry point.
"""

from __future__ import annotations

from connector_core.testing.conformance import AdapterConformance
from connector_core.testing.memory import MemoryAdapter, MemorySettings, reset_memory_stores
from connector_core.testing.samples import (
    CANARY_SECRET,
    TEST_LEDGER_KEY,
    CanarySecrets,
    sample_records,
)

__all__ = [
    "CANARY_SECRET",
    "TEST_LEDGER_KEY",
    "AdapterConformance",
    "CanarySecrets",
    "MemoryAdapter",
    "MemorySettings",
    "reset_memory_stores",
    "sample_records",
]
