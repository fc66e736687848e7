"""Atomic file writes: readers see the old file or the new one, never half of one.

Only regular files are ever replaced: writing to a path that is a device, a FIFO, a socket
or a folder is refused (a symbolic link is followed, and its target must be a regular file
or not exist). The temporary file a write goes through is locked while it is written, so
one left behind by a killed process is recognised, and removed by the next write of the
same path (:func:`pocketnn.io.locks.remove_stale_parts`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

from ..errors import PocketnnError
from .files import kind_of, same_file
from .locks import part_name, remove_stale_parts, try_lock


class NotARegularFileError(PocketnnError, OSError):
    """The path to be written exists and is not a regular file (a device, a FIFO, ...)."""


def write_target(path: str | os.PathLike) -> Path:
    """The file a write of ``path`` replaces: ``path``, or the target of a symbolic link.

    Raises :class:`NotARegularFileError` when it exists and is not a regular file.
    """
    path = Path(path)
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return path
    if not stat.S_ISREG(mode):
        raise NotARegularFileError(
            f"{path}: is {kind_of(mode)}; pocketnn replaces only regular files"
        )
    return path


def _locked_part(target: Path) -> tuple[int, Path]:
    """Create and lock a fresh temporary file next to ``target``: (descriptor, path).

    Created with mode 0666, so the umask gives a new file its usual permissions.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = part_name(target, secrets.token_hex(8))
        fd = os.open(tmp, flags, 0o666)
        if try_lock(fd) and same_file(tmp, fd):
            return fd, tmp
        os.close(fd)  # a cleaner took it for stale between creation and lock: a new name


def atomic_write_bytes(path: str | os.PathLike, data: bytes | bytearray) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder.

    The temporary file is flushed and fsynced, then renamed over ``path`` (atomic on POSIX
    and Windows); on any failure it is removed and ``path`` is left as it was. Missing parent
    folders are created. A replaced file keeps its permissions; a new one gets the usual
    ``0666 & ~umask``.
    """
    target = write_target(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(target)
    fd, tmp = _locked_part(target)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp, target.stat().st_mode & 0o7777)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        if os.name == "nt":  # Windows renames no open file; elsewhere the lock is kept to the end
            os.close(fd)
            fd = -1
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    finally:
        if fd >= 0:
            os.close(fd)


def check_writable(path: str | os.PathLike, size: int) -> None:
    """Raise ``OSError`` now if ``size`` bytes could not be written to ``path`` atomically.

    Writes ``size`` bytes to a temporary file next to ``path`` (the folder must exist), syncs
    it and removes it: a read-only or full folder is found before any work is done, not
    after it. Also refuses a ``path`` that is not a regular file.
    """
    target = write_target(path)
    fd, tmp = _locked_part(target)
    try:
        block = bytes(min(size, 1 << 20))
        left = size
        while left > 0:
            left -= os.write(fd, block[: min(left, len(block))])
        os.fsync(fd)
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
