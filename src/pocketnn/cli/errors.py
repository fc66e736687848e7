"""The command line's errors: every failure becomes one line that names what it is about.

:class:`CLIError` is a mistake the user can fix. :func:`one_line` turns any exception into
the single line ``main`` prints; :func:`about` prefixes the file an error concerns when the
message does not name it already (an overflow while predicting names the layer, ``about``
adds the model file).
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator

from ..errors import PocketnnError

# Exceptions that describe a bad input or environment, printed as they are; anything else
# is a bug, printed as one line too, but marked as such.
EXPECTED = (
    PocketnnError,
    OSError,
    MemoryError,
    ValueError,
    TypeError,
    OverflowError,
    ImportError,
    RuntimeError,
    subprocess.SubprocessError,
)


class CLIError(PocketnnError):
    """A user-facing error: printed as one line, exit status 2."""


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line, never empty.

    An ``OSError`` names its file; a ``MemoryError`` says so (its message is often empty);
    an unexpected exception is labelled an internal error, with its type.
    """
    if isinstance(exc, OSError) and not isinstance(exc, PocketnnError) and exc.strerror:
        names = [n for n in (exc.filename, exc.filename2) if n is not None]
        text = f"{' -> '.join(map(str, names))}: {exc.strerror}" if names else exc.strerror
    else:
        text = " ".join(str(exc).split()) if str(exc).strip() else ""
    if isinstance(exc, MemoryError):
        text = f"out of memory{f' ({text})' if text else ''}"
    if not isinstance(exc, EXPECTED):
        text = f"internal error ({type(exc).__name__}: {text}); please report it"
    return text or type(exc).__name__


@contextlib.contextmanager
def about(path: object) -> Iterator[None]:
    """Turn any error inside the block into a :class:`CLIError` whose line names ``path``."""
    try:
        yield
    except Exception as exc:
        text = one_line(exc)
        if str(path) in text:
            if isinstance(exc, CLIError):
                raise
            raise CLIError(text) from exc
        raise CLIError(f"{path}: {text}") from exc
