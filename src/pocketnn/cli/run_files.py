"""The files a training run owns: its model file and its log.

A run owns them from start to end: a lock next to each (:func:`pocketnn.io.locks.owning`)
refuses a second run on the same path at once, with one line, instead of letting both
write. Before any training, the run also checks that the model and the log can be written
at all (a read-only or full folder is found now, not after an epoch), that neither is
anything but a regular file, and removes the temporary files a killed run left behind.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from ..io.atomic import check_writable, write_target
from ..io.locks import owning, remove_stale_parts
from .errors import CLIError


@contextlib.contextmanager
def own_run_files(out: Path, log: Path) -> Iterator[None]:
    """Own ``out`` and ``log`` for the block; one-line :class:`CLIError` if that fails."""
    targets = [write_target(out), write_target(log)]  # only regular files are ever replaced
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(owning(*targets))
        except OSError as exc:
            if exc.filename is None:  # OutputInUseError: another run holds it
                raise
            raise CLIError(f"--out: cannot write in {out.parent}: {exc.strerror}") from None
        for target in targets:
            remove_stale_parts(target)
        yield


def check_room(out: Path, log: Path, model_bytes: int) -> None:
    """Refuse now a folder that cannot take the model file and its log."""
    for path, size in ((out, model_bytes), (log, 64 * 1024)):
        try:
            check_writable(path, size)
        except OSError as exc:
            raise CLIError(
                f"--out: cannot write {size} bytes for {path.name} in {path.parent}: "
                f"{exc.strerror or exc}"
            ) from None
