"""Local files the connector writes: never through a link, only regular files, atomically.

Every local file the connector writes goes through this module: a target (:func:`replace_file`,
or a group's targets at once with :func:`replace_files`; read first with
:func:`read_nofollow`), the ledger's anchors file (:func:`append_file`), a
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
import dataclasses
import errno
import functools
import hashlib
import io
import os
import platform
import re
import stat
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO

from connector_core.errors import ConfigError, ConnectorError

__all__ = [
    "LinkRefused",
    "NewVersion",
    "NotPlainFile",
    "append_file",
    "first_link",
    "not_plain",
    "open_folder",
    "open_lock",
    "read_nofollow",
    "replace_file",
    "replace_files",
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
    if plain is not None:  # a folder looked at whole before: its file is the one part left
        folder, name = os.path.split(text := str(path))
        if name and folder in plain:
            try:
                return path if stat.S_ISLNK(os.lstat(text).st_mode) else None
            except (FileNotFoundError, NotADirectoryError):
                return None
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
    [error] = replace_files([NewVersion(path, dump, encoding, mode, sweep)])
    if error is not None:
        raise error


@dataclasses.dataclass(frozen=True)
class NewVersion:
    """One file for :func:`replace_files`: its `path` and :func:`replace_file`'s arguments."""

    path: Path
    dump: Callable[[IO[str]], object]
    encoding: str
    mode: int | None = None
    sweep: bool = False


#: From this many files up, :func:`replace_files` syncs each file system once (Linux's
#: ``syncfs``) instead of each file and each rename. Below it, the files are synced one by
#: one: a ``syncfs`` also waits for whatever else is unwritten on the file system, which a
#: few files do not pay for. (Measured on ext4 here: 2,000 files of 3 kB written, renamed
#: and synced 0.55-1.0 ms a file one by one, 0.20 ms with two ``syncfs`` for all.)
BATCH_SYNC = 16


def replace_files(files: Sequence[NewVersion]) -> list[ConnectorError | OSError | None]:
    """:func:`replace_file` for many files at once (a group of jobs' targets, each held by its
    job's lock), as durable when it returns, with the same guarantees for each file.

    Each folder is reached once (without following links); the new versions are written to
    their temporary files, synced, renamed over the files and the renames synced; from
    :data:`BATCH_SYNC` files up, where the system syncs a whole file system at once and
    reports its write errors (Linux >= 5.8's ``syncfs``), by one sync of each file system
    before the renames and one after, instead of one per file and one per rename.

    Returns, in order, None for each file replaced, or the error :func:`replace_file`
    would have raised for it (:class:`OSError`, :class:`LinkRefused`,
    :class:`NotPlainFile`): a file whose new version failed before its rename is left as it
    was, and the others are replaced all the same. Any other exception (a bug in a `dump`)
    is raised with every temporary file removed; files renamed by then stay replaced, as
    when one :func:`replace_file` after another was stopped.
    """
    found: list[ConnectorError | OSError | None] = [None] * len(files)
    paths = [f.path.absolute() for f in files]
    if len(set(paths)) < len(paths):
        raise ValueError("replace_files: a file given twice")
    batch = len(files) >= BATCH_SYNC and _syncfs() is not None
    with contextlib.ExitStack() as opened:
        folders: dict[Path, int] = {}
        written: dict[int, tuple[int, str]] = {}  # by file: its folder's descriptor, temporary

        def fail(n: int, exc: ConnectorError | OSError) -> None:
            found[n] = exc
            if (done := written.pop(n, None)) is not None:
                with contextlib.suppress(OSError):
                    os.unlink(done[1], dir_fd=done[0])

        try:
            for n, (new, path) in enumerate(zip(files, paths, strict=True)):
                try:
                    folder = folders.get(path.parent)
                    if folder is None:  # the first file of a folder names it in the error
                        folder = opened.enter_context(open_folder(path.parent, shown=path))
                        folders[path.parent] = folder
                    written[n] = (folder, _write_temporary(path, folder, new, sync=not batch))
                except (ConnectorError, OSError) as exc:
                    fail(n, exc)
            if batch:  # every new version's data, once per file system
                for device, ns in _by_device((n, f) for n, (f, _) in written.items()).items():
                    try:
                        _sync_file_system(device)
                    except OSError as exc:
                        for n in ns:
                            fail(n, exc)
            renamed: dict[int, list[int]] = {}  # files renamed, by folder
            for n in list(written):
                folder, tmp = written[n]
                try:
                    _refuse_link_at(paths[n], folder)
                    os.replace(tmp, paths[n].name, src_dir_fd=folder, dst_dir_fd=folder)
                except (ConnectorError, OSError) as exc:
                    fail(n, exc)
                    continue
                del written[n]
                renamed.setdefault(folder, []).append(n)
        except BaseException:
            for folder, tmp in written.values():
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=folder)
            raise
        _sync_renames(renamed, found, batch)
        for folder, ns in renamed.items():
            for n in ns:
                if files[n].sweep and found[n] is None:
                    try:
                        _sweep_temporaries(paths[n], folder)
                    except OSError as exc:
                        found[n] = exc
    return found


