"""Pytest fixtures that start real Radicale and Xandikos servers (one per test session).

Installed as a pytest plugin (entry point ``pytest11``) with the package. ``carddav_server`` is
parametrized over both servers; ``radicale_server`` and ``xandikos_server`` give one each.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connector_nextcloud.testing.sabre_proxy import SabreProxy
from connector_nextcloud.testing.servers import SERVER_NAMES, DavServer, run_server


def _start(kind: str, factory: pytest.TempPathFactory) -> Iterator[DavServer]:
    with run_server(kind, factory.mktemp(kind)) as server:
        yield server


@pytest.fixture(scope="session")
def radicale_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DavServer]:
    """A Radicale server on a free loopback port, for the whole session."""
    yield from _start("radicale", tmp_path_factory)


@pytest.fixture(scope="session")
def xandikos_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DavServer]:
    """A Xandikos server on a free loopback port, for the whole session."""
    yield from _start("xandikos", tmp_path_factory)


@pytest.fixture(params=SERVER_NAMES)
def carddav_server(request: pytest.FixtureRequest) -> DavServer:
    """Each real CardDAV server in turn."""
    server: DavServer = request.getfixturevalue(f"{request.param}_server")
    return server


@pytest.fixture
def book_url(carddav_server: DavServer) -> str:
    """A new, empty address book on the current server."""
    return carddav_server.new_address_book()


@pytest.fixture
def sabre(radicale_server: DavServer) -> Iterator[SabreProxy]:
    """Radicale behind a front that answers as Nextcloud's sabre/dav did where they differ
    (412 bodies, silent shares with unknown groups, address-book limits); the group
    ``organizers`` exists."""
    with SabreProxy(radicale_server.base_url, groups={"organizers"}) as proxy:
        yield proxy


@pytest.fixture
def sabre_book(sabre: SabreProxy, radicale_server: DavServer) -> str:
    """A new, empty address book, through the :func:`sabre` front."""
    return sabre.url(radicale_server.new_address_book())
