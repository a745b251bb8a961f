"""The load-time rule for local files a job writes: no links, no other file's place.

A connection's settings tell which local paths it touches (:meth:`AdapterSettings.local_paths`,
by default every setting holding a path) and which of them it writes as a job's target
(:attr:`AdapterSettings.written_paths`). For every connection some job writes, each written
path is resolved once, here, and refused (with the line of connector.yaml that sets it) when:

- it is, or passes through, a symbolic link (a link to the source would make the writer keep
  every row of the linked file in the recipient's file);
- it is a file with another name (a hard link: the writer would keep the rows of a file
  outside the configuration), or not a regular file (a FIFO would hang the run);
- it is, contains, or lies inside a path another connection touches (the source, another
  target, a CA bundle), also when written another way (``out/../data/./members.csv``) or
  through a link or a hard link to the same file;
- it is, contains or lies inside one of the connector's own files: connector.yaml, a policy,
  the SQLite state database and its journal files, the job lock folder beside it, the
  ledger's anchors file.

The ledger's anchors file, which the connector appends to, is held to the same rules.

The writers keep this true while a job runs (:mod:`connector_core.files`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from connector_core.adapters import AdapterSettings
from connector_core.errors import Problem
from connector_core.files import first_link, not_plain
from connector_core.yaml_errors import LocatedDocument, dotted

if TYPE_CHECKING:
    from connector_core.config import ConnectorConfig

Loc = tuple[str | int, ...]
_FIX = "give the target a file of its own"


@dataclasses.dataclass(frozen=True, slots=True)
class _Place:
    path: Path  # as resolved: every link followed
    what: str  # for messages: "connection 'members' (line 27)"
    loc: Loc | None  # where connector.yaml sets it; None for connector.yaml itself
    writes: bool = False  # a written path of a target connection
    #: what every written path is compared with (:func:`_relation`), found once: a
    #: template's 15,000 partner targets are each compared with every place
    real: Path = dataclasses.field(init=False, compare=False)  # every link followed
    ident: tuple[int, int] | None = dataclasses.field(init=False, compare=False)  # its file

    def __post_init__(self) -> None:
        object.__setattr__(self, "real", self.path.resolve())
        object.__setattr__(self, "ident", _ident(self.path))


def path_problems(
    doc: LocatedDocument,
    settings: Mapping[str, AdapterSettings],
    model: ConnectorConfig | None,
) -> list[Problem]:
    """Problems with the paths target connections write, each at the line that sets it.

    Args:
        doc: connector.yaml as loaded, for locations.
        settings: each connection's validated settings (those that validated).
        model: the validated file, for the connector's own files; None if it did not validate.
    """
    places = known_places(doc, settings, model)
    problems = []
    for place in places:
        if place.writes:
            assert place.loc is not None  # written places are connection settings
            problems += [
                doc.problem(place.loc, f"{dotted(place.loc)}: {message}")
                for message in written_problems(place.path, places, place)
            ]
    return problems


def known_places(
    doc: LocatedDocument,
    settings: Mapping[str, AdapterSettings],
    model: ConnectorConfig | None,
) -> list[_Place]:
    """Every local path connector.yaml's connections touch, and the connector's own files."""
    places = list(_connection_places(doc, settings, _targets(doc)))
    if model is not None:
        places += _own_places(doc, model)
    return places


def target_problems(
    settings: AdapterSettings, places: list[_Place], plain: set[str] | None = None
) -> list[tuple[str, str]]:
    """(setting, why) for each path a target connection with `settings` would write that
    :func:`written_problems` refuses: for the targets connector.yaml does not write out.
    `plain`: as :func:`~connector_core.files.first_link` takes it, shared by the calls of
    one load."""
    written = type(settings).written_paths
    return [
        (key, message)
        for key, path in sorted(settings.local_paths().items())
        if key in written
        for message in written_problems(path, places, plain=plain)
    ]


def written_problems(
    path: Path,
    places: list[_Place],
    place: _Place | None = None,
    plain: set[str] | None = None,
) -> list[str]:
    """Why a target may not write `path` (a link, not a plain file, the place of one of
    `places` but `place`, its own), each saying the fix; none when it may. For targets
    that connector.yaml does not write out (a partner's, from its registry row; an
    approved share request's delivery), which their callers locate. `plain`: see
    :func:`~connector_core.files.first_link`."""
    link = first_link(path, plain)
    if link is not None:
        how = "is" if link == path else f"passes through {link}, which is"
        return [
            f"{path} {how} a symbolic link; a target is written only where it "
            f"is, never through a link (it could lead to the source or another file): point "
            f"it at the real path, or replace the link with a plain file or folder"
        ]
    resolved = Path(os.path.normpath(path))
    try:
        why = not_plain(os.lstat(resolved))
    except OSError:
        why = None  # missing: the writer creates it
    if why is not None and not os.path.isdir(resolved):
        return [
            f"{resolved} {why}; a job writes only a regular file with a single name, "
            "never reading another file through it: remove it (or the other name) and let "
            "the connector create the file"
        ]
    problems = []
    ident = _ident(resolved)
    for other in places:
        if other is place:
            continue
        relation = _relation(resolved, ident, other)
        if relation:
            problems.append(
                f"{resolved} {relation} {other.what}, which a job would overwrite; {_FIX}"
            )
    return problems


def _targets(doc: LocatedDocument) -> set[str]:
    jobs = doc.get(("jobs",))
    bodies = jobs.values() if isinstance(jobs, dict) else ()
    return {b["target"] for b in bodies if isinstance(b, dict) and isinstance(b.get("target"), str)}


def _connection_places(
    doc: LocatedDocument, settings: Mapping[str, AdapterSettings], targets: set[str]
) -> Iterator[_Place]:
    for name, values in settings.items():
        written = type(values).written_paths if name in targets else frozenset()
        for key, path in values.local_paths().items():
            loc: Loc = ("connections", name, "settings", key)
            line = _line(doc, loc)
            what = f"{dotted(loc)} (line {line})" if line else dotted(loc)
            yield _Place(path, what, loc, writes=key in written)


def _own_places(doc: LocatedDocument, model: ConnectorConfig) -> Iterator[_Place]:
    yield _Place(doc.path.resolve(), f"connector.yaml itself ({doc.path})", None)
    if model.network.floor is not None:
        yield _located(doc, model.network.floor, ("network", "floor"), "the network floor")
    for job, body in model.jobs.items():
        yield _located(doc, body.policy, ("jobs", job, "policy"), f"the policy of job {job!r}")
    if model.ledger.anchors is not None:
        anchors = _located(
            doc, model.ledger.anchors, ("ledger", "anchors"), "the ledger anchors file"
        )
        yield dataclasses.replace(anchors, writes=True)
    url = model.state.url
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        database = Path(url.removeprefix("sqlite:///").partition("?")[0])
        yield _located(doc, database, ("state", "url"), "the state database")
        for suffix in ("-journal", "-wal", "-shm"):  # SQLite's own files beside it
            side = database.with_name(database.name + suffix)
            yield _located(doc, side, ("state", "url"), "the state database's journal")
        locks = database.with_name(database.name + ".locks")
        yield _located(doc, locks, ("state", "url"), "the job lock folder")


def _located(doc: LocatedDocument, path: Path, loc: Loc, what: str) -> _Place:
    line = _line(doc, loc)
    return _Place(path, f"{what} ({dotted(loc)}, line {line})" if line else what, loc)


def _line(doc: LocatedDocument, loc: Loc) -> int | None:
    mark = doc.locate(loc) if doc.get(loc) is not None else None
    return mark[0] if mark else None


def _relation(written: Path, ident: tuple[int, int] | None, other: _Place) -> str | None:
    """How `written` (whose file is `ident`) stands to `other`: the same path or file
    (:func:`os.path.samefile`), inside its folder, or a folder holding it; None if apart."""
    real = other.real
    if written == real or (ident is not None and ident == other.ident):
        return "is the path of"
    mine, theirs = written.parts, real.parts  # a proper prefix: one of the other's parents
    if len(theirs) < len(mine) and mine[: len(theirs)] == theirs:
        return "lies inside the folder of"
    if len(mine) < len(theirs) and theirs[: len(mine)] == mine:
        return "is a folder holding the path of"
    return None


def _ident(path: Path) -> tuple[int, int] | None:
    """The file at `path`, every link followed, as :func:`os.path.samefile` compares files
    (None when there is none)."""
    try:
        status = os.stat(path)
    except (OSError, ValueError):
        return None
    return status.st_dev, status.st_ino
