"""Placeholder: the CSV adapter is being written."""
from __future__ import annotations

from connector_core import Adapter, AdapterSettings


class CsvSettings(AdapterSettings):
    """CSV settings."""


class CsvAdapter(Adapter):
    """CSV files."""

    name = "csv"
    settings_model = CsvSettings

    def read(self, *, cursor=None, fields=None, where=None):  # type: ignore[no-untyped-def]
        return iter(())
