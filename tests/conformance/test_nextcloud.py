"""The Nextcloud adapter passes the conformance suite against real Radicale and Xandikos."""

from __future__ import annotations

import pytest
from connector_nextcloud import NextcloudAdapter, NextcloudSettings
from connector_nextcloud.testing import DavServer

from connector_core.credentials import SecretRef
from connector_core.testing import AdapterConformance, CanarySecrets


class TestNextcloudAdapter(AdapterConformance):
    @pytest.fixture
    def adapter(
        self, carddav_server: DavServer, connector_secrets: CanarySecrets
    ) -> NextcloudAdapter:
        # Both test servers run without authentication; the app password is still resolved
        # (and sent) so the suite can check it never leaks.
        settings = NextcloudSettings(
            address_book_url=carddav_server.new_address_book(),
            user="user",
            app_password=SecretRef(secret="app_password"),
            page_size=10,
        )
        return NextcloudAdapter(settings, connector_secrets)
