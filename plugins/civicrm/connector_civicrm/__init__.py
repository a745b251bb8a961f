"""CiviCRM (APIv4) as a Commons Connector source or target.

The entry point imports only this module: the adapter's module (and requests) is imported
when the engine asks for adapters (so `connector --help` does not pay for it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from connector_core.hookspecs import hookimpl

if TYPE_CHECKING:
    from connector_civicrm.adapter import CivicrmAdapter
    from connector_civicrm.settings import CivicrmSettings, ConsentRule
    from connector_core.adapters import Adapter

__all__ = ["CivicrmAdapter", "CivicrmSettings", "ConsentRule", "register_adapters"]

_HOMES = {"CivicrmAdapter": "adapter", "CivicrmSettings": "settings", "ConsentRule": "settings"}


@hookimpl
def register_adapters(names: frozenset[str] | None) -> list[type[Adapter]]:
    """Provide the CiviCRM adapter."""
    if names is not None and "civicrm" not in names:
        return []  # not imported when connector.yaml does not use it
    from connector_civicrm.adapter import CivicrmAdapter

    return [CivicrmAdapter]


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        from importlib import import_module

        return getattr(import_module(f"connector_civicrm.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
