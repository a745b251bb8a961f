"""Test helpers for the Nextcloud plugin: real CardDAV servers on loopback, and a front that
answers as a real Nextcloud (sabre/dav) where they differ (:class:`SabreProxy`)."""

from __future__ import annotations

from connector_nextcloud.testing.sabre_proxy import SabreProxy
from connector_nextcloud.testing.servers import (
    SERVER_NAMES,
    CountingSession,
    DavServer,
    book_cards,
    free_port,
    run_server,
)

__all__ = [
    "SERVER_NAMES",
    "CountingSession",
    "DavServer",
    "SabreProxy",
    "book_cards",
    "free_port",
    "run_server",
]
