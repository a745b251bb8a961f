"""Real CardDAV servers (Radicale, Xandikos) started on free loopback ports, for tests.

Each server runs in its own subprocess over a temporary folder, with no authentication; a
:class:`DavServer` names its base URL and one empty address book created for the caller.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests

SERVER_NAMES = ("radicale", "xandikos")
_START_TIMEOUT = 20.0

MKCOL_ADDRESSBOOK = """<?xml version="1.0" encoding="utf-8"?>
<d:mkcol xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:carddav">
  <d:set><d:prop>
    <d:resourcetype><d:collection/><c:addressbook/></d:resourcetype>
    <d:displayname>{name}</d:displayname>
  </d:prop></d:set>
</d:mkcol>"""


@dataclasses.dataclass
class DavServer:
    """A running CardDAV server: its kind, base URL and the user's home collection."""

    kind: str
    base_url: str
    home_url: str
    process: subprocess.Popen[bytes]
    password: str | None = None

    def new_address_book(self, name: str | None = None) -> str:
        """Create an empty address book with extended MKCOL; return its URL (with a slash)."""
        url = f"{self.home_url}{name or 'book-' + uuid.uuid4().hex[:12]}/"
        response = requests.request(
            "MKCOL",
            url,
            data=MKCOL_ADDRESSBOOK.format(name="Test book").encode(),
            headers={"Content-Type": "application/xml; charset=utf-8"},
            auth=_auth(self.password),
            timeout=10,
        )
        if response.status_code != 201:
            raise RuntimeError(f"MKCOL {url} answered {response.status_code}: {response.text}")
        return url


class CountingSession(requests.Session):
    """A real session that counts the requests it sends, by method."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.before: Callable[[str], None] | None = None
        self.hooked = False

    def request(
        self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any
    ) -> requests.Response:
        self.calls.append(str(method))
        if self.before is not None:
            self.before(str(method))
        return super().request(method, url, *args, **kwargs)


def book_cards(book_url: str) -> dict[str, str]:
    """Every card in the book at `book_url`, by name (without ``.vcf``): its vCard text,
    read with one sync-collection and one multiget, as a client would."""
    from connector_nextcloud.carddav import CardDavClient

    with requests.Session() as session:
        client = CardDavClient(session, book_url, "test", 10)
        members = client.sync_collection(None, None).members
        cards = client.multiget([m.href for m in members if not m.deleted])
    return {client.name_of(c.href).removesuffix(".vcf"): c.data for c in cards}


def _auth(password: str | None) -> tuple[str, str] | None:
    return None if password is None else (USER, password)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


#: With ``password=...`` Radicale requires this user and password (HTTP Basic).
USER = "user"


def _radicale_auth(folder: Path, password: str | None) -> str:
    if password is None:
        return "[auth]\ntype = none\n"
    users = folder / "users"
    users.write_text(f"{USER}:{password}\n")
    return (
        f"[auth]\ntype = htpasswd\nhtpasswd_filename = {users}\n"
        "htpasswd_encryption = plain\ndelay = 0\n"
    )


def _command(kind: str, port: int, folder: Path, password: str | None) -> list[str]:
    if kind == "radicale":
        rights = folder / "rights"
        # Anyone (no authentication in tests) may read and write every collection.
        rights.write_text("[all]\nuser: .*\ncollection: .*\npermissions: RrWw\n")
        config = folder / "radicale.conf"
        config.write_text(
            "[server]\n"
            f"hosts = 127.0.0.1:{port}\n"
            + _radicale_auth(folder, password)
            + f"[rights]\ntype = from_file\nfile = {rights}\n"
            "[storage]\n"
            f"filesystem_folder = {folder / 'collections'}\n"
            "[logging]\nlevel = warning\n"
        )
        return [sys.executable, "-m", "radicale", "--config", str(config)]
    if kind == "xandikos":
        return [
            sys.executable,
            "-m",
            "xandikos.web",
            "--listen-address",
            "127.0.0.1",
            "--port",
            str(port),
            "--directory",
            str(folder / "data"),
            "--state-dir",
            str(folder / "state"),
            "--current-user-principal",
            "/user/",
            "--defaults",
            "--no-detect-systemd",
        ]
    raise ValueError(f"unknown CardDAV server {kind!r}; use one of {SERVER_NAMES}")


def _home(kind: str, base_url: str) -> str:
    # Xandikos --defaults creates /user/contacts/addressbook/; for Radicale the fixture
    # creates /user/ with a plain MKCOL (anonymous users get no principal collection).
    return f"{base_url}/user/contacts/" if kind == "xandikos" else f"{base_url}/user/"


def _wait_until_up(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode}")
        with contextlib.suppress(requests.ConnectionError):
            requests.request("PROPFIND", url, headers={"Depth": "0"}, timeout=2)
            return
        time.sleep(0.05)
    raise RuntimeError(f"the server at {url} did not answer within {_START_TIMEOUT} s")


@contextlib.contextmanager
def run_server(kind: str, folder: Path, *, password: str | None = None) -> Iterator[DavServer]:
    """Start a `kind` server storing its data under `folder`; stop it on exit.

    With `password` (Radicale only) the server requires :data:`USER` and that password.
    """
    if password is not None and kind != "radicale":
        raise ValueError("only the Radicale fixture supports authentication")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log = (folder / "server.log").open("wb")
    process = subprocess.Popen(
        _command(kind, port, folder, password), stdout=log, stderr=subprocess.STDOUT
    )
    try:
        _wait_until_up(base_url + "/", process)
        home = _home(kind, base_url)
        if kind == "radicale":  # the principal collection must exist before MKCOL below it
            requests.request("MKCOL", home, auth=_auth(password), timeout=10)
        yield DavServer(kind, base_url, home, process, password)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
