"""Where a target is written: never through a link, never over the source or another file.

A target path is resolved once, when connector.yaml is loaded, and refused there (exit 3,
with the line that sets it); the writer follows no link that appears after that.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from connector_csv import CsvAdapter, CsvSettings

from connector_core.adapters import Change
from connector_core.files import LinkRefused
from tests.integration.test_cli import run

ENV = {"CONNECTOR_DEMO_HASH_KEY": "demo-hash-key-for-tests"}
NORTH = "path: out/organizers-north.csv"


def line_of(config: Path, text: str) -> int:
    return next(n for n, line in enumerate(config.read_text().splitlines(), 1) if text in line)


def set_north_path(demo: Path, path: str) -> int:
    """Point the organizers-north target at `path`; the line of connector.yaml that says so."""
    config = demo / "connector.yaml"
    line = line_of(config, NORTH)
    config.write_text(config.read_text().replace(NORTH, f"path: {path}"))
    return line


def refused(runner: CliRunner, demo: Path, *fragments: str) -> str:
    before = (demo / "data" / "members.csv").read_bytes()
    result = run(runner, "run", "organizers-north", cwd=demo, env=ENV)
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr
    assert (demo / "data" / "members.csv").read_bytes() == before
    return result.stderr


def test_a_symlink_at_the_target_path_is_refused(runner: CliRunner, demo: Path) -> None:
    (demo / "out" / "organizers-north.csv").symlink_to(demo / "data" / "members.csv")
    line = line_of(demo / "connector.yaml", NORTH)
    refused(runner, demo, f"connector.yaml:{line}:", "is a symbolic link")


def test_a_symlinked_folder_on_the_way_is_refused(runner: CliRunner, demo: Path) -> None:
    (demo / "out").rmdir()
    (demo / "elsewhere").mkdir()
    (demo / "out").symlink_to(demo / "elsewhere")
    line = line_of(demo / "connector.yaml", NORTH)
    refused(runner, demo, f"connector.yaml:{line}:", f"passes through {demo / 'out'}")
    assert not list((demo / "elsewhere").iterdir())


@pytest.mark.parametrize(
    "path", ["data/members.csv", "out/../data/./members.csv", "./data//members.csv"]
)
def test_the_source_path_is_refused_however_written(
    runner: CliRunner, demo: Path, path: str
) -> None:
    source_line = line_of(demo / "connector.yaml", "path: data/members.csv")
    line = set_north_path(demo, path)
    refused(
        runner,
        demo,
        f"connector.yaml:{line}:",
        f"is the path of connections.members.settings.path (line {source_line})",
    )


def test_another_connections_path_is_refused(runner: CliRunner, demo: Path) -> None:
    set_north_path(demo, "out/partner-housing.csv")
    stderr = refused(runner, demo, "is the path of connections.partner-housing.settings.path")
    assert "is the path of connections.organizers-north.settings.path" in stderr


@pytest.mark.parametrize(
    ("path", "what"),
    [
        ("connector.yaml", "connector.yaml itself"),
        ("state.db", "the state database"),
        ("../../policies/organizers-north.yaml", "the policy of job 'organizers-north'"),
        (".", "is a folder holding the path of"),
    ],
)
def test_the_connectors_own_files_are_refused(
    runner: CliRunner, demo: Path, path: str, what: str
) -> None:
    set_north_path(demo, path)
    refused(runner, demo, what)


def test_a_plain_target_path_still_works(runner: CliRunner, demo: Path) -> None:
    set_north_path(demo, "out/../out/./north.csv")
    result = run(runner, "run", "organizers-north", cwd=demo, env=ENV)
    assert result.exit_code == 0, result.output
    assert (demo / "out" / "north.csv").is_file()


# -- at run time: a link that appears after loading stops the write, unfollowed ------------


def write_one(path: Path) -> None:
    adapter = CsvAdapter(CsvSettings(path=path), connection="north")
    list(adapter.write([Change.upsert("k1", {"id": "k1", "first_name": "Ada"})]))


def test_the_writer_does_not_read_or_replace_through_a_link(tmp_path: Path) -> None:
    source = tmp_path / "members.csv"
    source.write_text("id,first_name,street_address\nM1,Jane,1 Secret Road\n")
    target = tmp_path / "north.csv"
    target.symlink_to(source)
    with pytest.raises(LinkRefused, match="symbolic link"):
        write_one(target)
    assert target.is_symlink()
    assert source.read_text() == "id,first_name,street_address\nM1,Jane,1 Secret Road\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["members.csv", "north.csv"]


def test_the_writer_does_not_follow_a_linked_folder(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "out").symlink_to(real)
    with pytest.raises(
        LinkRefused, match=f"passes through {tmp_path / 'out'}, which is a symbolic link"
    ):
        write_one(tmp_path / "out" / "north.csv")
    assert not list(real.iterdir())


def test_the_writer_replaces_a_plain_file_and_keeps_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "north.csv"
    write_one(target)
    assert oct(target.stat().st_mode & 0o777) == oct(0o600)
    os.chmod(target, 0o640)
    adapter = CsvAdapter(CsvSettings(path=target), connection="north")
    list(adapter.write([Change.upsert("k2", {"id": "k2", "first_name": "Bo"})]))
    assert oct(target.stat().st_mode & 0o777) == oct(0o640)
    assert target.read_text().splitlines() == ["id,first_name", "k1,Ada", "k2,Bo"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["north.csv"]
