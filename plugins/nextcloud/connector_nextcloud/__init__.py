"""Nextcloud (CardDAV address books; WebDAV, OCS) for Commons Connector.

The entry point imports only this module: the adapters' modules (and requests, vobject) are
imported when the engine asks for adapters (so `connector --help` does not pay for them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from connector_core.hookspecs import hookimpl

if TYPE_CHECKING:
    from connector_core.adapters import Adapter
    from connector_nextcloud.adapter import NextcloudAdapter, NextcloudSettings
    from connector_nextcloud.files import FilesSettings, NextcloudFilesAdapter

__all__ = [
    "FilesSettings",
    "NextcloudAdapter",
    "NextcloudFilesAdapter",
    "NextcloudSettings",
    "register_adapters",
]

_HOMES = {
    "FilesSettings": "files",
    "NextcloudAdapter": "adapter",
    "NextcloudFilesAdapter": "files",
    "NextcloudSettings": "adapter",
}


@hookimpl
def register_adapters(names: frozenset[str] | None) -> list[type[Adapter]]:
    """Provide the Nextcloud adapters: CardDAV address books and CSV file exports (those
    of them in `names`; each module is imported only when asked for)."""
    found: list[type[Adapter]] = []
    if names is None or "nextcloud" in names:
        from connector_nextcloud.adapter import NextcloudAdapter

        found.append(NextcloudAdapter)
    if names is None or "nextcloud_files" in names:
        from connector_nextcloud.files import NextcloudFilesAdapter

        found.append(NextcloudFilesAdapter)
    return found


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        from importlib import import_module

        return getattr(import_module(f"connector_nextcloud.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
