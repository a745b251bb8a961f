"""The load-time rule for written paths, as a third-party file adapter gets it: no code needed
beyond ``written_paths``."""

from __future__ import annotations

import os
import stat
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector_core.adapters import Adapter, AdapterSettings, ConfigPath, Page
from connector_core.config import load_config
from connector_core.errors import ConfigValidationError
from connector_core.query import Condition


class SheetSettings(AdapterSettings):
    """A third-party file adapter's settings: the file it writes, and a template it reads."""

    written_paths: ClassVar[frozenset[str]] = frozenset({"path"})
    path: ConfigPath
    template: ConfigPath | None = None


class SheetAdapter(Adapter):
    """Writes one file per connection (not a real adapter: only its settings matter here)."""

    name = "sheet"
    settings_model = SheetSettings

    def read(
        self,
        *,
        cursor: str | None = None,
        fields: frozenset[str] | None = None,
        where: Condition | None = None,
    ) -> Iterator[Page]:
        yield Page([])


ADAPTERS: dict[str, type[Adapter]] = {"sheet": SheetAdapter}

CONFIG = """\
    version: 1
    network: {name: Demo}
    connections:
      members:
        adapter: sheet
        settings: {path: data/members.csv}
      north:
        adapter: sheet
        settings: {path: NORTH, template: TEMPLATE}
    jobs:
      nightly: {source: members, target: north, policy: policy.yaml}
    """


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("net")
    (root / "policy.yaml").write_text("rules: []\n")
    (root / "data").mkdir()
    (root / "data" / "members.csv").write_text("id\n")
    (root / "out").mkdir()
    return root


def problems(folder: Path, north: str, template: str = "t.csv") -> list[str]:
    text = CONFIG.replace("NORTH", repr(north)).replace("TEMPLATE", repr(template))
    path = folder / "connector.yaml"
    path.write_text(textwrap.dedent(text))
    try:
        load_config(path, ADAPTERS)
    except ConfigValidationError as err:
        return [str(p) for p in err.problems]
    return []


def test_a_plain_path_of_its_own_is_accepted(folder: Path) -> None:
    assert problems(folder, "out/north.csv") == []


segment = st.sampled_from(["./", ".//", "out/../", "data/../", "nowhere/../", "data/./../"])


@given(st.lists(segment, max_size=4), st.lists(st.sampled_from(["./", "//"]), max_size=2))
def test_the_sources_path_is_refused_however_spelled(
    folder: Path, before: list[str], inside: list[str]
) -> None:
    spelled = "".join(before) + "data/" + "".join(inside) + "members.csv"
    found = problems(folder, spelled)
    assert len(found) == 1, spelled
    assert f"{folder}/connector.yaml:9:" in found[0]
    assert "is the path of connections.members.settings.path (line 6)" in found[0]


def test_a_hard_link_to_the_source_is_refused(folder: Path) -> None:
    linked = folder / "out" / "hard.csv"
    os.link(folder / "data" / "members.csv", linked)
    try:
        assert "has 2 names (a hard link)" in problems(folder, "out/hard.csv")[0]
    finally:
        linked.unlink()


def test_paths_the_connection_itself_reads_count_too(folder: Path) -> None:
    found = problems(folder, "out/north.csv", template="out/north.csv")
    assert len(found) == 1
    assert "is the path of connections.north.settings.template" in found[0]


def test_a_folder_holding_another_path_is_refused(folder: Path) -> None:
    assert "is a folder holding the path of" in problems(folder, "data")[0]


def test_only_written_paths_of_targets_must_not_be_links(folder: Path) -> None:
    link = folder / "template-link.csv"
    link.symlink_to(folder / "data" / "members.csv")
    try:
        # A path the connection only reads may be a link, even to another connection's file.
        assert problems(folder, "out/north.csv", template="template-link.csv") == []
    finally:
        link.unlink()


PIECES = st.lists(st.sampled_from(["a", "b", "c.csv", "..", ".", "link"]), min_size=1, max_size=4)
REAL_PIECES = st.lists(
    st.sampled_from(["a", "b", "f.csv", "g.csv", "..", ".", "", "link", "to-file", "up", "loop1"]),
    min_size=1,
    max_size=5,
)


