"""The base of every error pocketnn raises on purpose.

Each part of the package has its own error type (:class:`~pocketnn.io.model_file.ModelFileError`,
:class:`~pocketnn.datasets.DatasetError`, :class:`~pocketnn.core.overflow.IntegerOverflowError`,
...), each also a subclass of the built-in exception it always was (``ValueError``,
``OverflowError``, ...). All of them derive from :class:`PocketnnError`, so a caller can tell
"pocketnn refused this input" from a bug with one ``except`` clause, and the command line
turns every one of them into a single line.
"""

from __future__ import annotations


class PocketnnError(Exception):
    """An input, a file or a computation pocketnn refuses, with a message that says why."""