def _write_temporary(path: Path, folder: int, new: NewVersion, *, sync: bool) -> str:
    """Write the new version of `path` to its temporary file in `folder` (synced unless
    not `sync`); its name. Nothing is left behind when it fails."""
    _refuse_link_at(path, folder)
    if new.sweep:
        tmp = _own_temporary(path.name)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=folder)  # a killed write's (the caller alone writes)
    else:
        tmp = _create_temporary(path.name, folder)
    try:
        with open(
            tmp,
            "w",
            encoding=new.encoding,
            errors="surrogateescape",
            newline="",
            opener=_at(folder, os.O_WRONLY | os.O_CREAT | os.O_EXCL, new.mode),
        ) as out:
            new.dump(out)
            out.flush()
            if sync:
                os.fsync(out.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=folder)
        raise
    return tmp


def _by_device(files: Iterable[tuple[int, int]]) -> dict[int, list[int]]:
    """The `files` (number, folder descriptor) by the file system their folder is on (a
    descriptor of it)."""
    devices: dict[int, int] = {}  # st_dev -> a folder descriptor on it
    found: dict[int, list[int]] = {}
    for n, folder in files:
        fd = devices.setdefault(os.fstat(folder).st_dev, folder)
        found.setdefault(fd, []).append(n)
    return found


def _sync_renames(
    renamed: dict[int, list[int]], found: list[ConnectorError | OSError | None], batch: bool
) -> None:
    """Make the renames durable: each folder synced, or (`batch`) each file system once. A
    failure is the error of every file renamed there (replaced, but not known durable)."""
    if os.name != "posix":
        return
    groups: dict[int, list[int]] = renamed
    if batch:
        groups = _by_device((n, folder) for folder, ns in renamed.items() for n in ns)
    for fd, ns in groups.items():
        try:
            if batch:
                _sync_file_system(fd)
            else:
                os.fsync(fd)
        except OSError as exc:
            for n in ns:
                found[n] = exc


def _sync_file_system(fd: int) -> None:
    """Write and wait for everything unwritten on the file system of `fd` (``syncfs``)."""
    syncfs = _syncfs()
    assert syncfs is not None
    if syncfs(fd) != 0:
        import ctypes  # loaded already by _syncfs

        code = ctypes.get_errno()
        raise OSError(code, f"syncfs: {os.strerror(code)}")


@functools.cache
def _syncfs() -> Callable[[int], int] | None:
    """Linux's ``syncfs``, where it reports write errors (Linux 5.8 and later); else None."""
    if platform.system() != "Linux":
        return None
    try:
        major, minor = (int(part) for part in platform.release().split(".")[:2])
    except ValueError:
        return None
    if (major, minor) < (5, 8):  # before 5.8, syncfs returned 0 whatever failed
        return None
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.syncfs
    except (OSError, AttributeError):
        return None
    call.argtypes, call.restype = [ctypes.c_int], ctypes.c_int
    return call


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