@given(written=PIECES, other=PIECES)
def test_a_written_path_stands_to_a_place_as_pathlib_and_samefile_say(
    tmp_path_factory: pytest.TempPathFactory, written: list[str], other: list[str]
) -> None:
    """The places' facts found once (a template's 15,000 partners are each compared with
    every place) decide as the path comparisons made anew for each pair did: equal paths
    or the same file, a parent, or a child; links, missing files and `..` included."""
    from connector_core.local_paths import _ident, _Place, _relation

    root = tmp_path_factory.getbasetemp() / "relations"
    if not root.exists():
        (root / "a" / "b").mkdir(parents=True)
        (root / "a" / "c.csv").write_text("x")
        (root / "a" / "b" / "c.csv").write_text("x")
        (root / "link").symlink_to(root / "a")
    mine = Path(os.path.normpath(root.joinpath(*written)))
    place = _Place(root.joinpath(*other), "a place", None)
    real = place.path.resolve()
    try:
        same = os.path.samefile(mine, place.path)
    except OSError:
        same = False
    if mine == real or same:
        expected: str | None = "is the path of"
    elif real in mine.parents:
        expected = "lies inside the folder of"
    elif mine in real.parents:
        expected = "is a folder holding the path of"
    else:
        expected = None
    assert _relation(mine, _ident(mine), place) == expected


@given(paths=st.lists(PIECES, min_size=1, max_size=5))
def test_the_first_link_on_a_path_is_found_as_a_walk_of_paths_finds_it(
    tmp_path_factory: pytest.TempPathFactory, paths: list[list[str]]
) -> None:
    """first_link joins the parts as text and, given the set of parts found plain by the
    calls before (15,000 targets are checked at load), looks at each of those once: it
    names the same part as walking each path's parents as Path objects does."""
    from connector_core.files import first_link

    root = tmp_path_factory.mktemp("links")
    (root / "a" / "b").mkdir(parents=True)
    (root / "link").symlink_to(root / "a")
    plain: set[str] = set()
    for pieces in paths:
        path = root.joinpath(*pieces)
        expected = None
        current = Path(path.anchor)
        for part in path.parts[1:]:
            current = current / part
            try:
                if stat.S_ISLNK(os.lstat(current).st_mode):
                    expected = current
                    break
            except (FileNotFoundError, NotADirectoryError):
                break
        assert first_link(path) == expected
        assert first_link(path, plain) == expected
        assert all(not os.path.islink(part) and os.path.lexists(part) for part in plain)


@given(paths=st.lists(REAL_PIECES, min_size=1, max_size=6))
def test_real_paths_resolve_as_realpath_does(
    tmp_path_factory: pytest.TempPathFactory, paths: list[list[str]]
) -> None:
    """RealPaths (a load's partners' folders resolved once) gives, path after path, what
    os.path.realpath gives: through links to folders and files, loops, missing parts,
    files taken for folders, ``..`` and ``.``."""
    from connector_core.files import RealPaths

    root = tmp_path_factory.mktemp("real")
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "f.csv").write_text("x")
    (root / "link").symlink_to(root / "a")
    (root / "a" / "to-file").symlink_to(root / "a" / "f.csv")
    (root / "a" / "up").symlink_to("..")
    (root / "loop1").symlink_to(root / "loop2")
    (root / "loop2").symlink_to(root / "loop1")
    real = RealPaths()
    for pieces in paths:
        text = os.path.join(str(root), *pieces)
        assert real(text) == os.path.realpath(text), text
        assert real(Path(text)) == os.path.realpath(text), text


def test_a_load_of_many_partners_looks_at_their_folder_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parts shared by the targets of a template's partners are looked at once per
    load, not once per partner."""
    from connector_core.files import first_link

    out = tmp_path / "out"
    out.mkdir()
    looked: list[str] = []
    real_lstat = os.lstat
    monkeypatch.setattr(os, "lstat", lambda p, *a, **k: looked.append(str(p)) or real_lstat(p))
    plain: set[str] = set()
    for n in range(50):
        assert first_link(out / f"p{n}.csv", plain) is None
    assert looked.count(str(out)) == 1
    assert len(looked) == len(out.parts) - 1 + 50  # each part of the folder once, each file
