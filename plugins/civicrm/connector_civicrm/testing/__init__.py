"""Test support for CiviCRM adapters: a fake APIv4 server (see ``testing.fake``)."""

from __future__ import annotations

from .fake import URL_STYLES, FakeCiviCRM
from .faults import KINDS, FaultRule, Faults
from .store import ALL_PERMISSIONS, ApiUser

__all__ = [
    "ALL_PERMISSIONS",
    "KINDS",
    "URL_STYLES",
    "ApiUser",
    "FakeCiviCRM",
    "FaultRule",
    "Faults",
]
