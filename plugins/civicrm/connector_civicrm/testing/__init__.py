"""Test support for CiviCRM adapters: a fake APIv4 server (see ``testing.fake``)."""

from __future__ import annotations

from .fake import URL_STYLES, FakeCiviCRM
from .faults import ECHO_ENCODINGS, KINDS, Echo, FaultRule, Faults
from .store import ALL_PERMISSIONS, ApiUser

__all__ = [
    "ALL_PERMISSIONS",
    "ECHO_ENCODINGS",
    "KINDS",
    "URL_STYLES",
    "ApiUser",
    "Echo",
    "FakeCiviCRM",
    "FaultRule",
    "Faults",
]
