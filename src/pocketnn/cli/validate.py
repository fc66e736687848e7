"""Checks at the command line's boundary: every number a flag takes, once, before any work.

``int()`` accepts more than a user means: ``"٣"`` (an Arabic-Indic digit), ``"1_000"`` and
``" 7 "`` are all integers to Python. Flags take ASCII decimal integers only.
"""

from __future__ import annotations

import re

from .errors import CLIError

_INT = re.compile(r"[+-]?[0-9]+")
_SIZE = re.compile(r"([0-9]+)([KMG]?)i?B?", re.IGNORECASE)
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}


def ascii_int(text: str) -> int:
    """An integer written with ASCII digits (and an optional sign), nothing else."""
    if not _INT.fullmatch(text):
        raise ValueError(f"not an integer: {text!r}")
    return int(text)


ascii_int.__name__ = "int"  # argparse names the type in its message: "invalid int value"


def byte_size(text: str) -> int:
    """A positive size in bytes: ``1048576``, ``512K``, ``300M``, ``2G`` (binary units)."""
    match = _SIZE.fullmatch(text.strip())
    if not match or int(match.group(1)) < 1:
        raise ValueError(f"not a size: {text!r}")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


byte_size.__name__ = "size (e.g. 300M, 2G)"


def check_batch_size(batch_size: int, n_samples: int, where: str) -> None:
    """Refuse a ``--batch-size`` larger than the data it is drawn from: the batch would
    silently shrink, and size the on-device buffers of ``export-c --with-training``."""
    if batch_size > n_samples:
        raise CLIError(
            f"--batch-size {batch_size} exceeds the {n_samples} training samples of {where}"
        )
