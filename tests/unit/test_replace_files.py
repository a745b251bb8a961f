"""replace_files: many files replaced at once, each as replace_file would replace it alone."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector_core import files
from connector_core.files import LinkRefused, NewVersion, NotPlainFile, replace_file, replace_files

FIXTURES = HealthCheck.function_scoped_fixture  # each example makes its own folders
#: What may stand at a file's path before it is replaced.
KINDS = ("none", "file", "link", "folder", "hard link", "leftover")


def writer(text: str) -> Callable[[IO[str]], None]:
    def dump(out: IO[str]) -> None:
        out.write(text)

    return dump


def place(root: Path, name: str, kind: str) -> Path:
    """`root`/`name` with `kind` standing at it; the path."""
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind in ("file", "leftover"):
        path.write_text("old\n", encoding="utf-8")
        if kind == "leftover":  # a killed writer's temporary file, with another's rows
            (path.parent / f".{path.name}.0123456789ab.tmp").write_text("x", encoding="utf-8")
    elif kind == "link":
        (root / "elsewhere").write_text("theirs\n", encoding="utf-8")
        path.symlink_to(os.path.relpath(root / "elsewhere", path.parent))
    elif kind == "folder":
        path.mkdir()
    elif kind == "hard link":
        (root / "other-name").write_text("theirs\n", encoding="utf-8")
        os.link(root / "other-name", path)
    return path


def tree(root: Path) -> dict[str, Any]:
    """Every entry under `root`: a link's target, a file's text and permissions."""
    found: dict[str, Any] = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        if path.is_symlink():
            found[name] = ("link", os.readlink(path))
        elif path.is_dir():
            found[name] = "folder"
        else:
            found[name] = (path.read_text(encoding="utf-8"), stat.S_IMODE(path.stat().st_mode))
    return found


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """The syncs made: of files (os.fsync on a file), folders, and file systems (syncfs)."""
    count = {"file": 0, "folder": 0, "file system": 0}
    fsync, whole = os.fsync, files._sync_file_system

    def counted(fd: int) -> None:
        count["folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"] += 1
        fsync(fd)

    def counted_whole(fd: int) -> None:
        count["file system"] += 1
        whole(fd)

    monkeypatch.setattr(os, "fsync", counted)
    monkeypatch.setattr(files, "_sync_file_system", counted_whole)
    return count


needs_syncfs = pytest.mark.skipif(
    files._syncfs() is None, reason="syncfs (Linux 5.8 or later) is not here"
)


@needs_syncfs
def test_many_files_are_synced_with_the_file_system_once_before_and_once_after(
    tmp_path: Path, synced: dict[str, int]
) -> None:
    many = [
        NewVersion(tmp_path / f"p{n:02d}.csv", writer(f"row {n}\n"), "utf-8")
        for n in range(files.BATCH_SYNC)
    ]
    assert replace_files(many) == [None] * len(many)
    assert synced == {"file": 0, "folder": 0, "file system": 2}
    assert [p.read_text(encoding="utf-8") for p in sorted(tmp_path.iterdir())] == [
        f"row {n}\n" for n in range(files.BATCH_SYNC)
    ]


def test_a_few_files_are_each_synced_and_their_folder_once(
    tmp_path: Path, synced: dict[str, int]
) -> None:
    few = [NewVersion(tmp_path / f"p{n}.csv", writer("x\n"), "utf-8") for n in range(3)]
    (tmp_path / "b").mkdir()
    few.append(NewVersion(tmp_path / "b" / "p.csv", writer("y\n"), "utf-8"))
    assert replace_files(few) == [None] * 4
    assert synced == {"file": 4, "folder": 2, "file system": 0}


@pytest.mark.parametrize("batch", [1, 10_000], ids=["one sync", "a sync a file"])
@settings(max_examples=40, deadline=None, suppress_health_check=[FIXTURES])
@given(
    plan=st.lists(
        st.tuples(
            st.sampled_from(["a", "a/b", "c"]),
            st.sampled_from(KINDS),
            st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20),
            st.sampled_from([None, 0o640]),
            st.booleans(),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_each_file_ends_as_replace_file_leaves_it_alone(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    batch: int,
    plan: list[tuple[str, str, str, int | None, bool]],
) -> None:
    if files._syncfs() is None and batch == 1:
        pytest.skip("syncfs (Linux 5.8 or later) is not here")
    monkeypatch.setattr(files, "BATCH_SYNC", batch)
    alone, together = tmp_path_factory.mktemp("alone"), tmp_path_factory.mktemp("together")
    names = [f"{folder}/f{n}.csv" for n, (folder, *_) in enumerate(plan)]
    for name, (_, kind, *_) in zip(names, plan, strict=True):
        place(alone, name, kind)
        place(together, name, kind)
    expected: list[type[Exception] | None] = []
    versions = []
    for name, (_, _, text, mode, sweep) in zip(names, plan, strict=True):
        try:
            replace_file(alone / name, writer(text), encoding="utf-8", mode=mode, sweep=sweep)
        except (LinkRefused, NotPlainFile, OSError) as exc:
            expected.append(type(exc))
        else:
            expected.append(None)
        versions.append(NewVersion(together / name, writer(text), "utf-8", mode, sweep))
    found = replace_files(versions)
    assert [None if e is None else type(e) for e in found] == expected
    assert tree(together) == tree(alone)


def test_a_bug_in_one_dump_replaces_nothing_and_leaves_no_temporary_file(
    tmp_path: Path,
) -> None:
    def broken(out: IO[str]) -> None:
        out.write("half")
        raise KeyError("a bug")

    paths = [place(tmp_path, f"p{n}.csv", "file") for n in range(20)]
    versions = [NewVersion(p, writer("new\n"), "utf-8", sweep=True) for p in paths]
    versions[7] = NewVersion(paths[7], broken, "utf-8", sweep=True)
    with pytest.raises(KeyError):
        replace_files(versions)
    assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in paths)
    assert {p.read_text(encoding="utf-8") for p in paths} == {"old\n"}


@needs_syncfs
def test_a_failed_sync_fails_every_file_of_its_file_system_and_replaces_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "syncfs: Input/output error")

    monkeypatch.setattr(files, "_sync_file_system", failing)
    paths = [place(tmp_path, f"p{n}.csv", "file") for n in range(files.BATCH_SYNC)]
    found = replace_files([NewVersion(p, writer("new\n"), "utf-8") for p in paths])
    assert {type(e) for e in found} == {OSError}
    assert all(isinstance(e, OSError) and e.errno == errno.EIO for e in found)
    assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in paths)
    assert {p.read_text(encoding="utf-8") for p in paths} == {"old\n"}


def test_a_file_given_twice_is_refused(tmp_path: Path) -> None:
    twice = [NewVersion(tmp_path / "p.csv", writer("x"), "utf-8")] * 2
    with pytest.raises(ValueError, match="twice"):
        replace_files(twice)
