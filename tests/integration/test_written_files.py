"""Every local file the connector writes: no link followed, no hard link, no FIFO or device.

A target, the ledger's anchors file, a job's lock file, ``ledger export --output`` and any
``--output`` go through :mod:`connector_core.files`, which never follows a symbolic link and
refuses a file that is not a regular file or has another name (a hard link to a file outside
the configuration). A target path that is such a file is refused already when connector.yaml
is loaded (exit 3, with its line); none of these files is opened for reading first.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector_core.files import LinkRefused, NotPlainFile, append_file, replace_file
from tests.integration.test_cli import run
from tests.integration.test_target_paths import (
    ENV,
    NORTH,
    line_of,
    refused,
    set_north_path,
    write_one,
)

SECRET = "id,first_name,street_address\nM9,Outsider,9 Elsewhere Lane\n"
REPO = Path(__file__).resolve().parents[2]


def victim(demo: Path) -> Path:
    """A file outside the configuration that a careless link would lead to."""
    path = demo.parent / "victim.csv"
    path.write_text(SECRET)
    return path


# -- 2. a hard link or a non-regular file at the target path ------------------------------


def test_a_hard_link_at_the_target_path_is_refused_at_load(runner: CliRunner, demo: Path) -> None:
    os.link(victim(demo), demo / "out" / "organizers-north.csv")
    line = line_of(demo / "connector.yaml", NORTH)
    refused(runner, demo, f"connector.yaml:{line}:", "has 2 names (a hard link)")
    assert (demo.parent / "victim.csv").read_text() == SECRET


def test_a_fifo_at_the_target_path_is_refused_at_load(runner: CliRunner, demo: Path) -> None:
    os.mkfifo(demo / "out" / "organizers-north.csv")
    line = line_of(demo / "connector.yaml", NORTH)
    refused(runner, demo, f"connector.yaml:{line}:", "is not a regular file (a FIFO)")


def test_the_writer_refuses_a_hard_link_without_reading_it(tmp_path: Path) -> None:
    outside = tmp_path / "victim.csv"
    outside.write_text(SECRET)
    target = tmp_path / "north.csv"
    os.link(outside, target)
    with pytest.raises(NotPlainFile, match="hard link"):
        write_one(target)
    assert outside.read_text() == SECRET
    assert target.stat().st_nlink == 2


def test_the_writer_refuses_a_fifo_without_hanging(tmp_path: Path) -> None:
    target = tmp_path / "north.csv"
    os.mkfifo(target)
    with pytest.raises(NotPlainFile, match="FIFO"):
        write_one(target)


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(names=st.integers(min_value=2, max_value=4), text=st.text(min_size=1, max_size=40))
def test_no_written_file_with_another_name_is_touched(
    tmp_path: Path, names: int, text: str
) -> None:
    folder = tmp_path / os.urandom(4).hex()
    folder.mkdir()
    outside = folder / "outside"
    outside.write_text(text, encoding="utf-8", errors="surrogateescape")
    for n in range(1, names):
        os.link(outside, folder / f"name{n}")
    before = outside.read_bytes()
    for n in range(1, names):
        with pytest.raises(NotPlainFile):
            replace_file(folder / f"name{n}", lambda out: out.write("x"), encoding="utf-8")
        with pytest.raises(NotPlainFile):
            append_file(folder / f"name{n}", b"x")
    assert outside.read_bytes() == before
    assert outside.stat().st_nlink == names


# -- 3. the ledger's anchors file -----------------------------------------------------------


def test_a_linked_anchors_file_is_refused_at_load(runner: CliRunner, demo: Path) -> None:
    (demo / "anchors.log").symlink_to(demo / "data" / "members.csv")
    line = line_of(demo / "connector.yaml", "anchors: anchors.log")
    refused(runner, demo, f"connector.yaml:{line}:", "is a symbolic link")
    assert not list((demo / "out").iterdir())


def test_the_anchor_is_never_appended_through_a_link(runner: CliRunner, demo: Path) -> None:
    result = run(runner, "run", "organizers-north", cwd=demo, env=ENV)
    assert result.exit_code == 0, result.output
    outside = victim(demo)
    (demo / "anchors.log").unlink()
    (demo / "anchors.log").symlink_to(outside)  # appears after loading, before the append
    with pytest.raises(LinkRefused):
        append_file(demo / "anchors.log", b"2026 1:abc\n")
    assert outside.read_text() == SECRET


# -- 4. job lock files ----------------------------------------------------------------------


@pytest.mark.parametrize("lock", ["organizers-north.lock", "targets/organizers-north.lock"])
def test_a_linked_lock_file_is_not_truncated(runner: CliRunner, demo: Path, lock: str) -> None:
    outside = victim(demo)
    path = demo / "state.db.locks" / lock
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    path.symlink_to(outside)
    result = run(runner, "run", "organizers-north", cwd=demo, env=ENV)
    assert result.exit_code == 3, result.output
    assert "symbolic link" in result.stderr
    assert "Traceback" not in result.output
    assert outside.read_text() == SECRET


def test_a_linked_lock_folder_is_not_followed(runner: CliRunner, demo: Path) -> None:
    elsewhere = demo.parent / "elsewhere"
    elsewhere.mkdir()
    (demo / "state.db.locks").symlink_to(elsewhere)
    result = run(runner, "run", "organizers-north", cwd=demo, env=ENV)
    assert result.exit_code == 3, result.output
    assert not list(elsewhere.iterdir())


# -- 5. --output files ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("ledger", "export", "--output", "export.jsonl"),
        ("schema", "config", "--output", "export.jsonl"),
        ("schema", "policy", "--output", "export.jsonl"),
    ],
)
def test_an_output_file_is_never_written_through_a_link(
    runner: CliRunner, demo: Path, args: tuple[str, ...]
) -> None:
    outside = victim(demo)
    (demo / "export.jsonl").symlink_to(outside)
    result = run(runner, *args, cwd=demo, env=ENV)
    assert result.exit_code == 3, result.output
    assert "symbolic link" in result.stderr
    assert "Traceback" not in result.output
    assert outside.read_text() == SECRET
    (demo / "export.jsonl").unlink()
    os.link(outside, demo / "export.jsonl")
    result = run(runner, *args, cwd=demo, env=ENV)
    assert result.exit_code == 3, result.output
    assert "hard link" in result.stderr
    assert outside.read_text() == SECRET


def test_an_output_file_is_written(runner: CliRunner, demo: Path) -> None:
    result = run(runner, "schema", "config", "--output", "schema.json", cwd=demo, env=ENV)
    assert result.exit_code == 0, result.output
    assert (demo / "schema.json").read_text().startswith("{")


# -- 6. the connector's own folders ---------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "what"),
    [
        ("state.db.locks/x.csv", "the job lock folder"),
        ("state.db.locks/targets/x.csv", "the job lock folder"),
        ("state.db.locks", "the job lock folder"),
        ("state.db-wal", "the state database's journal"),
        ("state.db-journal", "the state database's journal"),
    ],
)
def test_the_connectors_own_folders_and_files_are_refused(
    runner: CliRunner, demo: Path, path: str, what: str
) -> None:
    line = set_north_path(demo, path)
    refused(runner, demo, f"connector.yaml:{line}:", what)


# -- one door: no other code writes a local file --------------------------------------------

_WRITES = re.compile(
    r"""\.open\(\s*["'][wax]|open\([^)]*["'][wax]b?["']|write_text\(|write_bytes\(|os\.open\(|"""
    r"""O_CREAT|O_WRONLY|O_RDWR|\.touch\(|shutil\.(copy|move)"""
)


def test_every_local_write_goes_through_connector_core_files() -> None:
    sources = [
        *(REPO / "connector_core").rglob("*.py"),
        *(REPO / "plugins").glob("*/connector_*/**/*.py"),
    ]
    allowed = {"connector_core/files.py"}
    offenders = []
    for path in sources:
        relative = path.relative_to(REPO).as_posix()
        if relative in allowed or "/testing/" in relative or "/tests/" in relative:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if _WRITES.search(line):
                offenders.append(f"{relative}:{number}: {line.strip()}")
    assert offenders == []
