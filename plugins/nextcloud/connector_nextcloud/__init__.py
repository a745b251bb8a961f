"""Nextcloud (CardDAV address books; WebDAV, OCS) for Commons Connector."""

from __future__ import annotations

from connector_core import Adapter, hookimpl
from connector_nextcloud.adapter import NextcloudAdapter, NextcloudSettings
from connector_nextcloud.files import FilesSettings, NextcloudFilesAdapter

__all__ = [
    "FilesSettings",
    "NextcloudAdapter",
    "NextcloudFilesAdapter",
    "NextcloudSettings",
    "register_adapters",
]


@hookimpl
def register_adapters() -> list[type[Adapter]]:
    """Provide the Nextcloud adapters: CardDAV address books and CSV file exports."""
    return [NextcloudAdapter, NextcloudFilesAdapter]
