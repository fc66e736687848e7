"""The input limit: how many bytes pocketnn reads from one input file, at most.

Model files, idx files and images are checked against it *before* anything of that size is
allocated or inflated: a file's size on disk, the sizes a zip archive or an idx header
declares, and the size a gzip stream would inflate to. The limit is a setting of the
calling thread (a :mod:`contextvars` variable, like the engine), raised or lowered for a
block with :func:`input_limit`; on the command line, ``pocketnn --max-input SIZE``.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

DEFAULT_MAX_INPUT = 256 * 2**20
"""256 MiB: 5x the largest MNIST file (47 MB), 1,500x the paper's MNIST model."""

_MAX_INPUT: contextvars.ContextVar[int] = contextvars.ContextVar(
    "pocketnn_max_input", default=DEFAULT_MAX_INPUT
)


def max_input() -> int:
    """The largest content, in bytes, this thread reads from one input file."""
    return _MAX_INPUT.get()


@contextlib.contextmanager
def input_limit(max_bytes: int) -> Iterator[int]:
    """Read input files of up to ``max_bytes`` (decompressed) inside the block, this thread only.

    Examples
    --------
    >>> with input_limit(2 * 2**30):   # 2 GiB
    ...     max_input()
    2147483648
    """
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise ValueError(f"the input limit must be a positive number of bytes, got {max_bytes!r}")
    token = _MAX_INPUT.set(max_bytes)
    try:
        yield max_bytes
    finally:
        _MAX_INPUT.reset(token)


def too_large(where: str, size: int, what: str = "bytes") -> str:
    """The message for content of ``size`` beyond the limit, saying how to raise it."""
    return (
        f"{where}: {size} {what} exceed the input limit of {max_input()} bytes "
        "(raise it with --max-input SIZE or pocketnn.input_limit)"
    )
