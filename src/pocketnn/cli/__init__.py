"""The ``pocketnn`` command: train, evaluate, predict, info (and export-c).

Every failure (a bad argument, a missing, corrupt, oversized or special file, an impossible
hyperparameter, an overflow, a full disk, and even a bug) ends in one line
``pocketnn: error: ...`` naming the file or flag it concerns, and exit status 2.
Percentages and seconds are printed for people; everything computed stays integer.

This module holds the entry point ``main`` and that mapping of errors to exit statuses; the
arguments are in ``parser``, each command in its own module.
"""

from __future__ import annotations

import sys

from ..core.context import configure
from ..io.limits import input_limit
from .errors import CLIError, one_line
from .parser import build_parser

__all__ = ["CLIError", "main"]


def main(argv: list[str] | None = None) -> int:
    """Run the ``pocketnn`` command on ``argv`` (default: ``sys.argv[1:]``); the exit status."""
    try:
        args = build_parser().parse_args(argv)
        context = configure(engine=args.engine, overflow=args.overflow, threads=args.threads)
        with context, input_limit(args.max_input):
            return args.func(args)
    except Exception as exc:  # every failure, expected or not, is one line (see one_line)
        print(f"pocketnn: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "pocketnn: interrupted; the last finished epoch is saved (use --resume)",
            file=sys.stderr,
        )
        return 130
