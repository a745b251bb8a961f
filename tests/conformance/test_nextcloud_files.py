"""The nextcloud_files adapter passes the conformance suite against a real WebDAV server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from connector_nextcloud.files import FilesSettings, NextcloudFilesAdapter
from connector_nextcloud.testing.webdav_server import WebDavServer

from connector_core.credentials import SecretRef
from connector_core.testing import CANARY_SECRET, AdapterConformance, CanarySecrets


@pytest.fixture(scope="module")
def webdav(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDavServer]:
    root = tmp_path_factory.mktemp("webdav")
    with WebDavServer(root, user="kit", password=CANARY_SECRET) as server:
        yield server


class TestNextcloudFilesAdapter(AdapterConformance):
    @pytest.fixture
    def adapter(
        self, webdav: WebDavServer, request: pytest.FixtureRequest, connector_secrets: CanarySecrets
    ) -> NextcloudFilesAdapter:
        # Each test gets its own folder (created by the adapter's MKCOL on first write).
        folder = "t-" + "".join(c if c.isalnum() else "-" for c in request.node.name)
        settings = FilesSettings(
            webdav_url=f"{webdav.url}{folder}/",
            user="kit",
            app_password=SecretRef(secret="app_password"),
            page_size=10,
        )
        return NextcloudFilesAdapter(settings, connector_secrets, connection="export")
