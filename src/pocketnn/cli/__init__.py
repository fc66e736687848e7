"""The ``pocketnn`` command: train, evaluate, predict, info (and export-c).

Every failure the user can cause (a bad argument, a missing or corrupt file, an impossible
hyperparameter, an overflow) ends in one line ``pocketnn: error: ...`` and exit status 2.
Percentages and seconds are printed for people; everything computed stays integer.

This module holds the entry point ``main`` and that mapping of errors to exit statuses; the
arguments are in ``parser``, each command in its own module.
"""

from __future__ import annotations

import subprocess
import sys

from ..core.context import configure
from ..datasets import DatasetError
from ..io.model_file import ModelFileError
from .errors import CLIError
from .parser import build_parser

__all__ = ["CLIError", "main"]


def main(argv: list[str] | None = None) -> int:
    """Run the ``pocketnn`` command on ``argv`` (default: ``sys.argv[1:]``); the exit status."""
    try:
        args = build_parser().parse_args(argv)
        with configure(engine=args.engine, overflow=args.overflow, threads=args.threads):
            return args.func(args)
    except (
        CLIError,
        ImportError,
        DatasetError,
        ModelFileError,
        OverflowError,  # IntegerOverflowError names the layer and the operation
        MemoryError,
        RuntimeError,  # e.g. a missing cross-compiler for export-c --report
        subprocess.SubprocessError,
        ValueError,
        TypeError,
        OSError,
    ) as exc:
        print(f"pocketnn: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "pocketnn: interrupted; the last finished epoch is saved (use --resume)",
            file=sys.stderr,
        )
        return 130
