"""Reading input files safely: regular files only, within the input limit, never blocking.

A FIFO, a terminal, a socket or a device such as ``/dev/zero`` would hang a reader or feed
it forever; they are refused from ``fstat`` alone, before a byte is read. The file is opened
non-blocking so that even opening a FIFO with no writer returns at once, and the type is
checked on the opened descriptor, so a file swapped after the check cannot slip through.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from .limits import max_input, too_large

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)


def kind_of(mode: int) -> str:
    """What a non-regular file is, in words (``"a FIFO (named pipe)"``)."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def open_regular(path: str | os.PathLike, error: type[Exception], what: str = "file") -> BinaryIO:
    """Open ``path`` for binary reading if it is a regular file within the input limit.

    Every refusal raises ``error`` (the caller's own error type) with one line naming the
    file: missing, unreadable, not a regular file, or larger than
    :func:`~pocketnn.io.limits.max_input`.
    """
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        raise error(f"{path}: no such {what}") from None
    except OSError as exc:
        raise error(f"{path}: cannot open the {what}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(
                f"{path}: is {kind_of(st.st_mode)}; pocketnn reads {what}s only from regular files"
            )
        if st.st_size > max_input():
            raise error(too_large(str(path), st.st_size))
        if _OPEN_FLAGS & getattr(os, "O_NONBLOCK", 0):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_exactly(f: BinaryIO, size: int, where: str, error: type[Exception]) -> bytearray:
    """``size`` bytes of ``f`` into a fresh bytearray, refusing a short read.

    A ``MemoryError`` becomes ``error`` saying how much memory was asked for.
    """
    try:
        data = bytearray(size)
    except MemoryError:
        raise error(f"{where}: out of memory for {size} bytes") from None
    view = memoryview(data)
    done = 0
    while done < size:
        n = f.readinto(view[done:])
        if not n:
            raise error(f"{where}: truncated: {done} of {size} bytes")
        done += n
    return data


def read_regular(path: str | os.PathLike, error: type[Exception], what: str = "file") -> bytearray:
    """The whole content of a regular file within the input limit (see :func:`open_regular`).

    A file that grows or shrinks while it is read is refused.
    """
    with open_regular(path, error, what) as f:
        size = os.fstat(f.fileno()).st_size
        data = read_exactly(f, size, str(path), error)
        if f.read(1):
            raise error(f"{path}: the {what} grew while it was read")
    return data


def same_file(path: Path, fd: int) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (and not a replacement)."""
    try:
        a, b = os.stat(path), os.fstat(fd)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
