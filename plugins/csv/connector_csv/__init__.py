"""CSV files as a Commons Connector source or target."""

from __future__ import annotations

from connector_core import Adapter, hookimpl
from connector_csv.adapter import CsvAdapter, CsvSettings

__all__ = ["CsvAdapter", "CsvSettings", "register_adapters"]


@hookimpl
def register_adapters() -> list[type[Adapter]]:
    """Provide the CSV adapter."""
    return [CsvAdapter]
