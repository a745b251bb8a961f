"""Local files the connector writes: never through a link, only regular files, atomically.

Every local file the connector writes goes through this module: a target (:func:`replace_file`,
read first with :func:`read_nofollow`), the ledger's anchors file (:func:`append_file`), a
job's lock file (:func:`open_lock`) and an ``--output`` file (:func:`write_output`). None of
them follows a symbolic link, and each refuses (:class:`NotPlainFile`) a file that is not a
regular file (a FIFO would hang the run, a device is no file) or that has more than one name
(a hard link to a file outside the configuration), before reading or writing any of it.

The load-time rule (:mod:`connector_core.local_paths`) refuses a target path that is or
passes through a symbolic link. These functions keep that true while a job runs: every
folder on the way and the file itself are opened with ``O_NOFOLLOW``, so a link that
appears after the configuration was loaded stops the run (:class:`LinkRefused`) instead of
being followed, and the new version of a file is written to a temporary file in the same
folder and renamed over the old one relative to that folder's descriptor, so a folder
swapped for a link halfway through changes nothing. It relies on POSIX ``dir_fd`` support
(Linux, macOS, the BSDs).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import re
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from connector_core.errors import ConfigError

__all__ = [
    "LinkRefused",
    "NotPlainFile",
    "append_file",
    "first_link",
    "not_plain",
    "open_folder",
    "open_lock",
    "read_nofollow",
    "replace_file",
    "write_output",
]

#: A temporary file's name (``.<name>.<12 hex>.tmp``), the target's name as group 1.
_TEMPORARY = re.compile(r"\.(.+)\.[0-9a-f]{12}\.tmp", re.DOTALL)
#: The temporary files found when this process listed a folder to sweep it, by target
#: name: {(folder, device, inode): {name: [file names]}} (see :func:`_sweep_temporaries`).
_LEFTOVERS: dict[tuple[str, int, int], dict[str, list[str]]] = {}
_LEFTOVERS_LOCK = threading.Lock()  # a run's groups write from several threads
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_LINK_ERRORS = (errno.ELOOP, errno.ENOTDIR, getattr(errno, "EMLINK", errno.ELOOP))


class LinkRefused(ConfigError):
    """A file an adapter writes is, or lies under, a symbolic link; it is never followed."""


class NotPlainFile(ConfigError):
    """A file the connector writes is not a regular file, or is a hard link (has other names)."""


_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISDIR, "a folder"),
)


def not_plain(status: os.stat_result) -> str | None:
    """Why a file with `status` (from ``lstat``/``fstat``) may not be written, or None."""
    if not stat.S_ISREG(status.st_mode):
        kind = next((name for test, name in _KINDS if test(status.st_mode)), "a special file")
        return f"is not a regular file ({kind})"
    if status.st_nlink > 1:
        return (
            f"has {status.st_nlink} names (a hard link): another name may be a file outside "
            "the configuration"
        )
    return None


def _refuse_plain(path: Path, why: str) -> NotPlainFile:
    return NotPlainFile(
        f"{path} {why}; the connector writes only a regular file with a single name",
        hint="Remove it (or move the other name away) and let the connector create the file.",
    )


def _check_fd(fd: int, path: Path) -> None:
    why = not_plain(os.fstat(fd))
    if why is not None:
        os.close(fd)
        raise _refuse_plain(path, why)


def first_link(path: Path, plain: set[str] | None = None) -> Path | None:
    """The first part of absolute `path` that is a symbolic link, or None.

    Parts that do not exist are not links; ``..`` is taken as written, after the part
    before it was checked. `plain`: the parts (as text) that earlier calls found to exist
    and not to be links, which this call adds to (all but the last part): a load checking
    15,000 partners' targets in one folder looks at that folder's parts once, not 15,000
    times. (A writer checks its path again when it writes: see :func:`open_folder`.)
    """
    path = path.absolute()
    current = path.anchor  # joined as text: a template's 15,000 targets are checked at load
    parts = path.parts[1:]
    last = len(parts) - 1
    for index, part in enumerate(parts):
        current = os.path.join(current, part)
        if plain is not None and current in plain:
            continue
        try:
            if stat.S_ISLNK(os.lstat(current).st_mode):
                return Path(current)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if plain is not None and index < last:
            plain.add(current)
    return None


class RealPaths:
    """:func:`os.path.realpath` with each folder resolved once: the real path of a file in
    a folder already resolved takes one look at the file (a load resolving 15,000 partners'
    targets in one folder looks at the folder's parts once, not 15,000 times). For one
    load: a folder replaced by a link afterwards is not seen. A path that is not absolute
    and normal (``..``, ``.``, a trailing ``/``) is resolved by realpath itself."""

    def __init__(self) -> None:
        self._folders: dict[str, str] = {}

    def __call__(self, path: str | os.PathLike[str]) -> str:
        text = os.fspath(path)
        folder, name = os.path.split(text)
        if not os.path.isabs(text) or text != os.path.normpath(text) or name in ("", ".", ".."):
            return os.path.realpath(text)
        real = self._folders.get(folder)
        if real is None:
            real = self._folders[folder] = os.path.realpath(folder)
        joined = os.path.join(real, name)
        try:
            if stat.S_ISLNK(os.lstat(joined).st_mode):
                return os.path.realpath(joined)
        except OSError:
            pass  # missing (or unreadable): realpath keeps the name as it is
        return joined


def _refuse(path: Path, link: Path | None = None) -> LinkRefused:
    how = "is" if link is None or link == path else f"passes through {link}, which is"
    return LinkRefused(
        f"{path} {how} a symbolic link; a file the connector writes is never reached "
        "through a link",
        hint="Replace the link with a plain file or folder, or name the real file instead.",
    )


@contextlib.contextmanager
def open_folder(folder: Path, *, shown: Path | None = None) -> Iterator[int]:
    """A descriptor of `folder`, reached without following any symbolic link.

    `shown` is the file named in the error (by default the folder itself).
    """
    folder = folder.absolute()
    shown = shown or folder
    if not _NOFOLLOW or not _DIRECTORY:  # no O_NOFOLLOW (Windows): check, then open
        if (link := first_link(folder)) is not None:
            raise _refuse(shown, link)
        fd = os.open(folder, os.O_RDONLY)
    else:
        fd = _walk(folder, shown)
    try:
        yield fd
    finally:
        os.close(fd)


def _walk(folder: Path, shown: Path) -> int:
    flags = os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC
    fd = os.open(folder.anchor, flags)
    current = Path(folder.anchor)
    try:
        for part in folder.parts[1:]:
            current = current / part
            try:
                nxt = os.open(part, flags, dir_fd=fd)
            except OSError as exc:
                if exc.errno in _LINK_ERRORS and os.path.islink(current):
                    raise _refuse(shown, current) from None
                raise
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_nofollow(path: Path) -> io.FileIO:
    """Open the file the connector is about to replace for reading, in binary.

    No symbolic link is followed on the way; a file that is not regular or has another name
    is refused before anything is read (opened non-blocking, so a FIFO does not hang).
    """
    fd = _open_at(path, os.O_RDONLY)
    return io.FileIO(fd, "rb")


def _open_at(path: Path, flags: int, mode: int = 0o600) -> int:
    path = path.absolute()
    with open_folder(path.parent, shown=path) as folder:
        try:
            fd = os.open(path.name, flags | _NOFOLLOW | _NONBLOCK | _CLOEXEC, mode, dir_fd=folder)
        except OSError as exc:
            if exc.errno == errno.ELOOP or os.path.islink(path):
                raise _refuse(path) from None
            raise
    _check_fd(fd, path)
    if _NONBLOCK:
        os.set_blocking(fd, True)
    return fd


def append_file(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Append `data` to `path` (created with `mode` if missing) and sync it to disk."""
    fd = _open_at(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def open_lock(path: Path, *, mode: int = 0o644) -> int:
    """A read-write descriptor of the lock file `path`, its folders created if missing.

    The caller closes it. Neither the folders nor the file are reached through a link.
    """
    path = path.absolute()
    if (link := first_link(path.parent)) is not None:
        raise _refuse(path, link)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _open_at(path, os.O_RDWR | os.O_CREAT, mode)


def write_output(path: Path, dump: Callable[[IO[str]], object]) -> None:
    """Write an ``--output`` file with `dump` (UTF-8), replacing the file at `path` whole.

    A file already there keeps its permissions; a new one is owner-only.
    """
    try:
        mode: int | None = stat.S_IMODE(os.lstat(path).st_mode)
    except FileNotFoundError:
        mode = None
    replace_file(path, dump, encoding="utf-8", mode=mode)


def replace_file(
    path: Path,
    dump: Callable[[IO[str]], object],
    *,
    encoding: str,
    mode: int | None = None,
    sweep: bool = False,
) -> None:
    """Write a new version of `path` with `dump`; readers see the old or the new file whole.

    The temporary file is created beside `path` (``.<name>.<random>.tmp``) with owner-only
    permissions, or `mode`, synced, and renamed over `path`; a link at `path` or on the way
    to it stops with :class:`LinkRefused`, a file that is not regular or has another name
    with :class:`NotPlainFile`, and either is left alone. With `sweep` (a caller that holds
    the only right to write `path`, as a job holds its target's lock), the temporary files
    of `path` that a killed process left are removed: they hold the rows of a version that
    never was (people a withdrawal took back since). Such a caller's temporary file has
    one name per target (its random part derived from the name), so a killed write's is
    removed by name before the next one; the random names of other writes (and of earlier
    versions) are found by listing the folder, once per process (a template's partners may
    share a folder of 15,000 files), and removed once the new version is in place.
    """
    path = path.absolute()
    with open_folder(path.parent, shown=path) as folder:
        _refuse_link_at(path, folder)
        if sweep:
            tmp = _own_temporary(path.name)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=folder)  # a killed write's (the caller alone writes)
        else:
            tmp = _create_temporary(path.name, folder)
        try:
            with open(
                tmp,
                "w",
                encoding=encoding,
                errors="surrogateescape",
                newline="",
                opener=_at(folder, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode),
            ) as out:
                dump(out)
                out.flush()
                os.fsync(out.fileno())
            _refuse_link_at(path, folder)
            os.replace(tmp, path.name, src_dir_fd=folder, dst_dir_fd=folder)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=folder)
            raise
        if os.name == "posix":
            os.fsync(folder)  # makes the rename itself durable
        if sweep:
            _sweep_temporaries(path, folder)


