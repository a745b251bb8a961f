"""Test helpers for the Nextcloud plugin: real CardDAV servers on loopback."""

from __future__ import annotations

from connector_nextcloud.testing.servers import (
    SERVER_NAMES,
    CountingSession,
    DavServer,
    book_cards,
    free_port,
    run_server,
)

__all__ = ["SERVER_NAMES", "CountingSession", "DavServer", "book_cards", "free_port", "run_server"]
