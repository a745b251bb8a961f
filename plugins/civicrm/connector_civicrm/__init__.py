"""CiviCRM (APIv4) as a Commons Connector source or target."""

from __future__ import annotations

from connector_civicrm.adapter import CivicrmAdapter
from connector_civicrm.settings import CivicrmSettings, ConsentRule
from connector_core import Adapter, hookimpl

__all__ = ["CivicrmAdapter", "CivicrmSettings", "ConsentRule", "register_adapters"]


@hookimpl
def register_adapters() -> list[type[Adapter]]:
    """Provide the CiviCRM adapter."""
    return [CivicrmAdapter]
