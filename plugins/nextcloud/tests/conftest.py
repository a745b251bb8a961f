"""Fixtures of the Nextcloud plugin's tests: real CardDAV servers, adapters over new books."""

from __future__ import annotations

import pytest
from connector_nextcloud import NextcloudAdapter, NextcloudSettings
from connector_nextcloud.testing import CountingSession


@pytest.fixture
def session() -> CountingSession:
    """A counting session the adapter under test sends through."""
    return CountingSession()


@pytest.fixture
def adapter(book_url: str, session: CountingSession) -> NextcloudAdapter:
    """A Nextcloud adapter over a new, empty book on each real server."""
    settings = NextcloudSettings(address_book_url=book_url, page_size=10)
    return NextcloudAdapter(settings, connection="book", session=session)
