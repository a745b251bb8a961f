"""CiviCRM (APIv4) for Commons Connector (being built: no adapter is registered yet)."""

from __future__ import annotations

from connector_core import Adapter, hookimpl

__all__ = ["register_adapters"]


@hookimpl
def register_adapters() -> list[type[Adapter]]:
    """The adapters of this plugin (none until the adapter lands)."""
    return []
