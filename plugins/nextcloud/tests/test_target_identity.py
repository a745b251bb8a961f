"""One writer per target is about WHERE a connection writes, not what it is called.

Two nextcloud_files connections naming the same file on the same server (however the URL,
user and folder are written) are one target: two jobs writing them would mix one
recipient's people and columns into another's file, so connector.yaml is refused when it
loads (exit 3, naming both lines). Run through the CLI against a real WebDAV server.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from connector_nextcloud.files import FilesSettings
from connector_nextcloud.settings import NextcloudSettings
from connector_nextcloud.testing.webdav_server import WebDavServer
from hypothesis import given
from hypothesis import strategies as st

from tests.integration.test_cli import run

USER, PASSWORD = "alice", "app-password-1234"

POLICY = """\
policy: %(name)s
rules:
  - allow: in the %(region)s
    when: {region: %(region)s}
fields:
  first_name: show
  %(field)s: show
"""

SOURCE = """\
id,first_name,city,email,region
p1,Ana,Leeds,ana@example.org,North
p2,Bruno,Bath,bruno@example.org,South
"""


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def dav(tmp_path: Path) -> Iterator[WebDavServer]:
    with WebDavServer(tmp_path / "dav", user=USER, password=PASSWORD) as server:
        (server.root / "exports").mkdir()
        yield server


def network(root: Path, north: dict[str, Any], south: dict[str, Any]) -> dict[str, str]:
    """connector.yaml with jobs north → `north` and south → `south`; the CLI's environment."""
    (root / "crm.csv").write_text(SOURCE, encoding="utf-8")
    for name, region, field in (("north", "North", "city"), ("south", "South", "email")):
        text = POLICY % {"name": name, "region": region, "field": field}
        (root / f"{name}.yaml").write_text(text, encoding="utf-8")
    lines = [
        "version: 1",
        "network: {name: Test network}",
        "connections:",
        "  crm: {adapter: csv, settings: {path: crm.csv}}",
        f"  north-files: {{adapter: nextcloud_files, settings: {json.dumps(north)}}}",
        f"  south-files: {{adapter: nextcloud_files, settings: {json.dumps(south)}}}",
        "jobs:",
        "  north: {source: crm, target: north-files, policy: north.yaml}",
        "  south: {source: crm, target: south-files, policy: south.yaml}",
    ]
    (root / "connector.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {
        "CONNECTOR_SECRET_NORTH_FILES_APP_PASSWORD": PASSWORD,
        "CONNECTOR_SECRET_SOUTH_FILES_APP_PASSWORD": PASSWORD,
    }


def settings(url: str, **extra: Any) -> dict[str, Any]:
    return {"webdav_url": url, "user": USER, "app_password": {"secret": "app_password"}, **extra}


def line_of(root: Path, text: str) -> int:
    lines = (root / "connector.yaml").read_text().splitlines()
    return next(n for n, line in enumerate(lines, 1) if text in line)


def test_two_connections_writing_one_file_are_refused(
    runner: CliRunner, tmp_path: Path, dav: WebDavServer
) -> None:
    host, port = dav.url.removeprefix("http://").rstrip("/").split(":")
    same = f"HTTP://{host.upper() if host.isalpha() else host}:{port}//exports/./"
    env = network(tmp_path, settings(dav.url + "exports/"), settings(same))
    result = run(runner, "run", "--all", cwd=tmp_path, env=env)
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output
    north, south = line_of(tmp_path, "north: {"), line_of(tmp_path, "south: {")
    assert f"connector.yaml:{south}:" in result.stderr
    assert f"line {north}" in result.stderr
    assert "north-files" in result.stderr
    assert "south-files" in result.stderr
    assert not list((dav.root / "exports").iterdir())
    assert dav.requests_made("PUT") == []


def test_two_files_in_one_folder_keep_their_audiences_apart(
    runner: CliRunner, tmp_path: Path, dav: WebDavServer
) -> None:
    folder = dav.url + "exports/"
    env = network(
        tmp_path, settings(folder, file_name="north.csv"), settings(folder, file_name="south.csv")
    )
    result = run(runner, "run", "--all", cwd=tmp_path, env=env)
    assert result.exit_code == 0, result.output
    north = (dav.root / "exports" / "north.csv").read_text(encoding="utf-8-sig")
    south = (dav.root / "exports" / "south.csv").read_text(encoding="utf-8-sig")
    assert "Ana" in north
    assert "Bruno" in south
    assert "Bruno" not in north
    assert "email" not in north
    assert "Ana" not in south
    assert "city" not in south


# -- the identity, however the place is written ------------------------------------------------

_segment = st.text(alphabet="abcXYZ019 -_é", min_size=1, max_size=8).filter(
    lambda s: s.strip(" ") == s and s not in {".", ".."}
)


@given(
    host=st.sampled_from(["cloud.example.org", "Cloud.Example.ORG"]),
    port=st.sampled_from(["", ":443"]),
    folder=st.lists(_segment, min_size=0, max_size=3),
    slashes=st.sampled_from(["", "/", "//"]),
    base=st.sampled_from(["", "/"]),
)
def test_one_remote_file_has_one_identity(
    host: str, port: str, folder: list[str], slashes: str, base: str
) -> None:
    plain = FilesSettings(
        url="https://cloud.example.org", user=USER, folder="/".join(folder), file_name="x.csv"
    )
    written = FilesSettings(
        url=f"https://{host}{port}{base}",
        user=USER,
        folder=slashes + "/".join(folder) + slashes,
        file_name="x.csv",
    )
    assert plain.target_identity() == written.target_identity()
    other = FilesSettings(
        url="https://cloud.example.org", user=USER, folder="/".join(folder), file_name="y.csv"
    )
    assert plain.target_identity().isdisjoint(other.target_identity())
    by_url = FilesSettings(webdav_url=plain.folder_url(), user=USER, file_name="x.csv")
    assert by_url.target_identity() == plain.target_identity()


def test_one_address_book_has_one_identity() -> None:
    by_name = NextcloudSettings(url="https://cloud.example.org", user="bo", address_book="n")
    by_url = NextcloudSettings(
        address_book_url="HTTPS://cloud.example.org:443/remote.php/dav/addressbooks/users/bo/n"
    )
    assert by_name.target_identity() == by_url.target_identity()
    other = NextcloudSettings(url="https://cloud.example.org", user="bo", address_book="s")
    assert by_name.target_identity().isdisjoint(other.target_identity())
