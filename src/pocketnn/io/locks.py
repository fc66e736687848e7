"""Advisory file locks: who owns an output path, and whether a temporary file is abandoned.

Locks are ``flock`` locks (``msvcrt.locking`` on Windows): the operating system releases
them when their process ends, however it ends, so a ``kill -9`` never leaves a path locked.

* :func:`owning` gives a run exclusive ownership of output paths through a lock file next to
  each one (``.NAME.lock``, removed when the run ends); a second run is refused at once.
* A writer holds a lock on its temporary file while it writes
  (:mod:`pocketnn.io.atomic`), so :func:`remove_stale_parts` can tell the temporary file of a
  killed writer (unlocked: removed) from one being written right now (locked: left alone).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

from ..errors import PocketnnError
from .files import same_file

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt

PART_SUFFIX = ".part"
_PART_TOKEN = re.compile(r"[0-9a-f]{16}")


class OutputInUseError(PocketnnError, OSError):
    """Another run owns the output path (it holds the path's lock)."""


def try_lock(fd: int) -> bool:
    """Take an exclusive lock on the open file ``fd`` without waiting; False if it is held."""
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


def part_name(path: Path, token: str) -> Path:
    """The temporary file that becomes ``path``: ``.NAME.TOKEN.part`` in the same folder."""
    return path.with_name(f".{path.name}.{token}{PART_SUFFIX}")


def remove_stale_parts(path: Path) -> list[Path]:
    """Remove the temporary files a killed writer of ``path`` left behind; returns them.

    Only names of exactly the form :func:`part_name` gives are considered, and only those
    whose lock can be taken (no live writer holds it) are removed.
    """
    prefix, removed = f".{path.name}.", []
    try:
        names = os.listdir(path.parent)
    except OSError:
        return removed
    for name in names:
        token = name[len(prefix) : -len(PART_SUFFIX)]
        if not (name.startswith(prefix) and name.endswith(PART_SUFFIX)):
            continue
        if not _PART_TOKEN.fullmatch(token):
            continue
        part = path.parent / name
        try:
            fd = os.open(part, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            if try_lock(fd) and same_file(part, fd):
                os.unlink(part)  # unlinked while locked: no writer can be using it
                removed.append(part)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def lock_path_for(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


@contextlib.contextmanager
def owning(*paths: Path) -> Iterator[None]:
    """Own every path in ``paths`` inside the block, or raise :class:`OutputInUseError`.

    Ownership is a lock on ``.NAME.lock`` next to each path (holding this process's id, for
    the message another run gets). ``OSError`` (a folder that cannot be written) propagates.
    """
    with contextlib.ExitStack() as stack:
        for path in paths:
            stack.enter_context(_own(Path(path)))
        yield


@contextlib.contextmanager
def _own(path: Path) -> Iterator[None]:
    lock = lock_path_for(path)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        if not try_lock(fd):
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise OutputInUseError(
                f"{path}: in use by another pocketnn run"
                + (f" (process {holder})" if holder.isdigit() else "")
                + "; wait for it to end, or choose another path"
            )
        if same_file(lock, fd):
            break
        os.close(fd)  # the previous owner removed this lock file as we locked it: again
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)  # while still locked, so no other run can hold the old file
        os.close(fd)