def _temporary(name: str, part: str) -> str:
    """A temporary file's name for `name`, with `part` (12 hex digits): what
    :data:`_TEMPORARY` matches."""
    return f".{name}.{part}.tmp"


def _own_temporary(name: str) -> str:
    """The temporary file of `name` for a writer that alone writes it (see
    :func:`replace_file`): named as :func:`_create_temporary` names them."""
    named = hashlib.blake2b(name.encode("utf-8", "surrogateescape"), digest_size=6)
    return _temporary(name, named.hexdigest())


def _sweep_temporaries(path: Path, folder: int) -> None:
    """Remove the ``.<name>.<random>.tmp`` files of `path` in `folder` (as
    :func:`_create_temporary` names them), never following a link. The folder is listed
    once per process (:data:`_LEFTOVERS`): every target's temporary files it held are
    kept, to be removed when that target is written (under its lock) here."""
    status = os.fstat(folder)
    key = (str(path.parent), status.st_dev, status.st_ino)
    with _LEFTOVERS_LOCK:
        found = _LEFTOVERS.get(key)
        if found is None:
            found = _LEFTOVERS[key] = {}
            for entry in os.listdir(folder):
                if (match := _TEMPORARY.fullmatch(entry)) is not None:
                    found.setdefault(match[1], []).append(entry)
        mine = found.pop(path.name, [])
    for entry in mine:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry, dir_fd=folder)


def _refuse_link_at(path: Path, folder: int) -> None:
    try:
        status = os.stat(path.name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(status.st_mode):
        raise _refuse(path)
    if (why := not_plain(status)) is not None:
        raise _refuse_plain(path, why)


def _create_temporary(name: str, folder: int) -> str:
    for _ in range(100):
        tmp = _temporary(name, os.urandom(6).hex())
        try:
            os.stat(tmp, dir_fd=folder, follow_symlinks=False)
        except FileNotFoundError:
            return tmp
    raise FileExistsError(errno.EEXIST, "no free temporary file name", name)


def _at(folder: int, flags: int, mode: int | None) -> Callable[[str, int], int]:
    def opener(name: str, _flags: int) -> int:
        fd = os.open(name, flags | _NOFOLLOW | _CLOEXEC, 0o600, dir_fd=folder)
        if mode is not None:
            os.fchmod(fd, mode)
        return fd

    return opener
