"""CSV files as a Commons Connector source or target.

The entry point imports only this module: the adapter's module is imported when the engine
asks for adapters (so `connector --help` does not pay for it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from connector_core.hookspecs import hookimpl

if TYPE_CHECKING:
    from connector_core.adapters import Adapter
    from connector_csv.adapter import CsvAdapter, CsvSettings

__all__ = ["CsvAdapter", "CsvSettings", "register_adapters"]


@hookimpl
def register_adapters(names: frozenset[str] | None) -> list[type[Adapter]]:
    """Provide the CSV adapter."""
    if names is not None and "csv" not in names:
        return []  # not imported when connector.yaml does not use it
    from connector_csv.adapter import CsvAdapter

    return [CsvAdapter]


def __getattr__(name: str) -> Any:
    if name in ("CsvAdapter", "CsvSettings"):
        from connector_csv import adapter

        return getattr(adapter, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
